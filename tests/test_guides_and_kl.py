"""inference.guides, inference.objective and inference.kl: the guides' sites, the closed-form KL
and its place in the training objective, the point guides, and the weights-file round trip."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from inference.guides import MeanFieldNormalGuide, PointGuide
from inference.kl import kl_summary, monte_carlo_kl
from inference.metrics import logits_of_weights
from inference.objective import objective_terms
from pyro_models.bayesian_mlp import BayesianMLP, GaussianPrior
from study.weights import load_payload, rebuild, weights_payload

IN_FEATURES, NUM_CLASSES, N = 6, 3, 40
PRIOR = GaussianPrior(loc=0.05, scale=0.8, scaling="fan_in")


def make_vi(hidden=(8,), prior=PRIOR, seed=0, num_classes=NUM_CLASSES):
    """A model and a mean-field guide with random locations and raw scales."""
    torch.manual_seed(seed)
    model = BayesianMLP(IN_FEATURES, hidden, num_classes, prior)
    guide = MeanFieldNormalGuide(model)
    with torch.no_grad():
        guide.loc.copy_(0.5 * torch.randn(guide.num_params))
        guide.log_scale.copy_(torch.log(torch.nn.functional.softplus(torch.randn(guide.num_params) - 1.0)))
    return model, guide


def make_point(hidden=(8,), prior=PRIOR, seed=0):
    torch.manual_seed(seed)
    model = BayesianMLP(IN_FEATURES, hidden, NUM_CLASSES, prior)
    guide = PointGuide(model)
    with torch.no_grad():
        guide.value.copy_(0.5 * torch.randn(guide.num_params))
    return model, guide


def data(n=N, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, IN_FEATURES, generator=generator), torch.randint(0, NUM_CLASSES, (n,), generator=generator)


def latent_nodes(trace) -> dict:
    return {name: node for name, node in trace.nodes.items() if name.startswith("layers.")}


def independent_slices(guide):
    """Per-site flat slices computed here from the site table (not with the guide's own split)."""
    out, offset = {}, 0
    for site in guide.sites:
        out[site.name] = slice(offset, offset + math.prod(site.shape))
        offset += math.prod(site.shape)
    assert offset == guide.num_params
    return out


# --- the mean-field guide's sites ------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [(), (8,), (5, 4)])
def test_mean_field_sites_are_independent_normals_over_the_flat_vectors(hidden):
    model, guide = make_vi(hidden)
    trace = poutine.trace(guide).get_trace()
    samples = [name for name, node in trace.nodes.items() if node["type"] == "sample"]
    assert samples == [site.name for site in model.latent_sites()]  # no auxiliary sites
    assert not any("unconstrained" in name for name in trace.nodes)
    scale = torch.exp(guide.log_scale)
    for site in guide.sites:
        part = independent_slices(guide)[site.name]
        fn = trace.nodes[site.name]["fn"]
        assert isinstance(fn, dist.Independent) and isinstance(fn.base_dist, dist.Normal)
        assert tuple(fn.event_shape) == site.shape and tuple(fn.batch_shape) == ()
        assert torch.equal(fn.base_dist.loc, guide.loc[part].reshape(site.shape))
        assert torch.equal(fn.base_dist.scale, scale[part].reshape(site.shape))
    # The sites are views of the flat parameters: gradients reach the right entries.
    total = sum((i + 1) * trace.nodes[s.name]["fn"].base_dist.loc.sum() for i, s in enumerate(guide.sites))
    total.backward()
    expected = torch.cat([torch.full((s.numel,), float(i + 1)) for i, s in enumerate(guide.sites)])
    assert torch.equal(guide.loc.grad, expected)


def test_split_views_and_layer_index():
    _, guide = make_vi((5, 4))
    flat = torch.arange(guide.num_params, dtype=torch.float32)
    parts = guide.split(flat)
    slices = independent_slices(guide)
    for site in guide.sites:
        assert torch.equal(parts[site.name], flat[slices[site.name]].reshape(site.shape))
    batched = guide.split(torch.stack([flat, -flat]))
    for site in guide.sites:
        assert torch.equal(batched[site.name][1], -parts[site.name])
    assert guide.site_slices() == slices
    layers = guide.layer_of_parameter()
    for site in guide.sites:
        assert torch.all(layers[slices[site.name]] == site.layer)


# --- the closed-form KL ----------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [(), (8,), (5, 4)])
def test_kl_per_parameter_matches_torch_kl_divergence_per_site(hidden):
    model, guide = make_vi(hidden, seed=3)
    x, y = data()
    guide_trace = poutine.trace(guide).get_trace()
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    per_parameter = guide.kl_per_parameter()
    slices = independent_slices(guide)
    for site in guide.sites:
        q, p = guide_trace.nodes[site.name]["fn"], model_trace.nodes[site.name]["fn"]
        expected = torch.distributions.kl_divergence(q, p)
        assert expected.shape == ()
        assert per_parameter[slices[site.name]].sum().item() == pytest.approx(expected.item(), rel=1e-5)
        # and per parameter, against the formula in float64
        q64 = torch.distributions.Normal(q.base_dist.loc.double(), q.base_dist.scale.double())
        p64 = torch.distributions.Normal(p.base_dist.loc.double(), p.base_dist.scale.double())
        torch.testing.assert_close(per_parameter[slices[site.name]].double(),
                                   torch.distributions.kl_divergence(q64, p64).reshape(-1), rtol=1e-4, atol=1e-6)
    assert torch.all(per_parameter >= -1e-6)
    total = sum(torch.distributions.kl_divergence(guide_trace.nodes[s.name]["fn"], model_trace.nodes[s.name]["fn"])
                for s in guide.sites)
    assert guide.complexity().item() == pytest.approx(total.item(), rel=1e-5)
    assert guide.complexity().item() == pytest.approx(per_parameter.sum().item(), rel=1e-5)
    # the guide hands its scales and per-site pieces to the objective; the KL from them is the same
    scale, loc_pieces, scale_pieces = guide_trace.nodes["_RETURN"]["value"]
    assert torch.equal(scale, guide.scale())
    assert torch.equal(torch.cat(loc_pieces), guide.loc) and torch.equal(torch.cat(scale_pieces), scale)
    assert guide.complexity((scale, loc_pieces, scale_pieces)).item() == pytest.approx(total.item(), rel=1e-5)


def test_closed_form_kl_agrees_with_monte_carlo():
    _, guide = make_vi((8,), seed=4)
    closed = guide.complexity().item()
    estimate, standard_error = monte_carlo_kl(guide, num_samples=400, generator=torch.Generator().manual_seed(0))
    assert standard_error > 0
    assert standard_error < 0.02 * closed
    assert abs(estimate - closed) < 4 * standard_error


# --- the KL inside the training objective ----------------------------------------------------------


def test_objective_complexity_is_the_closed_form_kl():
    model, guide = make_vi((8,), seed=5)
    x, y = data()
    terms = objective_terms(model, guide, x, y, N, None, beta=1.0)
    assert terms.complexity.item() == pytest.approx(kl_summary(guide, N)["total"], rel=1e-5)
    assert terms.logits.shape == (N, NUM_CLASSES)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("minibatch", [False, True])
def test_objective_equals_trace_mean_field_elbo(seed, minibatch):
    model, guide = make_vi((8,), seed=6)
    x, y = data()
    if minibatch:
        idx = torch.tensor([1, 4, 7, 9, 22, 30, 31, 39])
        args, n = (x[idx], y[idx]), N
    else:
        idx, args, n = None, (x, y), N
    pyro.set_rng_seed(seed)
    terms = objective_terms(model, guide, *args, n, idx, beta=1.0)
    pyro.set_rng_seed(seed)
    reference = TraceMeanField_ELBO().differentiable_loss(model, guide, *args, num_data=n, subsample=idx)
    assert terms.loss.item() == pytest.approx(reference.item(), rel=1e-4)
    # and their gradients agree
    grads = torch.autograd.grad(terms.loss, [guide.loc, guide.log_scale])
    pyro.set_rng_seed(seed)
    reference = TraceMeanField_ELBO().differentiable_loss(model, guide, *args, num_data=n, subsample=idx)
    reference_grads = torch.autograd.grad(reference, [guide.loc, guide.log_scale])
    for a, b in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_complexity_term_is_not_sampled():
    model, guide = make_vi((8,), seed=7)
    x, y = data()
    closed, sampled = [], []
    for seed in range(5):
        pyro.set_rng_seed(seed)
        terms = objective_terms(model, guide, x, y, N, None, beta=1.0)
        closed.append((terms.loss - terms.data).item())
        pyro.set_rng_seed(seed)
        guide_trace = poutine.trace(guide).get_trace()
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y, num_data=N)
        model_trace.compute_log_prob()
        log_p = sum(node["log_prob_sum"] for node in latent_nodes(model_trace).values())
        sampled.append((guide_trace.log_prob_sum() - log_p).item())
    kl = guide.complexity().item()
    assert max(closed) - min(closed) < 1e-5 * kl
    assert all(value == pytest.approx(kl, rel=1e-5) for value in closed)
    # a one-sample estimate of the same KL varies from seed to seed
    assert max(sampled) - min(sampled) > 1.0


