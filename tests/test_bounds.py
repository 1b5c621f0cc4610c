"""Tests for inference.bounds: the binary kl, its inverses and the PAC-Bayes bounds."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from inference.bounds import (
    GibbsBound,
    binary_kl,
    gibbs_error_bound,
    inverse_kl_lower,
    inverse_kl_upper,
    maurer_complexity,
    mcallester_bound,
    monte_carlo_gibbs_error_upper,
    pac_bayes_kl_bound,
)

# On this grid every upper inverse stays at least 1e-5 below 1, where p is represented
# finely enough for kl(q || p) to be recovered to 1e-9.
RATES = [0.0, 1e-4, 0.01, 0.1, 0.3, 0.5, 0.7]
DIVERGENCES = [1e-8, 1e-4, 0.01, 0.1, 0.5, 1.0, 3.0]


# --- binary_kl -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "p", "expected"),
    [
        (0.5, 0.5, 0.0),
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 0.0),
        (0.0, 0.3, -math.log(0.7)),
        (1.0, 0.3, -math.log(0.3)),
        (0.0, 0.999, -math.log(0.001)),
        (1.0, 1e-6, -math.log(1e-6)),
        # By hand: 0.1 ln(0.1/0.2) + 0.9 ln(0.9/0.8) = -0.0693147 + 0.1060052.
        (0.1, 0.2, 0.03669001403475),
        # kl(1/2 || 1/4) = ln 2 - (1/2) ln 3.
        (0.5, 0.25, math.log(2.0) - 0.5 * math.log(3.0)),
    ],
)
def test_binary_kl_known_values(q: float, p: float, expected: float) -> None:
    assert binary_kl(q, p) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("q", "p"), [(0.2, 0.0), (0.2, 1.0), (0.0, 1.0), (1.0, 0.0)])
def test_binary_kl_is_infinite_at_a_degenerate_p(q: float, p: float) -> None:
    assert binary_kl(q, p) == math.inf


def test_binary_kl_is_non_negative_and_zero_only_on_the_diagonal() -> None:
    grid = np.linspace(0.0, 1.0, 41)
    values = binary_kl(grid[:, None], grid[None, :])
    assert values.shape == (41, 41)
    assert np.all(values >= 0.0)
    off_diagonal = ~np.eye(41, dtype=bool)
    assert np.all(values[off_diagonal] > 0.0)
    assert np.all(np.diag(values) == 0.0)


def test_binary_kl_vectorised_matches_scalar_calls() -> None:
    q = np.array([0.0, 0.1, 0.5, 1.0])
    p = np.array([0.3, 0.2, 0.9, 0.4])
    expected = [binary_kl(float(a), float(b)) for a, b in zip(q, p, strict=True)]
    np.testing.assert_allclose(binary_kl(q, p), expected, rtol=1e-14)
    assert isinstance(binary_kl(0.1, 0.2), float)


def test_binary_kl_is_accurate_for_nearly_equal_arguments() -> None:
    # Second-order expansion: kl(q || q + d) ~ d^2 / (2 q (1 - q)).
    q, d = 0.3, 1e-7
    assert binary_kl(q, q + d) == pytest.approx(d * d / (2 * q * (1 - q)), rel=1e-5)


# --- kl inverses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("q", RATES)
@pytest.mark.parametrize("c", DIVERGENCES)
def test_inverse_kl_upper_inverts_binary_kl(q: float, c: float) -> None:
    p = inverse_kl_upper(q, c)
    assert q <= p <= 1.0
    assert p < 1.0
    assert binary_kl(q, p) == pytest.approx(c, abs=1e-9)


@pytest.mark.parametrize(("q", "c"), [(0.95, 1e-3), (0.95, 0.1), (0.999, 1e-4), (1e-9, 1e-12)])
def test_inverse_kl_upper_inverts_binary_kl_near_the_ends(q: float, c: float) -> None:
    p = inverse_kl_upper(q, c)
    assert q < p < 1.0
    assert binary_kl(q, p) == pytest.approx(c, rel=1e-6)


@pytest.mark.parametrize("c", [1e-10, 1e-3, 0.1, 1.0, 5.0, 10.0])
def test_inverse_kl_upper_at_zero_error_is_one_minus_exp(c: float) -> None:
    # kl(0 || p) = -log(1 - p), so the inverse is 1 - exp(-c).
    assert inverse_kl_upper(0.0, c) == pytest.approx(-math.expm1(-c), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("q", RATES)
def test_inverse_kl_upper_increases_with_c(q: float) -> None:
    values = [inverse_kl_upper(q, c) for c in DIVERGENCES]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize("c", DIVERGENCES)
def test_inverse_kl_upper_increases_with_q(c: float) -> None:
    values = [inverse_kl_upper(q, c) for q in RATES]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize("q", [0.0, 0.2, 0.7])
def test_inverse_kl_upper_edge_cases(q: float) -> None:
    assert inverse_kl_upper(q, 0.0) == q
    assert inverse_kl_upper(q, math.inf) == 1.0
    assert inverse_kl_upper(1.0, 0.5) == 1.0


def test_inverse_kl_upper_is_the_largest_feasible_p() -> None:
    q, c = 0.2, 0.05
    p = inverse_kl_upper(q, c)
    assert binary_kl(q, p - 1e-6) < c < binary_kl(q, p + 1e-6)


@pytest.mark.parametrize("q", [0.05, 0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("c", [1e-4, 0.1, 1.0, 5.0])
def test_inverse_kl_lower_mirrors_the_upper_inverse(q: float, c: float) -> None:
    lower = inverse_kl_lower(q, c)
    assert 0.0 <= lower <= q
    # kl(q || p) = kl(1 - q || 1 - p): the lower inverse at q mirrors the upper one at 1 - q.
    assert lower == pytest.approx(1.0 - inverse_kl_upper(1.0 - q, c), abs=1e-12)
    assert lower > 0.0
    # Solved directly, so even a tiny lower inverse keeps relative precision.
    assert binary_kl(q, lower) == pytest.approx(c, rel=1e-9)


@pytest.mark.parametrize("c", [1e-6, 0.5, 2.0, 50.0, 500.0])
def test_inverse_kl_lower_at_full_error_is_exp(c: float) -> None:
    # kl(1 || p) = -log p, so the lower inverse at q = 1 is exp(-c), even when tiny.
    assert inverse_kl_lower(1.0, c) == pytest.approx(math.exp(-c), rel=1e-10)


def test_inverse_kl_lower_edge_cases() -> None:
    assert inverse_kl_lower(0.4, 0.0) == 0.4
    assert inverse_kl_lower(0.0, 1.0) == 0.0
    assert inverse_kl_lower(0.4, math.inf) == 0.0


# --- PAC-Bayes bounds ----------------------------------------------------------------------------


def test_maurer_complexity_value() -> None:
    expected = (100.0 + math.log(2.0 * math.sqrt(10000) / 0.05)) / 10000
    assert maurer_complexity(100.0, 10000, 0.05) == pytest.approx(expected, rel=1e-14)


def test_maurer_complexity_clamps_tiny_negative_kl() -> None:
    assert maurer_complexity(-1e-9, 100, 0.1) == maurer_complexity(0.0, 100, 0.1)


def test_pac_bayes_kl_bound_decreases_with_n() -> None:
    bounds = [pac_bayes_kl_bound(0.05, 500.0, n, 0.05) for n in (1000, 5000, 20000, 60000)]
    assert all(a > b for a, b in zip(bounds, bounds[1:], strict=False))


def test_pac_bayes_kl_bound_increases_with_kl() -> None:
    bounds = [pac_bayes_kl_bound(0.05, kl, 60000, 0.05) for kl in (0.0, 10.0, 1000.0, 10000.0)]
    assert all(a < b for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(0.05 < b < 1.0 for b in bounds)


def test_pac_bayes_kl_bound_is_the_kl_inverse_of_the_complexity() -> None:
    bound = pac_bayes_kl_bound(0.03, 5000.0, 60000, 0.05)
    assert binary_kl(0.03, bound) == pytest.approx(maurer_complexity(5000.0, 60000, 0.05), rel=1e-9)


@pytest.mark.parametrize("empirical", [0.0, 0.01, 0.1, 0.3, 0.6])
@pytest.mark.parametrize("kl", [0.0, 50.0, 5000.0, 50000.0])
@pytest.mark.parametrize("n", [100, 60000])
def test_kl_bound_is_never_looser_than_the_pinsker_relaxation(empirical: float, kl: float, n: int) -> None:
    kl_bound = pac_bayes_kl_bound(empirical, kl, n, 0.05)
    assert empirical <= kl_bound <= mcallester_bound(empirical, kl, n, 0.05) + 1e-12


def test_mcallester_bound_value_and_clipping() -> None:
    expected = 0.1 + math.sqrt((20.0 + math.log(2.0 * math.sqrt(1000) / 0.05)) / 2000)
    assert mcallester_bound(0.1, 20.0, 1000, 0.05) == pytest.approx(expected, rel=1e-14)
    assert mcallester_bound(0.5, 1e6, 100, 0.05) == 1.0


# --- Monte Carlo step and the full bound ---------------------------------------------------------


def test_monte_carlo_upper_tightens_with_more_samples() -> None:
    uppers = [monte_carlo_gibbs_error_upper(0.05, m, 0.01) for m in (10, 100, 1000, 10000, 100000)]
    assert all(a > b for a, b in zip(uppers, uppers[1:], strict=False))
    assert all(u > 0.05 for u in uppers)
    assert uppers[-1] - 0.05 < 0.003


def test_monte_carlo_upper_uses_log_two_over_delta_prime() -> None:
    upper = monte_carlo_gibbs_error_upper(0.1, 200, 0.01)
    assert binary_kl(0.1, upper) == pytest.approx(math.log(2.0 / 0.01) / 200, rel=1e-9)


@pytest.mark.parametrize("sampled_error", [0.0, 0.02, 0.2, 0.9])
@pytest.mark.parametrize("kl", [0.0, 300.0, 30000.0])
def test_gibbs_error_bound_is_a_valid_probability_above_the_sample(sampled_error: float, kl: float) -> None:
    result = gibbs_error_bound(sampled_error, 1000, kl, 60000)
    assert isinstance(result, GibbsBound)
    assert sampled_error <= result.empirical_gibbs_upper <= result.bound <= 1.0
    assert result.bound == pytest.approx(pac_bayes_kl_bound(result.empirical_gibbs_upper, kl, 60000, 0.05))
    assert result.complexity == pytest.approx(maurer_complexity(kl, 60000, 0.05))


def test_gibbs_error_bound_fields_and_confidence() -> None:
    result = gibbs_error_bound(0.03, 500, 1234.5, 60000, delta=0.025, delta_prime=0.01)
    assert (result.sampled_error, result.kl, result.n) == (0.03, 1234.5, 60000)
    assert (result.delta, result.delta_prime) == (0.025, 0.01)
    assert result.empirical_gibbs_upper == monte_carlo_gibbs_error_upper(0.03, 500, 0.01)
    assert result.confidence == pytest.approx(0.965)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.bound = 0.0  # type: ignore[misc]


# --- argument checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: binary_kl(-0.1, 0.5), "q must lie in"),
        (lambda: binary_kl(0.5, 1.5), "p must lie in"),
        (lambda: binary_kl(math.nan, 0.5), "q must lie in"),
        (lambda: binary_kl(np.array([0.2, 1.2]), 0.5), "q must lie in"),
        (lambda: inverse_kl_upper(0.2, -0.1), "non-negative"),
        (lambda: inverse_kl_upper(0.2, math.nan), "non-negative"),
        (lambda: inverse_kl_upper(-0.2, 0.1), "q must lie in"),
        (lambda: inverse_kl_upper(1.2, 0.1), "q must lie in"),
        (lambda: inverse_kl_upper(0.2, 0.1, tol=0.0), "tol must be positive"),
        (lambda: inverse_kl_lower(0.2, -1.0), "non-negative"),
        (lambda: inverse_kl_lower(1.5, 0.1), "q must lie in"),
        (lambda: maurer_complexity(-0.5, 100, 0.05), "non-negative"),
        (lambda: maurer_complexity(-1e-6, 100, 0.05), "non-negative"),
        (lambda: maurer_complexity(math.nan, 100, 0.05), "non-negative"),
        (lambda: maurer_complexity(1.0, 0, 0.05), "n must be an integer"),
        (lambda: maurer_complexity(1.0, 10.5, 0.05), "n must be an integer"),
        (lambda: maurer_complexity(1.0, True, 0.05), "n must be an integer"),
        (lambda: maurer_complexity(1.0, 100, 0.0), "delta must lie"),
        (lambda: maurer_complexity(1.0, 100, 1.0), "delta must lie"),
        (lambda: pac_bayes_kl_bound(1.1, 1.0, 100, 0.05), "q must lie in"),
        (lambda: pac_bayes_kl_bound(0.1, -2.0, 100, 0.05), "non-negative"),
        (lambda: monte_carlo_gibbs_error_upper(-0.1, 100, 0.01), "sampled_error must lie"),
        (lambda: monte_carlo_gibbs_error_upper(0.1, 0, 0.01), "num_samples must be an integer"),
        (lambda: monte_carlo_gibbs_error_upper(0.1, 100, 1.5), "delta_prime must lie"),
        (lambda: gibbs_error_bound(0.1, 100, 10.0, 1000, delta=0.6, delta_prime=0.4), "below 1"),
        (lambda: gibbs_error_bound(0.1, 100, 10.0, 1000, delta=-0.1), "delta must lie"),
        (lambda: gibbs_error_bound(0.1, 100, 10.0, 1000, delta_prime=0.0), "delta_prime must lie"),
        (lambda: gibbs_error_bound(0.1, 100, -3.0, 1000), "non-negative"),
        (lambda: gibbs_error_bound(0.1, 100, 10.0, 0), "n must be an integer"),
        (lambda: mcallester_bound(1.5, 10.0, 100, 0.05), "empirical_error must lie"),
        (lambda: mcallester_bound(0.1, 10.0, -5, 0.05), "n must be an integer"),
    ],
)
def test_invalid_arguments_raise_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
