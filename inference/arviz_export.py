"""ArviZ ``InferenceData`` from a mean-field posterior: draws, pointwise log-likelihood, summaries.

One chain of independent draws from q (there is no Markov chain: R-hat is undefined and the
effective sample size is the number of draws). For logistic regression every weight is kept,
with named dims ``class`` and ``pixel``. For MLPs, whose layers hold up to 10^6 weights, each
layer keeps a fixed random subset of its weights (dim ``<site>_index``, coordinates = flat
indices into the site), enough for per-layer summaries without multi-GB files.

The ``log_likelihood`` group holds log p(y_i | w_s) for every draw s and observation i, of the
training observations used for PSIS-LOO (``y``) and of the test set (``y_test``).

References: Vehtari, Gelman & Gabry, "Practical Bayesian model evaluation using leave-one-out
cross-validation and WAIC" (2017); Yao et al., "Yes, but did it work?: evaluating variational
inference" (2018), for Pareto-k as a diagnostic of a variational posterior.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import torch

from inference.guides import MeanFieldNormalGuide
from inference.metrics import logits_of_weights, pointwise_log_likelihood

HDI_PROB = 0.94
_Z_94 = 1.8807936081512509  # standard-normal quantile of 0.97: the central 94% interval


@torch.no_grad()
def posterior_inference_data(guide: MeanFieldNormalGuide, x_loo: torch.Tensor, y_loo: torch.Tensor,
                             x_test: torch.Tensor, y_test: torch.Tensor, num_draws: int = 100, seed: int = 0,
                             max_per_site: int = 2000, chunk: int = 10) -> az.InferenceData:
    """InferenceData with posterior draws and pointwise log-likelihoods.

    :param guide: the trained mean-field guide.
    :param x_loo: training inputs whose log-likelihood is stored as ``y`` (for PSIS-LOO).
    :param x_test: test inputs, stored as ``y_test``.
    :param num_draws: number of posterior draws.
    :param max_per_site: sites with more weights keep a random subset of this size.
    """
    generator = torch.Generator(device=guide.loc.device).manual_seed(30_000 + seed)
    index_generator = np.random.default_rng(seed)
    is_logistic = len(guide.sites) == 2
    kept = {}
    for site in guide.sites:
        if is_logistic or site.numel <= max_per_site:
            kept[site.name] = None  # keep all
        else:
            kept[site.name] = np.sort(index_generator.choice(site.numel, max_per_site, replace=False))
    posterior = {site.name: [] for site in guide.sites}
    loglik_loo, loglik_test = [], []
    for start in range(0, num_draws, chunk):
        count = min(chunk, num_draws - start)
        values = guide.sample_values(count, generator)  # (S, P)
        per_site = guide.split(values)
        for site in guide.sites:
            draws = per_site[site.name]
            if kept[site.name] is not None:
                draws = draws.reshape(count, -1)[:, torch.as_tensor(kept[site.name], device=draws.device)]
            posterior[site.name].append(draws.float().cpu().numpy())
        weights = guide.weights_from_sites(per_site)
        loglik_loo.append(pointwise_log_likelihood(logits_of_weights(weights, x_loo), y_loo).cpu().numpy())
        loglik_test.append(pointwise_log_likelihood(logits_of_weights(weights, x_test), y_test).cpu().numpy())

    dims, coords, arrays = {}, {}, {}
    for site in guide.sites:
        name = site.name.replace(".", "_")
        data = np.concatenate(posterior[site.name])[None]  # (chain=1, draw, ...)
        arrays[name] = data
        if kept[site.name] is not None:
            dims[name] = [f"{name}_index"]
            coords[f"{name}_index"] = kept[site.name]
        elif is_logistic and len(site.shape) == 2:
            dims[name] = ["class", "pixel"]
        elif is_logistic:
            dims[name] = ["class"]
    if is_logistic:
        coords["class"] = np.arange(guide.sites[0].shape[0])
        coords["pixel"] = np.arange(guide.sites[0].shape[1])
    return az.from_dict(
        posterior=arrays,
        log_likelihood={"y": np.concatenate(loglik_loo, axis=0)[None],
                        "y_test": np.concatenate(loglik_test, axis=0)[None]},
        observed_data={"y": y_loo.cpu().numpy(), "y_test": y_test.cpu().numpy()},
        coords={**coords, "obs": np.arange(len(y_loo)), "obs_test": np.arange(len(y_test))},
        dims={**dims, "y": ["obs"], "y_test": ["obs_test"]},
        attrs={"inference": "mean-field variational inference (independent draws, one chain)"},
    )


@torch.no_grad()
def per_layer_summary(guide: MeanFieldNormalGuide, idata: az.InferenceData) -> list[dict]:
    """Per layer: exact statistics from the guide and ``az.summary`` aggregates of the stored draws."""
    loc, scale = guide.loc.double(), guide.scale().double()
    layers = guide.layer_of_parameter().to(loc.device)
    kl = guide.kl_per_parameter().double()
    rows = []
    for layer in range(int(layers.max()) + 1):
        mask = layers == layer
        names = [s.name.replace(".", "_") for s in guide.sites if s.layer == layer]
        summary = az.summary(idata, var_names=names, kind="stats", hdi_prob=HDI_PROB)
        excludes_zero = ((summary[f"hdi_{(1 - HDI_PROB) / 2:.0%}"] > 0) | (summary[f"hdi_{(1 + HDI_PROB) / 2:.0%}"] < 0))
        rows.append({
            "layer": layer,
            "params": int(mask.sum()),
            "mean |loc|": loc[mask].abs().mean().item(),
            "mean scale": scale[mask].mean().item(),
            "mean scale / prior scale": (scale[mask] / guide.prior_scale[mask]).mean().item(),
            "share 94% interval excludes 0": (loc[mask].abs() > _Z_94 * scale[mask]).double().mean().item(),
            "KL (nats)": kl[mask].sum().item(),
            "draws summarised": int(len(summary)),
            "az.summary mean sd": float(summary["sd"].mean()),
            "az.summary share HDI excludes 0": float(excludes_zero.mean()),
        })
    return rows