@pytest.mark.parametrize("beta", [0.0, 0.1, 1.0, 3.5])
def test_beta_multiplies_the_complexity_only(beta):
    model, guide = make_vi((8,), seed=8)
    x, y = data()
    pyro.set_rng_seed(11)
    terms = objective_terms(model, guide, x, y, N, None, beta=beta)
    assert torch.equal(terms.loss, terms.data + beta * terms.complexity)
    pyro.set_rng_seed(11)
    plain = objective_terms(model, guide, x, y, N, None, beta=1.0)
    assert torch.equal(terms.data, plain.data)  # the data term counts every example once, whatever beta
    assert torch.equal(terms.complexity, plain.complexity)


def test_data_term_is_the_scaled_negative_log_likelihood():
    model, guide = make_vi((8,), seed=9)
    x, y = data()
    idx = torch.arange(10, 20)
    terms = objective_terms(model, guide, x[idx], y[idx], N, idx, beta=1.0)
    expected = -torch.log_softmax(terms.logits, -1)[torch.arange(10), y[idx]].sum() * N / 10
    assert terms.data.item() == pytest.approx(expected.item(), rel=1e-6)


# --- kl_summary ------------------------------------------------------------------------------------


def test_kl_summary_is_consistent():
    _, guide = make_vi((5, 4), seed=10)
    summary = kl_summary(guide, num_data=250)
    per_parameter = guide.kl_per_parameter().double()
    assert summary["num_params"] == guide.num_params == 6 * 5 + 5 + 5 * 4 + 4 + 4 * 3 + 3
    assert summary["total"] == pytest.approx(per_parameter.sum().item(), rel=1e-12)
    assert summary["total"] == pytest.approx(sum(summary["per_site"].values()), rel=1e-12)
    assert summary["total"] == pytest.approx(sum(summary["per_layer"]), rel=1e-12)
    assert summary["mean_per_param"] == pytest.approx(summary["total"] / guide.num_params, rel=1e-12)
    assert summary["l2_norm"] == pytest.approx(per_parameter.norm().item(), rel=1e-12)
    assert summary["l2_norm"] == pytest.approx(math.sqrt(sum(v * v for v in per_parameter.tolist())), rel=1e-9)
    assert summary["per_n"] == pytest.approx(summary["total"] / 250, rel=1e-12)
    assert list(summary["per_site"]) == [site.name for site in guide.sites]
    assert len(summary["per_layer"]) == 3
    for layer in range(3):
        site_sum = summary["per_site"][f"layers.{layer}.weight"] + summary["per_site"][f"layers.{layer}.bias"]
        assert summary["per_layer"][layer] == pytest.approx(site_sum, rel=1e-12)


