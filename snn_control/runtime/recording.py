"""Record serialized ROS messages into rosbag2 (MCAP) files split by time, off the control path.

:class:`SplitBagRecorder` takes ``(topic, CDR bytes, time)`` from any thread into a queue;
one writer thread writes them with the ``rosbags`` library. Every ``split_s`` seconds it
closes the bag (``metadata.yaml`` written: readable by ``rosbags``, ``ros2 bag`` and the
``mcap`` tools) and opens the next, ``<session>_<index>/``. A full queue drops messages
(counted) rather than block the caller.

Nothing is lost silently. Every ``flush_s`` the writer puts what it has on disk, as complete
MCAP chunks (a crash loses at most that), and checks its file is still where it writes it;
any exception in the writer thread (disk full, directory deleted, ...) stops it and sets
:attr:`SplitBagRecorder.failure`, which the recorder node reports on ``/diagnostics``; the
split open then is closed, or rebuilt from what reached the disk. A split a crash left
without ``metadata.yaml`` is rebuilt by :func:`recover_unclosed` when a recorder next starts
on the directory, or reported. :func:`delete_open_splits` injects a recorder disk failure.
"""

from __future__ import annotations

import fcntl
import os
import queue
import shutil
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
MCAP_MAGIC = b"\x89MCAP0\r\n"
HEADER, FOOTER, DATA_END = 0x01, 0x02, 0x0F  # MCAP opcodes
RECORD = struct.Struct("<BQ")  # an MCAP record starts with its opcode and length


class RecordingError(RuntimeError):
    """A bag cannot be written or rebuilt; the message names the file."""


class SplitInUse(RecordingError):
    """The split's MCAP file is locked: a running recorder is writing it."""


@dataclass(frozen=True)
class Recovery:
    """A split found without ``metadata.yaml`` at start: reindexed, or why not."""

    path: Path
    reindexed: bool
    message: str


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, RecordingError) else f"{type(exc).__name__}: {exc}"


