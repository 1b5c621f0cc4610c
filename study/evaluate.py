"""Evaluation of a trained model: accuracy, NLL, calibration, the ELBO, the KL and the PAC-Bayes bound.

Metric keys read ``split/metric``. For a Bayesian (VI) model:

- ``test/accuracy``, ``test/nll``, ``test/ece``: the Bayesian model average over
  ``test_samples`` weight draws; ``test/accuracy_mean_weights`` etc.: the posterior mean;
- ``test/gibbs_error``: mean error of a single weight draw (the stochastic classifier);
- ``elbo/data_per_n``: E_q[-log p(y | w)] / n on the whole training set, estimated with an
  independent weight draw per example and ``train_passes`` passes;
- ``kl/*``: the closed-form KL(q || p) summaries (``inference/kl.py``);
- ``elbo/neg_per_n`` = data_per_n + KL / n (the negative ELBO per example, beta = 1);
  ``objective/per_n`` = data_per_n + beta * KL / n (what a tempered run minimises);
- ``pac_bayes/*``: the kl-inverse bound on the Gibbs error with the Monte Carlo step.

For point estimates (MAP, MLE) the test metrics are those of the single network and
``objective/per_n`` is (-log p(y | w) + beta * (-log p(w))) / n.
"""

from __future__ import annotations

import math

import torch

from inference.bounds import gibbs_error_bound
from inference.guides import FlatGuide, MeanFieldNormalGuide
from inference.kl import kl_summary
from inference.metrics import (
    bayesian_model_average,
    logits_of_weights,
    per_example_sample_logits,
    point_metrics,
    sampled_logits,
)

PAC_BAYES_DELTA = 0.05
PAC_BAYES_DELTA_PRIME = 0.01
MONTE_CARLO_OUTCOMES = 200_000  # per-example weight draws on the training set (at least)


@torch.no_grad()
def evaluate(guide: FlatGuide, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
             y_test: torch.Tensor, beta: float, seed: int = 0, test_samples: int = 50,
             train_bma_samples: int = 10, monte_carlo_outcomes: int = MONTE_CARLO_OUTCOMES) -> dict:
    """All metrics of a trained guide on its training and test selections."""
    n = x_train.shape[0]
    metrics: dict = {"train/num_examples": n, "test/num_examples": x_test.shape[0]}
    generator = torch.Generator(device=x_train.device).manual_seed(10_000 + seed)
    mean_weights = guide.mean_weights()
    train_point = point_metrics(logits_of_weights(mean_weights, x_train), y_train)
    test_point = point_metrics(logits_of_weights(mean_weights, x_test), y_test)
    if not isinstance(guide, MeanFieldNormalGuide):
        metrics.update({f"train/{k}": v for k, v in train_point.items()})
        metrics.update({f"test/{k}": v for k, v in test_point.items()})
        penalty = guide.complexity().item()
        metrics["train/neg_log_prior"] = penalty
        metrics["objective/per_n"] = train_point["nll"] + beta * penalty / n
        metrics["params/count"] = guide.num_params
        return metrics

    metrics.update({f"train/{k}_mean_weights": v for k, v in train_point.items()})
    metrics.update({f"test/{k}_mean_weights": v for k, v in test_point.items()})
    test_bma = bayesian_model_average(sampled_logits(guide, x_test, test_samples, generator), y_test)
    metrics.update({f"test/{k}": v for k, v in test_bma.items()})
    metrics["test/bma_samples"] = test_samples
    train_bma = bayesian_model_average(sampled_logits(guide, x_train, train_bma_samples, generator), y_train)
    metrics.update({f"train/{k}": train_bma[k] for k in ("accuracy", "nll", "ece")})
    metrics["train/bma_samples"] = train_bma_samples

    # Independent weights per example: an unbiased data term and independent error outcomes.
    passes = max(1, min(100, math.ceil(monte_carlo_outcomes / n)))
    locs, scales = guide.split(guide.loc), guide.split(guide.scale())
    loc_weights, scale_weights = guide.weights_from_sites(locs), guide.weights_from_sites(scales)
    nll_sum, errors = 0.0, 0
    for _ in range(passes):
        logits = per_example_sample_logits(loc_weights, scale_weights, x_train, generator)
        log_probs = torch.log_softmax(logits.double(), -1)
        nll_sum += -log_probs.gather(-1, y_train[:, None]).sum().item()
        errors += (log_probs.argmax(-1) != y_train).sum().item()
    data_per_n = nll_sum / (passes * n)
    sampled_error = errors / (passes * n)

    kl = kl_summary(guide, n)
    metrics.update({
        "elbo/data_per_n": data_per_n,
        "elbo/neg_per_n": data_per_n + kl["per_n"],
        "elbo/passes": passes,
        "objective/per_n": data_per_n + beta * kl["per_n"],
        "train/gibbs_error": sampled_error,
        "kl/total": kl["total"],
        "kl/mean_per_param": kl["mean_per_param"],
        "kl/l2_norm": kl["l2_norm"],
        "kl/per_n": kl["per_n"],
        "params/count": kl["num_params"],
    })
    metrics.update({f"kl/layer_{i}": v for i, v in enumerate(kl["per_layer"])})
    bound = gibbs_error_bound(sampled_error, passes * n, kl["total"], n, PAC_BAYES_DELTA, PAC_BAYES_DELTA_PRIME)
    metrics.update({
        "pac_bayes/bound": bound.bound,
        "pac_bayes/empirical_gibbs_upper": bound.empirical_gibbs_upper,
        "pac_bayes/complexity": bound.complexity,
        "pac_bayes/delta": bound.delta,
        "pac_bayes/delta_prime": bound.delta_prime,
        "pac_bayes/monte_carlo_outcomes": passes * n,
    })
    return metrics
