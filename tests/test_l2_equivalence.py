"""MAP under the Gaussian prior is L2-regularised training; MLE under the flat prior is unregularised.

On a strongly convex problem (multinomial logistic regression on 300 real MNIST images) the Pyro
MAP estimate and a plain PyTorch model trained with mean cross-entropy + lambda * ||w||^2, with
lambda = GaussianPrior.l2_coefficient(n), must reach the same optimum.
"""

from __future__ import annotations

import math

import pytest
import torch

from inference.guides import PointGuide
from inference.objective import objective_terms
from pyro_models.bayesian_mlp import BayesianMLP, GaussianPrior
from study.data import Selection, load_selection

SCALE = 0.25  # exactly representable in float32, like the model's prior buffers
NUM_TRAIN = 300


def lbfgs(parameters, objective, max_iter=1000):
    optimizer = torch.optim.LBFGS(parameters, lr=1.0, max_iter=max_iter, tolerance_grad=1e-11,
                                  tolerance_change=1e-15, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)


def plain_objective(linear: torch.nn.Linear, x, y, lam):
    return (torch.nn.functional.cross_entropy(linear(x), y)
            + lam * (linear.weight.square().sum() + linear.bias.square().sum()))


def fit_plain(x, y, lam) -> torch.nn.Linear:
    linear = torch.nn.Linear(x.shape[1], 10).double()
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
    lbfgs(linear.parameters(), lambda: plain_objective(linear, x, y, lam))
    return linear


def pyro_objective(model, guide, x, y):
    return objective_terms(model, guide, x, y, x.shape[0], None, beta=1.0).loss


def fit_map(x, y, prior):
    model = BayesianMLP(x.shape[1], (), 10, prior).double()
    guide = PointGuide(model, init_loc="zeros").double()
    n = x.shape[0]
    lbfgs(guide.parameters(), lambda: pyro_objective(model, guide, x, y) / n)
    return model, guide


@pytest.fixture(scope="module")
def problem(mnist_dir):
    x, y, _ = load_selection(mnist_dir, "train", Selection(first_n=NUM_TRAIN), normalization="unit")
    assert x.shape == (NUM_TRAIN, 784) and len(set(y.tolist())) == 10
    x = x.double()
    prior = GaussianPrior(scale=SCALE)
    lam = prior.l2_coefficient(NUM_TRAIN)
    linear = fit_plain(x, y, lam)
    model, guide = fit_map(x, y, prior)
    return x, y, prior, lam, linear, model, guide


def test_l2_coefficient_closed_form_and_inverse():
    prior = GaussianPrior(scale=SCALE)
    assert prior.l2_coefficient(NUM_TRAIN) == pytest.approx(1.0 / (2 * NUM_TRAIN * SCALE**2), rel=1e-14)
    for scale in (0.01, 0.3, 2.0):
        for n in (1, 300, 60000):
            lam = GaussianPrior(scale=scale).l2_coefficient(n)
            assert GaussianPrior.scale_for_l2(lam, n) == pytest.approx(scale, rel=1e-12)
    assert GaussianPrior(scale=0.5).l2_coefficient(100) == pytest.approx(0.02, rel=1e-14)
    fan_in = GaussianPrior(scale=2.0, scaling="fan_in")
    # the fan-in scale is 2 / sqrt(16) = 0.5 for a layer of fan-in 16
    assert fan_in.l2_coefficient(100, fan_in=16) == pytest.approx(0.02, rel=1e-14)


def test_map_objective_is_n_times_the_l2_objective_plus_a_constant(problem):
    x, y, prior, lam, linear, model, guide = problem
    n = x.shape[0]
    constant = guide.num_params * (math.log(SCALE) + 0.5 * math.log(2 * math.pi)) / n
    probe = PointGuide(model, init_loc="zeros").double()
    reference = torch.nn.Linear(784, 10).double()
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        with torch.no_grad():
            probe.value.copy_(0.1 * torch.randn(probe.num_params, generator=generator, dtype=torch.float64))
            (w, b), = probe.mean_weights()
            reference.weight.copy_(w)
            reference.bias.copy_(b)
            value = pyro_objective(model, probe, x, y).item() / n - constant
            assert value == pytest.approx(plain_objective(reference, x, y, lam).item(), rel=1e-10)


