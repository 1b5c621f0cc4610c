"""Study-level outputs from a results folder: tables, figures, ArviZ files, the psi check, the report.

``build_study_outputs(results_dir, data_dir)`` reads every finished run's ``metrics.json``
(and, for the ArviZ part and the psi check, their weights and the data), then writes::

    results/tables/*.md|csv|json      the KL table, the L2-vs-Bayes table, the beta sweep, ...
    results/figures/*.png             convergence grid, KL vs beta, PAC-Bayes, psi, ArviZ
    results/arviz/*.nc                InferenceData per Bayesian model of the L2 study (git-ignored)
    results/report.md, report.pdf     the two-page report (plus an appendix page)
    results/summary.json              the headline numbers
"""

from __future__ import annotations

import datetime
import math
import time
import warnings
from pathlib import Path

import torch

from study import claims, figures
from study.data import Selection, load_selection, matching_test_selection
from study.errors import UserError
from study.experiments import TEMPERED_BETA
from study.results import save_figure, write_csv, write_json, write_text
from study.tables import (
    collect_runs,
    hyperparameter_rows,
    l2_rows,
    markdown_table,
    random_labels_rows,
    sweep_rows,
)
from study.weights import load_payload, rebuild

LOO_TRAIN_EXAMPLES = 10_000  # PSIS-LOO on the first 10,000 training images (same for every model)
ARVIZ_DRAWS = 100
PSI_LAMBDAS = [i / 10 for i in range(-20, 21)]

CONVERGENCE_PANELS = [
    ("lr-mle", "LR, MLE"), ("lr-map", "LR + L2 (MAP)"), ("lr-vi", "Bayesian LR (VI)"),
    ("bnn-1x100", "BNN 1x100, β=1"), ("rl-full-b1", "BNN 2x400, β=1"), ("bnn-3x400", "BNN 3x400, β=1"),
    ("rl-full-b0.01", f"BNN 2x400, β={TEMPERED_BETA:g}"), ("rl-38-all-b1", "3 vs 8 (all), β=1"),
    ("rl-38-all-b0.01", f"3 vs 8 (all), β={TEMPERED_BETA:g}"),
    ("rl-random200-b0.01", f"200 random labels, β={TEMPERED_BETA:g}"),
]


def _write_table(folder: Path, name: str, rows: list[dict], columns: list[tuple[str, str, str]], title: str,
                 note: str = "") -> str:
    markdown = f"## {title}\n\n" + (f"{note}\n\n" if note else "") + markdown_table(rows, columns)
    write_text(folder / f"{name}.md", markdown)
    write_csv(folder / f"{name}.csv", [{k: v for k, v in r.items() if not isinstance(v, dict | list)} for r in rows])
    write_json(folder / f"{name}.json", rows)
    return markdown


def _records_named(records: list[dict], name: str) -> list[dict]:
    return [r for r in records if r["experiment"] == name]


def arviz_outputs(records: list[dict], results_dir: Path, data_dir, device, quick: bool, log=print) -> dict:
    """InferenceData files, per-layer summaries, the LR weight summary and PSIS-LOO comparison."""
    with warnings.catch_warnings():
        # High Pareto-k values are reported in the tables (share of k > 0.7), not as warnings.
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        return _arviz_outputs(records, results_dir, data_dir, device, quick, log)


