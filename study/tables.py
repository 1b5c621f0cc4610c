"""The study's tables, computed from the runs' ``metrics.json`` files.

Each table is a list of row dicts (written as Markdown, CSV and JSON by ``study/report.py``).
Runs of one experiment with several seeds are summarised as mean and standard deviation
(sample standard deviation, ddof = 1; "-" with a single seed).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from study.experiments import BETA_GRID, EXPERIMENTS, RANDOM_LABEL_SELECTIONS, TEMPERED_BETA
from study.results import read_json


def collect_runs(results_dir: str | Path) -> list[dict]:
    """Every finished run's ``metrics.json`` under ``results_dir`` (with its folder added)."""
    records = []
    for path in sorted(Path(results_dir).glob("*/seed*/metrics.json")):
        record = read_json(path)
        record["folder"] = str(path.parent)
        records.append(record)
    return records


def by_experiment(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record["experiment"], []).append(record)
    return groups


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def format_mean_std(values: list[float], spec: str = ".4g", std_spec: str = ".2g") -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "-"
    return format(mean, spec) if math.isnan(std) else f"{format(mean, spec)} ± {format(std, std_spec)}"


def _metric(records: list[dict], key: str) -> list[float]:
    return [r["metrics"].get(key) for r in records]


def convergence_note(records: list[dict]) -> str:
    done = sum(bool(r["metrics"].get("training/converged")) for r in records)
    return "yes" if done == len(records) else f"NOT converged ({len(records) - done}/{len(records)})"


SUMMARY_KEYS = ("kl/total", "kl/mean_per_param", "kl/l2_norm", "kl/per_n", "elbo/neg_per_n", "objective/per_n",
                "train/accuracy", "test/accuracy", "train/gibbs_error", "test/gibbs_error", "pac_bayes/bound",
                "training/epochs", "training/seconds")


def summarise(records: list[dict]) -> dict:
    """Mean and std over seeds of the numeric metrics used in the tables."""
    summary = {}
    for key in SUMMARY_KEYS:
        mean, std = mean_std(_metric(records, key))
        summary[key] = mean
        summary[key + " (std)"] = std
    summary["seeds"] = len(records)
    summary["converged"] = convergence_note(records)
    return summary


def random_labels_rows(records: list[dict]) -> list[dict]:
    """Question 2's KL table: each selection at beta = 1 and the tempered beta."""
    groups = by_experiment(records)
    rows = []
    for key, (text, _, _) in RANDOM_LABEL_SELECTIONS.items():
        for beta in (1.0, TEMPERED_BETA):
            name = f"rl-{key}-{'b1' if beta == 1 else f'b{beta:g}'}"
            runs = groups.get(name)
            if not runs:
                continue
            row = {"experiment": name, "selection": text, "beta": beta,
                   "n": runs[0]["metrics"]["train/num_examples"], "params": runs[0]["metrics"].get("params/count")}
            row.update(summarise(runs))
            row["text"] = {k: format_mean_std(_metric(runs, k)) for k in SUMMARY_KEYS}
            rows.append(row)
    return rows


def l2_rows(records: list[dict], loo: dict[str, dict] | None = None) -> list[dict]:
    """Question 3's comparison table: logistic regression (MLE, MAP, VI) and the Bayesian MLPs."""
    groups = by_experiment(records)
    rows = []
    for name in ("lr-mle", "lr-map", "lr-vi", "bnn-1x100", "rl-full-b1", "bnn-3x400"):
        runs = groups.get(name)
        if not runs:
            continue
        experiment = EXPERIMENTS[name]
        m = runs[0]["metrics"]
        label = "bnn-2x400 (= rl-full-b1)" if name == "rl-full-b1" else name
        rows.append({
            "model": label, "experiment": name, "method": experiment.method, "n": m.get("train/num_examples"),
            "architecture": experiment.architecture_label(), "params": m.get("params/count"),
            "test/accuracy": m.get("test/accuracy"), "test/nll": m.get("test/nll"), "test/ece": m.get("test/ece"),
            "train/accuracy": m.get("train/accuracy"), "kl/total": m.get("kl/total"),
            "elbo/neg_per_n": m.get("elbo/neg_per_n"), "objective/per_n": m.get("objective/per_n"),
            "training/seconds": m.get("training/seconds"), "training/epochs": m.get("training/epochs"),
            "converged": convergence_note(runs),
            "loo/elpd": (loo or {}).get(name, {}).get("elpd_loo"),
            "loo/se": (loo or {}).get(name, {}).get("se"),
            "loo/p": (loo or {}).get(name, {}).get("p_loo"),
            "loo/pareto_k_bad": (loo or {}).get(name, {}).get("pareto_k_bad"),
        })
    return rows


def sweep_rows(records: list[dict]) -> list[dict]:
    """KL, objective and accuracies over beta for the 200-image true- and random-label tasks."""
    groups = by_experiment(records)
    rows = []
    for key in ("38-first200", "random200"):
        for beta in BETA_GRID:
            tag = "b1" if beta == 1 else f"b{beta:g}"
            prefix = "rl" if beta in (1.0, TEMPERED_BETA) else "sweep"
            runs = groups.get(f"{prefix}-{key}-{tag}")
            if not runs:
                continue
            row = {"task": key, "labels": "random" if "random" in key else "true", "beta": beta}
            row.update(summarise(runs))
            row["kl/total values"] = _metric(runs, "kl/total")
            row["train/accuracy values"] = _metric(runs, "train/accuracy")
            rows.append(row)
    return rows


def hyperparameter_rows(records: list[dict]) -> list[dict]:
    """The settings each experiment ran with (one row per experiment)."""
    rows = []
    for name, runs in by_experiment(records).items():
        config = runs[0]["config"]
        train = config["train"]
        prior = config["prior"]
        rows.append({
            "experiment": name, "method": config["method"],
            "architecture": EXPERIMENTS[name].architecture_label() if name in EXPERIMENTS else config["hidden"],
            "prior": "flat" if prior is None else f"N({prior['loc']:g}, {prior['scale']:g}^2)"
                     + (" / sqrt(fan_in)" if prior["scaling"] == "fan_in" else ""),
            "beta": train["beta"], "lr": train["learning_rate"], "scale lr": train["scale_learning_rate"],
            "batch": train["batch_size"] if runs[0]["metrics"]["train/num_examples"] > train["full_batch_max"]
            else "full", "init scale": config["init_scale"], "seeds": len(runs),
            "epochs": format_mean_std(_metric(runs, "training/epochs"), ".0f"),
            "converged": convergence_note(runs),
        })
    return rows


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Rows as a Markdown table; columns are (header, key, format spec or '')."""
    header = "| " + " | ".join(h for h, _, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [header, rule]
    for row in rows:
        cells = []
        for _, key, spec in columns:
            value = row.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("-")
            elif spec and isinstance(value, int | float) and not isinstance(value, bool):
                cells.append(format(value, spec))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
