"""``trainer``: fine-tunes the running controller from recorded bags and hot-swaps the result.

Every ``watch_period_s`` it looks in ``bag_dir`` for closed bags (a split the recorder has
finished has its ``metadata.yaml``) that it has not used yet; or it takes the ``bags``
parameter's list once. When the new bags hold at least ``min_windows`` usable windows (and
as many as fine-tuning needs) it fine-tunes the running checkpoint on them in a worker
thread (:func:`snn_control.predictive.finetune.finetune`). The candidate must pass the gate
against both the running model and the model this node started with (its first
``checkpoint``, the session start), so that rounds cannot drift further than one tolerance
from where the session began. An accepted candidate is written as ``output_dir/vNNNN/``;
then the controller's ``checkpoint`` parameter is set to it and its ``~/reload_model``
called, so the controller swaps at a tick boundary. A rejected one is reported with every
check's figures. A round's bags are marked used in ``output_dir/used_bags.json`` (kept
across restarts) only when the round completes, written or rejected; a round that fails
midway leaves them for the next. Progress goes to ``~/progress`` (std_msgs/String, JSON)
and the log. Service ``~/finetune_now`` starts a round with whatever new bags there are.
Corrupt or foreign bags are skipped with a message (and marked, as no round can use
them); no bag is changed or deleted.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..paths import resolve
from .common import StartupError, declare, run_node


def parse_overrides(items: list[str]) -> dict:
    """``validation_env``: ``["hand_payload_kg=1.0"]`` -> ``{"hand_payload_kg": 1.0}``."""
    from ..config import ConfigError, key_values

    try:
        return key_values(items, "validation_env entry")
    except ConfigError as exc:
        raise StartupError(str(exc)) from exc


def closed_bags(directory: Path) -> list[Path]:
    """Bag directories under ``directory`` whose writer has closed them (``metadata.yaml``)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and (p / "metadata.yaml").is_file())