def _arviz_outputs(records: list[dict], results_dir: Path, data_dir, device, quick: bool, log=print) -> dict:
    import arviz as az

    folder = results_dir / "arviz"
    folder.mkdir(parents=True, exist_ok=True)
    names = [n for n in ("lr-vi", "bnn-1x100", "rl-full-b1", "bnn-3x400") if _records_named(records, n)]
    if not names:
        return {"loo": {}, "layers": [], "compare": [], "lr_summary": [], "figure": None}
    draws = 10 if quick else ARVIZ_DRAWS
    loo_n = 500 if quick else LOO_TRAIN_EXAMPLES
    x_train, y_train, _ = load_selection(data_dir, "train", Selection(first_n=loo_n), "unit", device)
    x_test, y_test, _ = load_selection(data_dir, "test", Selection(), "unit", device)
    datasets, loo, layers, lr_summary = {}, {}, [], []
    for name in names:
        record = _records_named(records, name)[0]
        payload = load_payload(Path(record["folder"]) / "weights.pkl")
        if payload["run"]["normalization"] != "unit" or payload["architecture"]["num_classes"] != 10:
            continue
        _, guide = rebuild(payload, device)
        from inference.arviz_export import per_layer_summary, posterior_inference_data

        started = time.perf_counter()
        idata = posterior_inference_data(guide, x_train, y_train, x_test, y_test, draws, record["seed"])
        temporary = folder / f".{name}.nc.tmp"
        idata.to_netcdf(str(temporary), engine="h5netcdf")
        temporary.replace(folder / f"{name}.nc")
        result = az.loo(idata, var_name="y", pointwise=True)
        k = result.pareto_k.values
        loo[name] = {"elpd_loo": float(result.elpd_loo), "se": float(result.se), "p_loo": float(result.p_loo),
                     "pareto_k_bad": float((k > 0.7).mean()), "n": int(len(k))}
        datasets[name] = idata
        for row in per_layer_summary(guide, idata):
            layers.append({"model": name, **row})
        if name == "lr-vi":
            summary = az.summary(idata, var_names=["layers_0_bias"], kind="stats", hdi_prob=0.94)
            lr_summary = [{"parameter": index, **{c: float(summary.loc[index, c]) for c in summary.columns}}
                          for index in summary.index]
            weights = az.summary(idata, var_names=["layers_0_weight"], kind="stats", hdi_prob=0.94)
            write_csv(results_dir / "tables" / "lr_weights_summary.csv",
                      [{"parameter": index, **{c: float(weights.loc[index, c]) for c in weights.columns}}
                       for index in weights.index])
            az.plot_forest(idata, var_names=["layers_0_bias"], combined=True, hdi_prob=0.94, figsize=(3.4, 2.6))
            import matplotlib.pyplot as plt

            save_figure(results_dir / "figures" / "arviz_forest_lr_bias.png", plt.gcf())
        log(f"  ArviZ: {name}: {draws} draws, PSIS-LOO on {loo_n} training images "
            f"({time.perf_counter() - started:.0f} s)")
    compare = []
    if len(datasets) >= 2:
        table = az.compare(datasets, ic="loo", var_name="y")
        compare = [{"model": index, **{c: (float(v) if isinstance(v, int | float) else str(v))
                                       for c, v in table.loc[index].items()}} for index in table.index]
    figure_path = None
    if "rl-full-b1" in datasets or datasets:
        import matplotlib.pyplot as plt

        name = "rl-full-b1" if "rl-full-b1" in datasets else next(iter(datasets))
        az.plot_khat(az.loo(datasets[name], var_name="y", pointwise=True), figsize=(3.4, 2.4))
        plt.gca().set_title(f"PSIS-LOO Pareto k: {name}", fontsize=8)
        figure_path = save_figure(results_dir / "figures" / "arviz_khat.png", plt.gcf())
    return {"loo": loo, "layers": layers, "compare": compare, "lr_summary": lr_summary, "figure": figure_path,
            "loo_n": loo_n, "draws": draws}


def psi_outputs(records: list[dict], data_dir, device) -> dict | None:
    """Question 1's numeric check on the per-example test losses of a trained model."""
    from study.psi import psi_check

    for name in ("lr-map", "lr-mle", "rl-full-b1"):
        runs = _records_named(records, name)
        if runs:
            break
    else:
        return None
    payload = load_payload(Path(runs[0]["folder"]) / "weights.pkl")
    selection = matching_test_selection(Selection.from_dict(payload["run"]["selection"]))
    x, y, _ = load_selection(data_dir, "test", selection, payload["run"]["normalization"], device)
    _, guide = rebuild(payload, device)
    from inference.metrics import logits_of_weights

    logits = logits_of_weights(guide.mean_weights(), x)
    losses = torch.nn.functional.cross_entropy(logits.double(), y, reduction="none").cpu()
    rows = psi_check(losses, PSI_LAMBDAS)
    worst = max(max(abs(r["dpsi_autograd"] - r["dpsi_closed"]), abs(r["d2psi_autograd"] - r["d2psi_closed"]))
                for r in rows)
    return {"model": name, "n": len(losses), "rows": rows, "max_discrepancy": worst,
            "mean_loss": losses.mean().item(), "var_loss": losses.var(unbiased=False).item()}


