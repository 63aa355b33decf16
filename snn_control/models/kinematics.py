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
        self._steps = []  # (R_origin, p_origin, axis skew or None)
        for j in prefix:
            rotation = _rotation_rpy(j["rpy"])
            if j["name"] in joints:
                if j["kind"] not in ("revolute", "continuous"):
                    raise KinematicsError(f"{urdf}: variable joint {j['name']!r} is {j['kind']}, only revolute is supported")
                self._steps.append((rotation, j["xyz"], _skew(j["axis"] / np.linalg.norm(j["axis"]))))
            else:
                r, p = _joint_transform(j["kind"], j["axis"], fixed.get(j["name"], 0.0))
                self._steps.append((rotation @ r, j["xyz"] + rotation @ p, None))
        tails = []
        for chain in chains:
            rotation, point = np.eye(3), np.zeros(3)
            for j in chain[last + 1:]:
                r, p = _joint_transform(j["kind"], j["axis"], fixed.get(j["name"], 0.0))
                point = point + rotation @ (j["xyz"] + _rotation_rpy(j["rpy"]) @ p)
                rotation = rotation @ _rotation_rpy(j["rpy"]) @ r
            tails.append(point)
        self._tail = np.mean(tails, axis=0)
        self._torch_cache: dict[Any, list] = {}

    def _constants(self, like: torch.Tensor) -> list:
        key = (like.dtype, like.device)
        if key not in self._torch_cache:
            def t(a):
                return None if a is None else torch.as_tensor(a, dtype=like.dtype, device=like.device)
            self._torch_cache[key] = [[t(r), t(p), t(k), t(k @ k if k is not None else None)]
                                      for r, p, k in self._steps] + [t(self._tail)]
        return self._torch_cache[key]

    def __call__(self, q):
        """Effector position ``(..., 3)`` for joint angles ``q (..., n)`` (rad); torch or numpy."""
        if isinstance(q, torch.Tensor):
            *steps, tail = self._constants(q)
            eye = torch.eye(3, dtype=q.dtype, device=q.device)
            sin, cos = torch.sin, torch.cos
        else:
            q = np.asarray(q, dtype=np.float64)
            steps = [(r, p, k, None if k is None else k @ k) for r, p, k in self._steps]
            tail, eye = self._tail, np.eye(3)
            sin, cos = np.sin, np.cos
        rotation, position = None, None
        i = 0
        for r, p, k, k2 in steps:
            position = p if position is None else position + (rotation @ p[:, None])[..., 0]
            rotation = r if rotation is None else rotation @ r
            if k is not None:  # Rodrigues: R(theta) = I + sin K + (1 - cos) K^2
                s, c = sin(q[..., i])[..., None, None], cos(q[..., i])[..., None, None]
                rotation = rotation @ (eye + s * k + (1 - c) * k2)
                i += 1
        return position + (rotation @ tail[:, None])[..., 0]


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
        self.register_buffer("gain", torch.zeros(n))  # per joint, fitted by calibrate()

    def radians(self, q_scaled):
        lower, half = self._lower, self._half_range
        if isinstance(q_scaled, torch.Tensor):
            lower, half = (torch.as_tensor(a, dtype=q_scaled.dtype) for a in (lower, half))
        return lower + (q_scaled + 1.0) * half

    def next_obs(self, obs, change):
        """Next observation from ``obs`` and the learned ``change`` (both ``(..., O)``, obs
        units); torch or numpy. The effector entries of ``change`` are not used."""
        torch_in = isinstance(obs, torch.Tensor)
        gain = self.gain if torch_in else self.gain.detach().double().numpy()
        v0, q0, ee0 = obs[..., self.vel], obs[..., self.pos], obs[..., self.eff]
        v1 = v0 + change[..., self.vel]
        q1 = q0 + gain * (v0 + v1) + change[..., self.pos]
        ee1 = ee0 + self.fk(self.radians(q1)) - self.fk(self.radians(q0))
        cat = torch.cat if torch_in else np.concatenate
        return cat([q1, v1, ee1], -1)

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
        typical = np.maximum(delta.std(0), 1e-4)
        scale = typical.copy()
        scale[self.pos] = np.maximum((dq - gain * v_sum).std(0), 1e-6)
        return scale, typical
