"""The report: a two-page PDF (plus an optional appendix page) and its Markdown twin.

Both are written from the ``context`` dict of ``study/report.py``; every number in them comes
from that dict or from the runs' own ``metrics.json`` files (the stopping-rule settings and the
PAC-Bayes confidence levels, which the context does not carry). Nothing numeric is typed here.

Layout of the PDF (A4, reportlab platypus):

- page 1-2 (the report): title, author line, how to regenerate it, then Q1 (typeset
  derivation, numeric check, psi figure), models and training (text and a compact settings
  table), the convergence grid, Q2 (KL table, the four KL quantities, KL vs beta), the PAC-Bayes
  bound, Q3 (L2 vs Bayes table, theory, findings) and the summary of attempts;
- page 3 (appendix, optional): the full settings table, the ArviZ figures, per-layer posterior
  summaries, the PSIS-LOO comparison and the PAC-Bayes table.

The main content is fitted to exactly two pages by rendering in memory and shrinking figures
(and, if needed, the type) until it fits; the appendix is shrunk, then trimmed, to one page.
Mathematics is typeset with matplotlib's mathtext (rendered at 300 dpi, embedded at its true
size) and, inline, with the STIX fonts that ship with matplotlib (Greek letters and symbols).
"""

from __future__ import annotations

import dataclasses
import html
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

MATH_DPI = 300

# ----------------------------------------------------------------------------------------------
# Small formatting helpers
# ----------------------------------------------------------------------------------------------


def _ok(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value, spec: str = ".4g") -> str:
    """A number in ``spec``; '-' for None / NaN; strings pass through."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format(value, spec) if math.isfinite(value) else "-"
    return str(value)


def _esc(text) -> str:
    """Plain text made safe for reportlab's paragraph markup."""
    return html.escape(str(text), quote=False)


def _values(values) -> str:
    """A set of setting values as text: '3', or '0.002 and 0.01', or '-'."""
    values = sorted({v for v in values if v is not None}, key=lambda v: (isinstance(v, str), v))
    if not values:
        return "-"
    texts = [_fmt(v, "g") for v in values]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]


_GREEK_WORDS = {"beta": "β", "psi": "ψ", "lambda": "λ", "delta": "δ", "sigma": "σ"}


def _typeset(text) -> str:
    """A plain-text sentence (a claim) as paragraph markup, with its Greek and symbols typeset."""
    out = _esc(text)
    out = out.replace("KL(q||p)", "KL(<i>q</i>‖<i>p</i>)").replace("-&gt;", "→")
    out = re.sub(r"(?<![\w-])-ELBO", "−ELBO", out)
    for word, letter in _GREEK_WORDS.items():
        out = re.sub(rf"\b{word}\b", f"<i>{letter}</i>", out)
    return out


def _markdown_inline(markup: str) -> str:
    """Paragraph markup as Markdown (inline HTML for sub/superscripts)."""
    text = markup.replace("<super>", "<sup>").replace("</super>", "</sup>")
    text = re.sub(r"</?font[^>]*>", "", text)
    text = re.sub(r"<i>(.*?)</i>", r"*\1*", text)
    text = re.sub(r"<b>(.*?)</b>", r"**\1**", text)
    text = text.replace("<br/>", " ")
    return html.unescape(text)


def _relative(path, root) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except (ValueError, OSError):
        return os.path.relpath(str(path), str(root)).replace(os.sep, "/")


# ----------------------------------------------------------------------------------------------
# Settings the context does not carry: read from the runs' saved configurations
# ----------------------------------------------------------------------------------------------


def run_settings(context: dict) -> dict:
    """Stopping-rule settings and PAC-Bayes confidence levels, as sets of values over the runs.

    Read from ``<results_dir>/*/seed*/metrics.json``; an empty dict when they cannot be read
    (the report then words the rule without numbers).
    """
    settings: dict[str, set] = {}
    try:
        from study.tables import collect_runs

        records = collect_runs(context.get("results_dir", ""))
    except Exception:  # a missing or unreadable folder only costs the numbers in the text
        records = []
    for record in records:
        train = (record.get("config") or {}).get("train") or {}
        for key in ("window", "tolerance", "num_decays", "decay_factor", "max_blocks", "min_blocks",
                    "steps_per_block", "full_batch_max", "batch_size"):
            if key in train:
                settings.setdefault(key, set()).add(train[key])
        metrics = record.get("metrics") or {}
        for key in ("pac_bayes/delta", "pac_bayes/delta_prime", "pac_bayes/monte_carlo_outcomes"):
            if _ok(metrics.get(key)):
                settings.setdefault(key, set()).add(metrics[key])
    return settings


# ----------------------------------------------------------------------------------------------
# The content, as blocks shared by the PDF and the Markdown
# ----------------------------------------------------------------------------------------------


@dataclass
class Heading:
    text: str


@dataclass
class Para:
    markup: str
    style: str = "body"
    refs: dict = field(default_factory=dict)  # token -> (text, text when optional figures moved to the appendix)

    def text(self, moved: bool = False) -> str:
        markup = self.markup
        for token, (here, there) in self.refs.items():
            markup = markup.replace(token, there if moved else here)
        return markup


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Equations:
    """Display equations (mathtext / LaTeX); each row holds one or more side-by-side formulas."""
    rows: list[list[str]]


@dataclass
class TableBlock:
    header: list[str]
    rows: list[list[str]]
    caption: str
    markdown: str = ""  # Markdown of the same table (defaults to one built from header and rows)
    widths: dict = field(default_factory=dict)  # column index -> fixed share of the width
    font: float = 7.0


@dataclass
class FigureBlock:
    key: str
    caption: str
    width: float = 1.0  # fraction of the text width at full scale
    fixed: bool = False  # True: this width whatever the layout's figure scale
    optional: bool = False  # may move to the appendix when the main content is too long


@dataclass
class Row:
    """Blocks laid out side by side (PDF); one after the other in Markdown."""
    cells: list[list]
    shares: list[float]


@dataclass
class Break:
    """Where the main content may be split over the two pages when it is short."""


def _small_n(context: dict) -> str:
    """'200 images' (the size of the small training sets of the study, from the KL table) or a wording."""
    sizes = {r.get("n") for r in context.get("random_labels", []) if "200" in str(r.get("experiment"))}
    sizes = sorted(n for n in sizes if _ok(n))
    return f"{sizes[0]:,} images" if len(sizes) == 1 else "the small training sets"


def _claims(context: dict, key: str) -> list[str]:
    return [_typeset(s) for s in (context.get("claims") or {}).get(key, [])]


def _figure_number(counter: dict, key: str) -> int:
    counter.setdefault(key, len(counter) + 1)
    return counter[key]


