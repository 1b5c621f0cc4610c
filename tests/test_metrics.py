"""inference.metrics: calibration, the Bayesian model average and its entropies, and per-example draws."""

from __future__ import annotations

import math

import pytest
import torch

from inference.metrics import (
    accuracy_of_weights,
    bayesian_model_average,
    entropy,
    expected_calibration_error,
    logits_of_weights,
    per_example_sample_logits,
    point_metrics,
    pointwise_log_likelihood,
)
from pyro_models.bayesian_mlp import mlp_logits


def binary_probs(confidences, correct):
    """Two-class probabilities with the given top confidence, and labels correct or not."""
    confidences = torch.tensor(confidences, dtype=torch.float64)
    probs = torch.stack([confidences, 1 - confidences], dim=-1)  # prediction: class 0
    y = torch.where(torch.tensor(correct), 0, 1)
    return probs, y


# --- expected calibration error --------------------------------------------------------------------


def test_ece_of_a_perfectly_calibrated_predictor_is_zero():
    confidences, correct = [], []
    for confidence, count in [(0.55, 20), (0.65, 20), (0.75, 40), (0.9, 10), (1.0, 7)]:
        hits = round(confidence * count)
        confidences += [confidence] * count
        correct += [True] * hits + [False] * (count - hits)
    probs, y = binary_probs(confidences, correct)
    assert expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(probs, y, num_bins=4) == pytest.approx(0.0, abs=1e-12)


def test_ece_two_bin_example_by_hand():
    # K = 3 so that confidences below 1/2 exist. Two bins: [0, 0.5) and [0.5, 1].
    probs = torch.tensor([[0.4, 0.3, 0.3], [0.3, 0.4, 0.3],  # low bin, confidence 0.4, both correct
                          [0.9, 0.05, 0.05], [0.05, 0.05, 0.9]],  # high bin, confidence 0.9, both wrong
                         dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    # low bin: |2 - 0.8| = 1.2 (under-confident); high bin: |0 - 1.8| = 1.8 (over-confident); n = 4.
    # The gaps have opposite signs, so a signed sum (0.15) would be wrong.
    assert expected_calibration_error(probs, y, num_bins=2) == pytest.approx(0.75, abs=1e-12)
    # one bin pools everything: |2 - 2.6| / 4
    assert expected_calibration_error(probs, y, num_bins=1) == pytest.approx(0.15, abs=1e-12)


def test_ece_bin_share_weighting():
    # low bin: 2 examples at 0.4, one correct -> gap 0.1 with share 2/5; high bin: 0.9, 0.8, 0.7 all correct ->
    # gap 0.2 with share 3/5. ECE = 0.04 + 0.12.
    probs = torch.tensor([[0.4, 0.35, 0.25], [0.4, 0.35, 0.25], [0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.7, 0.3, 0.0]],
                         dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 0, 0])
    assert expected_calibration_error(probs, y, num_bins=2) == pytest.approx(0.16, abs=1e-12)


def test_ece_confidence_one_goes_to_the_last_bin():
    probs, y = binary_probs([1.0, 1.0, 0.95], [True, True, True])
    assert expected_calibration_error(probs, y, num_bins=10) == pytest.approx(0.05 / 3, abs=1e-12)


# --- the Bayesian model average --------------------------------------------------------------------


def test_bma_of_identical_samples_equals_the_point_metrics():
    torch.manual_seed(0)
    logits = 3 * torch.randn(40, 4)
    y = torch.randint(0, 4, (40,))
    point = point_metrics(logits, y)
    bma = bayesian_model_average(logits.expand(5, -1, -1), y)
    for key in ("accuracy", "nll", "ece"):
        assert bma[key] == pytest.approx(point[key], rel=1e-9, abs=1e-12)
    assert bma["gibbs_error"] == pytest.approx(1 - point["accuracy"], abs=1e-12)
    assert bma["mutual_information"] == pytest.approx(0.0, abs=1e-12)
    assert bma["predictive_entropy"] == pytest.approx(bma["expected_entropy"], rel=1e-9)
    # point metrics by hand
    log_probs = torch.log_softmax(logits.double(), -1)
    assert point["nll"] == pytest.approx(-log_probs[torch.arange(40), y].mean().item(), rel=1e-12)
    assert point["accuracy"] == pytest.approx((logits.argmax(-1) == y).double().mean().item(), abs=0)


def test_two_opposite_confident_samples_mutual_information():
    margin = 3.0
    p = 1 / (1 + math.exp(-2 * margin))  # softmax([m, -m])[0]
    sample_logits = torch.tensor([[[margin, -margin]] * 3, [[-margin, margin]] * 3])  # (2, 3, 2)
    y = torch.tensor([0, 1, 0])
    result = bayesian_model_average(sample_logits, y)
    sample_entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert result["predictive_entropy"] == pytest.approx(math.log(2), rel=1e-12)
    assert result["expected_entropy"] == pytest.approx(sample_entropy, rel=1e-9)
    assert result["mutual_information"] == pytest.approx(math.log(2) - sample_entropy, rel=1e-9)
    assert result["nll"] == pytest.approx(math.log(2), rel=1e-12)  # the average is 50/50
    # each sample is right on the examples of its class: sample 1 errs on 1 of 3, sample 2 on 2 of 3
    assert result["gibbs_error"] == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("num_classes", [3, 4, 7])
