"""One training loop for MLE, MAP and VI, with a stopping rule that says when it has converged.

The method is the guide (``MeanFieldNormalGuide`` for VI, ``PointGuide`` for MAP/MLE) and the
objective is always ``E_q[-log p(y | w)] + beta * complexity(q)`` (``inference/objective.py``).

Schedule and stopping rule ("train until convergence"):
the loop works in *blocks*: one epoch with mini-batches, or ``steps_per_block`` full-batch
steps when the training set is small. After each block it records the block's mean objective
per training example, L_t. The rule compares the mean of the last ``window`` blocks with the
mean of the ``window`` blocks before them; when the relative decrease is below ``tolerance``
the objective has stopped improving at this learning rate. The learning rate is then divided
by ``decay_factor`` and the rule is applied again; when it fires at the last learning rate
(after ``num_decays`` decays) the run has converged. A run that reaches ``max_blocks`` first
is recorded as not converged.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from inference.guides import FlatGuide, MeanFieldNormalGuide
from inference.metrics import accuracy_of_weights
from inference.objective import objective_terms

METHODS = ("vi", "map", "mle")


@dataclass
class TrainConfig:
    """How to optimise. Defaults were chosen by the ELBO they reach (see README).

    :param beta: weight of the complexity term (KL for VI); 1 = Bayes' rule.
    :param learning_rate: Adam learning rate of the locations / point estimates.
    :param scale_learning_rate: Adam learning rate of the posterior scales (VI only).
    :param batch_size: mini-batch size; training sets up to ``full_batch_max`` use full batches.
    :param full_batch_max: largest training set trained with full-batch steps.
    :param steps_per_block: full-batch steps per block (one block = one epoch for mini-batches).
    :param max_blocks: cap on the number of blocks (epochs).
    :param min_blocks: blocks before the stopping rule may fire.
    :param window: blocks averaged on each side of the stopping rule's comparison.
    :param tolerance: relative decrease of the smoothed objective below which it has converged.
    :param num_decays: learning-rate decays before the final convergence test.
    :param decay_factor: divisor of the learning rate at each decay.
    :param seed: seed of the initialisation, the mini-batch order and the weight samples.
    :param eval_max: at most this many training examples are used for the per-block accuracy.
    """

    beta: float = 1.0
    learning_rate: float = 2e-3
    scale_learning_rate: float = 2e-2
    batch_size: int = 128
    full_batch_max: int = 1024
    steps_per_block: int = 100
    max_blocks: int = 60
    min_blocks: int = 4
    window: int = 3
    tolerance: float = 1e-2
    num_decays: int = 2
    decay_factor: float = 10.0
    seed: int = 0
    eval_max: int = 10_000

    def __post_init__(self):
        checks = {
            "beta": self.beta >= 0, "learning_rate": self.learning_rate > 0,
            "scale_learning_rate": self.scale_learning_rate > 0, "batch_size": self.batch_size >= 1,
            "steps_per_block": self.steps_per_block >= 1, "max_blocks": self.max_blocks >= 1,
            "window": self.window >= 1, "tolerance": self.tolerance >= 0, "num_decays": self.num_decays >= 0,
            "decay_factor": self.decay_factor > 1,
        }
        for name, ok in checks.items():
            if not ok or not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"invalid training setting {name}={getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    converged: bool = False
    stop_reason: str = ""
    blocks: int = 0
    steps: int = 0
    seconds: float = 0.0
    diverged: bool = False


def smoothed_relative_decrease(values: list[float], window: int) -> float | None:
    """(mean of the previous window - mean of the last window) / |mean of the last window|."""
    if len(values) < 2 * window:
        return None
    last = sum(values[-window:]) / window
    before = sum(values[-2 * window:-window]) / window
    return (before - last) / max(abs(last), 1e-12)


def build_optimizer(guide: FlatGuide, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the guide's flat parameter vectors (locations and, for VI, scales)."""
    if isinstance(guide, MeanFieldNormalGuide):
        groups = [{"params": [guide.loc], "lr": config.learning_rate, "base_lr": config.learning_rate},
                  {"params": [guide.log_scale], "lr": config.scale_learning_rate,
                   "base_lr": config.scale_learning_rate}]
    else:
        groups = [{"params": list(guide.parameters()), "lr": config.learning_rate, "base_lr": config.learning_rate}]
    return torch.optim.Adam(groups, foreach=True)


def training_step(model, guide: FlatGuide, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
                  num_data: int, subsample: torch.Tensor | None, beta: float) -> tuple[float, float]:
    """One optimiser step on one mini-batch; returns (objective, data term). A non-finite
    objective is returned without stepping, so the caller can stop with the last good state."""
    terms = objective_terms(model, guide, xb, yb, num_data, subsample, beta)
    values = torch.stack([terms.loss.detach(), terms.data.detach()]).tolist()  # one device sync
    if not math.isfinite(values[0]):
        return values[0], values[1]
    optimizer.zero_grad(set_to_none=True)
    terms.loss.backward()
    optimizer.step()
    return values[0], values[1]