class TrainerNode(Node):
    def __init__(self) -> None:
        super().__init__("trainer")
        from ..predictive.finetune import plain_settings

        # One parameter per plain fine-tuning setting, named, typed and defaulted as in
        # FinetuneSettings; its env_overrides come as validation_env's KEY=VALUE items.
        settings = plain_settings()
        p = declare(self, checkpoint="", bag_dir="bags", bags=[""], output_dir="runs/finetuned",
                    controller="/snn_controller", watch_period_s=10.0, min_windows=100, validation_env=[""],
                    **settings)
        if not p["checkpoint"]:
            raise StartupError("parameter 'checkpoint' (the model the controller runs) is not set")
        self.checkpoint = resolve(p["checkpoint"])
        if not (self.checkpoint / "io_spec.json").is_file():
            raise StartupError(f"checkpoint {self.checkpoint}: not a model directory")
        self.settings = self._settings({name: p[name] for name in settings}, parse_overrides(p["validation_env"]))
        self.session_start = self.checkpoint  # every candidate is gated against this one too
        self.params = p
        self.bag_dir = Path(p["bag_dir"]).expanduser()
        self.given = [Path(b).expanduser() for b in p["bags"] if b]
        self.output_dir = Path(p["output_dir"]).expanduser()
        from ..predictive.bag_ledger import BagLedger

        self.used = BagLedger(self.output_dir)
        self.rounds = 0
        self._busy = threading.Lock()
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.progress_pub = self.create_publisher(String, "~/progress", latched)
        clients = ReentrantCallbackGroup()  # answered while the worker thread waits on them
        controller = p["controller"].rstrip("/")
        self.set_params = self.create_client(SetParameters, f"{controller}/set_parameters", callback_group=clients)
        self.reload = self.create_client(Trigger, f"{controller}/reload_model", callback_group=clients)
        self.create_service(Trigger, "~/finetune_now", self.on_finetune_now)
        self.create_timer(p["watch_period_s"], self.on_watch)
        if self.used.problem:
            self._report("error", message=self.used.problem)
        self._report("idle", message=f"watching {self.given or self.bag_dir} for bags ({len(self.used)} used "
                                     f"before); running model {self.checkpoint}, the session start (every "
                                     f"candidate is gated against it too)")

    def _settings(self, values: dict, env_overrides: dict):
        """The fine-tuning settings; settings that no bag can make work are refused at start,
        not once per round."""
        from ..config import ConfigError, load as load_config
        from ..predictive.finetune import FinetuneError, check_settings, settings_from

        try:
            settings = settings_from(values, env_overrides, "parameters")
            check_settings(settings, load_config(self.checkpoint / "config.yaml"))
        except (FinetuneError, ConfigError) as exc:
            raise StartupError(f"fine-tuning settings: {exc}") from None
        return settings

    # -- progress ---------------------------------------------------------------------
    def _report(self, state: str, log: bool = True, **fields) -> None:
        msg = {"state": state, "round": self.rounds, "checkpoint": str(self.checkpoint), **fields}
        self.progress_pub.publish(String(data=json.dumps(msg)))
        if log:
            text = fields.get("message", "")
            line = f"{state}" + (f": {text}" if text else "")
            # One call site per severity: rclpy refuses a call site whose severity changes.
            if state in ("rejected", "error"):
                self.get_logger().warning(line)
            else:
                self.get_logger().info(line)

    # -- triggers ---------------------------------------------------------------------
    def new_bags(self) -> list[Path]:
        candidates = self.given if self.given else closed_bags(self.bag_dir)
        return [b for b in candidates if b not in self.used]

    def on_watch(self) -> None:
        self._start_round(forced=False)

    def on_finetune_now(self, request, response):
        started = self._start_round(forced=True)
        response.success = started
        response.message = "fine-tuning started" if started else "busy or no new bags"
        return response

    def _start_round(self, forced: bool) -> bool:
        bags = self.new_bags()
        if not bags or not self._busy.acquire(blocking=False):
            return False
        threading.Thread(target=self._round, args=(bags, forced), name="finetune", daemon=True).start()
        return True

    # -- one round (worker thread) ------------------------------------------------------
    def _round(self, bags: list[Path], forced: bool) -> None:
        from ..predictive.bags import read_sessions
        from ..models.checkpoint import load_model
        from ..predictive.finetune import FinetuneError, finetune, windows_needed, write_version

        try:
            _, _, spec, _ = load_model(self.checkpoint)
            sessions = read_sessions(bags, spec, self.settings.window)
            for reason in sessions.skipped:
                self._report("skipped_bag", message=reason)
            self.used.add(set(bags) - set(sessions.bags_read))  # unreadable: no round can use them
            windows = len(sessions.obs)
            needed = max(self.params["min_windows"], windows_needed(self.settings))
            if windows < needed and not forced:
                self._report("waiting", message=f"{windows} usable windows in {len(bags)} new bag(s); "
                                                f"fine-tuning from {needed}", log=False)
                return
            self.rounds += 1
            self._report("reading", message=f"round {self.rounds}: {windows} windows from "
                                            f"{len(sessions.bags_read)} bag(s)")
            with self.used.marking(sessions.bags_read):  # only a round that completes uses its bags up
                report, candidate = finetune(self.checkpoint, sessions, self.settings, self._progress,
                                             session_start_dir=self.session_start)
                path = None if candidate is None else write_version(self.output_dir, candidate, report)
            if path is None:
                self._report("rejected", message=report["reason"], report=report)
                return
            self._report("accepted", message=f"wrote {path}; {report['reason']}", version=path.name,
                         report=report)
            self._hot_swap(path)
        except FinetuneError as exc:  # the bags stay unmarked: later bags may make up what is missing
            self._report("waiting", message=str(exc))
        except Exception as exc:  # noqa: BLE001 - a failed round must not take the node down
            self._report("error", message=f"{type(exc).__name__}: {exc}")
        finally:
            self._busy.release()

    def _progress(self, stage: str, done: int, total: int) -> None:
        if done % 10 == 0 or done == total:
            self._report(stage, log=False, done=done, total=total)

    def _call(self, client, request, what: str, timeout_s: float = 10.0):
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError(f"{what}: service {client.srv_name} not available")
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout_s):
            raise RuntimeError(f"{what}: no answer from {client.srv_name} in {timeout_s:.0f} s")
        return future.result()

    def _hot_swap(self, path: Path) -> None:
        request = SetParameters.Request(parameters=[Parameter(
            name="checkpoint", value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                    string_value=str(path.resolve())))])
        result = self._call(self.set_params, request, "set the controller's checkpoint")
        if not all(r.successful for r in result.results):
            raise RuntimeError(f"controller refused checkpoint {path}: {[r.reason for r in result.results]}")
        answer = self._call(self.reload, Trigger.Request(), "reload the controller's model")
        if not answer.success:
            raise RuntimeError(f"controller kept its model: {answer.message}")
        self.checkpoint = path  # the next round starts from what the controller now runs
        self._report("swapped", message=f"controller loading {path.name}: {answer.message}", version=path.name)


def main(args: list[str] | None = None) -> int:
    return run_node(TrainerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
