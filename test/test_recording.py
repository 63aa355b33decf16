"""Bags written off the control path, split by time, readable by rosbags and the mcap library."""

import errno
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mcap.reader import make_reader
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.typesys import Stores, get_typestore

from snn_control.runtime.recording import RECORD, SplitBagRecorder, delete_open_splits, open_splits

STORE = get_typestore(Stores.ROS2_KILTED)


def _joint_state(i):
    JointState = STORE.types["sensor_msgs/msg/JointState"]
    Header, Time = STORE.types["std_msgs/msg/Header"], STORE.types["builtin_interfaces/msg/Time"]
    msg = JointState(header=Header(stamp=Time(sec=i, nanosec=0), frame_id=""), name=["j1"],  # arrays: numpy
                     position=np.array([float(i)]), velocity=np.zeros(1), effort=np.zeros(1))
    return STORE.serialize_cdr(msg, "sensor_msgs/msg/JointState")


def test_split_bags_read_back_by_two_readers(tmp_path):
    rec = SplitBagRecorder(tmp_path, {"/joint_states": "sensor_msgs/msg/JointState"}, split_s=0.3, session="s")
    for i in range(30):
        rec.record("/joint_states", _joint_state(i), i * 10_000_000)
        time.sleep(0.02)
    bags = rec.close()
    assert len(bags) >= 2 and rec.dropped == 0
    positions = []
    for bag in bags:
        assert (bag / "metadata.yaml").exists()
        with Reader(bag) as reader:
            for conn, _, raw in reader.messages():
                positions.append(STORE.deserialize_cdr(raw, conn.msgtype).position[0])
        mcap_files = list(bag.glob("*.mcap"))
        with open(mcap_files[0], "rb") as fh:
            assert sum(1 for _ in make_reader(fh).iter_messages()) > 0
    assert positions == [float(i) for i in range(30)]  # nothing lost, in order, across splits


def test_a_full_queue_drops_instead_of_blocking(tmp_path):
    rec = SplitBagRecorder(tmp_path, {"/joint_states": "sensor_msgs/msg/JointState"}, queue_size=1, session="q")
    data = _joint_state(1)
    start = time.perf_counter()
    for i in range(2000):
        rec.record("/joint_states", data, i)
    assert time.perf_counter() - start < 1.0
    rec.close()
    assert rec.dropped > 0 and rec.written + rec.dropped == 2000


def test_foreign_and_corrupt_bags_are_skipped_with_reasons(tmp_path):
    from snn_control.predictive.bags import read_sessions
    from snn_control.models.checkpoint import load_model

    _, _, spec, _ = load_model(Path(__file__).resolve().parent.parent / "models" / "panda_snn")
    rec = SplitBagRecorder(tmp_path / "foreign", {"/joint_states": "sensor_msgs/msg/JointState"}, session="f")
    rec.record("/joint_states", _joint_state(1), 1)
    foreign = rec.close()[0]
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, bag")
    before = sorted(p.name for p in foreign.iterdir())
    result = read_sessions([foreign, corrupt], spec, length=10)
    assert result.obs.shape == (0, 11, spec.obs_dim) and not result.bags_read
    reasons = "\n".join(result.skipped)
    assert "not a recorded controller session" in reasons and str(corrupt) in reasons
    assert sorted(p.name for p in foreign.iterdir()) == before  # nothing touched


# --- failures are reported, what was written stays readable -------------------------------

TOPICS = {"/joint_states": "sensor_msgs/msg/JointState"}
REPO = Path(__file__).resolve().parent.parent


def _positions(bag):
    with Reader(bag) as reader:
        return [STORE.deserialize_cdr(raw, conn.msgtype).position[0] for conn, _, raw in reader.messages()]


def _wait_for_failure(rec, timeout=5.0):
    end = time.monotonic() + timeout
    while rec.check() is None and time.monotonic() < end:
        time.sleep(0.01)
    return rec.failure


