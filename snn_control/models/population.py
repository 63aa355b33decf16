"""Population coding (Xu et al. 2025 (Proxy Target)): each scalar as a population's activity.

Encoding: ``pop`` Gaussian receptive fields with centres spread evenly over ``[low, high]``
(and one spacing beyond) and a shared width; a value excites each neuron by ``exp(-(x - mu)^2 / (2 sigma^2))``, an
analog current into the first spiking layer. Decoding (the actor's output): each action
dimension has its own population whose firing rates are weighted and summed.
"""

from __future__ import annotations

import torch
from torch import nn


class PopulationEncoder(nn.Module):
    """``(B, D)`` values -> ``(B, D * pop)`` receptive-field activities in (0, 1]."""

    def __init__(self, dims: int, pop: int = 10, low: float = -1.0, high: float = 1.0,
                 learnable: bool = True) -> None:
        super().__init__()
        if pop < 2:
            raise ValueError(f"a population needs at least 2 neurons, got {pop}")
        self.dims, self.pop = dims, pop
        # Centres reach one spacing beyond the range, so values near its ends still sit
        # between two neighbours (the centre of mass is then unbiased there too).
        spacing = (high - low) / (pop - 3) if pop > 3 else (high - low) / (pop - 1)
        pad = spacing if pop > 3 else 0.0
        centres = torch.linspace(low - pad, high + pad, pop).repeat(dims, 1)  # (D, pop)
        width = torch.full((dims, pop), spacing)  # neighbours overlap at 1 sigma
        self.centres = nn.Parameter(centres, requires_grad=learnable)
        self.log_width = nn.Parameter(width.log(), requires_grad=learnable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.unsqueeze(-1) - self.centres) / self.log_width.exp()
        return torch.exp(-0.5 * z**2).flatten(-2)

    def decode(self, activity: torch.Tensor) -> torch.Tensor:
        """Centre-of-mass estimate of the encoded values, ``(B, D * pop)`` -> ``(B, D)``."""
        a = activity.unflatten(-1, (self.dims, self.pop))
        return (a * self.centres).sum(-1) / a.sum(-1).clamp_min(1e-12)


class PopulationDecoder(nn.Module):
    """``(B, D * pop)`` firing rates -> ``(B, D)``: a learned weighted sum per dimension
    (each dimension reads only its own population)."""

    def __init__(self, dims: int, pop: int = 10) -> None:
        super().__init__()
        self.dims, self.pop = dims, pop
        self.weight = nn.Parameter(torch.randn(dims, pop) / pop**0.5)
        self.bias = nn.Parameter(torch.zeros(dims))

    def forward(self, rates: torch.Tensor) -> torch.Tensor:
        return (rates.unflatten(-1, (self.dims, self.pop)) * self.weight).sum(-1) + self.bias
