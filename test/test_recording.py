"""Bags written off the control path, split by time, readable by rosbags and the mcap library."""

import time

import numpy as np

from mcap.reader import make_reader
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from snn_control.runtime.recording import SplitBagRecorder

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
    from pathlib import Path

    from snn_control.training.bags import read_sessions
    from snn_control.training.checkpoint import load_model

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
