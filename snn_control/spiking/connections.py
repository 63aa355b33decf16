"""Synaptic connections: dense, or low-rank ``W = W2 @ W1`` (latent-space compression).

A rank-d bottleneck between an m-neuron and an n-neuron population has d (n + m)
parameters instead of n m (Huebotter et al. 2025, "latent-space compression").
"""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """``y = W2 (W1 x) + b`` with ``W1`` (d, m) orthogonal and bias-free, ``W2`` (n, d).

    Shapes: input ``(..., m)``, output ``(..., n)``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        if not 0 < rank < min(in_features, out_features):
            raise ValueError(
                f"rank {rank} must lie in (0, {min(in_features, out_features)}) "
                f"for a {in_features}->{out_features} bottleneck"
            )
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=True)
        nn.init.orthogonal_(self.down.weight)
        nn.init.zeros_(self.up.bias)

    def init_like_dense(self, std: float) -> None:
        """Initialise so that entries of ``W2 W1`` have standard deviation ``std``.

        With W1's rows orthonormal, each column of W1 has squared norm about d/m, so
        ``Var[(W2 W1)_ij] = Var[W2] d / m``.
        """
        with torch.no_grad():
            self.up.weight.normal_(0.0, std * (self.in_features / self.rank) ** 0.5)

    def dense_weight(self) -> torch.Tensor:
        return self.up.weight @ self.down.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def make_connection(in_features: int, out_features: int, rank: int | None) -> nn.Module:
    """A dense ``nn.Linear`` when ``rank`` is None (or not smaller), else ``LowRankLinear``."""
    if rank is None or rank >= min(in_features, out_features):
        return nn.Linear(in_features, out_features)
    return LowRankLinear(in_features, out_features, rank)


def init_connection(conn: nn.Module, std: float) -> None:
    """Weights with entries ~ N(0, std^2) (for a low-rank pair: of their product); bias 0."""
    if isinstance(conn, LowRankLinear):
        conn.init_like_dense(std)
    elif isinstance(conn, nn.Linear):
        with torch.no_grad():
            conn.weight.normal_(0.0, std)
            if conn.bias is not None:
                conn.bias.zero_()
    else:
        raise TypeError(f"cannot initialise {type(conn).__name__}")
