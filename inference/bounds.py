"""PAC-Bayes bounds on the error of a stochastic (Gibbs) classifier.

A posterior Q over network weights defines a Gibbs classifier: draw weights from Q,
then predict. Its true error e(Q) is bounded, with probability at least 1 - delta over
an i.i.d. training sample of size n, through the PAC-Bayes-kl inequality

    kl( e_hat(Q) || e(Q) ) <= ( KL(Q || P) + ln(2 sqrt(n) / delta) ) / n,

where e_hat(Q) is the empirical Gibbs error, P is a prior fixed before seeing the data
and kl(q || p) is the KL divergence between two Bernoulli distributions
(Seeger 2002; Maurer 2004 gives the ln(2 sqrt(n) / delta) term). The bound on e(Q)
is obtained by inverting kl in its second argument.

e_hat(Q) is itself an expectation over weights. It is estimated by the average error
of a finite number of weight draws and, following Langford & Caruana (2001) and
Dziugaite & Roy (2017, section 4), replaced by a high-probability upper bound from a
second kl-inversion (a Chernoff bound on the draws), at an extra failure probability
delta'.

References:
    M. Seeger. PAC-Bayesian generalisation error bounds for Gaussian process
        classification. JMLR 3, 2002.
    A. Maurer. A note on the PAC Bayesian theorem. arXiv:cs/0411099, 2004.
    J. Langford and R. Caruana. (Not) bounding the true error. NIPS 14, 2001.
    G. K. Dziugaite and D. M. Roy. Computing nonvacuous generalization bounds for
        deep (stochastic) neural networks with many more parameters than training
        data. UAI 2017.

Everything here is a pure function of floats; kl values are in nats.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

# Newton/bisection iterations are capped well above what a 1e-12 bracket needs.
_MAX_ITERATIONS = 200


def binary_kl(q: float | np.ndarray, p: float | np.ndarray) -> float | np.ndarray:
    """KL divergence kl(q || p) between Bernoulli(q) and Bernoulli(p), in nats.

    Uses 0 * log 0 = 0, so kl(0 || p) = -log(1 - p) and kl(1 || p) = -log p, and
    returns +inf when p is 0 or 1 and q differs from p. Broadcasts over numpy arrays;
    two scalars give a python float.

    :param q: the first Bernoulli parameter(s), in [0, 1].
    :param p: the second Bernoulli parameter(s), in [0, 1].
    :return: kl(q || p) >= 0, possibly +inf.
    :raises ValueError: if any q or p lies outside [0, 1] or is NaN.
    """
    q_arr = np.asarray(q, dtype=float)
    p_arr = np.asarray(p, dtype=float)
    _check_probability(q_arr, "q")
    _check_probability(p_arr, "p")
    q_arr, p_arr = np.broadcast_arrays(q_arr, p_arr)

    diff = p_arr - q_arr
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # A term with zero weight is zero, whatever p is.
        success_log = _log_ratio(q_arr, diff, np.log(q_arr) - np.log(p_arr))
        failure_log = _log_ratio(1.0 - q_arr, -diff, np.log1p(-q_arr) - np.log1p(-p_arr))
        success = np.where(q_arr > 0.0, q_arr * success_log, 0.0)
        failure = np.where(q_arr < 1.0, (1.0 - q_arr) * failure_log, 0.0)
    # Rounding can leave a tiny negative value when q and p are nearly equal.
    result = np.maximum(success + failure, 0.0)
    if result.ndim == 0:
        return float(result)
    return result


def inverse_kl_upper(q: float, c: float, tol: float = 1e-12) -> float:
    """The largest p in [q, 1] with kl(q || p) <= c (the upper kl-inverse).

    kl(q || p) increases in p on [q, 1], so the answer is the root of
    kl(q || p) = c there, found by Newton's method kept inside a shrinking bisection
    bracket. Results within about 1e-16 of 1 cannot be told apart from 1 in floating
    point, so there kl(q || p) may differ visibly from c.

    :param q: an observed error rate, in [0, 1].
    :param c: the allowed divergence, >= 0 (may be +inf).
    :param tol: absolute tolerance on p.
    :return: p in [q, 1]; q when c is 0, and 1.0 when no p <= 1 violates the constraint.
    :raises ValueError: if q is outside [0, 1], c is negative or NaN, or tol <= 0.
    """
    q = _checked_rate(q, "q")
    c = _checked_divergence(c)
    if not tol > 0.0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    if c == 0.0:
        return q
    if q == 1.0 or math.isinf(c):
        return 1.0
    return _solve_kl_inverse(q, c, tol, upper=True)


def inverse_kl_lower(q: float, c: float, tol: float = 1e-12) -> float:
    """The smallest p in [0, q] with kl(q || p) <= c (the lower kl-inverse).

    kl(q || p) decreases in p on [0, q]; by the symmetry kl(q || p) = kl(1 - q || 1 - p)
    this is one minus the upper inverse at 1 - q, but it is solved directly so that
    small results keep their relative precision.

    :param q: an observed error rate, in [0, 1].
    :param c: the allowed divergence, >= 0 (may be +inf).
    :param tol: absolute tolerance on p.
    :return: p in [0, q]; q when c is 0, and 0.0 when no p >= 0 violates the constraint.
    :raises ValueError: if q is outside [0, 1], c is negative or NaN, or tol <= 0.
    """
    q = _checked_rate(q, "q")
    c = _checked_divergence(c)
    if not tol > 0.0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    if c == 0.0:
        return q
    if q == 0.0 or math.isinf(c):
        return 0.0
    return _solve_kl_inverse(q, c, tol, upper=False)


def maurer_complexity(kl: float, n: int, delta: float) -> float:
    """Right-hand side of the PAC-Bayes-kl bound: (KL(Q||P) + ln(2 sqrt(n) / delta)) / n.

    :param kl: KL(Q || P) in nats, >= 0; values in (-1e-6, 0) are treated as 0.
    :param n: number of training examples, an integer >= 1.
    :param delta: failure probability, in (0, 1).
    :return: the complexity term, in nats per example.
    :raises ValueError: on a negative or NaN kl, a bad n, or delta outside (0, 1).
    """
    kl = _checked_kl(kl)
    n = _checked_count(n, "n")
    delta = _checked_delta(delta, "delta")
    return (kl + math.log(2.0 * math.sqrt(n) / delta)) / n


def pac_bayes_kl_bound(empirical_gibbs_error: float, kl: float, n: int, delta: float) -> float:
    """Upper bound on the true Gibbs error from the PAC-Bayes-kl inequality.

    Holds with probability >= 1 - delta over the training sample.

    :param empirical_gibbs_error: the Gibbs error on the n training examples, in [0, 1].
    :param kl: KL(Q || P) in nats.
    :param n: number of training examples.
    :param delta: failure probability, in (0, 1).
    :return: the bound, in [empirical_gibbs_error, 1].
    :raises ValueError: on any invalid argument.
    """
    return inverse_kl_upper(empirical_gibbs_error, maurer_complexity(kl, n, delta))


def monte_carlo_gibbs_error_upper(sampled_error: float, num_samples: int, delta_prime: float) -> float:
    """Upper bound on the empirical Gibbs error from a finite number of weight draws.

    The empirical Gibbs error is the mean, over weights drawn from Q, of the training
    error. Averaging it over num_samples independent draws gives sampled_error, and a
    Chernoff bound on that average gives, with probability >= 1 - delta_prime,
    empirical Gibbs error <= kl-inverse(sampled_error, ln(2 / delta_prime) / num_samples).

    :param sampled_error: mean training error over the weight draws, in [0, 1].
    :param num_samples: number of independent weight draws, an integer >= 1.
    :param delta_prime: failure probability of this step, in (0, 1).
    :return: the upper bound, in [sampled_error, 1].
    :raises ValueError: on any invalid argument.
    """
    sampled_error = _checked_rate(sampled_error, "sampled_error")
    num_samples = _checked_count(num_samples, "num_samples")
    delta_prime = _checked_delta(delta_prime, "delta_prime")
    return inverse_kl_upper(sampled_error, math.log(2.0 / delta_prime) / num_samples)


@dataclass(frozen=True)
class GibbsBound:
    """The pieces of a Monte Carlo PAC-Bayes bound on the true Gibbs error.

    :param sampled_error: mean training error over the weight draws.
    :param empirical_gibbs_upper: upper bound on the empirical Gibbs error (delta' step).
    :param kl: KL(Q || P) in nats, as used (after clamping tiny negatives).
    :param n: number of training examples.
    :param delta: failure probability of the PAC-Bayes step.
    :param delta_prime: failure probability of the Monte Carlo step.
    :param complexity: the Maurer complexity term (kl + ln(2 sqrt(n)/delta)) / n.
    :param bound: the upper bound on the true Gibbs error.
    """

    sampled_error: float
    empirical_gibbs_upper: float
    kl: float
    n: int
    delta: float
    delta_prime: float
    complexity: float
    bound: float

    @property
    def confidence(self) -> float:
        """Probability with which the bound holds: 1 - delta - delta_prime."""
        return 1.0 - self.delta - self.delta_prime


def gibbs_error_bound(
    sampled_error: float,
    num_samples: int,
    kl: float,
    n: int,
    delta: float = 0.05,
    delta_prime: float = 0.01,
) -> GibbsBound:
    """Dziugaite & Roy style bound on the true Gibbs error from sampled weights.

    First bounds the empirical Gibbs error from the draws (failure probability
    delta_prime), then applies the PAC-Bayes-kl bound to that upper value (failure
    probability delta). The kl-inverse is increasing in its first argument, so using
    the upper value is safe; by a union bound the result holds with probability
    >= 1 - delta - delta_prime.

    :param sampled_error: mean training error over the weight draws, in [0, 1].
    :param num_samples: number of independent weight draws.
    :param kl: KL(Q || P) in nats.
    :param n: number of training examples.
    :param delta: failure probability of the PAC-Bayes step.
    :param delta_prime: failure probability of the Monte Carlo step.
    :return: a GibbsBound holding the intermediate values and the final bound.
    :raises ValueError: on any invalid argument, or if delta + delta_prime >= 1.
    """
    delta = _checked_delta(delta, "delta")
    delta_prime = _checked_delta(delta_prime, "delta_prime")
    if delta + delta_prime >= 1.0:
        raise ValueError(f"delta + delta_prime must be below 1, got {delta!r} + {delta_prime!r}")
    kl = _checked_kl(kl)
    upper = monte_carlo_gibbs_error_upper(sampled_error, num_samples, delta_prime)
    complexity = maurer_complexity(kl, n, delta)
    return GibbsBound(
        sampled_error=float(sampled_error),
        empirical_gibbs_upper=upper,
        kl=kl,
        n=int(n),
        delta=delta,
        delta_prime=delta_prime,
        complexity=complexity,
        bound=inverse_kl_upper(upper, complexity),
    )


def mcallester_bound(empirical_error: float, kl: float, n: int, delta: float) -> float:
    """Square-root PAC-Bayes bound: empirical + sqrt((KL + ln(2 sqrt(n)/delta)) / (2n)).

    Pinsker's inequality kl(q || p) >= 2 (p - q)^2 relaxes the kl bound into this
    one, so it is never tighter than pac_bayes_kl_bound; it is kept for comparison.

    :param empirical_error: the empirical (Gibbs) error, in [0, 1].
    :param kl: KL(Q || P) in nats.
    :param n: number of training examples.
    :param delta: failure probability, in (0, 1).
    :return: the bound, clipped to at most 1.
    :raises ValueError: on any invalid argument.
    """
    empirical_error = _checked_rate(empirical_error, "empirical_error")
    complexity = maurer_complexity(kl, n, delta)
    return min(1.0, empirical_error + math.sqrt(complexity / 2.0))


# --- internals ---------------------------------------------------------------


def _solve_kl_inverse(q: float, c: float, tol: float, upper: bool) -> float:
    """Root of f(p) = kl(q || p) - c on (q, 1) (upper) or (0, q) (lower), for 0 < c < inf.

    f(q) = -c < 0 and f grows without bound towards the far end (1 or 0), so q and that
    end bracket the root. Newton steps are taken in w = -log(distance from p to the far
    end), where the slope of f stays in [0, 1] however close p gets to that end; a step
    that leaves the bracket is replaced by halving it. A change of w by at most tol moves
    p by at most tol, so stopping on a short step in w (or a bracket short in w) meets
    the tolerance on p. The caller ensures q is not the far end itself.
    """
    feasible, infeasible = q, (1.0 if upper else 0.0)
    p = 0.5 * (feasible + infeasible)
    for _ in range(_MAX_ITERATIONS):
        excess = _scalar_kl(q, p) - c
        if excess == 0.0:
            return p
        if excess < 0.0:
            feasible = p
        else:
            infeasible = p
        step = _newton_step(q, p, excess, upper)
        if abs(step) <= tol:
            # Converged: p is within tol of the root, usually far closer.
            return p
        if abs(_log_distance(feasible, upper) - _log_distance(infeasible, upper)) <= tol:
            return feasible
        candidate = _from_log_distance(_log_distance(p, upper) + step, upper)
        midpoint = 0.5 * (feasible + infeasible)
        if _strictly_between(candidate, feasible, infeasible):
            p = candidate
        elif _strictly_between(midpoint, feasible, infeasible):
            p = midpoint
        else:
            # No float lies strictly inside the bracket.
            return feasible
    return feasible


def _newton_step(q: float, p: float, excess: float, upper: bool) -> float:
    """Newton step for kl(q || p) - c, as the change of log(distance to the far end).

    With w = -log(distance), dkl/dw is (p - q) / p going up and (q - p) / (1 - p) going
    down; the step is excess / slope. NaN where the slope vanishes or p is at an end.
    """
    if not 0.0 < p < 1.0 or not math.isfinite(excess):
        return math.nan
    slope = (p - q) / p if upper else (q - p) / (1.0 - p)
    return excess / slope if slope > 0.0 else math.nan


def _log_distance(p: float, upper: bool) -> float:
    """log(1 - p) going up, log(p) going down; -inf at the far end."""
    distance = 1.0 - p if upper else p
    if distance <= 0.0:
        return -math.inf
    return math.log1p(-p) if upper else math.log(p)


def _from_log_distance(log_distance: float, upper: bool) -> float:
    """Inverse of _log_distance; NaN when the distance would reach or pass 1."""
    if math.isnan(log_distance) or log_distance >= 0.0:
        return math.nan
    return -math.expm1(log_distance) if upper else math.exp(log_distance)


def _strictly_between(x: float, a: float, b: float) -> bool:
    return min(a, b) < x < max(a, b)


def _log_ratio(a: np.ndarray, diff: np.ndarray, far: np.ndarray) -> np.ndarray:
    """log(a / (a + diff)) for a > 0, given `far`, the same value as a difference of logs.

    When a + diff is close to a, -log1p(diff / a) avoids the cancellation in `far`;
    elsewhere `far` is used, since diff / a may round to -1 there.
    """
    return np.where(np.abs(diff) <= 0.5 * a, -np.log1p(diff / a), far)


def _scalar_kl(q: float, p: float) -> float:
    """binary_kl for two floats already known to lie in [0, 1], without numpy overhead."""
    diff = p - q
    total = 0.0
    if q > 0.0:
        if abs(diff) <= 0.5 * q:
            total -= q * math.log1p(diff / q)
        elif p == 0.0:
            return math.inf
        else:
            total += q * (math.log(q) - math.log(p))
    if q < 1.0:
        if abs(diff) <= 0.5 * (1.0 - q):
            total -= (1.0 - q) * math.log1p(-diff / (1.0 - q))
        elif p == 1.0:
            return math.inf
        else:
            total += (1.0 - q) * (math.log1p(-q) - math.log1p(-p))
    return max(total, 0.0)


def _check_probability(values: np.ndarray, name: str) -> None:
    # NaN fails both comparisons, so it counts as outside [0, 1].
    outside = ~((values >= 0.0) & (values <= 1.0))
    if np.any(outside):
        first_bad = float(values[outside].flat[0])
        raise ValueError(f"{name} must lie in [0, 1], got {first_bad!r}")


def _checked_rate(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return value


def _checked_divergence(c: float) -> float:
    c = float(c)
    if math.isnan(c) or c < 0.0:
        raise ValueError(f"the divergence c must be non-negative, got {c!r}")
    return c


def _checked_kl(kl: float) -> float:
    kl = float(kl)
    if math.isnan(kl) or kl <= -1e-6:
        raise ValueError(f"KL(Q||P) must be non-negative, got {kl!r}")
    # Small negative values come from numerical noise in a KL estimate.
    return max(kl, 0.0)


def _checked_count(count: int, name: str) -> int:
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {count!r}")
    return int(count)


def _checked_delta(delta: float, name: str) -> float:
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {delta!r}")
    return delta
