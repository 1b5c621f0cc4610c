"""inference.train: the stopping rule, fit's history, determinism, checkpoint/resume, NaN handling."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import inference.train as train
from inference.guides import MeanFieldNormalGuide, PointGuide
from inference.objective import objective_terms
from inference.train import TrainConfig, fit, smoothed_relative_decrease
from pyro_models.bayesian_mlp import BayesianMLP, GaussianPrior

ROW_KEYS = {"block", "epoch", "step", "learning_rate", "objective_per_n", "data_per_n", "complexity",
            "neg_elbo_per_n", "train_accuracy", "test_accuracy", "seconds", "relative_decrease"}


def synthetic(n=64, d=5, k=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator)
    y = (x[:, :k] + 0.3 * torch.randn(n, k, generator=generator)).argmax(-1)
    return x, y


PRIOR = GaussianPrior(scale=1.0)


def build(kind="vi", seed=0, hidden=(8,), prior=PRIOR):
    pyro.set_rng_seed(seed)
    model = BayesianMLP(5, hidden, 3, prior)
    guide = MeanFieldNormalGuide(model, init_scale=0.05) if kind == "vi" else PointGuide(model)
    return model, guide


def without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def same_history(a, b):
    a, b = without_seconds(a), without_seconds(b)
    if len(a) != len(b):
        return False
    for row_a, row_b in zip(a, b, strict=True):
        if row_a.keys() != row_b.keys():
            return False
        for key in row_a:
            u, v = row_a[key], row_b[key]
            if isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v):
                continue
            if u != v:
                return False
    return True


def params(guide):
    return {name: p.detach().clone() for name, p in guide.named_parameters()}


def same_params(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def validation_flags():
    return (pyro.infer.is_validation_enabled(), pyro.poutine.is_validation_enabled(), dist.is_validation_enabled())


# --- the stopping rule -----------------------------------------------------------------------------


def test_smoothed_relative_decrease_by_hand():
    assert smoothed_relative_decrease([], 2) is None
    assert smoothed_relative_decrease([1.0, 2.0, 3.0], 2) is None
    assert smoothed_relative_decrease([5.0], 1) is None
    assert smoothed_relative_decrease([4.0, 4.0, 2.0, 2.0], 2) == pytest.approx(1.0)
    # only the last 2 * window values count: before = (8 + 6) / 2 = 7, last = (4 + 3) / 2 = 3.5
    assert smoothed_relative_decrease([100.0, 8.0, 6.0, 4.0, 3.0], 2) == pytest.approx(1.0)
    assert smoothed_relative_decrease([10.0, 9.0], 1) == pytest.approx(1 / 9)
    assert smoothed_relative_decrease([1.0, 1.0, 2.0, 2.0], 2) == pytest.approx(-0.5)  # an increase
    assert smoothed_relative_decrease([-1.0, -1.0, -2.0, -2.0], 2) == pytest.approx(0.5)  # |last| in the denominator
    assert smoothed_relative_decrease([3.0, 1.0, 2.0, 2.0, 3.0, 1.0], 3) == pytest.approx(0.0)
    assert smoothed_relative_decrease([1.0, 0.0], 1) == pytest.approx(1e12)


def test_bad_training_settings_raise():
    for kwargs in ({"learning_rate": 0.0}, {"beta": -1.0}, {"window": 0}, {"decay_factor": 1.0},
                   {"tolerance": math.nan}, {"max_blocks": 0}):
        with pytest.raises(ValueError):
            TrainConfig(**kwargs)


# --- fit -------------------------------------------------------------------------------------------


def test_fit_decreases_the_objective_and_records_the_history():
    x, y = synthetic()
    model, guide = build("vi")
    config = TrainConfig(learning_rate=0.05, steps_per_block=10, max_blocks=6, min_blocks=100, window=2)
    result = fit(model, guide, x, y, config, progress=False)
    history = result.history
    assert len(history) == result.blocks == 6 and result.steps == 60
    assert all(set(row) == ROW_KEYS for row in history)
    assert history[-1]["objective_per_n"] < 0.8 * history[0]["objective_per_n"]
    assert [row["block"] for row in history] == list(range(1, 7))
    assert [row["step"] for row in history] == [10 * b for b in range(1, 7)]
    assert [row["epoch"] for row in history] == [10.0 * b for b in range(1, 7)]  # full batch: a step is an epoch
    assert all(row["learning_rate"] == 0.05 for row in history)
    assert [row["relative_decrease"] is None for row in history] == [True] * 3 + [False] * 3
    n = x.shape[0]
    for row in history:
        assert row["neg_elbo_per_n"] == pytest.approx(row["data_per_n"] + row["complexity"] / n, rel=1e-12)
        assert math.isnan(row["test_accuracy"])
        assert 0.0 <= row["train_accuracy"] <= 1.0
    assert history[-1]["complexity"] == pytest.approx(guide.complexity().item(), rel=1e-6)
    assert history[-1]["train_accuracy"] > 0.6
    assert not result.converged and not result.diverged
    assert result.stop_reason == "not converged: reached the cap of 6 blocks"


def test_point_guide_history_and_test_accuracy():
    x, y = synthetic()
    model, guide = build("map")
    config = TrainConfig(learning_rate=0.05, steps_per_block=5, max_blocks=2)
    result = fit(model, guide, x, y, config, x_test=x[:10], y_test=y[:10], progress=False)
    for row in result.history:
        assert math.isnan(row["neg_elbo_per_n"])
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["complexity"] == pytest.approx(guide.complexity().item(), rel=0.5)


def test_minibatch_blocks_are_epochs():
    x, y = synthetic(n=50)
    model, guide = build("vi")
    config = TrainConfig(learning_rate=0.01, batch_size=16, full_batch_max=10, max_blocks=2)
    result = fit(model, guide, x, y, config, progress=False)
    assert result.steps == 2 * math.ceil(50 / 16)
    assert [row["step"] for row in result.history] == [4, 8]
    assert [row["block"] for row in result.history] == [1, 2]


def test_minibatch_epoch_counts_passes_over_the_data():
    x, y = synthetic(n=50)
    model, guide = build("vi")
    config = TrainConfig(learning_rate=0.01, batch_size=16, full_batch_max=10, max_blocks=2)
    result = fit(model, guide, x, y, config, progress=False)
    assert [row["epoch"] for row in result.history] == pytest.approx([1.0, 2.0])


def test_stopping_rule_decays_then_converges():
    x, y = synthetic()
    model, guide = build("map")
    config = TrainConfig(learning_rate=0.02, steps_per_block=3, max_blocks=50, min_blocks=4, window=1,
                         tolerance=1e9, num_decays=2, decay_factor=10.0)
    result = fit(model, guide, x, y, config, progress=False)
    # block 4: first decay (rule fires once min_blocks is reached); the window is cleared, so each later
    # learning rate is judged on 2 * window = 2 blocks of its own: second decay at 6, convergence at 8.
    assert result.converged and not result.diverged
    assert result.blocks == 8
    assert result.stop_reason.startswith("converged")
    assert "after 2 decays" in result.stop_reason
    rates = [row["learning_rate"] for row in result.history]
    assert rates == pytest.approx([0.02] * 4 + [0.002] * 2 + [0.0002] * 2, rel=1e-12)


def test_stopping_rule_without_decays_and_not_converged_at_tolerance_zero():
    x, y = synthetic()
    model, guide = build("map")
    config = TrainConfig(learning_rate=0.01, steps_per_block=3, max_blocks=30, min_blocks=2, window=3,
                         tolerance=1e9, num_decays=0)
    result = fit(model, guide, x, y, config, progress=False)
    assert result.converged and result.blocks == 6  # 2 * window blocks before the rule can fire
    model, guide = build("map")
    config = TrainConfig(learning_rate=0.01, steps_per_block=3, max_blocks=7, min_blocks=2, window=1, tolerance=0.0)
    result = fit(model, guide, x, y, config, progress=False)
    objectives = [row["objective_per_n"] for row in result.history]
    assert all(b < a for a, b in zip(objectives, objectives[1:], strict=False))  # steady decrease: never fires
    assert not result.converged and result.blocks == 7
    assert result.stop_reason == "not converged: reached the cap of 7 blocks"


# --- determinism -----------------------------------------------------------------------------------


def run(seed=0, config_seed=0, max_blocks=3, **kwargs):
    x, y = synthetic(n=40)
    model, guide = build("vi", seed=seed)
    config = TrainConfig(learning_rate=0.02, batch_size=16, full_batch_max=8, max_blocks=max_blocks,
                         seed=config_seed, **kwargs)
    return fit(model, guide, x, y, config, progress=False), params(guide)


def test_same_seeds_give_identical_runs():
    first, first_params = run()
    second, second_params = run()
    assert same_history(first.history, second.history)
    assert same_params(first_params, second_params)
    other, other_params = run(seed=1)  # another initialisation and other weight samples
    assert not same_params(first_params, other_params)
    assert not same_history(first.history, other.history)
    shuffled, shuffled_params = run(config_seed=1)  # another mini-batch order
    assert not same_params(first_params, shuffled_params)


@pytest.mark.parametrize("split_at", [2, 3])
def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(tmp_path, split_at):
    x, y = synthetic(n=40)
    # decays at blocks 2 and 4, so the learning-rate factor (split at 2) and the stopping rule's window of
    # block objectives (split at 3: one block of the new rate recorded) must be restored too
    settings = dict(learning_rate=0.02, batch_size=16, full_batch_max=8, min_blocks=2, window=1, tolerance=1e9,
                    num_decays=5, seed=3)
    model, guide = build("vi", seed=7)
    whole = fit(model, guide, x, y, TrainConfig(max_blocks=4, **settings), checkpoint=tmp_path / "whole.pt",
                progress=False)
    whole_params = params(guide)

    path = tmp_path / "parts.pt"
    model, guide = build("vi", seed=7)
    first = fit(model, guide, x, y, TrainConfig(max_blocks=split_at, **settings), checkpoint=path, progress=False)
    assert first.blocks == split_at and path.exists()
    pyro.set_rng_seed(12345)  # whatever the global RNG holds now, the checkpoint's state must win
    model, guide = build("vi", seed=99)  # a fresh guide with other initial values
    resumed = fit(model, guide, x, y, TrainConfig(max_blocks=4, **settings), checkpoint=path, resume=True,
                  progress=False)
    assert resumed.blocks == whole.blocks == 4 and resumed.steps == whole.steps
    assert same_params(params(guide), whole_params)
    assert same_history(resumed.history, whole.history)
    assert [row["learning_rate"] for row in resumed.history] == pytest.approx([0.02, 0.02, 0.002, 0.002])
    assert not torch.equal(params(guide)["loc"], build("vi", seed=99)[1].loc.detach())


def test_resuming_a_converged_run_does_not_train_further(tmp_path):
    x, y = synthetic()
    config = TrainConfig(learning_rate=0.01, steps_per_block=3, max_blocks=30, min_blocks=2, window=1,
                         tolerance=1e9, num_decays=0)
    model, guide = build("map")
    done = fit(model, guide, x, y, config, checkpoint=tmp_path / "c.pt", progress=False)
    assert done.converged and done.blocks == 2
    final = params(guide)
    model, guide = build("map", seed=5)
    again = fit(model, guide, x, y, config, checkpoint=tmp_path / "c.pt", resume=True, progress=False)
    assert again.converged
    assert again.blocks == done.blocks
    assert same_params(params(guide), final)


def test_resume_without_a_checkpoint_file_starts_fresh(tmp_path):
    fresh, fresh_params = run(max_blocks=2)
    x, y = synthetic(n=40)
    model, guide = build("vi", seed=0)
    config = TrainConfig(learning_rate=0.02, batch_size=16, full_batch_max=8, max_blocks=2, seed=0)
    result = fit(model, guide, x, y, config, checkpoint=tmp_path / "none.pt", resume=True, progress=False)
    assert same_history(result.history, fresh.history) and same_params(params(guide), fresh_params)


# --- non-finite objectives -------------------------------------------------------------------------


def test_nan_objective_stops_and_restores_the_last_good_state(monkeypatch):
    x, y = synthetic()
    model, guide = build("vi")
    calls = {"count": 0}
    snapshots = {}

    def failing(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 6:  # first step of block 2: the state after block 1
            snapshots["after_block_1"] = params(guide)
        terms = objective_terms(*args, **kwargs)
        if calls["count"] == 8:  # step 8 = third step of block 2
            terms.loss = terms.loss * math.nan
        return terms

    monkeypatch.setattr(train, "objective_terms", failing)
    config = TrainConfig(learning_rate=0.05, steps_per_block=5, max_blocks=10)
    result = fit(model, guide, x, y, config, progress=False)
    assert result.diverged and not result.converged
    assert "step 8" in result.stop_reason and "block 1" in result.stop_reason
    assert result.blocks == 1 and len(result.history) == 1
    assert calls["count"] == 8
    assert all(torch.isfinite(p).all() for p in guide.parameters())
    assert same_params(params(guide), snapshots["after_block_1"])


def test_infinite_inputs_diverge_at_the_first_step_and_keep_the_initial_state():
    x, y = synthetic()
    x[3, 2] = math.inf
    model, guide = build("map")
    initial = params(guide)
    result = fit(model, guide, x, y, TrainConfig(learning_rate=0.05, steps_per_block=5, max_blocks=3),
                 progress=False)
    assert result.diverged and result.blocks == 0 and result.history == []
    assert "step 1" in result.stop_reason and "nan" in result.stop_reason
    assert same_params(params(guide), initial)


# --- Pyro validation -------------------------------------------------------------------------------


def test_validation_is_off_only_inside_the_loop(monkeypatch):
    assert validation_flags() == (True, True, True)  # the session fixture in conftest.py
    seen = []

    def recording(*args, **kwargs):
        seen.append(validation_flags())
        return objective_terms(*args, **kwargs)

    monkeypatch.setattr(train, "objective_terms", recording)
    x, y = synthetic()
    model, guide = build("vi")
    fit(model, guide, x, y, TrainConfig(steps_per_block=2, max_blocks=2), progress=False)
    assert seen == [(False, False, False)] * 4
    assert validation_flags() == (True, True, True)

    def raising(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(train, "objective_terms", raising)
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, guide, x, y, TrainConfig(steps_per_block=2, max_blocks=2), progress=False)
    assert validation_flags() == (True, True, True)
