"""What every node's ``main`` shares: rclpy start-up, a clean shutdown, exit codes."""

from __future__ import annotations

import os
import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


class StartupError(RuntimeError):
    """A node refuses to start (bad parameters, a checkpoint that does not fit); exit code 2."""


def run_node(make: Callable[[], Node], args: list[str] | None = None, threads: int = 1) -> int:
    """Init rclpy, build the node, spin until Ctrl-C or shutdown; 2 if the node refused to start.

    ``threads`` 1 (the default): a single-threaded executor, the least Python per wake-up.
    rclpy's multi-threaded executor once starved the control loop (52 % deadline misses with
    one extra Python subscriber on the 2-core machine); since the controller's tick takes its
    own joint states, both show 0 % there (``python bench/control_loop.py --rates 50
    --listeners 1 [--executor-threads 2]``, docs/performance.md).
    The environment variable ``SNN_CONTROL_EXECUTOR_THREADS`` overrides it (benchmarks)."""
    threads = int(os.environ.get("SNN_CONTROL_EXECUTOR_THREADS", threads))
    rclpy.init(args=sys.argv if args is None else args)
    node = None
    try:
        try:
            node = make()
        except StartupError as exc:
            print(f"[snn_control] refusing to start: {exc}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception:  # noqa: BLE001
            if rclpy.ok():
                raise
            # Ctrl-C shut the context down while the executor was building its wait set
        if getattr(node, "fatal_error", None):  # a node thread failed and shut the node down
            print(f"[snn_control] {node.fatal_error}; exiting with status 1", file=sys.stderr)
            return 1
        return 0
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()


def declare(node: Node, **defaults) -> dict:
    """Declare parameters with defaults (types from the defaults) and return their values."""
    return {name: node.declare_parameter(name, value).value for name, value in defaults.items()}
