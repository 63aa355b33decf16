"""Known kinematics as a prior of the forward model: what a robot's URDF already says.

A robot's kinematics are known exactly; its dynamics (inertia, friction, payload) are
what a forward model has to learn. :class:`KinematicPrior` lets the spiking network
predict only the joint velocities' change and derives the rest:

    v'  = v + change_v                           (learned: the dynamics)
    q'  = q + gain * (v + v') + change_q         (trapezoidal integration, gain fitted;
                                                  change_q a small learned residual)
    ee' = ee + fk(q') - fk(q)                    (forward kinematics from the URDF)

``ee + fk(q') - fk(q)`` rather than ``fk(q')`` keeps any constant offset between the
observed effector and the URDF's (a held joint slightly off its target, a tool).

The task describes itself in a plain dict (the env's ``kinematic_layout``), so this
module needs no env: ``urdf`` (path), ``base_link``, ``joints`` (variable joints, obs
order), ``fixed`` (values of the other movable joints), ``effector_links`` (their frame
origins are averaged), and obs slices ``position`` / ``velocity`` / ``effector`` with
``position_lower`` / ``position_upper`` (the obs holds positions scaled to [-1, 1]).
Forward kinematics run on torch tensors (training) and numpy arrays (the controller's
batch-1 path) alike.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch
from torch import nn


class KinematicsError(ValueError):
    """A URDF or layout the kinematic prior cannot use."""


def _rotation_rpy(rpy: np.ndarray) -> np.ndarray:
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx  # URDF: fixed-axis roll, pitch, yaw


def _skew(axis: np.ndarray) -> np.ndarray:
    x, y, z = axis
    return np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]], dtype=np.float64)


def _joint_transform(kind: str, axis: np.ndarray, value: float) -> tuple[np.ndarray, np.ndarray]:
    if kind in ("revolute", "continuous"):
        k = _skew(axis)
        return np.eye(3) + np.sin(value) * k + (1 - np.cos(value)) * k @ k, np.zeros(3)
    if kind == "prismatic":
        return np.eye(3), axis * value
    return np.eye(3), np.zeros(3)


class ChainKinematics:
    """Position of the mean of ``effector_links``' frames as a function of ``joints``."""

    def __init__(self, urdf: str | Path, base_link: str, joints: list[str], fixed: dict[str, float],
                 effector_links: list[str]) -> None:
        try:
            root = ET.parse(str(urdf)).getroot()
        except (OSError, ET.ParseError) as exc:
            raise KinematicsError(f"cannot read URDF {urdf}: {exc}") from exc
        by_child = {}
        for j in root.findall("joint"):
            origin = j.find("origin")
            axis = j.find("axis")
            by_child[j.find("child").get("link")] = dict(
                name=j.get("name"), kind=j.get("type"), parent=j.find("parent").get("link"),
                xyz=np.array([float(v) for v in (origin.get("xyz", "0 0 0") if origin is not None else "0 0 0").split()]),
                rpy=np.array([float(v) for v in (origin.get("rpy", "0 0 0") if origin is not None else "0 0 0").split()]),
                axis=np.array([float(v) for v in (axis.get("xyz") if axis is not None else "1 0 0").split()]),
            )
        chains = []
        for link in effector_links:
            chain = []
            while link != base_link:
                if link not in by_child:
                    raise KinematicsError(f"{urdf}: no joint path from {base_link!r} to {link!r}")
                chain.append(by_child[link])
                link = by_child[link]["parent"]
            chains.append(chain[::-1])
        # Joints up to the last variable one are shared by every effector link (a serial
        # arm); what follows is rigid and collapses into one point in that joint's frame.
        names = [[j["name"] for j in c] for c in chains]
        last = max(n.index(joints[-1]) if joints[-1] in n else -1 for n in names)
        if last < 0 or any(n[: last + 1] != names[0][: last + 1] for n in names):
            raise KinematicsError(f"{urdf}: {effector_links} do not hang off one chain ending at {joints[-1]!r}")
        prefix = chains[0][: last + 1]
        if [j["name"] for j in prefix if j["name"] in joints] != list(joints):
            raise KinematicsError(f"{urdf}: joints {joints} are not in chain order {[j['name'] for j in prefix]}")
        self._steps = []  # (R_origin, p_origin, axis skew K or None, K^2, axis)
        for j in prefix:
            rotation = _rotation_rpy(j["rpy"])
            if j["name"] in joints:
                if j["kind"] not in ("revolute", "continuous"):
                    raise KinematicsError(f"{urdf}: variable joint {j['name']!r} is {j['kind']}, only revolute is supported")
                axis = j["axis"] / np.linalg.norm(j["axis"])
                self._steps.append((rotation, j["xyz"], _skew(axis), _skew(axis) @ _skew(axis), axis))
            else:
                r, p = _joint_transform(j["kind"], j["axis"], fixed.get(j["name"], 0.0))
                self._steps.append((rotation @ r, j["xyz"] + rotation @ p, None, None, None))
        tails = []
        for chain in chains:
            rotation, point = np.eye(3), np.zeros(3)
            for j in chain[last + 1:]:
                r, p = _joint_transform(j["kind"], j["axis"], fixed.get(j["name"], 0.0))
                point = point + rotation @ (j["xyz"] + _rotation_rpy(j["rpy"]) @ p)
                rotation = rotation @ _rotation_rpy(j["rpy"]) @ r
            tails.append(point)
        self._tail = np.mean(tails, axis=0)
        zero = np.zeros((3, 3))
        self._arrays = (
            np.array([r for r, *_ in self._steps]), np.array([p for _, p, *_ in self._steps]),
            np.array([zero if k is None else k for _, _, k, _, _ in self._steps]),
            np.array([zero if k2 is None else k2 for *_, k2, _ in self._steps]),
            np.array([np.zeros(3) if a is None else a for *_, a in self._steps]),
            np.array([k is not None for _, _, k, _, _ in self._steps]), self._tail,
        )

    def forward_with_jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Effector ``(B, 3)`` and its Jacobian ``(B, 3, n)`` for joint angles ``q (B, n)``
        (rad), in float64 numpy: a revolute joint's column is ``axis x (effector - joint)``."""
        q = np.ascontiguousarray(q, dtype=np.float64)
        effector = np.empty((q.shape[0], 3))
        jacobian = np.empty((q.shape[0], 3, q.shape[1]))
        _chain(q, *self._arrays, effector, jacobian)
        return effector, jacobian

    def __call__(self, q):
        """Effector position ``(..., 3)`` for joint angles ``q (..., n)`` (rad). numpy in,
        numpy out; torch in, torch out and differentiable (the analytic Jacobian: a few
        numpy calls instead of ~60 tiny autograd ops per control step)."""
        if isinstance(q, torch.Tensor):
            return _ForwardKinematics.apply(q, self)
        q = np.asarray(q, dtype=np.float64)
        effector, _ = self.forward_with_jacobian(q.reshape(-1, q.shape[-1]))
        return effector.reshape(*q.shape[:-1], 3)


