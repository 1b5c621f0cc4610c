"""Sentences of the report's discussion, each derived from the measured numbers.

Every function compares values from the tables and words its sentence by the outcome, so a
different result gives a different sentence; when a number it needs is missing, the sentence
says so instead of guessing.
"""

from __future__ import annotations

import math

from study.experiments import TEMPERED_BETA


def _ok(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _row(rows: list[dict], **match) -> dict | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _nats(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _compare(a: float, b: float, same: str, more: str, less: str, missing: str) -> str:
    """Words for a / b: ``same`` within 25%, else '<ratio> times <more>' or '<1/ratio> times <less>'."""
    if not (_ok(a) and _ok(b)) or a <= 0 or b <= 0:
        return missing
    ratio = a / b
    if 0.8 <= ratio <= 1.25:
        return same
    return f"{ratio:.1f} times {more}" if ratio > 1 else f"{1 / ratio:.1f} times {less}"


def _ratio_words(a: float, b: float) -> str:
    """How far a is compared with b: '3.2 times as far as' / 'about as far as' / '2.0 times less far than'."""
    return _compare(a, b, "about as far as", "as far as", "less far than",
                    "(not comparable: a value is missing or not positive) compared with")


def _cost_words(a: float, b: float) -> str:
    """'3.2 times higher than' / 'about the same as' / '2.0 times lower than'."""
    return _compare(a, b, "about the same as", "higher than", "lower than", "not comparable with")


def random_label_claims(rl: list[dict]) -> list[str]:
    """Question 2: how the KL depends on labels, data size and beta."""
    out = []
    for beta in (1.0, TEMPERED_BETA):
        true_pair = _row(rl, experiment=f"rl-38-first200-{'b1' if beta == 1 else f'b{beta:g}'}")
        random = _row(rl, experiment=f"rl-random200-{'b1' if beta == 1 else f'b{beta:g}'}")
        if true_pair and random and _ok(true_pair["kl/total"]) and _ok(random["kl/total"]):
            words = _ratio_words(random["kl/total"], true_pair["kl/total"])
            out.append(
                f"At beta = {beta:g}, the posterior fitted to 200 images with random labels sits "
                f"{_nats(random['kl/total'])} nats from the prior, {words} with 200 true 3-vs-8 labels "
                f"({_nats(true_pair['kl/total'])} nats); training accuracy {_pct(random['train/accuracy'])} vs "
                f"{_pct(true_pair['train/accuracy'])}, test accuracy {_pct(random['test/accuracy'])} vs "
                f"{_pct(true_pair['test/accuracy'])}.")
        full = _row(rl, experiment=f"rl-full-{'b1' if beta == 1 else f'b{beta:g}'}")
        small = _row(rl, experiment=f"rl-first200-{'b1' if beta == 1 else f'b{beta:g}'}")
        if full and small and _ok(full["kl/total"]) and _ok(small["kl/total"]):
            out.append(
                f"At beta = {beta:g}, all {full['n']:,} images move the posterior "
                f"{_ratio_words(full['kl/total'], small['kl/total'])} the first {small['n']:,} do "
                f"(KL {_nats(full['kl/total'])} vs {_nats(small['kl/total'])} nats); per training example the cost "
                f"is {_cost_words(full['kl/per_n'], small['kl/per_n'])} with {small['n']:,} "
                f"(KL/n {full['kl/per_n']:.3g} vs {small['kl/per_n']:.3g}).")
    at_prior = [r for r in rl if r["beta"] == 1 and r["n"] <= 200 and _ok(r["kl/mean_per_param"])]
    if at_prior:
        largest = max(r["kl/mean_per_param"] for r in at_prior)
        fits = [r for r in at_prior if _ok(r["train/accuracy"]) and r["train/accuracy"] >= 0.99]
        out.append(
            f"With beta = 1 on 200 images every posterior stays near the prior (at most {largest:.2g} nats per "
            f"parameter); {len(fits)} of {len(at_prior)} such settings fit their training labels"
            + (", so the Bayesian posterior of this network ignores most of what 200 images say." if not fits
               else "."))
    tempered = [r for r in rl if r["beta"] == TEMPERED_BETA and _ok(r["train/accuracy"])]
    if tempered:
        low = min(tempered, key=lambda r: r["train/accuracy"])
        out.append(
            f"At the tempered beta = {TEMPERED_BETA:g} the lowest training accuracy over the five selections is "
            f"{_pct(low['train/accuracy'])}, on {low['selection'][4:] if low['selection'].startswith('(') else low['selection']}"
            + ("; every network fits its training labels." if low["train/accuracy"] >= 0.99 else
               "; not every network fits its training labels."))
    unconverged = [r["experiment"] for r in rl if r.get("converged") != "yes"]
    if unconverged:
        out.append("Runs whose stopping rule did not fire (their KL is marked in the table): "
                   + ", ".join(unconverged) + ".")
    return out


def sweep_claims(sweep: list[dict]) -> list[str]:
    """The price of memorisation, read off the beta sweep."""
    out = []
    true_rows = {r["beta"]: r for r in sweep if r["labels"] == "true"}
    random_rows = {r["beta"]: r for r in sweep if r["labels"] == "random"}
    common = sorted(set(true_rows) & set(random_rows))
    if not common:
        return ["The beta sweep has not been run."]
    more = [b for b in common if _ok(random_rows[b]["kl/total"]) and _ok(true_rows[b]["kl/total"])
            and random_rows[b]["kl/total"] > true_rows[b]["kl/total"]]
    out.append(f"Random labels cost more KL than true labels at {len(more)} of the {len(common)} values of beta "
               f"swept ({', '.join(f'{b:g}' for b in more) or 'none'}).")
    for labels, rows in (("true", true_rows), ("random", random_rows)):
        fitted = [b for b in sorted(rows, reverse=True) if _fits_all(rows[b])]
        if fitted:
            b = fitted[0]
            out.append(f"With {labels} labels every seed's network fits all its training labels from beta = {b:g} "
                       f"down, which costs {_nats(rows[b]['kl/total'])} nats at that beta "
                       f"({rows[b]['kl/total'] / math.log(2) / 200:.3g} bits per training label).")
        else:
            out.append(f"With {labels} labels no beta on the grid fits all training labels for every seed.")
    return out


def _fits_all(row: dict) -> bool:
    """Every seed's network classifies all its training images correctly (model average)."""
    values = [v for v in row.get("train/accuracy values", []) if _ok(v)]
    return bool(values) and min(values) >= 1.0 - 1e-9


def tempering_claims(sweep: list[dict]) -> list[str]:
    """Whether the study's tempered beta is the largest grid beta at which both tasks fit all labels."""
    betas = sorted({r["beta"] for r in sweep}, reverse=True)
    fitting = [b for b in betas if all(_fits_all(r) for r in sweep if r["beta"] == b)
               and len([r for r in sweep if r["beta"] == b]) == 2]
    if not fitting:
        return [f"No beta of the sweep lets every 200-image network fit all its labels; the tempered beta = "
                f"{TEMPERED_BETA:g} of the table does not guarantee a fit."]
    largest = fitting[0]
    relation = ("is" if largest == TEMPERED_BETA else
                "is smaller than" if TEMPERED_BETA < largest else "is larger than")
    return [f"The largest beta of the sweep at which every 200-image network, true and random labels, every "
            f"seed, fits all its training labels is {largest:g}; the study's tempered beta = {TEMPERED_BETA:g} "
            f"{relation} that value."]


def l2_claims(l2: list[dict]) -> list[str]:
    """Question 3: MLE, MAP (= L2) and VI, practically and theoretically."""
    out = []
    rows = {r["experiment"]: r for r in l2}
    mle, map_, vi = rows.get("lr-mle"), rows.get("lr-map"), rows.get("lr-vi")
    if mle and map_ and _ok(mle["test/accuracy"]) and _ok(map_["test/accuracy"]):
        diff = map_["test/accuracy"] - mle["test/accuracy"]
        verb = "raises" if diff > 0.001 else "lowers" if diff < -0.001 else "leaves unchanged"
        out.append(f"L2 regularisation (a Gaussian prior, MAP) {verb} the test accuracy of logistic regression "
                   f"({_pct(mle['test/accuracy'])} -> {_pct(map_['test/accuracy'])}) and changes its test NLL "
                   f"from {mle['test/nll']:.3f} to {map_['test/nll']:.3f}.")
    if map_ and vi and _ok(vi["test/ece"]) and _ok(map_["test/ece"]):
        better = "better" if vi["test/ece"] < map_["test/ece"] else "worse"
        out.append(f"Averaging over the posterior of logistic regression (VI) gives {better} calibration than the "
                   f"MAP point estimate (ECE {vi['test/ece']:.4f} vs {map_['test/ece']:.4f}) at test accuracy "
                   f"{_pct(vi['test/accuracy'])}.")
    bnns = [r for r in l2 if r["method"] == "vi" and r["experiment"] != "lr-vi" and _ok(r["test/accuracy"])]
    if bnns:
        best = max(bnns, key=lambda r: r["test/accuracy"])
        tightest = min(bnns, key=lambda r: r["elbo/neg_per_n"] if _ok(r["elbo/neg_per_n"]) else float("inf"))
        out.append(f"Among the Bayesian MLPs at beta = 1, {best['model']} is the most accurate "
                   f"({_pct(best['test/accuracy'])}); the best evidence bound (lowest -ELBO/n, "
                   f"{tightest['elbo/neg_per_n']:.3f}) belongs to {tightest['model']}.")
        ordered = sorted(bnns, key=lambda r: r["params"])
        increasing = all(a["kl/total"] <= b["kl/total"] for a, b in zip(ordered, ordered[1:], strict=False)
                         if _ok(a["kl/total"]) and _ok(b["kl/total"]))
        out.append("The KL grows with the number of parameters across the Bayesian MLPs." if increasing else
                   "The KL does not grow monotonically with the number of parameters across the Bayesian MLPs.")
        with_loo = [r for r in bnns + ([vi] if vi else []) if _ok(r.get("loo/elpd"))]
        if len(with_loo) >= 2:
            top = max(with_loo, key=lambda r: r["loo/elpd"])
            out.append(f"PSIS-LOO ranks {top['model']} first (elpd {top['loo/elpd']:.1f}); the share of "
                       f"unreliable Pareto-k values ranges from {min(r['loo/pareto_k_bad'] for r in with_loo):.2f} to "
                       f"{max(r['loo/pareto_k_bad'] for r in with_loo):.2f}.")
    if map_ and bnns and _ok(map_["test/accuracy"]):
        best = max(bnns, key=lambda r: r["test/accuracy"])
        out.append(f"Hidden layers buy accuracy: the best Bayesian MLP beats L2 logistic regression by "
                   f"{100 * (best['test/accuracy'] - map_['test/accuracy']):.1f} points, at "
                   f"{best['training/seconds'] / max(map_['training/seconds'], 1e-9):.0f} times the training time."
                   if best["test/accuracy"] > map_["test/accuracy"] else
                   "The Bayesian MLPs do not beat L2 logistic regression in test accuracy here.")
    return out


def pac_claims(pac: list[dict]) -> list[str]:
    out = []
    if not pac:
        return out
    nonvacuous = [r for r in pac if _ok(r["pac_bayes/bound"]) and r["pac_bayes/bound"] < 0.5]
    out.append(f"{len(nonvacuous)} of {len(pac)} Bayesian models get a PAC-Bayes bound on their Gibbs error below "
               f"0.5 (better than guessing a binary label)"
               + (f": {', '.join(r['label'] for r in nonvacuous)}." if nonvacuous else "."))
    random = [r for r in pac if "random" in r["label"]]
    if random:
        low = min(r["pac_bayes/bound"] for r in random)
        out.append(f"With random labels the lowest bound is {low:.3f}: "
                   + ("vacuous, as it must be, since no classifier can beat chance on fresh random labels."
                      if low >= 0.5 else "below 0.5, which would contradict the labels being random."))
    valid = [r for r in pac if _ok(r["pac_bayes/bound"]) and _ok(r["test/gibbs_error"])]
    violated = [r["label"] for r in valid if r["test/gibbs_error"] > r["pac_bayes/bound"]]
    out.append("Every measured test Gibbs error lies below its bound." if not violated else
               "Test Gibbs error above its bound for: " + ", ".join(violated) + ".")
    return out


def psi_claims(psi: dict | None) -> list[str]:
    if not psi:
        return []
    return [f"On the {psi['n']:,} per-example test losses of {psi['model']} (mean {psi['mean_loss']:.4f}, variance "
            f"{psi['var_loss']:.4f}), autograd derivatives of the empirical psi agree with the tilted mean and "
            f"variance to {psi['max_discrepancy']:.1e}."]


def fitting_claims(rl: list[dict]) -> list[str]:
    """Whether beta = 1 fits the 200-image training labels, and whether tempering does."""
    small = [r for r in rl if r["n"] <= 200 and _ok(r["train/accuracy"])]
    exact = [r for r in small if r["beta"] == 1]
    tempered = [r for r in small if r["beta"] == TEMPERED_BETA]
    if not exact or not tempered:
        return []
    best = max(r["train/accuracy"] for r in exact)
    low = min(r["train/accuracy"] for r in tempered)
    first = (f"At beta = 1 no 200-image network fits its training labels (best training accuracy {_pct(best)})"
             if best < 0.99 else f"At beta = 1 a 200-image network reaches {_pct(best)} training accuracy")
    second = (f"at beta = {TEMPERED_BETA:g} every one does (lowest {_pct(low)}), so the fitted KLs of the table "
              "are those of tempered posteriors" if low >= 0.99 else
              f"even at beta = {TEMPERED_BETA:g} the lowest training accuracy is {_pct(low)}")
    return [f"{first}; {second}."]


def all_claims(rl, l2, sweep, pac, psi, arviz) -> dict[str, list[str]]:
    return {"q1": psi_claims(psi), "q2": random_label_claims(rl), "sweep": sweep_claims(sweep),
            "tempering": tempering_claims(sweep), "fitting": fitting_claims(rl),
            "q3": l2_claims(l2), "pac_bayes": pac_claims(pac)}