def test_map_equals_l2_regularised_training(problem):
    x, y, prior, lam, linear, model, guide = problem
    (w, b), = guide.mean_weights()
    assert w.abs().max().item() > 0.05  # a non-trivial optimum
    assert (w - linear.weight).abs().max().item() < 1e-5
    assert (b - linear.bias).abs().max().item() < 1e-5
    n = x.shape[0]
    constant = guide.num_params * (math.log(SCALE) + 0.5 * math.log(2 * math.pi)) / n
    with torch.no_grad():
        map_value = pyro_objective(model, guide, x, y).item() / n - constant
        plain_value = plain_objective(linear, x, y, lam).item()
    assert map_value == pytest.approx(plain_value, rel=1e-8)
    # the optimum really is one: the L2 objective's gradient vanishes there
    linear.zero_grad()
    plain_objective(linear, x, y, lam).backward()
    assert linear.weight.grad.abs().max().item() < 1e-6


def test_a_different_l2_coefficient_gives_different_weights(problem):
    x, y, prior, lam, linear, model, guide = problem
    other = fit_plain(x, y, 4 * lam)
    (w, _), = guide.mean_weights()
    assert (w - other.weight).abs().max().item() > 1e-2
    # and the prior with the matching scale reproduces it
    _, other_guide = fit_map(x, y, GaussianPrior(scale=GaussianPrior.scale_for_l2(4 * lam, x.shape[0])))
    (w4, _), = other_guide.mean_weights()
    assert (w4 - other.weight).abs().max().item() < 1e-5


def test_weight_decay_on_the_mean_loss_is_twice_lambda():
    """torch weight decay wd on the mean loss corresponds to lambda = wd / 2 (the docstring's claim)."""
    torch.manual_seed(0)
    x, y = torch.randn(50, 4, dtype=torch.float64), torch.randint(0, 3, (50,))
    lam = 0.05
    a, b = torch.nn.Linear(4, 3).double(), torch.nn.Linear(4, 3).double()
    b.load_state_dict(a.state_dict())
    sgd_a = torch.optim.SGD(a.parameters(), lr=0.1)
    sgd_b = torch.optim.SGD(b.parameters(), lr=0.1, weight_decay=2 * lam)
    for _ in range(20):
        sgd_a.zero_grad()
        plain_objective(a, x, y, lam).backward()
        sgd_a.step()
        sgd_b.zero_grad()
        torch.nn.functional.cross_entropy(b(x), y).backward()
        sgd_b.step()
    torch.testing.assert_close(a.weight, b.weight)
    torch.testing.assert_close(a.bias, b.bias)


# --- maximum likelihood ----------------------------------------------------------------------------


def separable_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    x = x + 0.5 * torch.where(y[:, None] == 1, 1.0, -1.0) * torch.tensor([1.0, 0.5])  # a margin
    return x, y


def weight_norms(prior, checkpoints=(200, 400, 800)):
    x, y = separable_data()
    torch.manual_seed(0)
    model = BayesianMLP(2, (), 2, prior)
    guide = PointGuide(model, init_loc="zeros")
    optimizer = torch.optim.Adam(guide.parameters(), lr=0.1)
    norms, complexities = [], []
    for step in range(1, max(checkpoints) + 1):
        terms = objective_terms(model, guide, x, y, x.shape[0], None, beta=1.0)
        complexities.append(terms.complexity.item())
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()
        if step in checkpoints:
            norms.append(guide.value.norm().item())
    accuracy = (terms.logits.argmax(-1) == y).float().mean().item()
    return norms, complexities, accuracy


def test_mle_weights_grow_without_bound_on_separable_data_and_map_weights_do_not():
    mle_norms, mle_complexities, mle_accuracy = weight_norms(None)
    map_norms, map_complexities, _ = weight_norms(GaussianPrior(scale=1.0))
    assert set(mle_complexities) == {0.0}
    assert min(map_complexities) > 0
    assert mle_accuracy == 1.0
    assert mle_norms[0] < mle_norms[1] < mle_norms[2]
    assert mle_norms[2] > mle_norms[0] + 1.0
    assert mle_norms[2] > 2 * map_norms[2]
    assert abs(map_norms[2] - map_norms[1]) < 1e-2 * map_norms[2]  # MAP has converged to a finite point
