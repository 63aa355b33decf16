"""The recorder node reports a lost bag directory on /diagnostics, over real DDS."""

from __future__ import annotations

import time

import pytest

from test.test_ros import start, stop, wait_for_output  # one domain, one way of starting nodes

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from snn_control.nodes.recorder import STATUS  # noqa: E402
from snn_control.runtime.recording import delete_open_splits  # noqa: E402


def _stamp(msg: DiagnosticArray) -> float:
    return msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec


def test_recorder_reports_a_deleted_bag_directory_as_error_within_1s(tmp_path):
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    node = rclpy.create_node("recorder_watcher", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    reports: list[tuple[float, DiagnosticStatus]] = []  # (stamp, the recorder's status)
    node.create_subscription(DiagnosticArray, "/diagnostics",
                             lambda m: reports.extend((_stamp(m), s) for s in m.status if s.name == STATUS), 10)

    def spin_until(condition, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not condition():
            executor.spin_once(timeout_sec=0.05)
        return condition()

    recorder = start("recorder", f"directory:={tmp_path}")
    try:
        assert wait_for_output(recorder, "recording", 60), "".join(recorder.lines)
        assert spin_until(lambda: any(s.level == DiagnosticStatus.OK for _, s in reports), 30), reports
        deleted_at, deleted = delete_open_splits(tmp_path)
        assert len(deleted) == 1
        assert spin_until(lambda: any(s.level == DiagnosticStatus.ERROR for _, s in reports), 10), reports
    finally:
        log = stop(recorder)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    stamp, error = next((t, s) for t, s in reports if s.level == DiagnosticStatus.ERROR)
    seen = float({kv.key: kv.value for kv in error.values}["failed_at"])
    print(f"first ERROR stamped {stamp - deleted_at:.3f} s after the deletion (seen by the writer after "
          f"{seen - deleted_at:.3f} s): {error.message}")
    assert stamp - deleted_at < 1.0
    assert str(deleted[0]) in error.message and "deleted or moved" in error.message
    assert "recording failed" in log and str(deleted[0]) in log, log
    assert recorder.returncode == 0 and "Traceback" not in log, log