@numba.njit(cache=True, nogil=True)
def _chain(q, r_origin, p_origin, k, k2, axis, variable, tail, effector, jacobian):  # pragma: no cover - compiled
    """Walk the chain for each row of ``q``: frame origin += R p; R = R R_origin; for a
    variable joint, note its origin and axis, then R = R (I + sin K + (1 - cos) K^2)."""
    n_steps = r_origin.shape[0]
    n_joints = q.shape[1]
    rot = np.empty((3, 3))
    tmp = np.empty((3, 3))
    pos = np.empty(3)
    origins = np.empty((n_joints, 3))
    axes = np.empty((n_joints, 3))
    for b in range(q.shape[0]):
        rot[:] = 0.0
        for i in range(3):
            rot[i, i] = 1.0
        pos[:] = 0.0
        j = 0
        for step in range(n_steps):
            for i in range(3):
                pos[i] += rot[i, 0] * p_origin[step, 0] + rot[i, 1] * p_origin[step, 1] + rot[i, 2] * p_origin[step, 2]
            for i in range(3):
                for c in range(3):
                    tmp[i, c] = rot[i, 0] * r_origin[step, 0, c] + rot[i, 1] * r_origin[step, 1, c] + rot[i, 2] * r_origin[step, 2, c]
            rot[:] = tmp
            if variable[step]:
                for i in range(3):
                    origins[j, i] = pos[i]
                    axes[j, i] = rot[i, 0] * axis[step, 0] + rot[i, 1] * axis[step, 1] + rot[i, 2] * axis[step, 2]
                s, co = np.sin(q[b, j]), 1.0 - np.cos(q[b, j])
                for i in range(3):
                    for c in range(3):
                        m0 = (1.0 if c == 0 else 0.0) + s * k[step, 0, c] + co * k2[step, 0, c]
                        m1 = (1.0 if c == 1 else 0.0) + s * k[step, 1, c] + co * k2[step, 1, c]
                        m2 = (1.0 if c == 2 else 0.0) + s * k[step, 2, c] + co * k2[step, 2, c]
                        tmp[i, c] = rot[i, 0] * m0 + rot[i, 1] * m1 + rot[i, 2] * m2
                rot[:] = tmp
                j += 1
        for i in range(3):
            effector[b, i] = pos[i] + rot[i, 0] * tail[0] + rot[i, 1] * tail[1] + rot[i, 2] * tail[2]
        for j in range(n_joints):
            d0 = effector[b, 0] - origins[j, 0]
            d1 = effector[b, 1] - origins[j, 1]
            d2 = effector[b, 2] - origins[j, 2]
            jacobian[b, 0, j] = axes[j, 1] * d2 - axes[j, 2] * d1
            jacobian[b, 1, j] = axes[j, 2] * d0 - axes[j, 0] * d2
            jacobian[b, 2, j] = axes[j, 0] * d1 - axes[j, 1] * d0