def _arch_params(context: dict) -> dict[str, int]:
    """Architecture label -> number of parameters, from the tables that know both."""
    experiment_arch = {r["experiment"]: r.get("architecture") for r in context.get("hyperparameters", [])}
    out = {}
    for row in context.get("l2", []):
        if row.get("architecture") and _ok(row.get("params")):
            out[row["architecture"]] = int(row["params"])
    for row in context.get("random_labels", []):
        arch = experiment_arch.get(row.get("experiment"))
        if arch and _ok(row.get("params")):
            out.setdefault(arch, int(row["params"]))
    return out


def _epochs_number(text) -> float | None:
    try:
        return float(str(text).split("±")[0].strip())
    except ValueError:
        return None


_METHOD_LABEL = {"mle": "MLE (flat prior)", "map": "MAP (L2 penalty)", "vi": "VI, mean-field Normal"}
_USE_LABEL = {"rl": "Q2", "sweep": "β sweep", "lr": "Q3", "bnn": "Q3"}


def compact_hyperparameters(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The settings table grouped by optimiser settings: one row per distinct configuration."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row.get("method"), row.get("prior"), row.get("lr"), row.get("scale lr"), row.get("init scale"))
        groups.setdefault(key, []).append(row)
    header = ["used in", "method", "architectures", "prior", "β", "lr (means)", "lr (scales)", "init σ", "batch",
              "epochs", "converged"]
    out = []
    for (method, prior, lr, scale_lr, init), members in groups.items():
        uses = []
        for m in members:
            use = _USE_LABEL.get(str(m["experiment"]).split("-")[0], "other")
            if use not in uses:
                uses.append(use)
        epochs = [e for e in (_epochs_number(m.get("epochs")) for m in members) if e is not None]
        epoch_text = "-" if not epochs else (_fmt(min(epochs), ".0f") if min(epochs) == max(epochs)
                                             else f"{min(epochs):.0f}–{max(epochs):.0f}")
        done = sum(m.get("converged") == "yes" for m in members)
        archs = []
        for m in members:
            if m.get("architecture") not in archs:
                archs.append(m.get("architecture"))
        point = method in ("mle", "map")
        out.append([
            ", ".join(uses) + f" ({len(members)})", _METHOD_LABEL.get(method, str(method)),
            ", ".join(map(str, archs)), _prior_text(prior), "-" if point else _values(m.get("beta") for m in members),
            _fmt(lr, "g"), "-" if point else _fmt(scale_lr, "g"), "-" if point else _fmt(init, "g"),
            _values(str(m.get("batch")) for m in members), epoch_text, f"{done}/{len(members)}"])
    return header, out


def _prior_text(prior) -> str:
    text = _esc(prior if prior is not None else "-")
    return text.replace("^2", "²").replace("sqrt(fan_in)", "√fan-in")


def _model_paragraphs(context: dict, settings: dict) -> list:
    hyper = context.get("hyperparameters", [])
    archs = _arch_params(context)
    arch_text = ", ".join(f"{_esc(a)} ({p:,})" for a, p in sorted(archs.items(), key=lambda kv: kv[1]))
    priors = sorted({_prior_text(r["prior"]) for r in hyper if r.get("prior") not in (None, "flat")})
    prior_text = " and ".join(priors) if priors else "a Gaussian"
    tempered = context.get("tempered_beta")
    methods = {r.get("method") for r in hyper}
    models = (
        "<b>Models.</b> ReLU multilayer perceptrons; every weight and bias has the isotropic Gaussian prior "
        f"{prior_text}; the likelihood is categorical (softmax) over the ten digits, or Bernoulli with one logit "
        "for the two-class tasks (3 vs 8, random labels). "
        + (f"Architectures, inputs–hidden–outputs (parameters): {arch_text}. " if arch_text else "")
        + ("Logistic regression (no hidden layer) is fitted by maximum likelihood (flat prior), by MAP under the "
           "Gaussian prior (an L2 penalty) and by VI. " if {"mle", "map"} & methods else "")
        + "VI uses a mean-field Normal guide <i>q</i>(<i>w</i>) = ∏<i><sub>i</sub></i> N(<i>μ<sub>i</sub></i>, "
          "<i>σ<sub>i</sub></i>²), <i>σ</i> = exp(<i>ρ</i>), and minimises E<sub><i>q</i></sub>[−log "
          "<i>p</i>(<i>y</i>|<i>w</i>)] + <i>β</i> KL(<i>q</i>‖<i>p</i>) with one reparameterised weight sample "
          "per step and the KL in closed form; <i>β</i> = 1 is Bayes' rule (the negative ELBO)"
        + (f", <i>β</i> = {_fmt(tempered, 'g')} a tempered posterior." if _ok(tempered) else "."))

    def s(key):
        return _values(settings.get(key, ())) if settings.get(key) else None

    batch, full_max, steps = s("batch_size"), s("full_batch_max"), s("steps_per_block")
    window, tol = s("window"), s("tolerance")
    decays, factor, max_blocks = s("num_decays"), s("decay_factor"), s("max_blocks")
    training = (
        "<b>Training.</b> Adam with separate learning rates for the means and the posterior scales (Table 1); "
        + (f"mini-batches of {batch} above {full_max} training images, full batches below. " if batch and full_max
           else "mini-batches on large training sets, full batches on small ones. ")
        + "After each block (an epoch, or "
        + (f"{steps} full-batch steps" if steps else "a fixed number of full-batch steps")
        + ") the mean objective per example is recorded. <i>Schedule and stopping rule</i>: when the relative "
          "decrease of the block-mean objective between two windows of "
        + (f"{window} blocks" if window else "blocks") + (f" falls below {tol}" if tol else " falls below a tolerance")
        + ", the learning rates are divided by " + (factor or "a constant factor")
        + "; a run has <i>converged</i> when this happens at the last learning rate"
        + (f" (after {decays} decays)" if decays else "")
        + (f"; one that reaches {max_blocks} blocks first is marked not converged. " if max_blocks else ". ")
        + "Defaults were chosen by the ELBO they reach, not by test accuracy.")
    return [Para(models), Para(training)]


def content(context: dict) -> tuple[list, list]:
    """The report as (main blocks, appendix blocks)."""
    settings = run_settings(context)
    figures = context.get("figures") or {}
    md = context.get("tables_markdown") or {}
    figs: dict[str, int] = {}
    main: list = []

    # --- Q1 -------------------------------------------------------------------------------------
    main.append(Heading("1  Question 1: the derivatives of ψ"))
    main.append(Para(
        "Let <i>L</i> be the loss and <i>M</i>(<i>λ</i>) = E[<i>e</i><super><i>λL</i></super>] its moment "
        "generating function, finite around <i>λ</i> so that derivatives pass under the expectation: "
        "<i>M</i>′(<i>λ</i>) = E[<i>L e</i><super><i>λL</i></super>], <i>M</i>″(<i>λ</i>) = "
        "E[<i>L</i>²<i>e</i><super><i>λL</i></super>]. With <i>ψ</i> = log <i>M</i>, the chain "
        "rule and the quotient rule give"))
    main.append(Equations([
        [r"\psi(\lambda)\triangleq\log\mathbb{E}\left[e^{\lambda L}\right],\qquad"
         r"\psi^{\prime}(\lambda)=\dfrac{M^{\prime}(\lambda)}{M(\lambda)}"
         r"=\dfrac{\mathbb{E}\left[L\,e^{\lambda L}\right]}{\mathbb{E}\left[e^{\lambda L}\right]}"
         r"=\mathbb{E}_{\lambda}[L],\qquad \dfrac{dP_{\lambda}}{dP}"
         r"=\dfrac{e^{\lambda L}}{\mathbb{E}\left[e^{\lambda L}\right]},"],
        [r"\psi^{\prime\prime}(\lambda)=\dfrac{M^{\prime\prime}M-(M^{\prime})^{2}}{M^{2}}"
         r"=\dfrac{\mathbb{E}\left[L^{2}e^{\lambda L}\right]}{\mathbb{E}\left[e^{\lambda L}\right]}"
         r"-\left(\dfrac{\mathbb{E}\left[L\,e^{\lambda L}\right]}{\mathbb{E}\left[e^{\lambda L}\right]}"
         r"\right)^{2}=\mathbb{E}_{\lambda}[L^{2}]-\left(\mathbb{E}_{\lambda}[L]\right)^{2}"
         r"=\mathrm{Var}_{\lambda}(L)\geq 0."],
    ]))
    psi_text = ("So <i>ψ</i>′(<i>λ</i>) is the mean and <i>ψ</i>″(<i>λ</i>) the variance of <i>L</i> under the "
                "exponentially tilted distribution <i>dP<sub>λ</sub></i> ∝ <i>e</i><super><i>λL</i></super><i>dP</i>; "
                "hence <i>ψ</i> is convex, and at <i>λ</i> = 0: <i>ψ</i>(0) = 0, <i>ψ</i>′(0) = E[<i>L</i>], "
                "<i>ψ</i>″(0) = Var(<i>L</i>).")
    q1 = _claims(context, "q1")
    if q1:
        psi_text += " <b>Numeric check</b>" + (f" (Fig. {_figure_number(figs, 'psi')})" if figures.get("psi")
                                                else "") + ": " + " ".join(q1)
    if figures.get("psi"):
        model = (context.get("psi") or {}).get("model", "")
        figure = FigureBlock("psi", f"Fig. {_figure_number(figs, 'psi')}: <i>ψ</i>, <i>ψ</i>′ and <i>ψ</i>″ of the "
                                    f"per-example test losses of {_esc(model)}; autograd (dashed) against the closed "
                                    "forms (tilted mean and variance).", 1.0, fixed=True)
        main.append(Row([[Para(psi_text)], [figure]], [0.47, 0.53]))
    else:
        main.append(Para(psi_text))

    # --- Models and training ----------------------------------------------------------------------
    main.append(Heading("2  Models and training"))
    main += _model_paragraphs(context, settings)
    header, rows = compact_hyperparameters(context.get("hyperparameters", []))
    if rows:
        main.append(TableBlock(header, rows,
                               "Table 1: settings, grouped (number of experiments in brackets; full table in the "
                               "appendix). Epochs = passes over the training set actually run; converged = runs "
                               "whose stopping rule fired.",
                               widths={2: 0.2}))
    if figures.get("convergence"):
        main.append(FigureBlock(
            "convergence", f"Fig. {_figure_number(figs, 'convergence')}: convergence: train (blue) and test "
                           "(orange) accuracy per epoch of the posterior-mean (or point-estimate) weights, seed 0.",
            0.92))

    # --- Q2 -----------------------------------------------------------------------------------
    main.append(Break())
    main.append(Heading("3  Question 2: KL(<i>q</i>‖<i>p</i>) with true and random labels"))
    rl = context.get("random_labels", [])
    experiment_arch = {r["experiment"]: r.get("architecture") for r in context.get("hyperparameters", [])}
    rl_archs = _values(experiment_arch.get(r.get("experiment")) for r in rl)
    main.append(Equations([[
        r"\mathrm{KL}(q\,\|\,p)=\sum_{i=1}^{N}\mathrm{KL}_i,\quad"
        r"\mathrm{KL}_i=\log\dfrac{s_i}{\sigma_i}+\dfrac{\sigma_i^{2}+(\mu_i-m_i)^{2}}{2s_i^{2}}-\dfrac{1}{2};"
        r"\qquad\dfrac{1}{N}\sum_{i}\mathrm{KL}_i,\qquad\left(\sum_{i}\mathrm{KL}_i^{2}\right)^{1/2},\qquad"
        r"\dfrac{\mathrm{KL}(q\,\|\,p)}{n}."]]))
    main.append(Para(
        "Each training selection of the assignment trains the same MLP"
        + (f" ({_esc(rl_archs)})" if rl and rl_archs != "-" else "")
        + " at <i>β</i> = 1 (Bayes) and at the tempered <i>β</i>. With the prior N(<i>m<sub>i</sub></i>, "
          "<i>s<sub>i</sub></i>²) and the guide N(<i>μ<sub>i</sub></i>, <i>σ<sub>i</sub></i>²), KL(<i>q</i>‖<i>p</i>) "
          "is the sum above of closed-form terms over the <i>N</i> parameters. Table 2 gives its four summaries, "
          "displayed after the semicolon: the total (nats), the mean per parameter, the L2 norm of the vector of "
          "per-parameter KLs (large when a few parameters moved far) and the KL per training example (the "
          "complexity term of the ELBO and of the PAC-Bayes bound)."))
    if rl:
        header = ["training selection", "β", "<i>n</i>", "seeds", "KL total (nats)", "KL / param", "KL L2 norm",
                  "KL / <i>n</i>", "train acc", "test acc", "bound", "conv."]
        rows = []
        for r in rl:
            t = r.get("text", {})
            rows.append([_esc(r.get("selection")), _fmt(r.get("beta"), "g"), _fmt(r.get("n"), "d"),
                         _fmt(r.get("seeds"), "d"), _esc(t.get("kl/total", "-")),
                         _esc(t.get("kl/mean_per_param", "-")), _esc(t.get("kl/l2_norm", "-")),
                         _esc(t.get("kl/per_n", "-")), _esc(t.get("train/accuracy", "-")),
                         _esc(t.get("test/accuracy", "-")), _esc(t.get("pac_bayes/bound", "-")),
                         "yes" if r.get("converged") == "yes" else "<b>no</b>"])
        main.append(TableBlock(header, rows,
                               "Table 2: KL(<i>q</i>‖<i>p</i>) of the random-labels study (mean ± sample std over "
                               "seeds). Accuracies of the Bayesian model average; bound = PAC-Bayes bound on the "
                               "Gibbs error (Section 4); conv. = stopping rule fired for every seed.",
                               markdown=md.get("random_labels", ""), font=6.5))
    if not rl:
        main.append(Para("(No run of the random-labels study in this results folder.)", "note"))
    q2 = _claims(context, "q2")
    if q2:
        main.append(Para("<b>Findings.</b> " + " ".join(q2)))
    if figures.get("kl_vs_beta"):
        main.append(FigureBlock(
            "kl_vs_beta", f"Fig. {_figure_number(figs, 'kl_vs_beta')}: the price of memorisation: KL(<i>q</i>‖"
                          "<i>p</i>) and training accuracy against the KL weight <i>β</i> on "
                          f"{_small_n(context)} with true "
                          "(3 vs 8) and random labels (line: mean, dots: seeds).", 0.88))
    sweep = _claims(context, "sweep")
    if sweep and (context.get("sweep") or figures.get("kl_vs_beta")):
        main.append(Para("<b>β sweep.</b> " + " ".join(sweep)))

    # --- PAC-Bayes --------------------------------------------------------------------------------
    main.append(Heading("4  PAC-Bayes bounds"))
    delta = _values(settings.get("pac_bayes/delta", ()))
    delta_prime = _values(settings.get("pac_bayes/delta_prime", ()))
    draws = _values(int(v) for v in settings.get("pac_bayes/monte_carlo_outcomes", ()))
    values = ""
    if settings.get("pac_bayes/delta"):
        values = f" (<i>δ</i> = {delta}, <i>δ</i>′ = {delta_prime}" + (
            f", <i>m</i> = {draws})" if settings.get("pac_bayes/monte_carlo_outcomes") else ")")
    main.append(Para(
        "For the Gibbs classifier of <i>Q</i> = <i>q</i> (a fresh <i>w</i> ~ <i>Q</i> per prediction) and the prior "
        "<i>P</i> = <i>p</i>, with probability at least 1 − <i>δ</i> − <i>δ</i>′ over the <i>n</i> training "
        "examples (Seeger 2002; Maurer 2004; Dziugaite &amp; Roy 2017), where kl is the KL between Bernoulli "
        "distributions, <i>e<sub>Q</sub></i> and <i>ê<sub>Q</sub></i> the true and the empirical Gibbs error and "
        f"<i>ē<sub>Q</sub></i> the error of <i>m</i> Monte Carlo outcomes{values}:"))
    main.append(Equations([[
        r"\mathrm{kl}\left(\hat{e}_Q\,\|\,e_Q\right)\leq"
        r"\dfrac{\mathrm{KL}(Q\,\|\,P)+\ln\left(2\sqrt{n}/\delta\right)}{n},"
        r"\qquad \hat{e}_Q\leq\mathrm{kl}^{-1}\left(\bar{e}_Q,\ \dfrac{\ln(2/\delta^{\prime})}{m}\right)."]]))
    pac_claims = " ".join(_claims(context, "pac_bayes"))
    if figures.get("pac_bayes"):
        number = _figure_number(figs, "pac_bayes")
        main.append(Para(("The bound on <i>e<sub>Q</sub></i> inverts kl in its second argument (@@pac@@). "
                          + pac_claims).strip(),
                         refs={"@@pac@@": (f"Fig. {number}", f"Fig. {number} in the appendix")}))
        main.append(FigureBlock(
            "pac_bayes", f"Fig. {number}: measured test Gibbs error against the PAC-Bayes bound, seed 0 of each "
                         "Bayesian experiment (dotted: chance on two classes).", 0.85, optional=True))
    else:
        main.append(Para(("The bound on <i>e<sub>Q</sub></i> inverts kl in its second argument. " + pac_claims)
                         .strip()))

    # --- Q3 ------------------------------------------------------------------------------------------
    main.append(Heading("5  Question 3: L2 regularisation and Bayesian neural networks"))
    l2 = context.get("l2", [])
    if l2:
        header = ["model", "method", "architecture", "params", "test acc", "test NLL", "test ECE", "KL (nats)",
                  "−ELBO/<i>n</i>", "elpd LOO", "epochs", "train s", "conv."]
        rows = [[_esc(r.get("model")), _esc(r.get("method")), _esc(r.get("architecture")), _fmt(r.get("params"), ","),
                 _fmt(r.get("test/accuracy"), ".4f"), _fmt(r.get("test/nll"), ".4f"), _fmt(r.get("test/ece"), ".4f"),
                 _fmt(r.get("kl/total"), ".4g"), _fmt(r.get("elbo/neg_per_n"), ".4f"), _fmt(r.get("loo/elpd"), ".1f"),
                 _fmt(r.get("training/epochs"), ".0f"), _fmt(r.get("training/seconds"), ".0f"),
                 "yes" if r.get("converged") == "yes" else "<b>no</b>"] for r in l2]
        loo_n = (context.get("arviz") or {}).get("loo_n")
        main.append(TableBlock(header, rows,
                               "Table 3: logistic regression (MLE, MAP = L2, VI) and Bayesian MLPs at <i>β</i> = 1 "
                               "on the full training set. elpd LOO: PSIS-LOO"
                               + (f" on the first {loo_n:,} training images." if _ok(loo_n) else "."),
                               markdown=md.get("l2", "")))
    if not l2:
        main.append(Para("(No run of the L2-versus-Bayes study in this results folder.)", "note"))
    main.append(Para(
        "<b>Theory.</b> MLE maximises the log-likelihood Σ<sub><i>j</i></sub> log <i>p</i>(<i>y<sub>j</sub></i>|"
        "<i>x<sub>j</sub></i>, <i>w</i>). MAP under the prior <i>w</i> ~ N(0, <i>σ</i>²<i>I</i>) maximises the "
        "log-likelihood minus ‖<i>w</i>‖²/(2<i>σ</i>²), i.e. per example the mean log-likelihood minus an L2 "
        "penalty <i>λ</i>‖<i>w</i>‖² with <i>λ</i> = 1/(2<i>nσ</i>²): L2 regularisation is MAP under a Gaussian "
        "prior. VI fits a distribution <i>q</i>(<i>w</i>) instead, maximising"))
    main.append(Equations([[
        r"\mathrm{ELBO}(q)=\mathbb{E}_{q}\left[\log p(y\mid X,w)\right]-\mathrm{KL}\left(q\,\|\,p\right)"
        r"=\log p(y\mid X)-\mathrm{KL}\left(q\,\|\,p(w\mid X,y)\right),"]]))
    main.append(Para(
        "whose KL is the complexity term (the information, in nats, the weights take from the data). For a point "
        "mass <i>q</i> = <i>δ<sub>w</sub></i> the data term becomes log <i>p</i>(<i>y</i>|<i>X</i>, <i>w</i>) and "
        "the KL, up to the point mass's diverging entropy, −log <i>p</i>(<i>w</i>): MAP is the point-mass limit of "
        "VI, which pays for averaging predictions over <i>q</i> with twice the parameters and sampled gradients."))
    q3 = _claims(context, "q3")
    if q3:
        main.append(Para("<b>Findings.</b> " + " ".join(q3)))

    # --- Summary --------------------------------------------------------------------------------------
    main.append(Heading("6  Summary of attempts and conclusions"))
    main.append(Bullets(summary_items(context)))

    # --- Appendix ---------------------------------------------------------------------------------
    appendix: list = [Heading("Appendix: full settings, ArviZ diagnostics, PAC-Bayes table")]
    hyper = context.get("hyperparameters", [])
    if hyper:
        keys = ["experiment", "method", "architecture", "prior", "beta", "lr", "scale lr", "batch", "init scale",
                "seeds", "epochs", "converged"]
        appendix.append(TableBlock(
            ["experiment", "method", "architecture", "prior", "β", "lr", "scale lr", "batch", "init σ", "seeds",
             "epochs", "converged"],
            [[_prior_text(r.get(k)) if k == "prior" else _esc(_fmt(r.get(k), "g")) for k in keys] for r in hyper],
            "Table A1: settings of every experiment.", markdown=md.get("hyper", ""), font=6.3))
    arviz = context.get("arviz") or {}
    figure_cells = []
    for key, caption in (("arviz", "PSIS-LOO Pareto <i>k</i> per training image (ArviZ)."),
                         ("arviz_forest", "posterior of the class biases of Bayesian logistic regression "
                                          "(94% HDI, ArviZ).")):
        if figures.get(key):
            figure_cells.append([FigureBlock(key, f"Fig. {_figure_number(figs, key)}: {caption}", 1.0)])
    if figure_cells:
        appendix.append(Row(figure_cells, [1 / len(figure_cells)] * len(figure_cells)) if len(figure_cells) > 1
                        else figure_cells[0][0])
    layers = arviz.get("layers") or []
    if layers:
        keys = list(layers[0])
        appendix.append(TableBlock(
            [_esc(k) for k in keys],
            [[_esc(_fmt(r.get(k), "d" if k in ("layer", "params", "draws summarised") and isinstance(r.get(k), int)
                        else ".4g")) for k in keys] for r in layers],
            f"Table A2: per-layer posterior summaries (guide statistics and az.summary over "
            f"{_fmt(arviz.get('draws'), 'd')} draws).", markdown=md.get("layers", ""), font=6.3))
    compare = arviz.get("compare") or []
    if compare:
        keys = [k for k in compare[0] if k not in ("scale",)]
        appendix.append(TableBlock(
            [_esc(k) for k in keys], [[_esc(_fmt(r.get(k), ".4g")) for k in keys] for r in compare],
            "Table A3: az.compare (PSIS-LOO) of the Bayesian models of Question 3.",
            markdown=md.get("compare", ""), font=6.3))
    pac = context.get("pac_bayes") or []
    if pac:
        keys = [("run", "label", ""), ("n", "n", "d"), ("KL", "kl/total", ".4g"), ("train Gibbs", "train/gibbs_error",
                ".4f"), ("Gibbs upper (MC)", "pac_bayes/empirical_gibbs_upper", ".4f"),
                ("bound", "pac_bayes/bound", ".4f"), ("test Gibbs", "test/gibbs_error", ".4f"),
                ("test acc", "test/accuracy", ".4f")]
        appendix.append(TableBlock(
            [h for h, _, _ in keys], [[_esc(_fmt(r.get(k), s)) for _, k, s in keys] for r in pac],
            "Table A4: PAC-Bayes bounds on the Gibbs error (seed 0 of each Bayesian experiment).",
            markdown=md.get("pac", ""), font=6.3))
    return main, appendix


def summary_items(context: dict) -> list[str]:
    """Bullets of the summary: findings from the claims, then fixed notes on method and honesty."""
    items = []
    claims = context.get("claims") or {}
    for key, pick in (("q2", ("stays near the prior",)), ("pac_bayes", ("PAC-Bayes bound",)),
                      ("q3", ("Hidden layers buy", "do not beat"))):
        for sentence in claims.get(key, []):
            if any(p in sentence for p in pick) and _typeset(sentence) not in items:
                items.append(_typeset(sentence))
    tempering = " ".join(_typeset(sentence) for sentence in claims.get("tempering", []))
    fitting = " ".join(_typeset(sentence) for sentence in claims.get("fitting", []))
    items.append(f"<b>Attempts and caveats.</b> {fitting} "
                 f"{tempering} Optimiser defaults "
                 "were chosen by the ELBO they reach, never by test accuracy; the stopping rule, not an epoch budget, "
                 "ends a run, and runs where it did not fire are flagged. All KLs are those of the mean-field "
                 "approximation <i>q</i>, not of the exact posterior.")
    return items


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_markdown_inline(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_markdown_inline(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _without_title(markdown: str) -> str:
    """A table of ``context["tables_markdown"]`` without its '## title' line (the caption replaces it)."""
    return re.sub(r"\A\s*#+ [^\n]*\n+", "", markdown)


def _markdown_caption(caption: str) -> str:
    """'Fig. 3: text' as '**Fig. 3:** text'."""
    text = _markdown_inline(caption)
    label, _, rest = text.partition(": ")
    return f"**{label}:** {rest}" if rest else text


def _markdown_blocks(blocks: list, context: dict, level: str = "##") -> list[str]:
    out = []
    root = context.get("results_dir", ".")
    figures = context.get("figures") or {}
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{level} {_markdown_inline(block.text)}\n")
        elif isinstance(block, Para):
            out.append(_markdown_inline(block.text()) + "\n")
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {_markdown_inline(item)}" for item in block.items) + "\n")
        elif isinstance(block, Equations):
            out.append("\n".join(f"$$\n{eq.replace(chr(92) + 'qquad', chr(92) + 'quad')}\n$$"
                                 for row in block.rows for eq in row) + "\n")
        elif isinstance(block, TableBlock):
            out.append(_markdown_caption(block.caption) + "\n")
            out.append(_without_title(block.markdown) if block.markdown
                       else _markdown_table(block.header, block.rows))
        elif isinstance(block, FigureBlock):
            path = figures.get(block.key)
            if path and Path(path).is_file():
                caption = _markdown_inline(block.caption)
                out.append(f"![{caption.split(':')[0]}]({_relative(path, root)})\n\n"
                           f"{_markdown_caption(block.caption)}\n")
        elif isinstance(block, Row):
            for cell in block.cells:
                out += _markdown_blocks(cell, context, level)
    return out


def _front_matter(context: dict) -> dict:
    author = str(context.get("author") or "").strip()
    return {
        "author": author if author else "Name / ID: ______________________",
        "generated": f"Generated {context.get('generated', '')} from the {context.get('num_runs', 0)} runs in "
                     f"{context.get('results_dir', '')}/.",
        "command": "Regenerate everything with make reproduce; the report alone with make report.",
        "banner": "QUICK RUN: tiny budget, numbers are not results" if context.get("quick") else "",
    }


def markdown_report(context: dict) -> str:
    """The report in Markdown: the same sections, tables, figures (relative links) and claims."""
    main, appendix = content(context)
    front = _front_matter(context)
    parts = [f"# {_markdown_inline(_typeset(context.get('title', 'Report')))}\n",
             "**" + front["author"].replace("_", "\\_") + "**\n",
             f"{front['generated']} Regenerate everything with `make reproduce`; the report alone with "
             "`make report`.\n"]
    if front["banner"]:
        parts.append(f"> **{front['banner']}**\n")
    parts += _markdown_blocks([b for b in main if not isinstance(b, Break)], context)
    parts += _markdown_blocks(appendix, context)
    return "\n".join(parts).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------
# PDF
# ----------------------------------------------------------------------------------------------

_FONT_CACHE: dict[str, str] = {}


def _fonts() -> dict[str, str]:
    """Register the STIX fonts of matplotlib (Times-like, with Greek and maths symbols)."""
    if _FONT_CACHE:
        return _FONT_CACHE
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    try:
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        names = {"STIX": "STIXGeneral.ttf", "STIX-Bold": "STIXGeneralBol.ttf", "STIX-Italic": "STIXGeneralItalic.ttf",
                 "STIX-BoldItalic": "STIXGeneralBolIta.ttf"}
        for name, file in names.items():
            pdfmetrics.registerFont(TTFont(name, str(folder / file)))
        pdfmetrics.registerFontFamily("STIX", normal="STIX", bold="STIX-Bold", italic="STIX-Italic",
                                      boldItalic="STIX-BoldItalic")
        pdfmetrics.registerFont(TTFont("STIX-Symbols", str(folder / names["STIX"])))  # outside the family
        _FONT_CACHE.update(regular="STIX", bold="STIX-Bold", italic="STIX-Italic", mono="Courier",
                           symbols="STIX-Symbols")
    except Exception:  # no STIX: the standard Times fonts (Greek letters will be missing)
        _FONT_CACHE.update(regular="Times-Roman", bold="Times-Bold", italic="Times-Italic", mono="Courier",
                           symbols="")
    return _FONT_CACHE


# Symbols that the bold or italic STIX faces lack: always set in the regular face.
_SYMBOLS = re.compile("[‖∏→∝√≤≥∼′″∑]")


def _symbols(markup: str) -> str:
    font = _fonts()["symbols"]
    return _SYMBOLS.sub(lambda m: f'<font name="{font}">{m.group(0)}</font>', markup) if font else markup


_MATH_CACHE: dict[tuple[str, float], tuple[bytes, float, float]] = {}


def _math_png(tex: str, size: float) -> tuple[bytes, float, float]:
    """A formula rendered by mathtext: (PNG bytes, width pt, height pt) at its natural size."""
    key = (tex, size)
    if key not in _MATH_CACHE:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        with matplotlib.rc_context({"mathtext.fontset": "stix", "font.family": "STIXGeneral"}):
            figure = Figure(figsize=(1, 1))
            FigureCanvasAgg(figure)
            figure.text(0, 0, f"${tex}$", fontsize=size)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=MATH_DPI, bbox_inches="tight", pad_inches=0.015,
                           transparent=True)
        data = buffer.getvalue()
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(data)) as image:
            width, height = image.size
        _MATH_CACHE[key] = (data, width * 72 / MATH_DPI, height * 72 / MATH_DPI)
    return _MATH_CACHE[key]


@dataclass
class _Layout:
    figure_scale: float = 1.0
    font_scale: float = 1.0
    split: bool = False  # page break at the Break block (short main content)
    draft: bool = False  # layout only: figures are not drawn (fast)
    move_optional: bool = False  # optional figures go to the appendix


class _Styles:
    def __init__(self, font_scale: float):
        from reportlab.lib import colors
        from reportlab.lib.enums import TA_CENTER, TA_JUSTIFY, TA_LEFT
        from reportlab.lib.styles import ParagraphStyle

        f = _fonts()
        k = font_scale
        self.body_size = 8.4 * k
        self.body = ParagraphStyle("body", fontName=f["regular"], fontSize=8.1 * k, leading=9.3 * k,
                                   alignment=TA_JUSTIFY, spaceAfter=1.6 * k)
        self.bullet = ParagraphStyle("bullet", parent=self.body, leftIndent=8 * k, bulletIndent=1.5 * k,
                                     spaceAfter=0.9 * k)
        self.caption = ParagraphStyle("caption", parent=self.body, fontSize=7.3 * k, leading=8.4 * k,
                                      textColor=colors.HexColor("#333333"), spaceAfter=3 * k, alignment=TA_LEFT)
        self.heading = ParagraphStyle("heading", fontName=f["bold"], fontSize=10 * k, leading=12 * k,
                                      spaceBefore=4.5 * k, spaceAfter=1.8 * k, keepWithNext=True,
                                      textColor=colors.HexColor("#102a5c"))
        self.title = ParagraphStyle("title", fontName=f["bold"], fontSize=12.5, leading=14.5, alignment=TA_CENTER,
                                    spaceAfter=2)
        self.meta = ParagraphStyle("meta", fontName=f["regular"], fontSize=8.4, leading=10, alignment=TA_CENTER,
                                   spaceAfter=1)
        self.banner = ParagraphStyle("banner", fontName=f["bold"], fontSize=9, leading=10.5, alignment=TA_CENTER,
                                     textColor=colors.white, backColor=colors.HexColor("#c0392b"),
                                     borderPadding=(1.5, 4, 2, 4), spaceBefore=3, spaceAfter=4)
        self.note = ParagraphStyle("note", parent=self.caption, textColor=colors.HexColor("#888888"))

    def cell(self, size: float, bold: bool = False):
        from reportlab.lib.styles import ParagraphStyle

        f = _fonts()
        return ParagraphStyle(f"cell{size}{bold}", fontName=f["bold"] if bold else f["regular"], fontSize=size,
                              leading=size * 1.17)


def _paragraph(markup: str, style, **kwargs):
    """A paragraph with fallback glyphs and tighter sub- and superscripts than reportlab's defaults."""
    from reportlab.platypus import Paragraph

    size = style.fontSize
    markup = markup.replace("<sub>", f'<sub rise="{0.17 * size:.2f}" size="{0.7 * size:.2f}">')
    markup = markup.replace("<super>", f'<super rise="{0.36 * size:.2f}" size="{0.7 * size:.2f}">')
    return Paragraph(_symbols(markup), style, **kwargs)


def _marker(name: str, pages: dict):
    from reportlab.platypus import Flowable

    class Marker(Flowable):
        width = height = 0

        def wrap(self, available_width, available_height):
            return 0, 0

        def draw(self):
            pages[name] = self.canv.getPageNumber()

    return Marker()


_IMAGE_CACHE: dict[str, object] = {}


def _image_reader(path: str):
    """The figure as an ImageReader over an RGB copy on white (read once per process and file)."""
    from reportlab.lib.utils import ImageReader

    key = f"{path}:{os.path.getmtime(path)}"
    if key not in _IMAGE_CACHE:
        from PIL import Image as PILImage

        with PILImage.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "P"):
                image = image.convert("RGBA")
                background = PILImage.new("RGB", image.size, "white")
                background.paste(image, mask=image.split()[-1])
                image = background
            else:
                image = image.convert("RGB")
        _IMAGE_CACHE[key] = ImageReader(image)
    return _IMAGE_CACHE[key]


