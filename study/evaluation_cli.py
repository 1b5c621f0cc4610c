"""What ``hw1_id_eval.py`` does with weights files: load, check, evaluate, tabulate, plot."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from inference.guides import MeanFieldNormalGuide
from inference.kl import kl_summary
from inference.metrics import bayesian_model_average, logits_of_weights, point_metrics, sampled_logits
from study import figures
from study.data import Selection, load_selection
from study.errors import UserError
from study.results import save_figure, write_csv, write_json, write_text
from study.weights import load_payload, rebuild


def find_weight_files(paths: list[str]) -> list[Path]:
    """``.pkl`` files named directly, and ``weights.pkl`` files found under named folders."""
    files: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(path.rglob("weights.pkl"))
            if not found:
                raise UserError(f"{path}/: no weights.pkl files below this folder")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return files


def evaluation_selection(payload: dict, args) -> Selection:
    """The run's matching test selection, changed by the command line's options."""
    run = payload["run"]
    base = Selection.from_dict(run["test_selection"] if args.split == "test" else run["selection"])
    changes = {}
    if args.digits is not None:
        changes["digits"] = args.digits
        changes["random_labels"] = False
    if args.random_labels:
        changes["random_labels"] = True
        changes["label_seed"] = args.label_seed if args.label_seed is not None else run["seed"]
    if args.num_test is not None:
        changes["first_n"] = args.num_test
    return dataclasses.replace(base, **changes) if changes else base


def run_label(path: Path, payload: dict) -> str:
    experiment = payload.get("experiment", {}).get("name", path.parent.name)
    return f"{experiment}/seed{payload['run'].get('seed', '?')}"


@torch.no_grad()
def evaluate_payload(payload: dict, x: torch.Tensor, y: torch.Tensor, samples: int, seed: int, device,
                     split: str = "test") -> dict:
    """Accuracy, NLL and ECE (model average and mean weights) and the KL summaries; metric keys
    are ``<split>/<metric>`` (e.g. ``test/accuracy``) and ``kl/<summary>``."""
    model, guide = rebuild(payload, device)
    metrics: dict = {f"{split}/num_examples": int(x.shape[0])}
    point = point_metrics(logits_of_weights(guide.mean_weights(), x), y)
    if isinstance(guide, MeanFieldNormalGuide):
        generator = torch.Generator(device=x.device).manual_seed(20_000 + seed)
        bma = bayesian_model_average(sampled_logits(guide, x, samples, generator), y)
        metrics.update({f"{split}/{k}": v for k, v in bma.items()})
        metrics.update({f"{split}/{k}_mean_weights": v for k, v in point.items()})
        kl = kl_summary(guide, payload["run"]["num_train"])
        metrics.update({"kl/total": kl["total"], "kl/mean_per_param": kl["mean_per_param"],
                        "kl/l2_norm": kl["l2_norm"], "kl/per_n": kl["per_n"]})
        metrics.update({f"kl/layer_{i}": v for i, v in enumerate(kl["per_layer"])})
        metrics["params/count"] = kl["num_params"]
    else:
        metrics.update({f"{split}/{k}": v for k, v in point.items()})
        metrics["params/count"] = guide.num_params
    return metrics


def evaluate_files(files: list[Path], args, out: Path) -> list[dict]:
    """Evaluate every file and write ``evaluation.{json,csv,md}`` and ``kl_per_layer.png``."""
    samples = 10 if args.quick else args.samples
    rows, cache = [], {}
    for path in files:
        payload = load_payload(path)
        selection = evaluation_selection(payload, args)
        normalization = payload["run"]["normalization"]
        key = (args.split, selection, normalization)
        if key not in cache:
            cache[key] = load_selection(args.data_dir, args.split, selection, normalization, args.device)
        x, y, split = cache[key]
        if args.quick and args.num_test is None:  # smoke runs: at most the first 2,000 images
            x, y = x[:2000], y[:2000]
        architecture = payload["architecture"]
        if architecture["num_classes"] != selection.num_classes:
            raise UserError(f"{path}: the model predicts {architecture['num_classes']} classes but the selection "
                            f"'{selection.describe()}' has {selection.num_classes}; choose a matching selection "
                            "(e.g. --digits) or another model")
        if architecture["in_features"] != x.shape[1]:
            raise UserError(f"{path}: the model expects {architecture['in_features']} inputs, the data has "
                            f"{x.shape[1]}")
        metrics = evaluate_payload(payload, x, y, samples, payload["run"].get("seed", 0), args.device, args.split)
        trained = payload.get("metrics", {})
        row = {"run": run_label(path, payload), "file": str(path), "method": payload["method"],
               "beta": payload.get("experiment", {}).get("train", {}).get("beta"),
               "data": split.source, "split": args.split, "selection": selection.describe(),
               "converged": payload.get("training", {}).get("converged"),
               "elbo/neg_per_n (training)": trained.get("elbo/neg_per_n"), **metrics}
        rows.append(row)
        kl_text = f", KL {metrics['kl/total']:.5g} nats" if "kl/total" in metrics else ""
        print(f"{row['run']}: accuracy {metrics[f'{args.split}/accuracy']:.4f} on "
              f"{metrics[f'{args.split}/num_examples']} "
              f"{args.split} images ({selection.describe()}){kl_text}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluation.json", rows)
    write_csv(out / "evaluation.csv", rows)
    write_text(out / "evaluation.md", evaluation_markdown(rows))
    if any("kl/total" in row for row in rows):
        save_figure(out / "kl_per_layer.png", figures.kl_per_layer_figure(rows))
    return rows


def _fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:
        return "-"
    return format(value, spec)


def evaluation_markdown(rows: list[dict]) -> str:
    """The KL table and the accuracy table of an evaluation, in Markdown."""
    split = rows[0]["split"]
    lines = ["# Evaluation", "", f"Data: {rows[0]['data']}, split `{split}`.", "",
             "KL(q||p) columns: total in nats; mean per parameter; L2 norm of the vector of per-parameter KLs; "
             "KL/n with n = training-set size. Accuracy: Bayesian model average (BMA) and posterior-mean weights.",
             "", "| run | method | beta | selection | accuracy (BMA) | accuracy (mean w) | NLL | ECE | KL total | "
             "KL/param | KL L2 norm | KL/n | -ELBO/n (train) | converged |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['method']} | {_fmt(r['beta'], 'g')} | {r['selection']} | "
            f"{_fmt(r.get(f'{split}/accuracy'), '.4f')} | {_fmt(r.get(f'{split}/accuracy_mean_weights'), '.4f')} | "
            f"{_fmt(r.get(f'{split}/nll'), '.4f')} | {_fmt(r.get(f'{split}/ece'), '.4f')} | "
            f"{_fmt(r.get('kl/total'), '.4g')} | "
            f"{_fmt(r.get('kl/mean_per_param'), '.3g')} | {_fmt(r.get('kl/l2_norm'), '.4g')} | "
            f"{_fmt(r.get('kl/per_n'), '.4g')} | {_fmt(r.get('elbo/neg_per_n (training)'), '.4f')} | "
            f"{'yes' if r['converged'] else 'NOT converged'} |")
    return "\n".join(lines) + "\n"