class _ForwardKinematics(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: torch.Tensor, chain: ChainKinematics) -> torch.Tensor:
        flat = q.detach().reshape(-1, q.shape[-1]).cpu().double().numpy()
        effector, jacobian = chain.forward_with_jacobian(flat)
        ctx.save_for_backward(torch.as_tensor(jacobian, dtype=q.dtype, device=q.device))
        ctx.batch_shape = q.shape[:-1]
        return torch.as_tensor(effector, dtype=q.dtype, device=q.device).reshape(*q.shape[:-1], 3)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (jacobian,) = ctx.saved_tensors
        grad_q = (grad.reshape(-1, 1, 3) @ jacobian)[:, 0]
        return grad_q.reshape(*ctx.batch_shape, jacobian.shape[-1]), None


class KinematicPrior(nn.Module):
    """The forward model's output head for a task with known kinematics (module docstring)."""

    def __init__(self, layout: dict[str, Any], obs_dim: int) -> None:
        super().__init__()
        self.layout = dict(layout)
        self.fk = ChainKinematics(layout["urdf"], layout["base_link"], list(layout["joints"]),
                                  dict(layout.get("fixed", {})), list(layout["effector_links"]))
        self.pos, self.vel, self.eff = (slice(*layout[k]) for k in ("position", "velocity", "effector"))
        n = len(layout["joints"])
        if (self.pos.start, self.pos.stop, self.vel.stop, self.eff.stop) != (0, n, 2 * n, obs_dim) or \
                (self.vel.start, self.eff.start) != (n, 2 * n) or obs_dim != 2 * n + 3:
            raise KinematicsError(f"kinematic layout must split the {obs_dim} obs entries into {n} positions, "
                                  f"{n} velocities and a 3-D effector, in that order; got {layout}")
        lower = np.asarray(layout["position_lower"], dtype=np.float64)
        upper = np.asarray(layout["position_upper"], dtype=np.float64)
        self._lower, self._half_range = lower, 0.5 * (upper - lower)
        # Kept in float64 and cast to the input's dtype when used: a float64 copy of the model
        # then scales with the exact limits, as the batch-1 numpy path does (stored in float32,
        # the limits' rounding moved a float64 prediction by 1e-10); float32 training sees the same
        # rounded values as before.
        self.register_buffer("lower", torch.as_tensor(lower, dtype=torch.float64), persistent=False)
        self.register_buffer("half_range", torch.as_tensor(self._half_range, dtype=torch.float64), persistent=False)
        self._gain_numpy: np.ndarray | None = None  # the batch-1 path's copy of the gain
        self.register_buffer("gain", torch.zeros(n))  # per joint, fitted by calibrate()

    def radians(self, q_scaled):
        if isinstance(q_scaled, torch.Tensor):
            return self.lower.to(q_scaled.dtype) + (q_scaled + 1.0) * self.half_range.to(q_scaled.dtype)
        return self._lower + (q_scaled + 1.0) * self._half_range

    def next_obs(self, obs, change):
        """Next observation from ``obs`` and the learned ``change`` (both ``(..., O)``, obs
        units); torch or numpy. The effector entries of ``change`` are not used."""
        v0, q0, ee0 = obs[..., self.vel], obs[..., self.pos], obs[..., self.eff]
        v1 = v0 + change[..., self.vel]
        if isinstance(obs, torch.Tensor):
            q1 = q0 + self.gain * (v0 + v1) + change[..., self.pos]
            both = self.fk(self.radians(torch.stack([q1, q0])))  # one call for both
            return torch.cat([q1, v1, ee0 + both[0] - both[1]], -1)
        if self._gain_numpy is None:
            self._gain_numpy = self.gain.detach().double().numpy().copy()
        q1 = q0 + self._gain_numpy * (v0 + v1) + change[..., self.pos]
        both = self.fk(self.radians(np.stack([q1, q0])))
        return np.concatenate([q1, v1, ee0 + both[0] - both[1]], -1)

    def _load_from_state_dict(self, *args, **kwargs):
        self._gain_numpy = None  # the numpy copy follows a loaded gain
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def calibrate(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fit the integration gain on episodes ``obs (N, T+1, O)``. Returns the scale of the
        learned change per entry (velocity change; position residual) and the typical
        one-step change of every entry (the loss's units)."""
        obs = obs.astype(np.float64)
        delta = np.diff(obs, axis=1).reshape(-1, obs.shape[-1])
        v_sum = (obs[:, :-1, self.vel] + obs[:, 1:, self.vel]).reshape(-1, self.vel.stop - self.vel.start)
        dq = delta[:, self.pos]
        gain = (dq * v_sum).sum(0) / np.maximum((v_sum * v_sum).sum(0), 1e-12)
        self.gain.copy_(torch.as_tensor(gain, dtype=torch.float32))
        self._gain_numpy = None
        typical = np.maximum(delta.std(0), 1e-4)
        scale = typical.copy()
        scale[self.pos] = np.maximum((dq - gain * v_sum).std(0), 1e-6)
        return scale, typical
