"""The ``.pkl`` weights files: self-describing plain dicts written with ``torch.save``.

They load with ``torch.load(path, weights_only=True)``: only tensors, numbers, strings, lists,
dicts, booleans and None, no pickled classes. The README documents every key; in short::

    format          "bnn-kl-study/weights"      format_version  1
    method          "vi" | "map" | "mle"
    architecture    {"in_features", "hidden", "num_classes", "output_units", "activation"}
    prior           {"loc", "scale", "scaling"} or None (flat prior, MLE)
    site_order      ["layers.0.weight", "layers.0.bias", ...]
    sites           {name: {"loc": tensor, "scale": tensor}  (VI)  or  {"value": tensor}  (MAP/MLE),
                     plus "prior_loc" and "prior_scale" (floats; None for a flat prior)}
    experiment      the experiment's configuration (see study/experiments.py)
    run             {"seed", "selection", "test_selection", "normalization", "num_train", "data_source"}
    training        {"converged", "stop_reason", "blocks", "steps", "seconds", "diverged"}
    metrics         the run's metrics, keys "split/metric"
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from inference.guides import FlatGuide, MeanFieldNormalGuide, PointGuide
from pyro_models.bayesian_mlp import BayesianMLP, GaussianPrior, output_units
from study.errors import UserError

FORMAT = "bnn-kl-study/weights"
FORMAT_VERSION = 1


def weights_payload(model: BayesianMLP, guide: FlatGuide, method: str, experiment: dict, run: dict,
                    training: dict, metrics: dict) -> dict:
    """The plain dict stored in a ``.pkl`` file."""
    sites = {}
    if isinstance(guide, MeanFieldNormalGuide):
        locs, scales = guide.split(guide.loc.detach().cpu()), guide.split(guide.scale().detach().cpu())
    else:
        values = guide.split(guide.value.detach().cpu())
    for site in guide.sites:
        entry = ({"loc": locs[site.name].clone(), "scale": scales[site.name].clone()}
                 if isinstance(guide, MeanFieldNormalGuide) else {"value": values[site.name].clone()})
        entry.update(prior_loc=site.prior_loc, prior_scale=site.prior_scale)
        sites[site.name] = entry
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": method,
        "architecture": {**model.architecture(), "output_units": output_units(model.num_classes),
                         "activation": "relu"},
        "prior": model.prior.to_dict() if model.prior is not None else None,
        "site_order": [site.name for site in guide.sites],
        "sites": sites,
        "experiment": experiment,
        "run": run,
        "training": training,
        "metrics": metrics,
    }


def load_payload(path: str | os.PathLike) -> dict:
    """Read and validate a weights file; one clear ``UserError`` for anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises many types for corrupt or foreign files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: not a readable weights file ({first_line[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a weights file of this project (no '{FORMAT}' format tag)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: weights format version {payload.get('format_version')} is not supported "
                        f"(this version reads {FORMAT_VERSION})")
    missing = [k for k in ("method", "architecture", "prior", "site_order", "sites", "run") if k not in payload]
    if missing:
        raise UserError(f"{path}: weights file lacks {', '.join(missing)}")
    return payload


def rebuild(payload: dict, device: str | torch.device = "cpu") -> tuple[BayesianMLP, FlatGuide]:
    """The model and its trained guide from a payload of ``load_payload``."""
    architecture = payload["architecture"]
    prior = GaussianPrior(**payload["prior"]) if payload["prior"] is not None else None
    model = BayesianMLP(architecture["in_features"], tuple(architecture["hidden"]), architecture["num_classes"], prior)
    if payload["method"] == "vi":
        guide = MeanFieldNormalGuide(model, init_loc="zeros")
        tensors = {"loc": "loc", "scale": "scale"}
    else:
        guide = PointGuide(model, init_loc="zeros")
        tensors = {"value": "value"}
    if [site.name for site in guide.sites] != list(payload["site_order"]):
        raise UserError("weights file: its sites do not match its declared architecture")
    flat = {}
    for key in tensors:
        parts = []
        for site in guide.sites:
            tensor = payload["sites"][site.name].get(key)
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != site.shape:
                raise UserError(f"weights file: site {site.name} {key} is missing or has the wrong shape")
            parts.append(tensor.reshape(-1).float())
        flat[key] = torch.cat(parts)
    with torch.no_grad():
        if payload["method"] == "vi":
            if (flat["scale"] <= 0).any():
                raise UserError("weights file: posterior scales must be positive")
            guide.loc.copy_(flat["loc"])
            guide.log_scale.copy_(torch.log(flat["scale"].double()).float())
        else:
            guide.value.copy_(flat["value"])
    return model.to(device), guide.to(device)
