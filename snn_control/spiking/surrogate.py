"""Surrogate gradients for the Heaviside spike function.

Forward pass: ``s = H(v)`` with ``v = U - theta``. Backward pass: ``ds/dv`` is replaced
by a smooth pseudo-derivative whose sharpness is set by ``slope``. The slope is read on
every call, so a schedule may change it during training (Van den Berghe et al. 2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SURROGATES = ("multi_gaussian", "fast_sigmoid", "rectangular")

# Multi-Gaussian side-lobe height and width ratio (Yin et al. 2021, used by Huebotter et al. 2025).
_MG_HEIGHT = 0.15
_MG_WIDTH_RATIO = 6.0


def _gauss(v: torch.Tensor, mu: float, sigma: float) -> torch.Tensor:
    return torch.exp(-0.5 * ((v - mu) / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))


def multi_gaussian_derivative(v: torch.Tensor, slope: float) -> torch.Tensor:
    """``(1+h) N(v; 0, s) - h N(v; s, 6s) - h N(v; -s, 6s)`` with ``s = 1/slope``,
    h = 0.15, normalised to 1 at v = 0 (slope 16 gives the authors' sigma of 1/16)."""
    sigma = 1.0 / slope
    wide = _MG_WIDTH_RATIO * sigma
    raw = (1 + _MG_HEIGHT) * _gauss(v, 0.0, sigma) - _MG_HEIGHT * (
        _gauss(v, sigma, wide) + _gauss(v, -sigma, wide)
    )
    peak = (1 + _MG_HEIGHT) / (sigma * math.sqrt(2 * math.pi)) - 2 * _MG_HEIGHT * math.exp(
        -0.5 / _MG_WIDTH_RATIO**2
    ) / (wide * math.sqrt(2 * math.pi))
    return raw / peak


def fast_sigmoid_derivative(v: torch.Tensor, slope: float) -> torch.Tensor:
    """``1 / (1 + k |v|)^2`` (SuperSpike; Van den Berghe et al. 2025)."""
    return 1.0 / (1.0 + slope * v.abs()) ** 2


def rectangular_derivative(v: torch.Tensor, slope: float) -> torch.Tensor:
    """Unit-area window ``1{|v| < w/2} / w`` with width ``w = 1/slope`` (Xu et al. 2025
    (Proxy Target): w = 0.5)."""
    width = 1.0 / slope
    return (v.abs() < 0.5 * width).to(v.dtype) / width


_DERIVATIVES = {
    "multi_gaussian": multi_gaussian_derivative,
    "fast_sigmoid": fast_sigmoid_derivative,
    "rectangular": rectangular_derivative,
}

def surrogate_derivative(kind: str, v: torch.Tensor, slope: float) -> torch.Tensor:
    """The pseudo-derivative ``ds/dv`` of surrogate ``kind`` at ``v``."""
    return _DERIVATIVES[kind](v, slope)


DEFAULT_SLOPES = {"multi_gaussian": 16.0, "fast_sigmoid": 10.0, "rectangular": 2.0}


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: torch.Tensor, kind: str, slope: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(v)
        ctx.kind = kind
        ctx.slope = slope
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        return grad_out * surrogate_derivative(ctx.kind, v, ctx.slope), None, None


@dataclass
class Surrogate:
    """A spike nonlinearity with a surrogate derivative; mutable so slopes can be scheduled.

    Attributes:
        kind: one of ``SURROGATES``.
        slope: sharpness k (1/width); larger is closer to the true (Dirac) derivative.
    """

    kind: str = "multi_gaussian"
    slope: float = 16.0

    def __post_init__(self) -> None:
        if self.kind not in _DERIVATIVES:
            raise ValueError(f"unknown surrogate {self.kind!r}; choose one of {SURROGATES}")
        if not self.slope > 0:
            raise ValueError(f"surrogate slope must be positive, got {self.slope}")

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return _SpikeFunction.apply(v, self.kind, float(self.slope))

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        return surrogate_derivative(self.kind, v, float(self.slope))