def _figure_flowable(path: str, width: float, caption, min_fraction: float, draft: bool):
    """A figure with its caption below; shrinks (down to ``min_fraction``) to fill the rest of a page."""
    from reportlab.platypus import Flowable

    reader = _image_reader(path)
    pixel_width, pixel_height = reader.getSize()

    class Figure(Flowable):
        def __init__(self):
            super().__init__()
            self.image_width, self.image_height = width, width * pixel_height / pixel_width

        def wrap(self, available_width, available_height):
            natural_width = min(width, available_width)
            natural_height = natural_width * pixel_height / pixel_width
            _, caption_height = caption.wrap(available_width, available_height)
            room = available_height - caption_height - 1
            scale = 1.0
            if natural_height > room >= natural_height * min_fraction:
                scale = room / natural_height
            self.image_width, self.image_height = natural_width * scale, natural_height * scale
            self.width, self.height = available_width, self.image_height + caption_height + 1
            self.caption_height = caption_height
            return self.width, self.height

        def draw(self):
            x = (self.width - self.image_width) / 2
            if not draft:
                self.canv.drawImage(reader, x, self.caption_height + 1, self.image_width, self.image_height)
            caption.drawOn(self.canv, 0, 0)

    return Figure()


def _table(block: TableBlock, width: float, styles: _Styles, font_scale: float):
    """A compact booktabs-style table whose columns share ``width`` by their content."""
    from reportlab.lib import colors
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.platypus import Table, TableStyle

    size = block.font * font_scale
    body, head = styles.cell(size), styles.cell(size, bold=True)
    pad = 2.2 * font_scale
    cells = [[_paragraph(h, head) for h in block.header]] + [[_paragraph(c, body) for c in row] for row in block.rows]
    f = _fonts()

    def plain(markup):
        return html.unescape(re.sub(r"<[^>]+>", "", markup))

    columns = len(block.header)
    natural, minimum = [0.0] * columns, [0.0] * columns
    for r, row in enumerate([block.header] + block.rows):
        font = f["bold"] if r == 0 else f["regular"]
        for c, markup in enumerate(row[:columns]):
            text = plain(markup)
            natural[c] = max(natural[c], stringWidth(text, font, size) + 2 * pad + 0.5)
            longest = max((stringWidth(w, font, size) for w in text.split()), default=0)
            minimum[c] = max(minimum[c], longest + 2 * pad + 0.5)
    natural = [max(n, m) for n, m in zip(natural, minimum, strict=True)]
    for c, share in block.widths.items():
        if c < columns and sum(natural) > width:
            natural[c] = minimum[c] = max(minimum[c], min(natural[c], share * width))
    if sum(natural) <= width:
        widths = natural
    elif sum(minimum) >= width:
        widths = [m * width / sum(minimum) for m in minimum]
    else:
        spare = width - sum(minimum)
        slack = [n - m for n, m in zip(natural, minimum, strict=True)]
        widths = [m + spare * s / sum(slack) for m, s in zip(minimum, slack, strict=True)]
    table = Table(cells, colWidths=widths, repeatRows=1, hAlign="CENTER")
    commands = [("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("LEFTPADDING", (0, 0), (-1, -1), pad),
                ("RIGHTPADDING", (0, 0), (-1, -1), pad), ("TOPPADDING", (0, 0), (-1, -1), 0.9 * font_scale),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.3 * font_scale),
                ("LINEABOVE", (0, 0), (-1, 0), 0.8, colors.black), ("LINEBELOW", (0, 0), (-1, 0), 0.4, colors.black),
                ("LINEBELOW", (0, -1), (-1, -1), 0.8, colors.black)]
    for r in range(2, len(cells), 2):
        commands.append(("BACKGROUND", (0, r), (-1, r), colors.HexColor("#f1f3f7")))
    table.setStyle(TableStyle(commands))
    return table