def test_posterior_equal_to_the_prior_has_zero_kl():
    _, guide = make_vi((8,), seed=11)
    with torch.no_grad():
        guide.loc.copy_(guide.prior_loc)
        guide.log_scale.copy_(torch.log(guide.prior_scale))
    summary = kl_summary(guide, N)
    assert abs(summary["total"]) < 1e-4
    assert summary["l2_norm"] < 1e-4
    # and moving one location by d (one prior sd) costs exactly d^2 / (2 s0^2) = 1/2 nat
    with torch.no_grad():
        guide.loc[0] += guide.prior_scale[0]
    assert kl_summary(guide, N)["total"] == pytest.approx(0.5, abs=1e-4)


def test_kl_of_a_single_parameter_by_hand():
    model = BayesianMLP(1, (), 2, GaussianPrior(loc=1.0, scale=2.0))
    guide = MeanFieldNormalGuide(model)
    with torch.no_grad():
        guide.loc.copy_(torch.tensor([3.0, -1.0]))
        guide.log_scale.copy_(torch.log(torch.tensor([1.0, 4.0])))
    # log(s0/s) + (s^2 + (m - m0)^2) / (2 s0^2) - 1/2
    expected = [math.log(2.0) + (1.0 + 4.0) / 8.0 - 0.5, math.log(0.5) + (16.0 + 4.0) / 8.0 - 0.5]
    torch.testing.assert_close(guide.kl_per_parameter().double(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)


# --- point guides ----------------------------------------------------------------------------------


def test_point_guide_negative_log_prior_and_delta_sites():
    model, guide = make_point((8,), seed=12)
    x, y = data()
    value = guide.value.detach().double()
    prior = torch.distributions.Normal(guide.prior_loc.double(), guide.prior_scale.double())
    assert guide.negative_log_prior().item() == pytest.approx(-prior.log_prob(value).sum().item(), rel=1e-5)
    assert guide.complexity().item() == guide.negative_log_prior().item()
    guide_trace = poutine.trace(guide).get_trace()
    slices = independent_slices(guide)
    for site in guide.sites:
        node = guide_trace.nodes[site.name]
        assert isinstance(node["fn"], dist.Delta)
        assert node["fn"].event_dim == len(site.shape)
        assert torch.equal(node["value"], guide.value[slices[site.name]].reshape(site.shape))
    assert guide_trace.log_prob_sum().item() == 0.0
    # -log p(w) is what the model's own prior sites say
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    model_trace.compute_log_prob()
    log_prior = sum(node["log_prob_sum"] for node in latent_nodes(model_trace).values())
    assert guide.negative_log_prior().item() == pytest.approx(-log_prior.item(), rel=1e-5)


def test_point_guide_under_the_flat_prior_has_zero_complexity():
    model, guide = make_point((8,), prior=None, seed=13)
    assert guide.negative_log_prior().item() == 0.0
    assert guide.complexity().item() == 0.0
    x, y = data()
    terms = objective_terms(model, guide, x, y, N, None, beta=1.0)
    assert torch.equal(terms.loss, terms.data)
    with pytest.raises(ValueError):
        MeanFieldNormalGuide(model)


@pytest.mark.parametrize("prior", [PRIOR, None])
def test_point_guide_objective_equals_trace_elbo(prior):
    model, guide = make_point((8,), prior=prior, seed=14)
    x, y = data()
    idx = torch.arange(0, 40, 3)
    for args, subsample in [((x, y), None), ((x[idx], y[idx]), idx)]:
        terms = objective_terms(model, guide, *args, N, subsample, beta=1.0)
        reference = Trace_ELBO().differentiable_loss(model, guide, *args, num_data=N, subsample=subsample)
        assert terms.loss.item() == pytest.approx(reference.item(), rel=1e-5)
        (grad,) = torch.autograd.grad(terms.loss, [guide.value])
        (reference_grad,) = torch.autograd.grad(
            Trace_ELBO().differentiable_loss(model, guide, *args, num_data=N, subsample=subsample), [guide.value])
        torch.testing.assert_close(grad, reference_grad, rtol=1e-4, atol=1e-4)


# --- the weights file ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["vi", "map", "mle"])
def test_weights_file_round_trip(tmp_path, method):
    if method == "vi":
        model, guide = make_vi((5, 4), seed=15)
    else:
        model, guide = make_point((5, 4), prior=PRIOR if method == "map" else None, seed=15)
    payload = weights_payload(model, guide, method, {"name": "test"}, {"seed": 0}, {"converged": True},
                              {"test/accuracy": 0.5})
    path = tmp_path / "weights.pkl"
    torch.save(payload, path)
    loaded = load_payload(path)
    assert loaded["method"] == method and loaded["site_order"] == [s.name for s in guide.sites]
    model2, guide2 = rebuild(loaded)
    assert type(guide2) is type(guide)
    assert model2.latent_sites() == model.latent_sites()
    assert model2.architecture() == model.architecture() and model2.prior == model.prior
    for (w, b), (w2, b2) in zip(guide.mean_weights(), guide2.mean_weights(), strict=True):
        assert torch.equal(w, w2) and torch.equal(b, b2)
    if method == "vi":
        torch.testing.assert_close(guide2.scale(), guide.scale(), rtol=1e-5, atol=1e-7)
        assert kl_summary(guide2, N)["total"] == pytest.approx(kl_summary(guide, N)["total"], rel=1e-5)
        for site in guide.sites:
            entry = loaded["sites"][site.name]
            assert entry["prior_scale"] == pytest.approx(site.prior_scale)
            assert entry["prior_loc"] == pytest.approx(site.prior_loc)
    else:
        assert guide2.complexity().item() == pytest.approx(guide.complexity().item(), rel=1e-6)
    x, _ = data()
    torch.testing.assert_close(logits_of_weights(guide2.mean_weights(), x), logits_of_weights(guide.mean_weights(), x))
