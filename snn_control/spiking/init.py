"""Fluctuation-driven initialisation (Rossbroich, Gygax & Zenke 2022).

Choose the weight variance so that, at an assumed presynaptic firing rate, the free
membrane potential has mean 0 and standard deviation ``target_std`` (relative to the
threshold 1). Feed-forward input gets ``1 - recurrent_share`` of the variance budget and
recurrent input the rest (Huebotter et al. 2025: 90 % / 10 %).

For zero-mean weights w ~ N(0, s^2) from n Bernoulli(p) inputs filtered by the neuron's
discrete post-synaptic kernel eps[t] (synaptic then membrane filter):

    Var[U] = n s^2 (p sum(eps^2) + p^2 ((sum eps)^2 - sum(eps^2)))

For analog inputs x held constant (E[x^2] = 1), the kernel sum is the DC gain:
``Var[U] = n s^2 G^2`` with ``G = sum(eps)``.
"""

from __future__ import annotations

import math


def psp_kernel(beta_syn: float, beta_mem: float, length: int = 2000) -> list[float]:
    """Membrane response to a unit input at step 0 for ``I = b_s I + x; U = b_m U + (1-b_m) I``."""
    current, voltage, kernel = 0.0, 0.0, []
    for t in range(length):
        current = beta_syn * current + (1.0 if t == 0 else 0.0)
        voltage = beta_mem * voltage + (1.0 - beta_mem) * current
        kernel.append(voltage)
    return kernel


def spiking_input_std(
    fan_in: int, rate_hz: float, dt: float, beta_syn: float, beta_mem: float, variance: float
) -> float:
    """Weight std giving membrane variance ``variance`` from ``fan_in`` spiking inputs."""
    eps = psp_kernel(beta_syn, beta_mem)
    p = min(rate_hz * dt, 1.0)
    s1, s2 = sum(eps), sum(e * e for e in eps)
    per_weight = fan_in * (p * s2 + p * p * (s1 * s1 - s2))
    return math.sqrt(variance / per_weight)


def analog_input_std(fan_in: int, beta_syn: float, beta_mem: float, variance: float) -> float:
    """Weight std giving membrane variance ``variance`` from unit-power analog inputs held constant."""
    gain = sum(psp_kernel(beta_syn, beta_mem))
    return math.sqrt(variance / (fan_in * gain * gain))
