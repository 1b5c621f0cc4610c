"""Tests for study.psi: psi(lambda) = log E[exp(lambda L)] and its derivatives."""

from __future__ import annotations

import math

import pytest
import torch

from study.psi import (
    autograd_derivatives,
    empirical_psi,
    psi_check,
    tilted_mean,
    tilted_variance,
    zero_tilt_identities,
)

LAMBDAS = [-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]


def _gamma_losses(seed: int = 0, size: int = 1000) -> torch.Tensor:
    """Positive, right-skewed losses: Gamma(2, 1) as a sum of two Exp(1) draws."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.empty(2, size, dtype=torch.float64).exponential_(generator=generator)
    return draws.sum(dim=0)


@pytest.fixture(scope="module")
def losses() -> torch.Tensor:
    return _gamma_losses()


@pytest.mark.parametrize("lam", LAMBDAS)
def test_autograd_derivatives_match_the_closed_forms(losses: torch.Tensor, lam: float) -> None:
    psi, dpsi, d2psi = autograd_derivatives(losses, lam)
    assert math.isfinite(psi)
    assert dpsi == pytest.approx(float(tilted_mean(losses, lam)), abs=1e-10)
    assert d2psi == pytest.approx(float(tilted_variance(losses, lam)), abs=1e-10)


def test_psi_check_reports_small_discrepancies(losses: torch.Tensor) -> None:
    rows = psi_check(losses, LAMBDAS)
    assert [row["lam"] for row in rows] == LAMBDAS
    expected_keys = {
        "lam",
        "psi",
        "dpsi_autograd",
        "dpsi_closed",
        "d2psi_autograd",
        "d2psi_closed",
        "max_abs_discrepancy",
    }
    for row in rows:
        assert set(row) == expected_keys
        assert row["max_abs_discrepancy"] < 1e-10
        assert row["psi"] == pytest.approx(float(empirical_psi(losses, row["lam"])), abs=1e-12)


def test_psi_check_rejects_a_failing_identity(monkeypatch: pytest.MonkeyPatch, losses: torch.Tensor) -> None:
    import study.psi as psi_module

    def wrong_identities(values: torch.Tensor) -> dict[str, float]:
        found = zero_tilt_identities(values)
        return {**found, "psi0": 1e-3}

    monkeypatch.setattr(psi_module, "zero_tilt_identities", wrong_identities)
    with pytest.raises(ArithmeticError, match="psi"):
        psi_check(losses, [0.5])


def test_identities_at_zero(losses: torch.Tensor) -> None:
    assert float(empirical_psi(losses, 0.0)) == 0.0
    psi0, dpsi0, d2psi0 = autograd_derivatives(losses, 0.0)
    assert psi0 == 0.0
    assert dpsi0 == pytest.approx(float(losses.mean()), abs=1e-12)
    assert d2psi0 == pytest.approx(float(losses.var(correction=0)), abs=1e-12)
    # The population variance, not the sample one: the two differ by a factor n / (n - 1).
    assert abs(d2psi0 - float(losses.var(correction=1))) > 1e-4
    assert zero_tilt_identities(losses)["max_abs_discrepancy"] < 1e-12


def test_psi_matches_a_direct_evaluation(losses: torch.Tensor) -> None:
    for lam in LAMBDAS:
        direct = math.log(float(torch.mean(torch.exp(lam * losses))))
        assert float(empirical_psi(losses, lam)) == pytest.approx(direct, rel=1e-12, abs=1e-14)


def test_psi_is_convex(losses: torch.Tensor) -> None:
    grid = torch.linspace(-5.0, 5.0, 41, dtype=torch.float64).tolist()
    slopes = [float(tilted_mean(losses, lam)) for lam in grid]
    curvatures = [float(tilted_variance(losses, lam)) for lam in grid]
    assert all(c >= 0.0 for c in curvatures)
    assert all(a <= b for a, b in zip(slopes, slopes[1:], strict=False))
    # Convexity of psi itself: it lies below its chords.
    values = [float(empirical_psi(losses, lam)) for lam in grid]
    for left, middle, right in zip(values, values[1:], values[2:], strict=False):
        assert middle <= 0.5 * (left + right) + 1e-12
    # The autograd second derivative agrees, up to rounding.
    assert all(autograd_derivatives(losses, lam)[2] >= -1e-12 for lam in grid[::5])


@pytest.mark.parametrize("lam", [200.0, 1000.0, 1e5])
def test_large_lambda_does_not_overflow(lam: float) -> None:
    losses = 10.0 * torch.rand(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    psi, dpsi, d2psi = autograd_derivatives(losses, lam)
    assert all(math.isfinite(value) for value in (psi, dpsi, d2psi))
    # psi(lambda) / lambda lies in [max L - log(n) / lambda, max L], so it tends to max L.
    max_loss = float(losses.max())
    assert max_loss - math.log(losses.numel()) / lam <= psi / lam <= max_loss + 1e-12
    assert dpsi == pytest.approx(float(tilted_mean(losses, lam)), abs=1e-10)
    assert dpsi <= max_loss + 1e-12


def test_psi_over_lambda_approaches_the_largest_loss() -> None:
    losses = _gamma_losses(seed=3, size=500)
    gaps = [float(losses.max()) - float(empirical_psi(losses, lam)) / lam for lam in (1.0, 10.0, 100.0, 1000.0)]
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))
    assert 0.0 <= gaps[-1] < 1e-2


@pytest.mark.parametrize("lam", [-4.0, -1.0, 0.0, 0.3, 2.0, 7.5])
def test_two_point_losses(lam: float) -> None:
    # L in {0, 1} with equal probability: psi = log((1 + e^lam) / 2), psi' = sigmoid(lam),
    # psi'' = sigmoid(lam) (1 - sigmoid(lam)).
    losses = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sigmoid = 1.0 / (1.0 + math.exp(-lam))
    psi, dpsi, d2psi = autograd_derivatives(losses, lam)
    assert psi == pytest.approx(math.log((1.0 + math.exp(lam)) / 2.0), rel=1e-13, abs=1e-15)
    assert dpsi == pytest.approx(sigmoid, rel=1e-13)
    assert d2psi == pytest.approx(sigmoid * (1.0 - sigmoid), rel=1e-12)
    assert float(tilted_mean(losses, lam)) == pytest.approx(sigmoid, rel=1e-13)
    assert float(tilted_variance(losses, lam)) == pytest.approx(sigmoid * (1.0 - sigmoid), rel=1e-12)


def test_psi_accepts_a_tensor_lambda_that_requires_grad(losses: torch.Tensor) -> None:
    lam = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    empirical_psi(losses, lam).backward()
    assert float(lam.grad) == pytest.approx(float(tilted_mean(losses, 0.7)), abs=1e-12)


def test_float32_losses_are_promoted_to_float64() -> None:
    losses = torch.tensor([0.5, 1.5, 2.5], dtype=torch.float32)
    assert empirical_psi(losses, 1.0).dtype == torch.float64


@pytest.mark.parametrize(
    ("losses", "lam"),
    [
        (torch.empty(0, dtype=torch.float64), 1.0),
        (torch.ones(2, 3, dtype=torch.float64), 1.0),
        (torch.tensor([1.0, math.inf], dtype=torch.float64), 1.0),
        (torch.ones(3, dtype=torch.float64), torch.ones(2)),
        (torch.ones(3, dtype=torch.float64), math.nan),
    ],
)
def test_invalid_inputs_raise_value_error(losses: torch.Tensor, lam: float | torch.Tensor) -> None:
    with pytest.raises(ValueError):
        empirical_psi(losses, lam)