def test_a_failing_write_is_reported_and_the_split_closed_with_what_it_holds(tmp_path, monkeypatch):
    write = McapWriter.write

    def full_disk_in_second_split(self, *args):
        if self.path.parent.name == "w_001":
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, *args)

    monkeypatch.setattr(McapWriter, "write", full_disk_in_second_split)
    rec = SplitBagRecorder(tmp_path, TOPICS, split_s=0.3, session="w")
    sent = 0
    while rec.check() is None and sent < 100:
        rec.record("/joint_states", _joint_state(sent), sent)
        sent += 1
        time.sleep(0.02)
    failed = time.time()
    assert "No space left on device" in rec.failure and str(tmp_path / "w_001") in rec.failure
    assert rec.failed_at <= failed
    for i in range(5):  # after the failure: counted, not queued
        rec.record("/joint_states", _joint_state(i), i)
    bags = rec.close()
    assert bags == [tmp_path / "w_000", tmp_path / "w_001"]
    assert _positions(bags[0]) == [float(i) for i in range(rec.written)] and _positions(bags[1]) == []
    assert "closed" in rec.salvage and rec.written + rec.dropped == sent + 5
    assert rec.stats()["failure"] == rec.failure


def test_a_full_disk_at_flush_is_reported_and_the_split_rebuilt_from_the_disk(tmp_path, monkeypatch):
    close_chunk, flushed = McapWriter.close_chunk, []

    def full_after_first_chunk(self):
        if ".reindex" not in self.path.parts and flushed:  # the rebuild writes elsewhere
            raise OSError(errno.ENOSPC, "No space left on device")
        flushed.append(len(self.chunk.msgs[1]))
        close_chunk(self)

    monkeypatch.setattr(McapWriter, "close_chunk", full_after_first_chunk)
    rec = SplitBagRecorder(tmp_path, TOPICS, session="d", flush_s=0.1)
    sent = 0
    while rec.check() is None and sent < 200:
        rec.record("/joint_states", _joint_state(sent), sent)
        sent += 1
        time.sleep(0.01)
    assert "No space left on device" in rec.failure and str(tmp_path / "d_000") in rec.failure
    bags = rec.close()
    assert bags == [tmp_path / "d_000"] and "rebuilt" in rec.salvage
    assert _positions(bags[0]) == [float(i) for i in range(flushed[0])]  # the chunk on disk, read back
    assert not (tmp_path / "d_000" / ".reindex").exists()


@pytest.mark.parametrize("deleted", ["split", "directory"])
def test_a_deleted_bag_directory_is_reported_within_1s(tmp_path, deleted):
    directory = tmp_path / "bags"
    rec = SplitBagRecorder(directory, TOPICS, session="x")
    for i in range(5):
        rec.record("/joint_states", _joint_state(i), i)
    time.sleep(0.3)
    assert open_splits(directory) == [directory / "x_000"]
    if deleted == "split":
        deleted_at, splits = delete_open_splits(directory)
        assert splits == [directory / "x_000"]
    else:
        deleted_at = time.time()
        shutil.rmtree(directory)
    failure = _wait_for_failure(rec)
    assert failure and "deleted or moved" in failure and str(directory / "x_000" / "x_000.mcap") in failure
    assert rec.failed_at - deleted_at < 1.0
    rec.record("/joint_states", _joint_state(9), 9)
    assert rec.close() == [] and rec.dropped == 1
    assert "left without metadata.yaml" in rec.salvage and "no longer exists" in rec.salvage


def test_any_writer_exception_stops_it_with_the_reason(tmp_path):
    rec = SplitBagRecorder(tmp_path, TOPICS, session="k")
    rec.record("/joint_states", _joint_state(0), 0)
    rec.record("/not_recorded", b"", 1)
    failure = _wait_for_failure(rec)
    assert failure == f"bag writer stopped at {tmp_path / 'k_000'}: KeyError: '/not_recorded'"
    assert rec.close() == [tmp_path / "k_000"] and _positions(tmp_path / "k_000") == [0.0]


