"""What every node's ``main`` shares: rclpy start-up, an orderly exit on every way out, exit codes.

rclpy's own signal handlers shut the context down at once on SIGINT or SIGTERM, after
which nothing can be published: a controller could not send the zero torque a real arm
needs, since it keeps the last one. So nodes start with rclpy's handlers off; a signal
only asks the node to stop, the main loop notices within ``POLL_S``, and the node's
``close()`` runs while the context still works (the controller ramps to zero there).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

POLL_S = 0.05  # s between checks for a stop request while spinning


class StartupError(RuntimeError):
    """A node refuses to start (bad parameters, a checkpoint that does not fit); exit code 2."""


class StopRequest:
    """Set by a signal, a failed thread or the node itself; the main loop stops on it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self.exit_code = 0

    def set(self, reason: str, exit_code: int = 0) -> None:
        if not self.event.is_set():
            self.reason, self.exit_code = reason, exit_code
            self.event.set()


def run_node(make: Callable[[], Node], args: list[str] | None = None, threads: int = 1) -> int:
    """Init rclpy, build the node, spin until a signal, a node's stop request or an error;
    then ``node.close()`` (if any) before the context goes down. Exit codes: 0 on a signal
    or a requested stop, 1 on an error or a failed node thread, 2 if the node refused to start.

    ``threads`` 1 (the default): a single-threaded executor, the least Python per wake-up.
    rclpy's multi-threaded executor once starved the control loop (52 % deadline misses with
    one extra Python subscriber on the 2-core machine); since the controller's loop takes its
    own joint states, both show 0 % there (``python bench/control_loop.py --rates 50
    --listeners 1 [--executor-threads 2]``, docs/performance.md).
    The environment variable ``SNN_CONTROL_EXECUTOR_THREADS`` overrides it (benchmarks)."""
    threads = int(os.environ.get("SNN_CONTROL_EXECUTOR_THREADS", threads))
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopRequest()

    def catch_signals() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda n, _f: stop.set(signal.Signals(n).name))

    catch_signals()
    node = None
    code = 0
    try:
        try:
            node = make()
        except StartupError as exc:
            print(f"[snn_control] refusing to start: {exc}", file=sys.stderr)
            return 2
        node.stop_request = stop  # a node may ask to stop (a failed thread, a fault)
        catch_signals()  # again: a library imported while the node was built may have replaced them
        executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        try:
            while not stop.event.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=POLL_S)
        except Exception as exc:  # noqa: BLE001 - a callback failed: stop in order, then report
            stop.set(f"{type(exc).__name__} in a callback: {exc}", 1)
            print(f"[snn_control] {stop.reason}", file=sys.stderr)
        if getattr(node, "fatal_error", None):  # a node thread failed
            stop.set(node.fatal_error, 1)
            print(f"[snn_control] {node.fatal_error}; exiting with status 1", file=sys.stderr)
        code = stop.exit_code
        return code
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - still shut down
                    print(f"[snn_control] closing failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()


def _declare(node: Node, name: str, default):
    """One parameter; a whole number given for a real one (``rate:=100``) is taken as that
    real, any other mismatch is refused naming the parameter and the type it needs."""
    given = node._parameter_overrides.get(name)
    if isinstance(default, float) and given is not None and given.type_ == Parameter.Type.INTEGER:
        node._parameter_overrides[name] = Parameter(name, Parameter.Type.DOUBLE, float(given.value))
    try:
        return node.declare_parameter(name, default).value
    except InvalidParameterTypeException:
        raise StartupError(f"parameter {name}: expected {type(default).__name__} like its default "
                           f"{default!r}, got {given.value!r}") from None


def declare(node: Node, **defaults) -> dict:
    """Declare the node's parameters with defaults (types from the defaults) and return their
    values. Any other parameter it was given is refused by name: rclpy would ignore it, and
    a misspelt setting would silently keep its default."""
    values = {name: _declare(node, name, value) for name, value in defaults.items()}
    declared = set(node.list_parameters([], 0).names)
    unknown = sorted(set(node._parameter_overrides) - declared)  # what the node was given
    if unknown:
        raise StartupError(f"unknown parameter(s) {unknown}; known: {sorted(declared)}")
    return values
