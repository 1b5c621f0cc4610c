"""Figures of the study (matplotlib, no display needed)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def convergence_figure(history: list[dict], name: str, seed: int):
    """Train and test accuracy (posterior-mean weights) per epoch: two curves."""
    figure, axis = plt.subplots(figsize=(4.2, 3.0))
    epochs = [row["epoch"] for row in history]
    axis.plot(epochs, [row["train_accuracy"] for row in history], label="train", color="tab:blue")
    test = [row["test_accuracy"] for row in history]
    if any(not math.isnan(v) for v in test):
        axis.plot(epochs, test, label="test", color="tab:orange")
    axis.set_xlabel("epoch (passes over the training set)")
    axis.set_ylabel("accuracy")
    axis.set_title(f"{name}, seed {seed}", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def kl_per_layer_figure(rows: list[dict]):
    """KL(q||p) of each layer of each Bayesian model (log scale)."""
    import numpy as np

    rows = [r for r in rows if "kl/total" in r]
    layers = max(int(k.split("_")[1]) for r in rows for k in r if k.startswith("kl/layer_")) + 1
    figure, axis = plt.subplots(figsize=(max(4.0, 0.5 * len(rows) + 2), 3.2))
    positions = np.arange(len(rows))
    width = 0.8 / layers
    for layer in range(layers):
        values = [max(r.get(f"kl/layer_{layer}", 0.0) or 0.0, 1e-3) for r in rows]
        axis.bar(positions + layer * width, values, width, label=f"layer {layer}")
    axis.set_yscale("log")
    axis.set_xticks(positions + 0.4 - width / 2, [r["run"] for r in rows], rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("KL(q||p) of the layer (nats)")
    axis.legend(fontsize=7)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def read_history(folder) -> list[dict]:
    """A run's ``history.csv`` as a list of rows of floats."""
    import csv
    from pathlib import Path

    with open(Path(folder) / "history.csv", encoding="utf-8") as f:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                for row in csv.DictReader(f)]


def convergence_grid(panels: list[tuple[str, list[dict]]], columns: int = 5):
    """Small multiples: train and test accuracy per epoch for several runs."""
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(7.2, 1.45 * rows), squeeze=False)
    for axis, (title, history) in zip(axes.flat, panels, strict=False):
        epochs = [row["epoch"] for row in history]
        axis.plot(epochs, [row["train_accuracy"] for row in history], color="tab:blue", lw=1.2, label="train")
        axis.plot(epochs, [row["test_accuracy"] for row in history], color="tab:orange", lw=1.2, label="test")
        axis.set_title(title, fontsize=7)
        axis.tick_params(labelsize=6)
        axis.grid(alpha=0.3)
        if epochs and max(epochs) > 50:
            axis.set_xscale("log")
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    for axis in axes[-1]:
        axis.set_xlabel("epoch", fontsize=7)
    for axis in axes[:, 0]:
        axis.set_ylabel("accuracy", fontsize=7)
    axes.flat[0].legend(fontsize=6, loc="lower right")
    figure.tight_layout(pad=0.4)
    return figure


def kl_vs_beta_figure(rows: list[dict]):
    """The price of memorisation: KL(q||p) and training accuracy against beta, per task."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(7.2, 2.5))
    styles = {"true": ("tab:green", "o", "200 images labelled 3/8 (true labels)"),
              "random": ("tab:red", "s", "200 images, Bernoulli(1/2) labels")}
    for labels, (color, marker, text) in styles.items():
        task = sorted([r for r in rows if r["labels"] == labels], key=lambda r: r["beta"])
        if not task:
            continue
        betas = [r["beta"] for r in task]
        left.plot(betas, [r["kl/total"] for r in task], color=color, marker=marker, lw=1.2, ms=3, label=text)
        right.plot(betas, [r["train/accuracy"] for r in task], color=color, marker=marker, lw=1.2, ms=3)
        for r in task:
            left.scatter([r["beta"]] * len(r["kl/total values"]), r["kl/total values"], color=color, s=6, alpha=0.4)
            right.scatter([r["beta"]] * len(r["train/accuracy values"]), r["train/accuracy values"], color=color,
                          s=6, alpha=0.4)
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_xlabel(r"KL weight $\beta$", fontsize=8)
        axis.grid(alpha=0.3)
        axis.tick_params(labelsize=7)
    left.set_yscale("log")
    left.set_ylabel(r"KL$(q\,\|\,p)$ (nats)", fontsize=8)
    right.set_ylabel("training accuracy (BMA)", fontsize=8)
    left.legend(fontsize=6.5)
    figure.tight_layout(pad=0.4)
    return figure


def pac_bayes_figure(rows: list[dict]):
    """PAC-Bayes bound on the Gibbs error against the measured test Gibbs error, per model."""
    import numpy as np

    figure, axis = plt.subplots(figsize=(7.2, 2.4))
    positions = np.arange(len(rows))
    axis.bar(positions - 0.2, [r["test/gibbs_error"] for r in rows], 0.4, label="test Gibbs error (measured)",
             color="tab:blue")
    axis.bar(positions + 0.2, [r["pac_bayes/bound"] for r in rows], 0.4, label="PAC-Bayes bound (kl-inverse, 94% confidence)",
             color="tab:gray")
    axis.set_xticks(positions, [r["label"] for r in rows], rotation=30, ha="right", fontsize=6.5)
    axis.set_ylabel("error", fontsize=8)
    axis.set_ylim(0, 1.05)
    axis.axhline(0.5, color="k", lw=0.6, ls=":")
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=7, loc="upper left")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout(pad=0.4)
    return figure


def psi_figure(lambdas, psi, dpsi_autograd, dpsi_closed, d2psi_autograd, d2psi_closed):
    """psi, psi' and psi'' of the empirical loss distribution: autograd against closed forms."""
    figure, axes = plt.subplots(1, 3, figsize=(7.2, 2.0))
    axes[0].plot(lambdas, psi, color="k", lw=1.2)
    axes[0].set_title(r"$\psi(\lambda)$", fontsize=8)
    for axis, auto, closed, title in ((axes[1], dpsi_autograd, dpsi_closed, r"$\psi'(\lambda)$: tilted mean"),
                                      (axes[2], d2psi_autograd, d2psi_closed,
                                       r"$\psi''(\lambda)$: tilted variance")):
        axis.plot(lambdas, closed, color="tab:blue", lw=2.5, alpha=0.5, label="closed form")
        axis.plot(lambdas, auto, color="k", lw=0.9, ls="--", label="autograd")
        axis.set_title(title, fontsize=8)
    for axis in axes:
        axis.set_xlabel(r"$\lambda$", fontsize=8)
        axis.tick_params(labelsize=6.5)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=6)
    figure.tight_layout(pad=0.4)
    return figure
