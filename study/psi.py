"""The cumulant generating function psi(lambda) = log E[exp(lambda L)] of a loss L.

Here L follows the empirical distribution of n per-sample losses, so
psi(lambda) = log( (1/n) sum_i exp(lambda L_i) ), evaluated stably by shifting the
exponent by its maximum (the log-sum-exp trick).

Derivatives. Write Z(lambda) = E[exp(lambda L)]. Differentiating under the expectation,
psi'(lambda) = E[L exp(lambda L)] / E[exp(lambda L)]. The weights exp(lambda L) / Z define
the exponentially tilted distribution P_lambda (for the empirical distribution these are
softmax(lambda L)), so psi'(lambda) = E_lambda[L], the mean of L under P_lambda.
Differentiating once more, the derivative of the numerator brings down another L and the
derivative of 1/Z brings down -psi'(lambda), giving
psi''(lambda) = E_lambda[L^2] - (E_lambda[L])^2 = Var_lambda(L) >= 0. A variance is never
negative, so psi is convex. At lambda = 0 the tilt is trivial: psi(0) = log 1 = 0,
psi'(0) = E[L] and psi''(0) = Var(L) (the population variance, ddof = 0, for the empirical
distribution).

All computations are in float64.
"""

from __future__ import annotations

import math

import torch

_DTYPE = torch.float64