def test_a_directory_that_cannot_be_created_is_a_failure_not_an_exception(tmp_path):
    (tmp_path / "file").write_text("")
    rec = SplitBagRecorder(tmp_path / "file" / "bags", TOPICS)
    assert rec.check().startswith(f"cannot start recording in {tmp_path / 'file' / 'bags'}: ")
    rec.record("/joint_states", _joint_state(0), 0)
    assert rec.close() == [] and rec.dropped == 1


def test_recorders_started_in_the_same_second_get_their_own_directories(tmp_path):
    named = [SplitBagRecorder(tmp_path, TOPICS, session="same") for _ in range(3)]
    stamped = [SplitBagRecorder(tmp_path, TOPICS) for _ in range(2)]  # session_<second>, likely the same
    recorders = named + stamped
    assert [r.session for r in named] == ["same", "same_2", "same_3"]
    assert stamped[0].session != stamped[1].session
    assert not any(r.recovered for r in recorders)  # another recorder's open split is not a crash's
    for i, rec in enumerate(recorders):
        rec.record("/joint_states", _joint_state(i), i)
    bags = [rec.close() for rec in recorders]
    assert [_positions(b[0]) for b in bags] == [[float(i)] for i in range(len(recorders))]
    assert all(r.failure is None for r in recorders)


CRASH = """
import json, os, signal, sys, time
from snn_control.runtime.recording import SplitBagRecorder
rec = SplitBagRecorder(sys.argv[1], {"/joint_states": "sensor_msgs/msg/JointState"}, session="crash", flush_s=0.1)
for i, data in enumerate(json.loads(sys.argv[2])):
    rec.record("/joint_states", bytes.fromhex(data), i)
time.sleep(0.6)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_split_a_crash_left_is_reindexed_at_the_next_start(tmp_path):
    messages = json.dumps([_joint_state(i).hex() for i in range(20)])
    done = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path), messages], cwd=REPO, timeout=60,
                          capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    split = tmp_path / "crash_000"
    assert not (split / "metadata.yaml").exists()
    with open(split / "crash_000.mcap", "ab") as fh:  # and a record the crash cut
        fh.write(RECORD.pack(0x06, 1000) + b"\0" * 10)
    rec = SplitBagRecorder(tmp_path, TOPICS, session="crash")
    assert rec.session == "crash_2"
    assert [(r.path, r.reindexed) for r in rec.recovered] == [(split, True)]
    assert "20 messages" in rec.recovered[0].message
    rec.close()
    assert _positions(split) == [float(i) for i in range(20)]
    with open(split / "crash_000.mcap", "rb") as fh:
        assert sum(1 for _ in make_reader(fh).iter_messages()) == 20


def test_a_split_that_cannot_be_reindexed_is_reported_and_left_alone(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    (tmp_path / "junk_000").mkdir()
    (tmp_path / "junk_000" / "junk_000.mcap").write_bytes(b"not an mcap file")
    empty = Writer(tmp_path / "empty_000", version=9, storage_plugin=StoragePlugin.MCAP)
    empty.open()  # header only: cut before its first chunk
    empty.abort()
    before = {p: p.read_bytes() for p in tmp_path.glob("*/*")}
    rec = SplitBagRecorder(tmp_path, TOPICS, session="next")
    rec.close()
    reports = {r.path.name: r for r in rec.recovered}
    assert not reports["junk_000"].reindexed and not reports["empty_000"].reindexed
    assert f"{tmp_path / 'junk_000' / 'junk_000.mcap'} is not an MCAP file" in reports["junk_000"].message
    assert "holds no complete message" in reports["empty_000"].message
    assert {p: p.read_bytes() for p in before} == before and not (tmp_path / "junk_000" / "metadata.yaml").exists()
