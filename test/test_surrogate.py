import math

import pytest
import torch

from snn_control.spiking.surrogate import Surrogate


def _autograd_derivative(surrogate: Surrogate, v: torch.Tensor) -> torch.Tensor:
    v = v.clone().requires_grad_(True)
    surrogate(v).sum().backward()
    return v.grad


V = torch.linspace(-2, 2, 81, dtype=torch.float64)


def test_forward_is_heaviside():
    s = Surrogate("fast_sigmoid", 5.0)(torch.tensor([-0.1, 0.0, 1e-6, 3.0]))
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("k", [1.0, 2.0, 10.0, 100.0])
def test_fast_sigmoid_matches_formula(k):
    grad = _autograd_derivative(Surrogate("fast_sigmoid", k), V)
    assert torch.allclose(grad, 1.0 / (1.0 + k * V.abs()) ** 2)


def test_rectangular_is_unit_area_window():
    grad = _autograd_derivative(Surrogate("rectangular", 2.0), V)  # width 0.5
    expected = torch.where(V.abs() < 0.25, torch.tensor(2.0, dtype=V.dtype), torch.tensor(0.0, dtype=V.dtype))
    assert torch.equal(grad, expected)


def test_multi_gaussian_matches_formula_and_peaks_at_one():
    slope = 16.0
    s, h = 1 / slope, 0.15

    def g(x, mu, sig):
        return math.exp(-0.5 * ((x - mu) / sig) ** 2) / (sig * math.sqrt(2 * math.pi))

    def raw(x):
        return (1 + h) * g(x, 0, s) - h * g(x, s, 6 * s) - h * g(x, -s, 6 * s)

    grad = _autograd_derivative(Surrogate("multi_gaussian", slope), V)
    expected = torch.tensor([raw(float(x)) / raw(0.0) for x in V], dtype=V.dtype)
    assert torch.allclose(grad, expected, atol=1e-9)
    assert _autograd_derivative(Surrogate("multi_gaussian", slope), torch.zeros(1, dtype=V.dtype)).item() == pytest.approx(1.0)


def test_slope_change_takes_effect_on_next_call():
    sur = Surrogate("fast_sigmoid", 1.0)
    v = torch.tensor([0.5], dtype=torch.float64)
    before = _autograd_derivative(sur, v).item()
    sur.slope = 100.0
    after = _autograd_derivative(sur, v).item()
    assert before == pytest.approx(1 / 1.5**2)
    assert after == pytest.approx(1 / 51**2)


def test_bad_surrogate_rejected():
    with pytest.raises(ValueError, match="unknown surrogate 'tanh'"):
        Surrogate("tanh", 1.0)
    with pytest.raises(ValueError, match="slope must be positive"):
        Surrogate("fast_sigmoid", 0.0)