def pac_bayes_rows(records: list[dict]) -> list[dict]:
    """The bound for every Bayesian run (seed 0 of each VI experiment of the main table)."""
    rows = []
    for record in records:
        m = record["metrics"]
        if "pac_bayes/bound" not in m or record["group"] == "beta-sweep" or record["seed"] != 0:
            continue
        rows.append({"label": record["experiment"], "n": m["train/num_examples"], "kl/total": m["kl/total"],
                     "train/gibbs_error": m["train/gibbs_error"], "test/gibbs_error": m["test/gibbs_error"],
                     "pac_bayes/empirical_gibbs_upper": m["pac_bayes/empirical_gibbs_upper"],
                     "pac_bayes/bound": m["pac_bayes/bound"], "test/accuracy": m["test/accuracy"]})
    return rows


def headline_markdown(records: list[dict], rl: list[dict], l2: list[dict]) -> str:
    """The README's headline table: one line per model or selection, numbers from the runs."""
    lines = ["| model / selection | beta | test accuracy | KL(q‖p) (nats) | KL / n | −ELBO / n | converged |",
             "|---|---|---|---|---|---|---|"]
    for row in l2:
        kl = row.get("kl/total")
        kl_per_n = kl / row["n"] if finite(kl) and row.get("n") else None
        lines.append(f"| {row['model']} ({row['method']}, {row['architecture']}) | "
                     f"{'1' if row['method'] == 'vi' else '-'} | {100 * row['test/accuracy']:.2f}% | "
                     f"{_fmt_or_dash(kl, ',.0f')} | {_fmt_or_dash(kl_per_n, '.3f')} | "
                     f"{_fmt_or_dash(row.get('elbo/neg_per_n'), '.4f')} | {row['converged']} |")
    for row in rl:
        if row["experiment"] == "rl-full-b1":
            continue  # in the rows above
        lines.append(f"| {row['selection']} | {row['beta']:g} | {_with_std(row, 'test/accuracy', '.2f', 100, '%')} | "
                     f"{_with_std(row, 'kl/total', ',.0f')} | {_with_std(row, 'kl/per_n', '.3f')} | "
                     f"{_with_std(row, 'elbo/neg_per_n', '.4f')} | {row['converged']} |")
    return "\n".join(lines) + "\n"


def _with_std(row: dict, key: str, spec: str, factor: float = 1.0, unit: str = "") -> str:
    """'mean ± std' of a summarised row (std over seeds, when there are several)."""
    mean, std = row.get(key), row.get(key + " (std)")
    if not finite(mean):
        return "-"
    text = format(mean * factor, spec)
    return text + (f" ± {format(std * factor, spec)}" if finite(std) else "") + unit


def _fmt_or_dash(value, spec: str) -> str:
    return format(value, spec) if finite(value) else "-"