def _equations(block: Equations, width: float, styles: _Styles, font_scale: float):
    """Display formulas, one row each (side-by-side formulas share a row), as one unbreakable table."""
    from reportlab.platypus import Image, Table, TableStyle

    indent = 10 * font_scale
    size = 9.2 * font_scale
    cells = []
    for row in block.rows:
        images = []
        for tex in row:
            data, w, h = _math_png(tex, size)
            room = (width - indent) / len(row)
            if w > room:  # shrink an over-long formula to the width (keeps it on the page)
                w, h = room, h * room / w
            images.append(Image(io.BytesIO(data), width=w, height=h))
        cells.append([images[0] if len(images) == 1 else Table([images], hAlign="LEFT")])
    table = Table(cells, hAlign="LEFT")
    table.setStyle(TableStyle([("LEFTPADDING", (0, 0), (-1, -1), indent), ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                               ("TOPPADDING", (0, 0), (-1, -1), 0.5),
                               ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5 * font_scale),
                               ("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("ALIGN", (0, 0), (-1, -1), "LEFT")]))
    return [table]


def _flowables(blocks: list, context: dict, width: float, styles: _Styles, layout: _Layout,
               in_cell: bool = False) -> list:
    from reportlab.platypus import KeepTogether, PageBreak, Spacer, Table, TableStyle

    def together(items):
        return items if in_cell else [KeepTogether(items)]

    from reportlab.lib.styles import ParagraphStyle

    figures = context.get("figures") or {}
    out = []
    for index, block in enumerate(blocks):
        if isinstance(block, Heading):
            out.append(_paragraph(block.text, styles.heading))
        elif isinstance(block, Para):
            style = getattr(styles, block.style)
            if index + 1 < len(blocks) and isinstance(blocks[index + 1], Equations):  # lead-in stays with its formula
                style = ParagraphStyle(f"{style.name}-keep", parent=style, keepWithNext=True)
            out.append(_paragraph(block.text(layout.move_optional), style))
        elif isinstance(block, Bullets):
            out += [_paragraph(item, styles.bullet, bulletText="•") for item in block.items]
        elif isinstance(block, Equations):
            out += _equations(block, width, styles, layout.font_scale)
        elif isinstance(block, TableBlock):
            out += together([_paragraph(block.caption, styles.caption),
                             _table(block, width, styles, layout.font_scale), Spacer(1, 3)])
        elif isinstance(block, FigureBlock):
            path = figures.get(block.key)
            if block.optional and layout.move_optional:
                continue
            if path and Path(path).is_file():
                scale = 1.0 if block.fixed else layout.figure_scale
                out.append(_figure_flowable(path, width * min(1.0, block.width * scale),
                                            _paragraph(block.caption, styles.caption),
                                            1.0 if in_cell else 0.8, layout.draft))
            else:
                out.append(_paragraph(f"({_esc(block.key)} figure not available in this results folder)", styles.note))
        elif isinstance(block, Row):
            gap = 6
            cells = []
            for cell, share in zip(block.cells, block.shares, strict=True):
                cells.append(_flowables(cell, context, width * share - gap, styles, layout, in_cell=True))
            table = Table([cells], colWidths=[width * s for s in block.shares])
            table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                       ("RIGHTPADDING", (0, 0), (-1, -1), gap)]))
            out.append(table)
        elif isinstance(block, Break):
            if layout.split:
                out.append(PageBreak())
    return out


