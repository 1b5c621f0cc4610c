"""pyro_models.bayesian_mlp: the declared sites against Pyro traces, the logits, the likelihood scale."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyro_models.bayesian_mlp import BayesianMLP, GaussianPrior, LatentSite, layer_sizes, mlp_logits, output_units


def sample_sites(trace) -> dict:
    """The latent sample sites of a trace (no plates, no observations), in trace order."""
    return {name: node for name, node in trace.nodes.items()
            if node["type"] == "sample" and not node["is_observed"] and not name == "data"}


def random_values(model: BayesianMLP, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {site.name: torch.randn(site.shape, generator=generator) for site in model.latent_sites()}


# --- the latent sites ------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [(), (8,), (4, 3)])
@pytest.mark.parametrize("num_classes", [2, 3, 10])
@pytest.mark.parametrize("prior", [GaussianPrior(0.0, 0.1, "fixed"), GaussianPrior(0.25, 0.7, "fan_in")])
def test_latent_sites_match_a_pyro_trace(hidden, num_classes, prior):
    in_features = 5
    model = BayesianMLP(in_features, hidden, num_classes, prior)
    x, y = torch.randn(6, in_features), torch.randint(0, num_classes, (6,))
    trace = poutine.trace(model).get_trace(x, y)
    traced = sample_sites(trace)
    sites = model.latent_sites()
    assert [site.name for site in sites] == list(traced)  # same names, same order
    widths = [in_features, *hidden, 1 if num_classes == 2 else num_classes]
    assert len(sites) == 2 * (len(widths) - 1)
    for site in sites:
        node = traced[site.name]
        fn = node["fn"]
        layer = int(site.name.split(".")[1])
        fan_in, fan_out = widths[layer], widths[layer + 1]
        expected_shape = (fan_out, fan_in) if site.name.endswith("weight") else (fan_out,)
        expected_scale = prior.scale / math.sqrt(fan_in) if prior.scaling == "fan_in" else prior.scale
        assert site.layer == layer
        assert site.shape == expected_shape
        assert site.numel == math.prod(expected_shape)
        assert tuple(node["value"].shape) == expected_shape
        assert isinstance(fn, dist.Independent)
        assert isinstance(fn.base_dist, dist.Normal)
        assert tuple(fn.event_shape) == expected_shape
        assert tuple(fn.batch_shape) == ()
        assert site.prior_loc == pytest.approx(prior.loc, abs=0)
        assert site.prior_scale == pytest.approx(expected_scale, rel=1e-12)
        torch.testing.assert_close(fn.base_dist.loc, torch.full(expected_shape, prior.loc), rtol=0, atol=0)
        torch.testing.assert_close(fn.base_dist.scale, torch.full(expected_shape, expected_scale), rtol=1e-6, atol=0)


def test_fan_in_scaling_divides_by_sqrt_fan_in():
    prior = GaussianPrior(scale=2.0, scaling="fan_in")
    assert prior.scale_for(16) == pytest.approx(0.5, rel=1e-15)
    assert prior.scale_for(1) == pytest.approx(2.0, rel=1e-15)
    assert GaussianPrior(scale=2.0, scaling="fixed").scale_for(16) == 2.0
    model = BayesianMLP(16, (4,), 10, prior)
    scales = {site.name: site.prior_scale for site in model.latent_sites()}
    assert scales["layers.0.weight"] == pytest.approx(0.5) and scales["layers.0.bias"] == pytest.approx(0.5)
    assert scales["layers.1.weight"] == pytest.approx(1.0) and scales["layers.1.bias"] == pytest.approx(1.0)


def test_no_hidden_layer_is_logistic_regression():
    model = BayesianMLP(7, (), 4, GaussianPrior())
    assert [(s.name, s.shape, s.layer) for s in model.latent_sites()] == [
        ("layers.0.weight", (4, 7), 0), ("layers.0.bias", (4,), 0)]
    values = random_values(model)
    x = torch.randn(9, 7)
    logits = poutine.condition(model, data=values)(x)
    expected = x @ values["layers.0.weight"].T + values["layers.0.bias"]
    torch.testing.assert_close(logits, expected)


def test_layer_sizes_and_output_units():
    assert output_units(2) == 1 and output_units(3) == 3 and output_units(10) == 10
    assert layer_sizes(784, (400, 400), 10) == [(784, 400), (400, 400), (400, 10)]
    assert layer_sizes(784, (), 2) == [(784, 1)]


# --- the logits ------------------------------------------------------------------------------------


def test_binary_task_has_one_output_unit_and_softmax_is_sigmoid():
    model = BayesianMLP(5, (8,), 2, GaussianPrior())
    sites = {site.name: site for site in model.latent_sites()}
    assert sites["layers.1.weight"].shape == (1, 8) and sites["layers.1.bias"].shape == (1,)
    values = random_values(model, seed=3)
    x = torch.randn(11, 5)
    weights = BayesianMLP.weights_from_sites(values)
    logits = mlp_logits(x, weights)
    hidden = torch.relu(x @ values["layers.0.weight"].T + values["layers.0.bias"])
    z = (hidden @ values["layers.1.weight"].T + values["layers.1.bias"]).squeeze(-1)
    assert logits.shape == (11, 2)
    assert torch.equal(logits[:, 0], torch.zeros(11))
    torch.testing.assert_close(logits[:, 1], z)
    torch.testing.assert_close(torch.softmax(logits, -1)[:, 1], torch.sigmoid(z))
    # The model's likelihood is that of a Bernoulli with logit z.
    y = torch.randint(0, 2, (11,))
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace(x, y)
    obs = trace.nodes["obs"]
    expected = torch.where(y == 1, torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z))
    torch.testing.assert_close(obs["fn"].log_prob(y), expected)


def test_mlp_logits_matches_a_hand_written_relu_network():
    torch.manual_seed(1)
    w0, b0, w1, b1, w2, b2 = (torch.randn(6, 4), torch.randn(6), torch.randn(5, 6), torch.randn(5),
                              torch.randn(3, 5), torch.randn(3))
    x = torch.randn(7, 4)
    expected = torch.relu(torch.relu(x @ w0.T + b0) @ w1.T + b1) @ w2.T + b2
    torch.testing.assert_close(mlp_logits(x, [(w0, b0), (w1, b1), (w2, b2)]), expected)


@pytest.mark.parametrize("widths", [(4, 3), (4, 6, 3), (4, 6, 5, 1)])
def test_mlp_logits_with_a_sample_dimension_equals_a_loop(widths):
    torch.manual_seed(2)
    num_samples = 5
    weights = [(torch.randn(num_samples, b, a), torch.randn(num_samples, b)) for a, b in zip(widths[:-1], widths[1:],
                                                                                            strict=True)]
    x = torch.randn(8, widths[0])
    batched = mlp_logits(x, weights)
    k = 2 if widths[-1] == 1 else widths[-1]
    assert batched.shape == (num_samples, 8, k)
    for s in range(num_samples):
        single = mlp_logits(x, [(w[s], b[s]) for w, b in weights])
        torch.testing.assert_close(batched[s], single, rtol=1e-5, atol=1e-5)
    # The samples really differ (so the comparison above is not between copies).
    assert not torch.allclose(batched[0], batched[1])


# --- the likelihood --------------------------------------------------------------------------------


def test_obs_site_is_scaled_by_num_data_over_batch_size():
    model = BayesianMLP(5, (8,), 3, GaussianPrior())
    values = random_values(model, seed=4)
    conditioned = poutine.condition(model, data=values)
    x, y = torch.randn(10, 5), torch.randint(0, 3, (10,))
    subsample = torch.tensor([3, 17, 25, 40, 41, 55, 60, 71, 88, 99])
    trace = poutine.trace(conditioned).get_trace(x, y, num_data=100, subsample=subsample)
    obs = trace.nodes["obs"]
    assert obs["scale"] == pytest.approx(10.0)
    assert torch.equal(trace.nodes["data"]["value"], subsample)
    per_example = obs["fn"].log_prob(y)
    torch.testing.assert_close(per_example, torch.log_softmax(trace.nodes["_RETURN"]["value"], -1)[torch.arange(10), y])
    trace.compute_log_prob()
    torch.testing.assert_close(obs["log_prob_sum"], 10.0 * per_example.sum())
    # num_data without indices: the same scale; neither: no scaling.
    assert poutine.trace(conditioned).get_trace(x, y, num_data=30).nodes["obs"]["scale"] == pytest.approx(3.0)
    assert poutine.trace(conditioned).get_trace(x, y).nodes["obs"]["scale"] == 1.0


def test_sampling_labels_when_y_is_none():
    pyro.set_rng_seed(0)
    model = BayesianMLP(5, (), 3, GaussianPrior())
    trace = poutine.trace(model).get_trace(torch.randn(20, 5))
    obs = trace.nodes["obs"]
    assert not obs["is_observed"] and obs["value"].shape == (20,)
    assert int(obs["value"].min()) >= 0 and int(obs["value"].max()) <= 2


# --- bad arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"num_classes": 0}, {"hidden": (0,)}, {"hidden": (4, 0)},
                                    {"hidden": (4, -2)}])
def test_bad_model_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        BayesianMLP(**{"in_features": 5, "hidden": (4,), "num_classes": 3, **kwargs})


@pytest.mark.parametrize("kwargs", [{"scale": 0.0}, {"scale": -0.1}, {"scale": math.nan}, {"scale": math.inf},
                                    {"scaling": "xavier"}, {"scaling": "fan_out"}])
def test_bad_prior_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        GaussianPrior(**kwargs)


# --- the flat prior --------------------------------------------------------------------------------


def test_flat_prior_sites_are_improper_uniform_with_log_density_zero():
    model = BayesianMLP(5, (8,), 3, prior=None)
    sites = model.latent_sites()
    assert all(isinstance(s, LatentSite) and s.prior_loc is None and s.prior_scale is None for s in sites)
    values = {name: 100.0 * value for name, value in random_values(model, seed=5).items()}
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    trace = poutine.trace(poutine.condition(model, data=values)).get_trace(x, y)
    trace.compute_log_prob()
    traced = {name: node for name, node in trace.nodes.items() if name.startswith("layers.")}
    assert list(traced) == [s.name for s in sites]
    for site in sites:
        node = traced[site.name]
        fn = node["fn"]
        assert isinstance(fn, dist.ImproperUniform)
        assert tuple(fn.event_shape) == site.shape
        assert node["log_prob_sum"].item() == 0.0
        assert fn.log_prob(torch.randn(site.shape) * 1e3).item() == 0.0
    # The model's log-density is then the likelihood alone.
    torch.testing.assert_close(trace.log_prob_sum(), trace.nodes["obs"]["log_prob_sum"])