def empirical_psi(losses: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """psi(lambda) = log mean_i exp(lambda L_i) for the empirical distribution of the losses.

    Equals logsumexp(lambda L) - log n. The exponent is shifted by its (detached) maximum
    before exponentiating, so large |lambda L| does not overflow; the shift is a constant,
    so it does not change gradients with respect to lam. With lam = 0 the mean of ones is
    exactly 1, so psi(0) is exactly 0.

    :param losses: 1-D tensor of per-sample losses (converted to float64).
    :param lam: the tilt lambda: a python float or a 0-d tensor, which may require grad.
    :return: 0-d float64 tensor psi(lambda), differentiable in lam when lam requires grad.
    :raises ValueError: if losses is not a non-empty 1-D tensor or lam is not a scalar.
    """
    losses = _as_losses(losses)
    exponent = _as_lambda(lam) * losses
    shift = exponent.detach().max()
    return torch.log(torch.mean(torch.exp(exponent - shift))) + shift


def tilted_weights(losses: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """Probabilities of the exponentially tilted distribution: softmax(lambda L).

    :param losses: 1-D tensor of per-sample losses.
    :param lam: the tilt lambda.
    :return: 1-D float64 tensor of non-negative weights summing to 1.
    """
    losses = _as_losses(losses)
    return torch.softmax(_as_lambda(lam) * losses, dim=0)


def tilted_mean(losses: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """E_lambda[L], the mean under the tilted distribution; the closed form of psi'(lambda).

    :param losses: 1-D tensor of per-sample losses.
    :param lam: the tilt lambda.
    :return: 0-d float64 tensor.
    """
    losses = _as_losses(losses)
    return torch.sum(tilted_weights(losses, lam) * losses)


def tilted_variance(losses: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """Var_lambda(L), the variance under the tilted distribution; the closed form of psi''.

    Computed as the weighted mean of squared deviations from the tilted mean, which is
    never negative (unlike E[L^2] - E[L]^2 in floating point).

    :param losses: 1-D tensor of per-sample losses.
    :param lam: the tilt lambda.
    :return: 0-d float64 tensor, >= 0.
    """
    losses = _as_losses(losses)
    weights = tilted_weights(losses, lam)
    mean = torch.sum(weights * losses)
    return torch.sum(weights * (losses - mean) ** 2)


def autograd_derivatives(losses: torch.Tensor, lam: float | torch.Tensor) -> tuple[float, float, float]:
    """psi(lambda), psi'(lambda) and psi''(lambda) of empirical_psi, by automatic differentiation.

    The first derivative is taken with create_graph=True so that it can be differentiated
    again for the second.

    :param losses: 1-D tensor of per-sample losses.
    :param lam: the tilt lambda (its value is used; a fresh leaf tensor is made from it).
    :return: (psi, dpsi, d2psi) as python floats.
    """
    lam_leaf = _as_lambda(lam).detach().clone().requires_grad_(True)
    psi = empirical_psi(losses, lam_leaf)
    (dpsi,) = torch.autograd.grad(psi, lam_leaf, create_graph=True)
    (d2psi,) = torch.autograd.grad(dpsi, lam_leaf)
    return psi.item(), dpsi.detach().item(), d2psi.item()


def zero_tilt_identities(losses: torch.Tensor) -> dict[str, float]:
    """The identities psi(0) = 0, psi'(0) = E[L] and psi''(0) = Var(L), checked by autograd.

    :param losses: 1-D tensor of per-sample losses.
    :return: dict with psi0, dpsi0, mean, d2psi0, variance (population, ddof = 0) and
        max_abs_discrepancy, the largest of |psi0|, |dpsi0 - mean| and |d2psi0 - variance|.
    """
    losses = _as_losses(losses)
    psi0, dpsi0, d2psi0 = autograd_derivatives(losses, 0.0)
    mean = float(losses.mean())
    variance = float(losses.var(correction=0))
    return {
        "psi0": psi0,
        "dpsi0": dpsi0,
        "mean": mean,
        "d2psi0": d2psi0,
        "variance": variance,
        "max_abs_discrepancy": max(abs(psi0), abs(dpsi0 - mean), abs(d2psi0 - variance)),
    }


def psi_check(losses: torch.Tensor, lambdas: list[float], atol: float = 1e-10) -> list[dict[str, float]]:
    """Compare autograd derivatives of psi with their closed forms at each lambda.

    Also checks the lambda = 0 identities (psi(0) = 0, psi'(0) = mean, psi''(0) =
    population variance), to a tolerance of atol scaled by the size of the values.

    :param losses: 1-D tensor of per-sample losses.
    :param lambdas: the tilts at which to compare.
    :param atol: tolerance for the lambda = 0 identities, relative to max(1, |value|).
    :return: one dict per lambda with keys lam, psi, dpsi_autograd, dpsi_closed,
        d2psi_autograd, d2psi_closed and max_abs_discrepancy (the larger of the two
        derivative discrepancies).
    :raises ArithmeticError: if an identity at lambda = 0 fails.
    """
    losses = _as_losses(losses)
    _check_zero_tilt(losses, atol)
    rows = []
    for lam in lambdas:
        psi, dpsi, d2psi = autograd_derivatives(losses, lam)
        dpsi_closed = float(tilted_mean(losses, lam))
        d2psi_closed = float(tilted_variance(losses, lam))
        rows.append(
            {
                "lam": float(lam),
                "psi": psi,
                "dpsi_autograd": dpsi,
                "dpsi_closed": dpsi_closed,
                "d2psi_autograd": d2psi,
                "d2psi_closed": d2psi_closed,
                "max_abs_discrepancy": max(abs(dpsi - dpsi_closed), abs(d2psi - d2psi_closed)),
            }
        )
    return rows


def _check_zero_tilt(losses: torch.Tensor, atol: float) -> None:
    """Raise ArithmeticError unless the lambda = 0 identities hold to a scaled tolerance."""
    found = zero_tilt_identities(losses)
    pairs = {
        "psi(0) = 0": (found["psi0"], 0.0),
        "psi'(0) = mean": (found["dpsi0"], found["mean"]),
        "psi''(0) = variance": (found["d2psi0"], found["variance"]),
    }
    for name, (value, expected) in pairs.items():
        if abs(value - expected) > atol * max(1.0, abs(expected)):
            raise ArithmeticError(f"{name} fails: got {value!r}, expected {expected!r}")


def _as_losses(losses: torch.Tensor) -> torch.Tensor:
    """The losses as a float64 1-D tensor; ValueError for any other shape or no values."""
    losses = torch.as_tensor(losses, dtype=_DTYPE)
    if losses.dim() != 1 or losses.numel() == 0:
        raise ValueError(f"losses must be a non-empty 1-D tensor, got shape {tuple(losses.shape)}")
    if not bool(torch.isfinite(losses).all()):
        raise ValueError("losses must be finite")
    return losses


def _as_lambda(lam: float | torch.Tensor) -> torch.Tensor:
    """lam as a 0-d float64 tensor, keeping its autograd history when it is a tensor."""
    if isinstance(lam, torch.Tensor):
        if lam.dim() != 0:
            raise ValueError(f"lam must be a scalar (0-d) tensor, got shape {tuple(lam.shape)}")
        return lam.to(_DTYPE)
    value = float(lam)
    if not math.isfinite(value):
        raise ValueError(f"lam must be finite, got {value!r}")
    return torch.tensor(value, dtype=_DTYPE)
