"""Record serialized ROS messages into rosbag2 (MCAP) files split by time, off the control path.

:class:`SplitBagRecorder` takes ``(topic, CDR bytes, time)`` from any thread into a queue;
one writer thread writes them with the ``rosbags`` library. Every ``split_s`` seconds it
closes the bag (``metadata.yaml`` written: readable by ``rosbags``, ``ros2 bag`` and the
``mcap`` tools) and opens the next, ``<session>_<index>/``, so a crash loses at most the
split that was open. A full queue drops messages (counted) rather than block the caller.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_KILTED)


class SplitBagRecorder:
    def __init__(self, directory: str | Path, topics: dict[str, str], split_s: float = 60.0,
                 session: str | None = None, queue_size: int = 100_000) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.topics = dict(topics)  # topic -> message type, e.g. "sensor_msgs/msg/JointState"
        self.split_s = split_s
        self.session = session or time.strftime("session_%Y%m%d_%H%M%S")
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.written = 0
        self.closed_bags: list[Path] = []
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def record(self, topic: str, data: bytes, stamp_ns: int) -> None:
        """Queue one serialized message; never blocks."""
        try:
            self.queue.put_nowait((topic, bytes(data), int(stamp_ns)))
        except queue.Full:
            self.dropped += 1

    def _open(self, index: int):
        path = self.directory / f"{self.session}_{index:03d}"
        writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        connections = {t: writer.add_connection(t, msgtype, typestore=TYPESTORE) for t, msgtype in self.topics.items()}
        return path, writer, connections

    def _run(self) -> None:
        index = 0
        path, writer, connections = self._open(index)
        opened = time.monotonic()
        try:
            while not (self._stop.is_set() and self.queue.empty()):
                try:
                    topic, data, stamp = self.queue.get(timeout=0.1)
                except queue.Empty:
                    topic = None
                if topic is None:
                    continue
                if time.monotonic() - opened >= self.split_s:  # rotate when data arrives: no empty splits
                    writer.close()
                    self.closed_bags.append(path)
                    index += 1
                    path, writer, connections = self._open(index)
                    opened = time.monotonic()
                writer.write(connections[topic], stamp, data)
                self.written += 1
        finally:
            writer.close()
            self.closed_bags.append(path)

    def close(self) -> list[Path]:
        """Write what is queued, close the open split; returns every bag of this session."""
        self._stop.set()
        self._thread.join()
        return list(self.closed_bags)
