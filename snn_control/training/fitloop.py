"""The bookkeeping every trainer's fit loop shares; the trainers keep their own work
(collect, update, validate, what a checkpoint holds).

A run directory gets ``metrics.jsonl`` (one JSON line a record: the position, e.g.
``iteration`` or ``env_steps``, then the metrics with ``time/elapsed_s``), TensorBoard event
files under ``tensorboard/``, and ``best/``: the model directory of the best validation so
far. A trainer that resumes keeps ``train_state.pt`` there (:func:`load_state`,
:func:`save_state`); one that does not calls :meth:`FitLoop.start_afresh`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from tqdm.auto import tqdm

from ..models.checkpoint import atomic_write_bytes

STATE = "train_state.pt"


def load_state(run_dir: Path) -> dict[str, Any] | None:
    """The ``train_state.pt`` an interrupted run left in ``run_dir``; None for a new run."""
    path = Path(run_dir) / STATE
    return torch.load(path, weights_only=True) if path.exists() else None


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_bytes(Path(run_dir) / STATE, lambda p: torch.save(state, p))


def keep_best(run_dir: Path, metrics: dict[str, float], position: dict[str, int], save) -> bool:
    """Keep the checkpoint of the best validation so far (success, then median final
    distance) as the model directory ``run_dir/best/``, with the run's metrics up to it and
    ``best.json`` (``position``, e.g. the iteration, and the validation figures).
    ``save(directory)`` writes the model directory. Validation goals are the trainer's own,
    never the held-out ones, so picking on them leaves the held-out evaluation honest.
    Returns whether this checkpoint became the best."""
    best = Path(run_dir) / "best"
    score = [metrics["validation/success_rate"], -metrics["validation/final_distance_median"]]
    record = best / "best.json"
    if record.exists() and json.loads(record.read_text())["score"] >= score:
        return False
    save(best)
    metrics_text = (Path(run_dir) / "metrics.jsonl").read_bytes()
    atomic_write_bytes(best / "metrics.jsonl", lambda p: p.write_bytes(metrics_text))
    summary = {**position, "score": score, **{k: v for k, v in metrics.items() if k.startswith("validation/")}}
    atomic_write_bytes(record, lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    return True


class FitLoop:
    """A fit loop's run directory, TensorBoard writer, progress bar and clock. Use it as a
    context manager (it closes the writer and the bar) and :meth:`record` each step's metrics.

    ``position`` names the step count in the records (``iteration``, ``env_steps``);
    ``initial`` and ``elapsed_s`` are where a resumed run stopped."""

    def __init__(self, run_dir: str | Path, position: str, total: int, desc: str, unit: str,
                 progress: bool = True, initial: int = 0, elapsed_s: float = 0.0) -> None:
        self.run_dir, self.position = Path(run_dir), position
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.total, self.desc, self.unit, self.progress, self.initial = total, desc, unit, progress, initial
        self.elapsed_s = elapsed_s  # the trainer's clock, summed over resumed runs
        self.last: dict[str, Any] = {}

    def start_afresh(self, config) -> None:
        """For a trainer that does not resume: ``config.yaml`` at once (a run that fails
        early still says what it was), no metrics or ``best/`` of an earlier run."""
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        (self.run_dir / "metrics.jsonl").write_text("")
        shutil.rmtree(self.run_dir / "best", ignore_errors=True)

    def __enter__(self) -> FitLoop:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        self.bar = tqdm(total=self.total, initial=self.initial, disable=not self.progress, desc=self.desc,
                        unit=self.unit)
        self._mark = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        self.writer.close()

    def advance(self, step: int) -> None:
        """Move the progress bar to ``step`` (between records too)."""
        self.bar.update(step - self.bar.n)

    def record(self, step: int, metrics: dict[str, Any], save: Callable[[], None],
               save_best: Callable[[Path], None] | None = None, postfix: dict[str, str] | None = None,
               started: float | None = None) -> None:
        """Log ``metrics`` at ``step`` with ``time/elapsed_s``, then ``save()`` the checkpoint
        and, for a validated step, keep ``best/`` (``save_best(directory)`` writes a model
        directory). ``started``: when this step's work began, so the time since the last
        record (its logging and checkpoint) stays off the clock; without it the clock is the
        wall time since the loop began."""
        now = time.perf_counter()
        self.elapsed_s += now - (self._mark if started is None else started)
        self._mark = now
        metrics["time/elapsed_s"] = self.elapsed_s
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps({self.position: step, **metrics}) + "\n")
        save()
        if save_best is not None and "validation/success_rate" in metrics:
            keep_best(self.run_dir, metrics, {self.position: step}, save_best)
        if postfix:
            self.bar.set_postfix(postfix)
        self.advance(step)
        self.last = metrics