def _set_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def _save_atomically(payload: dict, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def fit(model, guide: FlatGuide, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
        x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
        checkpoint: Path | None = None, resume: bool = False, progress: bool = True,
        description: str = "training") -> TrainResult:
    """Train ``guide`` (and so the posterior or point estimate) on ``(x, y)``.

    :param model: the ``BayesianMLP``.
    :param guide: ``MeanFieldNormalGuide`` (VI) or ``PointGuide`` (MAP / MLE).
    :param x: training inputs ``(n, D)``; ``y``: training labels ``(n,)``.
    :param config: the ``TrainConfig``.
    :param x_test: test inputs for the per-block test accuracy (optional); ``y_test`` its labels.
    :param checkpoint: a file to save the state to after every block (resumable).
    :param resume: continue from ``checkpoint`` if it exists.
    :param progress: show a progress bar.
    """
    n = x.shape[0]
    full_batch = n <= config.full_batch_max
    steps_per_block = config.steps_per_block if full_batch else math.ceil(n / config.batch_size)
    optimizer = build_optimizer(guide, config)
    generator = torch.Generator().manual_seed(config.seed)
    result = TrainResult()
    block_objectives: list[float] = []
    decays_done, factor = 0, 1.0
    eval_x, eval_y = x[: config.eval_max], y[: config.eval_max]

    if resume and checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        guide.load_state_dict(state["guide"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        result.history, block_objectives = state["history"], state["block_objectives"]
        decays_done, factor = state["decays_done"], state["factor"]
        result.blocks, result.steps, result.seconds = state["blocks"], state["steps"], state["seconds"]
        result.converged, result.stop_reason = state["converged"], state["stop_reason"]
        _set_learning_rate(optimizer, factor)

    bar = tqdm(total=config.max_blocks, initial=result.blocks, desc=description, disable=not progress,
               leave=False, dynamic_ncols=True)
    last_good = copy.deepcopy(guide.state_dict())
    start = time.perf_counter() - result.seconds
    with pyro.validation_enabled(False):
        while result.blocks < config.max_blocks and not result.converged:
            totals = {"objective": 0.0, "data": 0.0}
            order = torch.randperm(n, generator=generator).to(x.device) if not full_batch else None
            for step in range(steps_per_block):
                if full_batch:
                    xb, yb, idx = x, y, None
                else:
                    idx = order[step * config.batch_size:(step + 1) * config.batch_size]
                    xb, yb = x[idx], y[idx]
                loss_value, data_value = training_step(model, guide, optimizer, xb, yb, n, idx, config.beta)
                if not math.isfinite(loss_value):
                    guide.load_state_dict(last_good)
                    result.diverged = True
                    result.stop_reason = (f"the objective became {loss_value} at step {result.steps + step + 1}; "
                                          f"kept the state after block {result.blocks}")
                    break
                totals["objective"] += loss_value
                totals["data"] += data_value
            if result.diverged:
                break
            result.blocks += 1
            result.steps += steps_per_block
            last_good = copy.deepcopy(guide.state_dict())
            row = _block_record(model, guide, config, result, totals, steps_per_block, n, factor, eval_x, eval_y,
                                x_test, y_test, full_batch)
            row["seconds"] = time.perf_counter() - start
            result.history.append(row)
            block_objectives.append(row["objective_per_n"])
            bar.update(1)
            bar.set_postfix_str(f"obj/n {row['objective_per_n']:.4f} kl {row['complexity']:.4g} "
                                f"train {row['train_accuracy']:.3f}")
            change = smoothed_relative_decrease(block_objectives, config.window)
            row["relative_decrease"] = change
            if result.blocks >= config.min_blocks and change is not None and change < config.tolerance:
                if decays_done < config.num_decays:
                    decays_done += 1
                    factor /= config.decay_factor
                    _set_learning_rate(optimizer, factor)
                    block_objectives.clear()  # judge the new learning rate on its own blocks
                else:
                    result.converged = True
                    result.stop_reason = (f"converged: relative decrease {change:.2e} < {config.tolerance:g} "
                                          f"over {config.window}-block windows after {decays_done} decays")
            result.seconds = time.perf_counter() - start
            if checkpoint is not None:
                _save_atomically({"guide": guide.state_dict(), "optimizer": optimizer.state_dict(),
                                  "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                                  "history": result.history, "block_objectives": block_objectives,
                                  "decays_done": decays_done, "factor": factor, "blocks": result.blocks,
                                  "steps": result.steps, "seconds": result.seconds, "converged": result.converged,
                                  "stop_reason": result.stop_reason}, checkpoint)
            if result.converged:
                break
    bar.close()
    result.seconds = time.perf_counter() - start
    if not result.converged and not result.diverged:
        result.stop_reason = f"not converged: reached the cap of {config.max_blocks} blocks"
    return result


@torch.no_grad()
def _block_record(model, guide, config, result, totals, steps_per_block, n, factor, eval_x, eval_y, x_test, y_test,
                  full_batch) -> dict:
    """One row of the per-block history."""
    complexity = guide.complexity().item()
    data_per_n = totals["data"] / steps_per_block / n
    weights = guide.mean_weights()
    is_vi = isinstance(guide, MeanFieldNormalGuide)
    return {
        "block": result.blocks,
        "epoch": float(result.steps if full_batch else result.blocks),  # passes over the training set
        "step": result.steps,
        "learning_rate": config.learning_rate * factor,
        "objective_per_n": totals["objective"] / steps_per_block / n,
        "data_per_n": data_per_n,
        "complexity": complexity,
        "neg_elbo_per_n": data_per_n + complexity / n if is_vi else float("nan"),
        "train_accuracy": accuracy_of_weights(weights, eval_x, eval_y),
        "test_accuracy": accuracy_of_weights(weights, x_test, y_test) if x_test is not None else float("nan"),
    }