class _Split:
    """One open bag: its rosbags writer, its connections, its MCAP file locked."""

    def __init__(self, path: Path, topics: dict[str, str]) -> None:
        self.path = path
        self.tried_close = False
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()  # creates the directory, never reuses one: WriterError if it exists
        try:
            self.storage = self.writer.storage
            # Locked while open, so a recorder starting on this directory leaves it alone.
            fcntl.flock(self.storage.bio.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.connections = {t: self.writer.add_connection(t, msgtype, typestore=TYPESTORE)
                                for t, msgtype in topics.items()}
        except BaseException:
            self.writer.abort()
            raise
        self.opened = time.monotonic()

    def flush(self) -> None:
        """Write the pending messages to disk as a complete chunk (rosbags would keep up to
        1 MiB in memory): a crash then loses at most this, and a full disk shows now."""
        if self.storage.chunk.msgs:
            self.storage.close_chunk()
        self.storage.bio.flush()

    def check_in_place(self) -> None:
        """Raise if the MCAP file was deleted or moved: writes to it would reach no bag."""
        mcap = self.storage.path
        try:
            on_disk = os.stat(mcap)
        except FileNotFoundError:
            on_disk = None
        if on_disk is None or not os.path.samestat(on_disk, os.fstat(self.storage.bio.fileno())):
            raise RecordingError(f"{mcap} was deleted or moved while being written")

    def close(self) -> Path:
        self.tried_close = True
        self.writer.close()
        return self.path

    def abandon(self) -> None:
        """Release the file after a failure, writing nothing more."""
        try:
            self.writer.abort()
        except Exception:  # noqa: BLE001 - a full disk fails the buffer's flush; the file is closed anyway
            pass


class SplitBagRecorder:
    def __init__(self, directory: str | Path, topics: dict[str, str], split_s: float = 60.0,
                 session: str | None = None, queue_size: int = 100_000, flush_s: float = 0.25) -> None:
        self.directory = Path(directory)
        self.topics = dict(topics)  # topic -> message type, e.g. "sensor_msgs/msg/JointState"
        self.split_s, self.flush_s = split_s, flush_s
        self.session = session or time.strftime("session_%Y%m%d_%H%M%S")
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.written = 0
        self.closed_bags: list[Path] = []
        self.recovered: list[Recovery] = []  # what an earlier crash left here, see recover_unclosed
        self.failure: str | None = None  # why the writer stopped; None while it writes
        self.failed_at: float | None = None  # time.time() when the failure was seen
        self.salvage: str | None = None  # what became of the split open at the failure
        self._refused = self._unwritten = 0  # counted by the caller's thread, the writer's
        self._index = 0
        self._split: _Split | None = None
        self._stop = threading.Event()
        self._start()
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Messages taken but never written: a full queue, or a writer that had failed."""
        return self._refused + self._unwritten

    def record(self, topic: str, data: bytes, stamp_ns: int) -> None:
        """Queue one serialized message; never blocks."""
        if self.failure is not None:
            self._refused += 1
            return
        try:
            self.queue.put_nowait((topic, bytes(data), int(stamp_ns)))
        except queue.Full:
            self._refused += 1

    def check(self) -> str | None:
        """The writer's failure, None while it writes (a thread that ended unasked is one)."""
        if self.failure is None and not self._thread.is_alive() and not self._stop.is_set():
            self._fail(f"bag writer for {self._target()} ended without an error")
        return self.failure

    def stats(self) -> dict[str, str]:
        """The writer's state as diagnostics values."""
        values = {"directory": str(self.directory), "session": self.session, "split": str(self._target()),
                  "splits_closed": str(len(self.closed_bags)), "written": str(self.written),
                  "dropped": str(self.dropped), "queued": str(self.queue.qsize())}
        if self.failure is not None:
            values.update(failure=self.failure, failed_at=f"{self.failed_at:.6f}", salvage=self.salvage or "")
        return values

    def close(self) -> list[Path]:
        """Write what is queued, close the open split; returns every bag of this session."""
        self._stop.set()
        self._thread.join()
        self._drain()  # what arrived while the writer was failing
        return list(self.closed_bags)

    def _split_path(self) -> Path:
        return self.directory / f"{self.session}_{self._index:03d}"

    def _target(self) -> Path:
        split = self._split  # read once: the writer thread may swap it
        return split.path if split is not None else self._split_path()

    def _fail(self, reason: str) -> None:
        self.failed_at = time.time()
        self.failure = reason

    def _start(self) -> None:
        """Rebuild what a crash left here, then claim this session's first split."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.recovered = recover_unclosed(self.directory)
            self._claim_session()
        except Exception as exc:  # noqa: BLE001 - reported by the node, as a failure while writing is
            self._fail(f"cannot start recording in {self.directory}: {_describe(exc)}")

    def _claim_session(self) -> None:
        """Take the first free ``<session>[_<n>]``: its first split's directory is created
        atomically, so recorders started in the same second never share a name."""
        base = self.session
        for n in range(1, 1000):
            self.session = base if n == 1 else f"{base}_{n}"
            try:
                self._split = _Split(self._split_path(), self.topics)
                return
            except WriterError:
                if not self._split_path().exists():
                    raise
        raise RecordingError(f"no free session name {base}_<n> in {self.directory}")

    def _run(self) -> None:
        if self.failure is not None:
            return
        try:
            self._write_until_stopped()
        except Exception as exc:  # noqa: BLE001 - whatever stops the writer is reported, never silent
            self._fail(f"bag writer stopped at {self._target()}: {_describe(exc)}")
            self._salvage()
            self._drain()

    def _write_until_stopped(self) -> None:
        next_check = time.monotonic() + self.flush_s
        while not (self._stop.is_set() and self.queue.empty()):
            try:
                item = self.queue.get(timeout=min(0.1, self.flush_s))
            except queue.Empty:
                item = None
            if item is not None:
                self._unwritten += 1  # until written: a message the failure takes is counted
                self._write(*item)
                self._unwritten -= 1
            if time.monotonic() >= next_check:
                self._split.flush()
                self._split.check_in_place()
                next_check = time.monotonic() + self.flush_s
        self.closed_bags.append(self._split.close())
        self._split = None

    def _write(self, topic: str, data: bytes, stamp: int) -> None:
        if time.monotonic() - self._split.opened >= self.split_s:  # rotate when data arrives: no empty splits
            self.closed_bags.append(self._split.close())
            self._split = None
            self._index += 1
            self._split = _Split(self._split_path(), self.topics)
        self._split.writer.write(self._split.connections[topic], stamp, data)
        self.written += 1

    def _salvage(self) -> None:
        """Close the split open at the failure, or rebuild it from what reached the disk."""
        split, self._split = self._split, None
        if split is None:
            return
        if not split.tried_close:
            try:
                self.closed_bags.append(split.close())
                self.salvage = f"{split.path} closed with what was written before the failure"
                return
            except Exception:  # noqa: BLE001 - the cause is the failure already reported
                pass
        split.abandon()
        try:
            count = reindex(split.path)
        except Exception as exc:  # noqa: BLE001
            self.salvage = f"{split.path} left without metadata.yaml: {_describe(exc)}"
        else:
            self.closed_bags.append(split.path)
            self.salvage = f"{split.path} rebuilt from its MCAP file ({count} messages)"

    def _drain(self) -> None:
        """Count what was queued but will never be written."""
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return
            self._unwritten += 1


def recover_unclosed(directory: str | Path) -> list[Recovery]:
    """Reindex every split under ``directory`` that has an MCAP file but no ``metadata.yaml``
    (a crash's leftover); one a running recorder writes (its file locked) is left alone."""
    found = []
    for split in sorted(p for p in Path(directory).iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (split / "metadata.yaml").exists() or not any(split.glob("*.mcap")):
            continue
        try:
            count = reindex(split)
        except SplitInUse:
            continue
        except Exception as exc:  # noqa: BLE001 - reported, the split left as it was
            found.append(Recovery(split, False, f"{split} has no metadata.yaml and could not be reindexed: "
                                                f"{_describe(exc)}"))
        else:
            found.append(Recovery(split, True, f"{split} had no metadata.yaml (an unclean stop): "
                                               f"reindexed, {count} messages"))
    return found


def reindex(split: str | Path) -> int:
    """Rebuild ``split``'s MCAP file and ``metadata.yaml`` from the complete records a crash
    or a failed write left (rosbags writes them again, indexed); returns the messages kept.
    The original is replaced only once the rebuilt bag is complete."""
    split = Path(split)
    if not split.is_dir():
        raise RecordingError(f"{split} no longer exists")
    mcaps = sorted(split.glob("*.mcap"))
    if len(mcaps) != 1:
        raise RecordingError(f"{split}: expected one .mcap file, found {len(mcaps)}")
    scratch = split / ".reindex"  # inside the split: only the holder of its lock touches it
    rebuilt = scratch / split.name
    with mcaps[0].open("rb") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SplitInUse(f"{mcaps[0]} is being written by a running recorder") from None
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            count = _rewrite(fh, mcaps[0], rebuilt)
            os.replace(rebuilt / f"{split.name}.mcap", split / f"{split.name}.mcap")
            if mcaps[0].name != f"{split.name}.mcap":
                mcaps[0].unlink()
            os.replace(rebuilt / "metadata.yaml", split / "metadata.yaml")  # last: the split is closed now
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return count


def _rewrite(fh: BinaryIO, mcap: Path, target: Path) -> int:
    reader = _scan(fh, mcap)
    if not reader.statistics.message_count:
        raise RecordingError(f"{mcap} holds no complete message (cut before its first chunk was written)")
    count = 0
    with Writer(target, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=TYPESTORE)
                       for c in reader.connections}
        for connection, stamp, data in reader.messages_scan(reader.connections):
            writer.write(connections[connection.id], stamp, data)
            count += 1
    return count


def _scan(fh: BinaryIO, mcap: Path) -> McapReader:
    """rosbags' MCAP reader over the complete data records of a file that may lack its
    summary and footer (rosbags' own ``open`` refuses such a file)."""
    start, end = _data_records(fh, mcap)
    reader = McapReader(mcap)
    reader.bio, reader.data_start, reader.data_end = fh, start, end
    reader.meta_scan()
    return reader


def _data_records(fh: BinaryIO, mcap: Path) -> tuple[int, int]:
    """Offsets of the first data record and after the last complete one (a crash cuts the
    last; ``DataEnd`` or a footer ends the data of a file that was closed)."""
    size = os.fstat(fh.fileno()).st_size
    fh.seek(0)
    if size < len(MCAP_MAGIC) + RECORD.size or fh.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
        raise RecordingError(f"{mcap} is not an MCAP file")
    op, length = RECORD.unpack(fh.read(RECORD.size))
    if op != HEADER:
        raise RecordingError(f"{mcap} has no MCAP header")
    start = pos = len(MCAP_MAGIC) + RECORD.size + length
    while pos + RECORD.size <= size:
        fh.seek(pos)
        op, length = RECORD.unpack(fh.read(RECORD.size))
        if op in (DATA_END, FOOTER) or pos + RECORD.size + length > size:
            break
        pos += RECORD.size + length
    return start, pos


def open_splits(directory: str | Path) -> list[Path]:
    """The splits running recorders are writing under ``directory`` (their MCAP file locked)."""
    return [m.parent for m in sorted(Path(directory).glob("*/*.mcap"))
            if not (m.parent / "metadata.yaml").exists() and _locked(m)]


def _locked(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except FileNotFoundError:
        pass
    return False


def delete_open_splits(directory: str | Path) -> tuple[float, list[Path]]:
    """Fault injection: delete the splits being written under ``directory``, as a lost disk
    would. Returns ``time.time()`` just before (the clock of ROS stamps) and what was deleted;
    the stamp of the recorder's first ERROR on ``/diagnostics`` minus it is the report time."""
    splits = open_splits(directory)
    deleted_at = time.time()
    for split in splits:
        shutil.rmtree(split)
    return deleted_at, splits
