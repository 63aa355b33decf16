"""A batched env whose copies are split over worker processes (one core each).

PyBullet steps one client at a time per process, so a batch of Panda copies in one
process uses one core. :class:`ParallelBatch` gives each of ``workers`` processes a slice
of the copies; ``step`` sends each its slice of the actions and waits for all. Copies are
the same simulations as in :func:`make_batch`, so results are identical to the serial
batch (tested). Sampling tasks stays in this process (one local copy), so a seeded
sampler gives the same tasks either way.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Any

import numpy as np

from .base import BatchedReachEnv, EnvError


def _worker(conn, task: str, num_envs: int, config: Any, first_copy: int) -> None:
    from . import make_batch

    env = None
    try:
        env = make_batch(task, num_envs, config, first_copy=first_copy)
        conn.send(("ok", env.spec))
        while True:
            command, payload = conn.recv()
            if command == "close":
                break
            try:
                result = getattr(env, command)(*payload)
                conn.send(("ok", result))
            except Exception as exc:  # noqa: BLE001 - report to the parent, keep serving
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except Exception:  # noqa: BLE001 - start-up failed: say why
        conn.send(("error", traceback.format_exc()))
    finally:
        if env is not None:
            env.close()
        conn.close()


class ParallelBatch(BatchedReachEnv):
    """``num_envs`` copies of ``task`` split as evenly as possible over ``workers`` processes."""

    def __init__(self, task: str, num_envs: int, config: Any = None, workers: int = 2) -> None:
        from . import make_batch

        if not 1 <= workers <= num_envs:
            raise EnvError(f"workers must lie in [1, {num_envs}], got {workers}")
        self.num_envs = num_envs
        self._local = make_batch(task, 1, config)  # task sampling and geometry only
        self.spec = self._local.spec
        sizes = [len(part) for part in np.array_split(np.arange(num_envs), workers)]
        self._bounds = np.cumsum([0, *sizes])
        # fork: scripts need no `if __name__ == "__main__"` guard; workers touch only numpy
        # and their own pybullet clients, none of the parent's torch state.
        context = mp.get_context("fork")
        self._conns, self._procs = [], []
        for size, first in zip(sizes, self._bounds):
            parent, child = context.Pipe()
            proc = context.Process(target=_worker, args=(child, task, size, config, int(first)), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for conn in self._conns:
            self._receive(conn)

    # -- plumbing ---------------------------------------------------------------------
    @staticmethod
    def _receive(conn):
        try:
            status, payload = conn.recv()
        except EOFError as exc:
            raise EnvError("an env worker process died") from exc
        if status != "ok":
            raise EnvError(f"env worker: {payload}")
        return payload

    def _call(self, command: str, per_worker_args=None) -> list:
        for i, conn in enumerate(self._conns):
            conn.send((command, per_worker_args[i] if per_worker_args is not None else ()))
        return [self._receive(conn) for conn in self._conns]

    def _split(self, array: np.ndarray) -> list:
        return [(array[a:b],) for a, b in zip(self._bounds[:-1], self._bounds[1:])]

    # -- BatchedReachEnv --------------------------------------------------------------
    def sample_tasks(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self._local.sample_tasks(rng, n)

    def reset_to(self, starts: np.ndarray, goals: np.ndarray) -> np.ndarray:
        starts, goals = np.asarray(starts), np.asarray(goals)
        if len(starts) != self.num_envs or len(goals) != self.num_envs:
            raise EnvError(f"{self.spec.task}: need {self.num_envs} starts and goals, "
                           f"got {len(starts)} and {len(goals)}")
        args = [(s[0], g[0]) for s, g in zip(self._split(starts), self._split(goals))]
        return np.concatenate(self._call("reset_to", args))

    def step(self, actions: np.ndarray) -> np.ndarray:
        actions = self.check_actions(actions)
        return np.concatenate(self._call("step", self._split(actions)))

    def effector_jacobians(self) -> np.ndarray:
        return np.concatenate(self._call("effector_jacobians"))

    def joint_velocities(self) -> np.ndarray:
        return np.concatenate(self._call("joint_velocities"))

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("close", ()))
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self._conns, self._procs = [], []
        self._local.close()

    def __del__(self) -> None:
        if getattr(self, "_procs", None):
            self.close()
