"""Train the experiments of the study (or a variant of one) into a results folder.

Examples::

    python hw1_id_train.py --list
    python hw1_id_train.py --experiment rl-random200-b1 --seeds 0 1 2
    python hw1_id_train.py --experiment random-labels --skip-existing
    python hw1_id_train.py --experiment rl-first200-b1 --beta 0.1 --prior-scale 0.3 --name my-variant
    python hw1_id_train.py --experiment all --quick --out results-quick

Each run writes ``<out>/<experiment>/seed<k>/`` with ``weights.pkl``, ``metrics.json``,
``history.csv`` and ``convergence.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from study.cli_args import (
    HelpFormatter,
    beta_value,
    digit_list,
    hidden_sizes,
    non_negative_int,
    positive_float,
    positive_int,
)
from study.errors import UserError

DEFAULT_DATA_DIR = "data"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train the KL(posterior || prior) study's experiments on MNIST-format data.",
        formatter_class=HelpFormatter)
    parser.add_argument("--experiment", nargs="+", metavar="NAME",
                        help="experiments to run: names from --list, a group (random-labels, l2-bayes, "
                             "beta-sweep) or all (required unless --list)")
    parser.add_argument("--list", action="store_true", help="print the experiment table and exit")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="folder with the IDX files (flat or MNIST/raw/, plain or .gz)")
    parser.add_argument("--out", default="results", help="results folder")
    parser.add_argument("--seeds", nargs="+", type=non_negative_int, help="seeds (default: each experiment's own)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="torch device")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for torch per run (default: 2, or 1 per worker with --jobs > 1)")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="runs trained at the same time, each in its own process")
    parser.add_argument("--quick", action="store_true",
                        help="tiny budget for demos and smoke tests: at most 1,000 training images, 2 blocks of "
                             "10 steps, the first 2,000 test images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true", help="keep finished runs, train the others")
    existing.add_argument("--overwrite", action="store_true", help="train finished runs again")
    existing.add_argument("--resume", action="store_true",
                          help="continue interrupted runs from their checkpoints (finished runs are kept)")
    variant = parser.add_argument_group(
        "variant overrides", "applied to every selected experiment; each defaults to the experiment's own value")
    variant.add_argument("--name", help="folder name of the variant (default: experiment name + overrides)")
    variant.add_argument("--method", choices=("vi", "map", "mle"), help="learning method")
    variant.add_argument("--hidden", type=hidden_sizes, help="hidden sizes, e.g. 400,400 or none")
    variant.add_argument("--prior-scale", type=positive_float, help="prior standard deviation")
    variant.add_argument("--prior-scaling", choices=("fixed", "fan_in"), help="divide the prior scale by sqrt(fan_in)")
    variant.add_argument("--beta", type=beta_value, help="KL weight (1 = Bayesian posterior)")
    variant.add_argument("--learning-rate", type=positive_float, help="Adam learning rate of the means")
    variant.add_argument("--scale-learning-rate", type=positive_float, help="Adam learning rate of the scales")
    variant.add_argument("--init-scale", type=positive_float, help="initial posterior standard deviation")
    variant.add_argument("--batch-size", type=positive_int, help="mini-batch size")
    variant.add_argument("--max-epochs", type=positive_int, help="cap on blocks (epochs, or full-batch blocks)")
    variant.add_argument("--num-train", type=positive_int, help="use the first N images of the selection")
    variant.add_argument("--digits", type=digit_list, help="digit subset, e.g. 3,8 (relabelled 0..k-1)")
    variant.add_argument("--random-labels", action="store_true", help="replace labels by Bernoulli(1/2) draws")
    variant.add_argument("--normalization", choices=("unit", "standard"), help="input scaling")
    return parser


def apply_overrides(experiment, args):
    """A variant of ``experiment`` with the command line's overrides, or the experiment itself."""
    from pyro_models.bayesian_mlp import GaussianPrior

    changes, train_changes, selection_changes, tags = {}, {}, {}, []
    if args.method:
        changes["method"] = args.method
        tags.append(args.method)
        if args.method == "mle":
            changes["prior"] = None
    if args.hidden is not None:
        changes["hidden"] = args.hidden
        tags.append("h" + ("x".join(map(str, args.hidden)) or "none"))
    if args.prior_scale or args.prior_scaling:
        base = experiment.prior or GaussianPrior()
        changes["prior"] = GaussianPrior(base.loc, args.prior_scale or base.scale, args.prior_scaling or base.scaling)
        tags.append(f"prior{changes['prior'].scale:g}{'fanin' if changes['prior'].scaling == 'fan_in' else ''}")
    for flag, key, tag in (("beta", "beta", "beta"), ("learning_rate", "learning_rate", "lr"),
                           ("scale_learning_rate", "scale_learning_rate", "slr"),
                           ("batch_size", "batch_size", "bs"), ("max_epochs", "max_blocks", "ep")):
        value = getattr(args, flag)
        if value is not None:
            train_changes[key] = value
            tags.append(f"{tag}{value:g}")
    if args.init_scale:
        changes["init_scale"] = args.init_scale
        tags.append(f"init{args.init_scale:g}")
    if args.normalization:
        changes["normalization"] = args.normalization
        tags.append(args.normalization)
    if args.num_train:
        selection_changes["first_n"] = args.num_train
        tags.append(f"n{args.num_train}")
    if args.digits:
        selection_changes["digits"] = args.digits
        tags.append("d" + "".join(map(str, args.digits)))
    if args.random_labels:
        selection_changes["random_labels"] = True
        tags.append("random")
    if not (changes or train_changes or selection_changes):
        return experiment
    if train_changes:
        changes["train"] = dataclasses.replace(experiment.train, **train_changes)
    if selection_changes:
        changes["selection"] = dataclasses.replace(experiment.selection, **selection_changes)
    name = args.name or f"{experiment.name}__{'_'.join(tags)}"
    return dataclasses.replace(experiment, name=name, group="variant", **changes)


