"""Predictive metrics: accuracy, NLL, calibration and uncertainty of point and Bayesian predictions.

The Bayesian model average (BMA) over S posterior samples w_s is
p(y | x) = (1/S) sum_s softmax(f(x; w_s)), computed in log space (logsumexp) for stability.
Its predictive entropy H[p] splits into the expected entropy E_s H[p_s] (aleatoric) and the
mutual information H[p] - E_s H[p_s] between the label and the weights (epistemic).

References: C. Guo et al., "On calibration of modern neural networks" (ICML 2017) for the
expected calibration error; Y. Gal, "Uncertainty in deep learning" (2016) for the split of
the predictive entropy.
"""

from __future__ import annotations

import math

import torch

from pyro_models.bayesian_mlp import mlp_logits


@torch.no_grad()
def logits_of_weights(weights, x: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Logits ``(n, K)`` (or ``(S, n, K)`` for sampled weights), computed in chunks of inputs."""
    parts = [mlp_logits(x[i:i + batch_size], weights) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts, dim=-2)


@torch.no_grad()
def sampled_logits(guide, x: torch.Tensor, num_samples: int, generator: torch.Generator | None = None,
                   chunk: int = 10) -> torch.Tensor:
    """Logits ``(S, n, K)`` of S weight draws from a mean-field guide, drawn ``chunk`` at a time."""
    parts = []
    for start in range(0, num_samples, chunk):
        weights = guide.sample_weights(min(chunk, num_samples - start), generator)
        parts.append(logits_of_weights(weights, x))
    return torch.cat(parts)


@torch.no_grad()
def accuracy_of_weights(weights, x: torch.Tensor | None, y: torch.Tensor | None) -> float:
    """Share of correct predictions of one set of weights (e.g. the posterior mean)."""
    if x is None or x.shape[0] == 0:
        return float("nan")
    return (logits_of_weights(weights, x).argmax(-1) == y).float().mean().item()


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, num_bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - confidence| * bin share.

    :param probs: predictive probabilities ``(n, K)``.
    :param y: labels ``(n,)``.
    """
    confidence, prediction = probs.max(dim=-1)
    correct = (prediction == y).double()
    bins = torch.clamp((confidence.double() * num_bins).long(), max=num_bins - 1)
    total = torch.zeros(num_bins, dtype=torch.float64, device=probs.device)
    count = total.index_add(0, bins, torch.ones_like(correct))
    gap = total.index_add(0, bins, correct) - total.index_add(0, bins, confidence.double())
    return (gap.abs().sum() / count.sum()).item()


def entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of categorical distributions given as log-probabilities ``(..., K)``."""
    return -(log_probs.exp() * log_probs).nan_to_num().sum(-1)


def point_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy, mean NLL and ECE of one set of logits ``(n, K)``."""
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return {
        "accuracy": (log_probs.argmax(-1) == y).double().mean().item(),
        "nll": -log_probs.gather(-1, y[:, None]).mean().item(),
        "ece": expected_calibration_error(log_probs.exp(), y),
    }


def bayesian_model_average(sample_logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Metrics of the BMA over samples, and of the stochastic (Gibbs) classifier.

    :param sample_logits: logits ``(S, n, K)`` of S posterior samples.
    :param y: labels ``(n,)``.
    :returns: accuracy, nll, ece of the BMA; gibbs_error (mean error of a single draw);
        predictive_entropy, expected_entropy and mutual_information (means over inputs).
    """
    num_samples = sample_logits.shape[0]
    sample_log_probs = torch.log_softmax(sample_logits.double(), dim=-1)  # (S, n, K)
    bma_log_probs = torch.logsumexp(sample_log_probs, dim=0) - math.log(num_samples)  # (n, K)
    predictive_entropy = entropy(bma_log_probs)
    expected_entropy = entropy(sample_log_probs).mean(0)
    gibbs_errors = (sample_log_probs.argmax(-1) != y).double().mean(-1)  # (S,)
    return {
        "accuracy": (bma_log_probs.argmax(-1) == y).double().mean().item(),
        "nll": -bma_log_probs.gather(-1, y[:, None]).mean().item(),
        "ece": expected_calibration_error(bma_log_probs.exp(), y),
        "gibbs_error": gibbs_errors.mean().item(),
        "predictive_entropy": predictive_entropy.mean().item(),
        "expected_entropy": expected_entropy.mean().item(),
        "mutual_information": (predictive_entropy - expected_entropy).mean().item(),
    }


def pointwise_log_likelihood(sample_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(y_i | w_s) for every sample and example ``(S, n)`` (for PSIS-LOO and WAIC)."""
    return torch.log_softmax(sample_logits.double(), dim=-1).gather(
        -1, y.expand(sample_logits.shape[0], -1)[..., None]).squeeze(-1)


@torch.no_grad()
def per_example_sample_logits(loc_weights, scale_weights, x: torch.Tensor, generator: torch.Generator | None = None,
                              batch_size: int = 8192) -> torch.Tensor:
    """Logits ``(n, K)`` where every example gets its own independent draw of the weights.

    With independent weights per example, each pre-activation is exactly Gaussian given the
    layer's input h: mean h @ M^T + m_b, variance h^2 @ S^2^T + s_b^2 (the "local
    reparameterisation" of Kingma, Salimans & Welling, 2015). The n per-example outcomes are
    then independent, which is what the Monte Carlo part of the PAC-Bayes bound needs.

    :param loc_weights: per-layer ``(M, m_b)`` posterior means.
    :param scale_weights: per-layer ``(S, s_b)`` posterior standard deviations.
    """
    parts = []
    last = len(loc_weights) - 1
    for start in range(0, x.shape[0], batch_size):
        h = x[start:start + batch_size]
        for i, ((w_loc, b_loc), (w_scale, b_scale)) in enumerate(zip(loc_weights, scale_weights, strict=True)):
            mean = torch.nn.functional.linear(h, w_loc, b_loc)
            variance = torch.nn.functional.linear(h.square(), w_scale.square(), b_scale.square())
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            h = mean + variance.sqrt() * noise
            if i < last:
                h = torch.relu(h)
        if h.shape[-1] == 1:
            h = torch.cat([torch.zeros_like(h), h], dim=-1)
        parts.append(h)
    return torch.cat(parts)
