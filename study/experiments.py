"""The experiment table: the one place that knows which runs the study consists of.

Each ``Experiment`` is a fully specified configuration run for one or more seeds; a run is
``(experiment, seed)`` and lives in ``results/<experiment>/seed<seed>/``. Groups:

- ``random-labels``: the assignment's question 2, Bayesian MLP 784-400-400-out with prior
  N(0, 0.1^2), at beta = 1 (the Bayesian posterior) and at the tempered ``TEMPERED_BETA``;
- ``l2-bayes``: question 3 on all 60,000 training images: logistic regression (MLE), L2
  logistic regression (MAP with a Gaussian prior), Bayesian logistic regression (VI), and three
  Bayesian MLPs of different depth and width;
- ``beta-sweep``: the KL price of fitting 200 images with true and with random labels, over a
  grid of beta (the two table betas are shared with ``random-labels``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from inference.train import METHODS, TrainConfig
from pyro_models.bayesian_mlp import GaussianPrior
from study.data import NORMALIZATIONS, Selection
from study.errors import UserError

# The tempered KL weight of the study: small enough that every network of the table fits its
# training labels with a margin, random labels included (README: at beta = 0.1 the 200 random
# labels are not fitted, at 0.03 only just); the beta sweep shows the whole curve.
TEMPERED_BETA = 0.01
BETA_GRID = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)
SMALL_RUN_SEEDS = (0, 1, 2)
SWEEP_SEEDS = (0, 1)  # the betas of the sweep that are not in the main table
DEFAULT_PRIOR = GaussianPrior(loc=0.0, scale=0.1)


@dataclass(frozen=True)
class Experiment:
    """One configuration of the study, run once per seed.

    :param name: unique name, used as the results folder.
    :param group: ``random-labels``, ``l2-bayes`` or ``beta-sweep``.
    :param description: one line for tables and ``--list``.
    :param method: ``vi``, ``map`` or ``mle``.
    :param hidden: hidden-layer widths (``()`` = logistic regression).
    :param selection: the training images and labels (the test selection matches it).
    :param prior: Gaussian prior (None = flat prior, for MLE).
    :param seeds: the seeds it runs with.
    :param train: optimiser and stopping-rule settings (beta included).
    :param init_scale: initial posterior standard deviation (VI).
    :param init_loc: initialisation of the weights / posterior means.
    :param normalization: input scaling, ``unit`` ([0, 1]) or ``standard``.
    """

    name: str
    group: str
    description: str
    method: str = "vi"
    hidden: tuple[int, ...] = (400, 400)
    selection: Selection = field(default_factory=Selection)
    prior: GaussianPrior | None = DEFAULT_PRIOR
    seeds: tuple[int, ...] = (0,)
    train: TrainConfig = field(default_factory=TrainConfig)
    init_scale: float = 1e-3
    init_loc: str = "he"
    normalization: str = "unit"

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.normalization not in NORMALIZATIONS:
            raise UserError(f"unknown normalisation {self.normalization!r}")
        if self.method == "vi" and self.prior is None:
            raise UserError("variational inference needs a Gaussian prior")
        if not self.seeds:
            raise UserError("an experiment needs at least one seed")

    @property
    def beta(self) -> float:
        return self.train.beta

    def architecture_label(self) -> str:
        return "784-" + "".join(f"{h}-" for h in self.hidden) + ("1" if self.selection.num_classes == 2
                                                                    else str(self.selection.num_classes))

    def with_seed_selection(self, seed: int) -> Selection:
        """The selection of one seed's run (random labels are drawn with the run's seed)."""
        if self.selection.random_labels:
            return dataclasses.replace(self.selection, label_seed=seed)
        return self.selection

    def to_dict(self) -> dict:
        return {"name": self.name, "group": self.group, "description": self.description, "method": self.method,
                "hidden": list(self.hidden), "selection": self.selection.to_dict(),
                "prior": self.prior.to_dict() if self.prior else None, "seeds": list(self.seeds),
                "train": self.train.to_dict(), "init_scale": self.init_scale, "init_loc": self.init_loc,
                "normalization": self.normalization}

    @classmethod
    def from_dict(cls, values: dict) -> Experiment:
        return cls(name=values["name"], group=values["group"], description=values["description"],
                   method=values["method"], hidden=tuple(values["hidden"]),
                   selection=Selection.from_dict(values["selection"]),
                   prior=GaussianPrior(**values["prior"]) if values["prior"] else None,
                   seeds=tuple(values["seeds"]), train=TrainConfig(**values["train"]),
                   init_scale=values["init_scale"], init_loc=values["init_loc"],
                   normalization=values["normalization"])


def _beta_tag(beta: float) -> str:
    return "b1" if beta == 1 else f"b{beta:g}"


# The assignment's five training selections of question 2.
RANDOM_LABEL_SELECTIONS = {
    "full": ("(i) all 60,000 training images", Selection(), (0,)),
    "first200": ("(ii) the first 200 training images", Selection(first_n=200), SMALL_RUN_SEEDS),
    "38-first200": ("(iii) the first 200 images labelled 3 or 8", Selection(digits=(3, 8), first_n=200),
                    SMALL_RUN_SEEDS),
    "38-all": ("(iv) all images labelled 3 or 8", Selection(digits=(3, 8)), (0,)),
    "random200": ("(v) the first 200 images with Bernoulli(1/2) labels",
                  Selection(first_n=200, random_labels=True), SMALL_RUN_SEEDS),
}


def _random_label_experiments() -> list[Experiment]:
    experiments = []
    for key, (text, selection, seeds) in RANDOM_LABEL_SELECTIONS.items():
        for beta in (1.0, TEMPERED_BETA):
            experiments.append(Experiment(
                name=f"rl-{key}-{_beta_tag(beta)}", group="random-labels",
                description=f"{text}, beta={beta:g}", selection=selection, seeds=seeds,
                train=TrainConfig(beta=beta)))
    return experiments


def _l2_experiments() -> list[Experiment]:
    # Logistic regression is convex: a larger learning rate converges in a few epochs.
    convex = TrainConfig(learning_rate=1e-2, scale_learning_rate=1e-2)
    return [
        Experiment("lr-mle", "l2-bayes", "logistic regression, maximum likelihood", method="mle", hidden=(),
                   prior=None, train=convex, init_loc="zeros"),
        Experiment("lr-map", "l2-bayes", "logistic regression with L2 = Gaussian-prior MAP, N(0, 0.1^2)",
                   method="map", hidden=(), train=convex, init_loc="zeros"),
        Experiment("lr-vi", "l2-bayes", "Bayesian logistic regression (VI), prior N(0, 0.1^2)", hidden=(),
                   train=convex, init_loc="zeros"),
        Experiment("bnn-1x100", "l2-bayes", "Bayesian MLP, one hidden layer of 100", hidden=(100,)),
        Experiment("bnn-2x400", "l2-bayes", "Bayesian MLP, two hidden layers of 400 (as rl-full-b1)",
                   hidden=(400, 400)),
        Experiment("bnn-3x400", "l2-bayes", "Bayesian MLP, three hidden layers of 400", hidden=(400, 400, 400)),
    ]


def _beta_sweep_experiments() -> list[Experiment]:
    experiments = []
    for key in ("38-first200", "random200"):
        text, selection, _ = RANDOM_LABEL_SELECTIONS[key]
        for beta in BETA_GRID:
            if beta in (1.0, TEMPERED_BETA):
                continue  # run in the random-labels group already
            experiments.append(Experiment(
                name=f"sweep-{key}-{_beta_tag(beta)}", group="beta-sweep", description=f"{text}, beta={beta:g}",
                selection=selection, seeds=SWEEP_SEEDS, train=TrainConfig(beta=beta)))
    return experiments


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in
                                      _random_label_experiments() + _l2_experiments() + _beta_sweep_experiments()}
GROUPS = ("random-labels", "l2-bayes", "beta-sweep")
# Experiments with the same configuration as another one reuse its runs.
ALIASES = {"bnn-2x400": "rl-full-b1"}


def resolve(names: list[str]) -> list[Experiment]:
    """Experiments named by ``names`` (experiment names, group names or ``all``), in table order."""
    wanted: list[str] = []
    for name in names:
        if name == "all":
            wanted += list(EXPERIMENTS)
        elif name in GROUPS:
            wanted += [e.name for e in EXPERIMENTS.values() if e.group == name]
        elif name in EXPERIMENTS:
            wanted.append(name)
        else:
            raise UserError(f"unknown experiment {name!r}; see --list for names and groups "
                            f"({', '.join(GROUPS)}, all)")
    seen, result = set(), []
    for name in wanted:
        target = ALIASES.get(name, name)
        if target not in seen:
            seen.add(target)
            result.append(EXPERIMENTS[target])
    return result


def table_text() -> str:
    """The experiment table as text, for ``--list``."""
    lines = [f"{'name':<26} {'group':<14} {'method':<6} {'architecture':<18} {'beta':>6} {'seeds':<7} description"]
    for e in EXPERIMENTS.values():
        alias = f"  (same runs as {ALIASES[e.name]})" if e.name in ALIASES else ""
        seeds = ",".join(map(str, e.seeds))
        beta = f"{e.beta:g}" if e.method == "vi" else "-"
        lines.append(f"{e.name:<26} {e.group:<14} {e.method:<6} {e.architecture_label():<18} {beta:>6} {seeds:<7} "
                     f"{e.description}{alias}")
    return "\n".join(lines)
