"""Evaluate saved ``.pkl`` weights; write KL tables, accuracies and plots; optionally the report.

Examples::

    python hw1_id_eval.py results/rl-random200-b1/seed0/weights.pkl
    python hw1_id_eval.py results --out results/evaluation            # every run in a folder
    python hw1_id_eval.py results/lr-map --data-dir ~/fashion-mnist   # another IDX data set
    python hw1_id_eval.py results/rl-38-all-b1 --digits 3,8 --num-test 500
    python hw1_id_eval.py results --report                            # study tables, figures, PDF

By default each model is evaluated on the test selection that matches its training selection
(the same digit subset; fresh Bernoulli labels for random-label runs). ``--data-dir``,
``--digits``, ``--num-test``, ``--random-labels`` and ``--split`` choose another selection.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from study.cli_args import HelpFormatter, digit_list, non_negative_int, positive_int
from study.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate weights files of the KL study and write tables and plots.",
        formatter_class=HelpFormatter)
    parser.add_argument("paths", nargs="+", help=".pkl files or folders searched for weights.pkl")
    parser.add_argument("--data-dir", default="data", help="IDX data folder (MNIST or another MNIST-format set)")
    parser.add_argument("--split", default="test", choices=("test", "train"), help="split to evaluate on")
    parser.add_argument("--digits", type=digit_list, help="evaluate on this digit subset, e.g. 3,8")
    parser.add_argument("--num-test", type=positive_int, help="evaluate on the first N images of the selection")
    parser.add_argument("--random-labels", action="store_true", help="evaluate against Bernoulli(1/2) labels")
    parser.add_argument("--label-seed", type=non_negative_int, default=None, help="seed of --random-labels (default: run seed)")
    parser.add_argument("--samples", type=positive_int, default=50, help="posterior samples of the model average")
    parser.add_argument("--out", help="output folder (default: <first folder>/evaluation or ./evaluation)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="torch device")
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU threads for torch")
    parser.add_argument("--report", action="store_true",
                        help="also build the study's tables, figures, ArviZ files and report from a results folder")
    parser.add_argument("--report-only", action="store_true",
                        help="build the study's outputs without evaluating each weights file again")
    parser.add_argument("--quick", action="store_true",
                        help="smoke runs: 10 posterior samples, the first 2,000 images of each selection")
    parser.add_argument("--author", default=None, help="name and ID printed on the report (default: a blank to fill)")
    return parser


def default_out(args) -> Path:
    if args.out:
        return Path(args.out)
    first = Path(args.paths[0])
    return (first if first.is_dir() else first.parent) / "evaluation"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from study.evaluation_cli import evaluate_files, find_weight_files

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device")
    from inference.runtime import configure_cpu

    configure_cpu(args.threads)
    started = time.perf_counter()
    if not args.report_only:
        files = find_weight_files(args.paths)
        out = default_out(args)
        rows = evaluate_files(files, args, out)
        print(f"evaluated {len(rows)} model(s) in {time.perf_counter() - started:.0f} s; tables in {out}/")
    if args.report or args.report_only:
        from study.report import build_study_outputs

        results_dir = Path(args.paths[0])
        if not results_dir.is_dir():
            raise UserError("--report needs a results folder as the first path")
        build_study_outputs(results_dir, args.data_dir, device=args.device, quick=args.quick,
                            author=args.author or "")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