def _front_flowables(context: dict, styles: _Styles) -> list:

    front = _front_matter(context)
    mono = _fonts()["mono"]
    out = [_paragraph(_typeset(context.get("title", "Report")), styles.title),
           _paragraph(f"<b>{_esc(front['author'])}</b>", styles.meta),
           _paragraph(_esc(front["generated"]) + f" Regenerate: <font name='{mono}' size='7.5'>make reproduce"
                      f"</font> (everything) or <font name='{mono}' size='7.5'>make report</font> (report only).",
                      styles.meta)]
    if front["banner"]:
        out.append(_paragraph(front["banner"], styles.banner))
    return out


def _render(context: dict, main: list, appendix: list, layout: _Layout, appendix_layout: _Layout | None,
            ) -> tuple[bytes, dict]:
    """The PDF bytes and the pages on which the main content and the appendix end."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.platypus import BaseDocTemplate, Frame, PageBreak, PageTemplate

    width, height = A4
    margin_x, margin_top, margin_bottom = 28, 25, 27
    frame_width = width - 2 * margin_x
    pages: dict[str, int] = {}
    fonts = _fonts()
    quick = bool(context.get("quick"))
    title = str(context.get("title", "")).replace("||", "‖")

    def decorate(canvas, document):
        canvas.saveState()
        canvas.setFont(fonts["regular"], 7)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.drawString(margin_x, 13, title[:120])
        canvas.drawRightString(width - margin_x, 13, f"page {canvas.getPageNumber()}")
        if quick:
            canvas.setFillColor(colors.HexColor("#c0392b"))
            canvas.setFont(fonts["bold"], 7.5)
            canvas.drawCentredString(width / 2, height - 15, "QUICK RUN: tiny budget, numbers are not results")
        canvas.restoreState()

    buffer = io.BytesIO()
    document = BaseDocTemplate(buffer, pagesize=A4, leftMargin=margin_x, rightMargin=margin_x, topMargin=margin_top,
                               bottomMargin=margin_bottom, title=title, author=str(context.get("author") or ""),
                               subject="KL(posterior||prior) of Bayesian neural networks on MNIST")
    frame = Frame(margin_x, margin_bottom, frame_width, height - margin_top - margin_bottom, leftPadding=0,
                  rightPadding=0, topPadding=0, bottomPadding=0)
    document.addPageTemplates([PageTemplate(id="page", frames=[frame], onPage=decorate)])
    styles = _Styles(layout.font_scale)
    story = _front_flowables(context, styles) + _flowables(main, context, frame_width, styles, layout)
    story.append(_marker("main", pages))
    if appendix_layout is not None and appendix:
        appendix_styles = _Styles(appendix_layout.font_scale)
        story.append(PageBreak())
        story += _flowables(appendix, context, frame_width, appendix_styles, appendix_layout)
    story.append(_marker("end", pages))
    document.build(story)
    return buffer.getvalue(), pages


# Layouts tried in order until the main content fits two pages: figures shrink first, then the type.
# (optional figures in the appendix, figure scale, type scale), in order of preference.
_MAIN_LAYOUTS = [(False, 1.0, 1.0), (False, 0.9, 1.0), (False, 0.85, 1.0), (True, 1.0, 1.0), (True, 0.9, 1.0),
                 (True, 0.85, 1.0), (True, 0.8, 1.0), (True, 0.85, 0.96), (True, 0.8, 0.96), (True, 0.75, 0.96),
                 (True, 0.8, 0.92), (True, 0.75, 0.92), (True, 0.7, 0.92), (True, 0.7, 0.88), (True, 0.65, 0.85),
                 (True, 0.6, 0.82)]
_APPENDIX_LAYOUTS = [(0.62, 1.0), (0.55, 1.0), (0.5, 0.95), (0.45, 0.9), (0.4, 0.85)]
MAIN_PAGES = 2


def _main_end(context: dict, main: list, layout: _Layout) -> int:
    """The page on which the main content ends under ``layout`` (a fast draft render)."""
    _, pages = _render(context, main, [], dataclasses.replace(layout, draft=True), None)
    if os.environ.get("REPORT_PDF_DEBUG"):
        print(f"layout {layout} -> main content ends on page {pages.get('main')}")
    return pages.get("main", 99)


def _fit_main(context: dict, main: list) -> _Layout:
    """The first layout (in order of preference) whose main content ends on page 2.

    When the content is short (a partial results folder) it is split over the two pages at the
    ``Break`` block, so that the appendix always starts on page 3.
    """
    layout = None
    for move, figure_scale, font_scale in _MAIN_LAYOUTS:
        candidate = _Layout(figure_scale, font_scale, move_optional=move)
        last = _main_end(context, main, candidate)
        if last <= MAIN_PAGES:
            layout = candidate
            break
    if layout is None:  # nothing fits: the smallest layout, the main content runs over
        move, figure_scale, font_scale = _MAIN_LAYOUTS[-1]
        return _Layout(figure_scale, font_scale, move_optional=move)
    if last < MAIN_PAGES:
        split = dataclasses.replace(layout, split=True)
        if _main_end(context, main, split) == MAIN_PAGES:
            layout = split
    return layout


def pdf_bytes(context: dict) -> bytes:
    """The report PDF: exactly two pages of main content plus at most one appendix page."""
    main, appendix = content(context)
    layout = _fit_main(context, main)
    kept = list(appendix)
    moved = [b for b in main if isinstance(b, FigureBlock) and b.optional] if layout.move_optional else []
    if moved:  # figures moved out of the main content come right after the appendix's first table
        kept[2:2] = [dataclasses.replace(b, optional=False, width=1.0) for b in moved]
    draft = dataclasses.replace(layout, draft=True)
    while len(kept) > 1:
        for figure_scale, font_scale in _APPENDIX_LAYOUTS:
            appendix_layout = _Layout(figure_scale, font_scale)
            _, pages = _render(context, main, kept, draft, dataclasses.replace(appendix_layout, draft=True))
            if pages.get("end", 99) <= pages.get("main", 0) + 1:
                return _render(context, main, kept, layout, appendix_layout)[0]
        kept.pop()  # drop the least important appendix item (they are in order of importance)
    return _render(context, main, [], layout, None)[0]


def build_pdf(context: dict, path) -> None:
    """Write the report PDF to ``path`` atomically (temporary name in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pdf_bytes(context)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
