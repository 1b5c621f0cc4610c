"""Train one run (an experiment at one seed) and write everything it produces into its folder.

``results/<experiment>/seed<k>/`` receives, each written atomically:
``weights.pkl`` (self-describing, see ``study/weights.py``), ``metrics.json``,
``history.csv`` (one row per block/epoch) and ``convergence.png`` (train and test accuracy).
While training, ``checkpoint.pt`` holds a resumable state; it is removed once the run is done.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch

from inference.guides import MeanFieldNormalGuide, PointGuide
from inference.train import fit
from pyro_models.bayesian_mlp import BayesianMLP
from study import figures
from study.data import load_selection, matching_test_selection
from study.errors import UserError
from study.evaluate import evaluate
from study.experiments import Experiment
from study.results import read_json, save_figure, save_torch, write_csv, write_json
from study.weights import weights_payload

EXISTING_POLICIES = ("error", "skip", "overwrite", "resume")


@dataclass
class RunOutcome:
    folder: Path
    status: str  # "trained", "skipped", "diverged"
    message: str
    metrics: dict


def run_folder(out: Path, experiment: Experiment, seed: int) -> Path:
    return Path(out) / experiment.name / f"seed{seed}"


def train_run(experiment: Experiment, seed: int, data_dir: str | Path, out: str | Path, device: str = "cpu",
              existing: str = "error", require_mnist: bool = False, progress: bool = True,
              quick: bool = False) -> RunOutcome:
    """Train ``experiment`` with ``seed``, evaluate it and write its folder.

    :param existing: what to do when the folder already holds a finished run: ``error``,
        ``skip``, ``overwrite``; ``resume`` also continues from a checkpoint.
    :param quick: evaluate with few posterior samples on the first 2,000 test images (smoke tests).
    """
    folder = run_folder(Path(out), experiment, seed)
    finished = (folder / "metrics.json").exists() and (folder / "weights.pkl").exists()
    if finished and existing in ("skip", "resume"):
        return RunOutcome(folder, "skipped", "already done", read_json(folder / "metrics.json")["metrics"])
    if finished and existing == "error":
        raise UserError(f"{folder}/ already holds a finished run; pass --skip-existing to keep it "
                        "or --overwrite to train it again")
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "checkpoint.pt"
    if checkpoint.exists() and existing not in ("resume", "skip"):
        checkpoint.unlink()

    selection = experiment.with_seed_selection(seed)
    test_selection = matching_test_selection(selection)
    x, y, train_split = load_selection(data_dir, "train", selection, experiment.normalization, device, require_mnist)
    x_test, y_test, _ = load_selection(data_dir, "test", test_selection, experiment.normalization, device,
                                       require_mnist)

    if quick:  # a smoke run: a smaller test set keeps the per-block evaluation cheap
        x_test, y_test = x_test[:2000], y_test[:2000]
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = BayesianMLP(x.shape[1], experiment.hidden, selection.num_classes, experiment.prior)
    if experiment.method == "vi":
        guide = MeanFieldNormalGuide(model, experiment.init_scale, experiment.init_loc)
    else:
        guide = PointGuide(model, experiment.init_loc)
    model.to(device)
    guide.to(device)
    config = dataclasses.replace(experiment.train, seed=seed)
    started = time.perf_counter()
    result = fit(model, guide, x, y, config, x_test, y_test, checkpoint=checkpoint,
                 resume=existing in ("resume", "skip"), progress=progress,
                 description=f"{experiment.name} seed {seed}")
    samples = {"test_samples": 5, "train_bma_samples": 2, "monte_carlo_outcomes": 2_000} if quick else {}
    metrics = evaluate(guide, x, y, x_test, y_test, experiment.beta, seed, **samples)
    metrics.update({
        "training/converged": result.converged,
        "training/diverged": result.diverged,
        "training/blocks": result.blocks,
        "training/steps": result.steps,
        "training/epochs": result.history[-1]["epoch"] if result.history else 0.0,
        "training/seconds": result.seconds,
        "evaluation/seconds": time.perf_counter() - started - result.seconds,
    })
    training = {"converged": result.converged, "diverged": result.diverged, "stop_reason": result.stop_reason,
                "blocks": result.blocks, "steps": result.steps, "seconds": result.seconds}
    run = {"seed": seed, "selection": selection.to_dict(), "test_selection": test_selection.to_dict(),
           "normalization": experiment.normalization, "num_train": int(x.shape[0]),
           "num_test": int(x_test.shape[0]), "data_source": train_split.source, "device": str(device),
           "torch_version": str(torch.__version__), "pyro_version": str(pyro.__version__)}
    payload = weights_payload(model, guide, experiment.method, experiment.to_dict(), run, training, metrics)
    save_torch(folder / "weights.pkl", payload)
    write_csv(folder / "history.csv", result.history)
    save_figure(folder / "convergence.png", figures.convergence_figure(result.history, experiment.name, seed))
    write_json(folder / "metrics.json", {"experiment": experiment.name, "group": experiment.group, "seed": seed,
                                         "description": experiment.description, "run": run, "training": training,
                                         "config": experiment.to_dict(), "metrics": metrics})
    checkpoint.unlink(missing_ok=True)
    status = "diverged" if result.diverged else "trained"
    return RunOutcome(folder, status, result.stop_reason, metrics)