def build_study_outputs(results_dir: str | Path, data_dir: str | Path, device: str = "cpu", quick: bool = False,
                        author: str = "", log=print) -> dict:
    """Write every study-level output for the runs in ``results_dir`` (see the module docstring)."""
    from study import report_pdf

    results_dir = Path(results_dir)
    records = collect_runs(results_dir)
    if not records:
        raise UserError(f"{results_dir}/: no finished runs (metrics.json) to report on")
    started = time.perf_counter()
    tables_dir, figures_dir = results_dir / "tables", results_dir / "figures"
    log(f"report: {len(records)} runs in {results_dir}/")

    arviz = arviz_outputs(records, results_dir, data_dir, device, quick, log)
    psi = psi_outputs(records, data_dir, device)
    rl, l2, sweep = random_labels_rows(records), l2_rows(records, arviz["loo"]), sweep_rows(records)
    hyper, pac = hyperparameter_rows(records), pac_bayes_rows(records)

    markdown = {}
    kl_columns = [("selection", "selection", ""), ("beta", "beta", "g"), ("n", "n", "d"), ("seeds", "seeds", "d")]
    text_keys = [("KL total (nats)", "kl/total"), ("KL / param", "kl/mean_per_param"),
                 ("KL L2 norm", "kl/l2_norm"), ("KL / n", "kl/per_n"), ("-ELBO / n", "elbo/neg_per_n"),
                 ("train acc", "train/accuracy"), ("test acc", "test/accuracy"), ("bound", "pac_bayes/bound")]
    rl_text_rows = [{**r, **{label: r["text"][key] for label, key in text_keys}} for r in rl]
    markdown["random_labels"] = _write_table(
        tables_dir, "random_labels_kl", rl_text_rows,
        kl_columns + [(label, label, "") for label, _ in text_keys] + [("converged", "converged", "")],
        "KL(q||p) of the random-labels study (mean ± std over seeds)",
        "KL total in nats; KL / param = total / number of parameters; KL L2 norm = Euclidean norm of the "
        "vector of per-parameter KLs; KL / n = total / training-set size; -ELBO / n with beta = 1; accuracies of "
        "the Bayesian model average; bound = PAC-Bayes kl-inverse bound on the Gibbs error (confidence 1 - delta - delta' = 0.94).")
    markdown["l2"] = _write_table(
        tables_dir, "l2_vs_bayes", l2,
        [("model", "model", ""), ("method", "method", ""), ("architecture", "architecture", ""),
         ("params", "params", "d"), ("test acc", "test/accuracy", ".4f"), ("test NLL", "test/nll", ".4f"),
         ("test ECE", "test/ece", ".4f"), ("KL (nats)", "kl/total", ".4g"), ("-ELBO/n", "elbo/neg_per_n", ".4f"),
         ("elpd LOO", "loo/elpd", ".1f"), ("LOO se", "loo/se", ".1f"), ("k>0.7", "loo/pareto_k_bad", ".2f"),
         ("epochs", "training/epochs", ".0f"), ("train s", "training/seconds", ".0f"),
         ("converged", "converged", "")],
        "Logistic regression, L2 logistic regression and Bayesian MLPs"
        + (f" ({l2[0]['n']:,} training images)" if l2 and l2[0].get("n") else ""),
        f"elpd LOO: PSIS-LOO on the first {arviz.get('loo_n', LOO_TRAIN_EXAMPLES)} training images with "
        f"{arviz.get('draws', ARVIZ_DRAWS)} posterior draws; k>0.7: share of observations with an unreliable "
        "Pareto-k.")
    markdown["sweep"] = _write_table(
        tables_dir, "beta_sweep", sweep,
        [("task", "task", ""), ("labels", "labels", ""), ("beta", "beta", "g"), ("KL total", "kl/total", ".4g"),
         ("KL std", "kl/total (std)", ".2g"), ("train acc", "train/accuracy", ".3f"),
         ("test acc", "test/accuracy", ".3f"), ("objective/n", "objective/per_n", ".4f"), ("seeds", "seeds", "d"),
         ("converged", "converged", "")],
        "The beta sweep on 200 images")
    markdown["hyper"] = _write_table(
        tables_dir, "hyperparameters", hyper,
        [(k, k, "") for k in ("experiment", "method", "architecture", "prior", "beta", "lr", "scale lr", "batch",
                               "init scale", "seeds", "epochs", "converged")],
        "Settings of every experiment")
    markdown["pac"] = _write_table(
        tables_dir, "pac_bayes", pac,
        [("run", "label", ""), ("n", "n", "d"), ("KL", "kl/total", ".4g"), ("train Gibbs", "train/gibbs_error", ".4f"),
         ("Gibbs upper (MC)", "pac_bayes/empirical_gibbs_upper", ".4f"), ("bound", "pac_bayes/bound", ".4f"),
         ("test Gibbs", "test/gibbs_error", ".4f")],
        "PAC-Bayes bounds on the Gibbs error (seed 0 of each Bayesian experiment)")
    if arviz["layers"]:
        markdown["layers"] = _write_table(
            tables_dir, "posterior_per_layer", arviz["layers"],
            [(k, k, ".4g" if k not in ("model", "layer", "params", "draws summarised") else "")
             for k in arviz["layers"][0]], "Per-layer posterior summaries (guide statistics and az.summary)")
    if arviz["compare"]:
        markdown["compare"] = _write_table(tables_dir, "loo_compare", arviz["compare"],
                                           [(k, k, ".4g" if k != "model" else "") for k in arviz["compare"][0]],
                                           "az.compare (PSIS-LOO)")
    if arviz["lr_summary"]:
        markdown["lr_summary"] = _write_table(
            tables_dir, "lr_bias_summary", arviz["lr_summary"],
            [(k, k, ".4g" if k != "parameter" else "") for k in arviz["lr_summary"][0]],
            "az.summary of the Bayesian logistic regression's class biases")
    if psi:
        markdown["psi"] = _write_table(
            tables_dir, "psi_check", psi["rows"][::5],
            [(k, k, ".6g") for k in ("lam", "psi", "dpsi_autograd", "dpsi_closed", "d2psi_autograd", "d2psi_closed")],
            f"Question 1: psi of the per-example test losses of {psi['model']}")

    figure_paths = {}
    panels = []
    for name, title in CONVERGENCE_PANELS:
        runs = _records_named(records, name)
        if runs:
            panels.append((title, figures.read_history(runs[0]["folder"])))
    if panels:
        figure_paths["convergence"] = save_figure(figures_dir / "convergence_grid.png",
                                                  figures.convergence_grid(panels), dpi=200)
    if sweep:
        figure_paths["kl_vs_beta"] = save_figure(figures_dir / "kl_vs_beta.png", figures.kl_vs_beta_figure(sweep),
                                                 dpi=200)
    if pac:
        figure_paths["pac_bayes"] = save_figure(figures_dir / "pac_bayes.png", figures.pac_bayes_figure(pac), dpi=200)
    if psi:
        rows = psi["rows"]
        figure_paths["psi"] = save_figure(figures_dir / "psi_check.png", figures.psi_figure(
            [r["lam"] for r in rows], [r["psi"] for r in rows], [r["dpsi_autograd"] for r in rows],
            [r["dpsi_closed"] for r in rows], [r["d2psi_autograd"] for r in rows],
            [r["d2psi_closed"] for r in rows]), dpi=200)
    if arviz["figure"]:
        figure_paths["arviz"] = arviz["figure"]
    if (figures_dir / "arviz_forest_lr_bias.png").exists():
        figure_paths["arviz_forest"] = figures_dir / "arviz_forest_lr_bias.png"

    write_text(tables_dir / "headline.md", headline_markdown(records, rl, l2))
    statements = claims.all_claims(rl, l2, sweep, pac, psi, arviz)
    context = {
        "title": "How far does a Bayesian neural network's posterior move from its prior? KL(q||p) on MNIST",
        "author": author,
        "generated": datetime.date.today().isoformat(),
        "results_dir": str(results_dir),
        "quick": quick,
        "num_runs": len(records),
        "tempered_beta": TEMPERED_BETA,
        "random_labels": rl, "l2": l2, "sweep": sweep, "hyperparameters": hyper, "pac_bayes": pac, "psi": psi,
        "arviz": {k: v for k, v in arviz.items() if k != "figure"},
        "figures": {k: str(v) for k, v in figure_paths.items()},
        "tables_markdown": markdown,
        "claims": statements,
    }
    write_json(results_dir / "summary.json", {
        "generated": context["generated"], "runs": len(records),
        "random_labels": [{k: v for k, v in r.items() if k != "text"} for r in rl], "l2": l2, "pac_bayes": pac,
        "claims": statements})
    write_text(results_dir / "report.md", report_pdf.markdown_report(context))
    report_pdf.build_pdf(context, results_dir / "report.pdf")
    log(f"report: wrote {results_dir}/report.pdf, report.md, tables/ and figures/ "
        f"({time.perf_counter() - started:.0f} s)")
    return context


def finite(value) -> bool:
    return isinstance(value, int | float) and not math.isnan(value) and not math.isinf(value)