def test_symmetric_samples_give_log_k_predictive_entropy(num_classes):
    eye = 5.0 * torch.eye(num_classes)
    sample_logits = torch.stack([eye.roll(s, dims=1) for s in range(num_classes)])  # (K, K, K)
    y = torch.arange(num_classes)
    result = bayesian_model_average(sample_logits, y)
    assert result["predictive_entropy"] == pytest.approx(math.log(num_classes), rel=1e-12)
    expected_entropy = entropy(torch.log_softmax(eye[0].double(), -1)).item()
    assert result["expected_entropy"] == pytest.approx(expected_entropy, rel=1e-9)
    assert result["mutual_information"] == pytest.approx(math.log(num_classes) - expected_entropy, rel=1e-9)
    assert result["nll"] == pytest.approx(math.log(num_classes), rel=1e-12)


def test_bma_averages_probabilities_not_logits():
    # sample 1: p = (0.9, 0.1); sample 2: p = (0.3, 0.7) -> BMA (0.6, 0.4)
    p1, p2 = torch.tensor([0.9, 0.1]), torch.tensor([0.3, 0.7])
    sample_logits = torch.stack([p1.log(), p2.log()])[:, None, :]
    result = bayesian_model_average(sample_logits, torch.tensor([1]))
    assert result["nll"] == pytest.approx(-math.log(0.4), rel=1e-6)
    assert result["accuracy"] == 0.0
    assert result["gibbs_error"] == pytest.approx(0.5)


def test_gibbs_error_is_the_mean_error_of_single_draws():
    torch.manual_seed(1)
    sample_logits = torch.randn(6, 50, 3)
    y = torch.randint(0, 3, (50,))
    expected = sum(1 - point_metrics(sample_logits[s], y)["accuracy"] for s in range(6)) / 6
    assert bayesian_model_average(sample_logits, y)["gibbs_error"] == pytest.approx(expected, abs=1e-12)


def test_pointwise_log_likelihood():
    torch.manual_seed(2)
    sample_logits = torch.randn(4, 9, 5)
    y = torch.randint(0, 5, (9,))
    values = pointwise_log_likelihood(sample_logits, y)
    assert values.shape == (4, 9)
    for s in range(4):
        for i in range(9):
            expected = torch.log_softmax(sample_logits[s, i].double(), -1)[y[i]]
            assert values[s, i].item() == pytest.approx(expected.item(), rel=1e-12)
    torch.testing.assert_close(values, torch.distributions.Categorical(logits=sample_logits.double()).log_prob(y))


def test_entropy_handles_zero_probabilities():
    log_probs = torch.log(torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(entropy(log_probs), torch.tensor([math.log(2), 0.0], dtype=torch.float64))


# --- logits helpers --------------------------------------------------------------------------------


def random_weights(widths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, a, generator=generator), torch.randn(b, generator=generator))
            for a, b in zip(widths[:-1], widths[1:], strict=True)]


def test_logits_of_weights_chunks_and_accuracy():
    weights = random_weights((5, 7, 3))
    x = torch.randn(23, 5)
    torch.testing.assert_close(logits_of_weights(weights, x, batch_size=4), mlp_logits(x, weights))
    y = mlp_logits(x, weights).argmax(-1)
    assert accuracy_of_weights(weights, x, y) == 1.0
    assert accuracy_of_weights(weights, x, (y + 1) % 3) == 0.0
    assert math.isnan(accuracy_of_weights(weights, None, None))


# --- per-example weight draws ----------------------------------------------------------------------


@pytest.mark.parametrize("widths", [(5, 3), (5, 8, 3), (5, 8, 6, 1)])
def test_per_example_logits_with_zero_scales_equal_the_mean_network(widths):
    locs = random_weights(widths, seed=3)
    scales = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in locs]
    x = torch.randn(17, 5)
    logits = per_example_sample_logits(locs, scales, x, generator=torch.Generator().manual_seed(0), batch_size=5)
    torch.testing.assert_close(logits, mlp_logits(x, locs))
    assert logits.shape == (17, 2 if widths[-1] == 1 else widths[-1])


def test_per_example_logits_moments_for_logistic_regression():
    generator = torch.Generator().manual_seed(4)
    weight_loc, bias_loc = torch.randn(3, 4, generator=generator), torch.randn(3, generator=generator)
    weight_scale = 0.5 * torch.rand(3, 4, generator=generator) + 0.1
    bias_scale = 0.3 * torch.rand(3, generator=generator) + 0.1
    base = torch.randn(2, 4, generator=generator)
    repeats = 20_000
    x = base.repeat(repeats, 1)  # rows 2r and 2r+1 are examples 0 and 1
    logits = per_example_sample_logits([(weight_loc, bias_loc)], [(weight_scale, bias_scale)], x,
                                       generator=torch.Generator().manual_seed(5), batch_size=8192)
    draws = logits.reshape(repeats, 2, 3).double()
    mean = base @ weight_loc.T + bias_loc
    variance = base.square() @ weight_scale.square().T + bias_scale.square()
    standard_error = (variance / repeats).sqrt()
    assert torch.all((draws.mean(0) - mean).abs() < 5 * standard_error)
    # the sample variance has relative standard error sqrt(2 / repeats) = 1%
    torch.testing.assert_close(draws.var(0).float(), variance, rtol=0.05, atol=0)
    # every example has its own draw: two examples (and two classes) are uncorrelated
    centred = draws - draws.mean(0)
    correlation = (centred[:, 0] * centred[:, 1]).mean(0) / (draws[:, 0].std(0) * draws[:, 1].std(0))
    assert torch.all(correlation.abs() < 0.05)
    across_classes = (centred[:, 0, 0] * centred[:, 0, 1]).mean() / (draws[:, 0, 0].std() * draws[:, 0, 1].std())
    assert abs(across_classes.item()) < 0.05