def quick_variant(experiment):
    """The same experiment on a tiny budget (smoke tests and demos, not results)."""
    first_n = min(experiment.selection.first_n or 1000, 1000)
    train = dataclasses.replace(experiment.train, max_blocks=2, min_blocks=2, steps_per_block=10)
    return dataclasses.replace(experiment, selection=dataclasses.replace(experiment.selection, first_n=first_n),
                               train=train)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from study.experiments import resolve, table_text

    if args.list:
        print(table_text())
        return 0
    if not args.experiment:
        raise UserError("nothing to do: name experiments with --experiment (see --list)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device")
    if args.name and len(args.experiment) != 1:
        raise UserError("--name needs exactly one experiment")
    from inference.runtime import configure_cpu

    if args.threads is None:
        args.threads = 2 if args.jobs == 1 else 1
    configure_cpu(args.threads)
    experiments = [apply_overrides(e, args) for e in resolve(args.experiment)]
    if args.quick:
        experiments = [quick_variant(e) for e in experiments]
    existing = ("skip" if args.skip_existing else "overwrite" if args.overwrite
                else "resume" if args.resume else "error")
    runs = [(e, seed) for e in experiments for seed in (args.seeds or e.seeds)]
    options = {"data_dir": args.data_dir, "out": args.out, "device": args.device, "existing": existing,
               "require_mnist": args.data_dir == DEFAULT_DATA_DIR, "quick": args.quick}
    print(f"{len(runs)} run(s) into {args.out}/ on {args.device}"
          + (f", {args.jobs} at a time" if args.jobs > 1 else ""), flush=True)
    started, failures = time.perf_counter(), 0
    for index, (experiment, seed, outcome) in enumerate(run_all(runs, options, args), 1):
        m = outcome.metrics
        summary = f"test acc {m.get('test/accuracy', float('nan')):.4f}"
        if "kl/total" in m:
            summary += (f", KL {m['kl/total']:.5g} nats, -ELBO/n {m['elbo/neg_per_n']:.4f}, "
                        f"{'converged' if m.get('training/converged') else 'NOT converged'}")
        print(f"[{index}/{len(runs)}] {experiment.name} seed {seed}: {outcome.status}; {summary} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        if outcome.status == "diverged":
            failures += 1
            print(f"  warning: {outcome.message}", file=sys.stderr)
    print(f"done in {time.perf_counter() - started:.0f} s", flush=True)
    return 1 if failures else 0


def _worker_setup(threads: int) -> None:
    from inference.runtime import configure_cpu

    configure_cpu(threads)


def _train_one(experiment, seed, options):
    from study.runner import train_run

    return experiment, seed, train_run(experiment, seed, progress=False, **options)


def estimated_cost(experiment) -> float:
    """A rough relative cost of a run: parameters times examples seen (full-batch runs: steps)."""
    from pyro_models.bayesian_mlp import layer_sizes

    params = sum(a * b for a, b in layer_sizes(784, experiment.hidden, experiment.selection.num_classes))
    selection = experiment.selection
    examples = selection.first_n or (12_000 if selection.digits else 60_000)
    if examples <= experiment.train.full_batch_max:
        examples = experiment.train.steps_per_block * 40
    return params * examples


def run_all(runs, options, args):
    """Train every run, one after another or ``--jobs`` at a time; yields results as they finish."""
    from study.runner import train_run

    if args.jobs == 1 or len(runs) == 1:
        for experiment, seed in runs:
            yield experiment, seed, train_run(experiment, seed, progress=not args.no_progress, **options)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_worker_setup,
                             initargs=(args.threads,)) as pool:
        # Longest runs first, so that the pool does not end with one long run on one core.
        ordered = sorted(runs, key=lambda run: -estimated_cost(run[0]))
        futures = [pool.submit(_train_one, experiment, seed, options) for experiment, seed in ordered]
        for future in as_completed(futures):
            yield future.result()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept, and --resume continues the others", file=sys.stderr)
        sys.exit(130)
