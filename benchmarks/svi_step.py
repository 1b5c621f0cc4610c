"""Time one VI training step of this project against bayesian-torch and a plain PyTorch MLP.

Same network (784-400-400-10), batch 128, 2 threads, one process, the three steps interleaved
in rounds so that load changes on the machine hit all of them alike. Prints the median
milliseconds per step of each and, as the last line, ``ratio vs bayesian-torch: R`` (our step
time / theirs).

bayesian-torch is a benchmark-only dependency: ``make bench`` installs it with ``--no-deps``
(its torchvision requirement does not import beside the pinned CPU torch, and is not needed).

Usage: python benchmarks/svi_step.py [--rounds 15] [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.guides import MeanFieldNormalGuide  # noqa: E402
from inference.runtime import configure_cpu  # noqa: E402
from inference.train import TrainConfig, build_optimizer, training_step  # noqa: E402
from pyro_models.bayesian_mlp import BayesianMLP, GaussianPrior  # noqa: E402

HIDDEN = (400, 400)
NUM_DATA = 60_000
PRIOR_SCALE = 0.1


def ours(x, y):
    model = BayesianMLP(784, HIDDEN, 10, GaussianPrior(0.0, PRIOR_SCALE))
    guide = MeanFieldNormalGuide(model)
    optimizer = build_optimizer(guide, TrainConfig())

    def step(xb, yb, idx):
        training_step(model, guide, optimizer, xb, yb, NUM_DATA, idx, 1.0)

    return step


def bayesian_torch(x, y):
    from bayesian_torch.layers import LinearReparameterization

    widths = [784, *HIDDEN, 10]
    layers = torch.nn.ModuleList(
        LinearReparameterization(a, b, prior_mean=0.0, prior_variance=PRIOR_SCALE, posterior_rho_init=-6.9)
        for a, b in zip(widths[:-1], widths[1:], strict=True))
    optimizer = torch.optim.Adam(layers.parameters(), lr=1e-3, foreach=True)

    def step(xb, yb, idx):
        h, kl_total = xb, 0.0
        for i, layer in enumerate(layers):
            h, kl = layer(h)
            kl_total = kl_total + kl
            if i < len(layers) - 1:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, yb, reduction="sum") * (NUM_DATA / xb.shape[0]) + kl_total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def plain(x, y):
    widths = [784, *HIDDEN, 10]
    modules = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        modules += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*modules[:-1])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)

    def step(xb, yb, idx):
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--steps", type=int, default=20, help="steps per method per round (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=128, help="mini-batch size (default 128)")
    args = parser.parse_args()
    configure_cpu(args.threads)  # same process, same allocator setting for all three steps
    pyro.enable_validation(False)
    torch.manual_seed(0)
    x = torch.rand(NUM_DATA, 784)
    y = torch.randint(0, 10, (NUM_DATA,))
    try:
        candidates = {"this project (Pyro, closed-form KL)": ours(x, y), "bayesian-torch": bayesian_torch(x, y),
                      "plain PyTorch MLP": plain(x, y)}
    except ImportError:
        print("error: bayesian-torch is not installed; run `make bench` (installs it with --no-deps)",
              file=sys.stderr)
        return 2
    times = {name: [] for name in candidates}
    generator = torch.Generator().manual_seed(0)
    for round_index in range(args.rounds + 1):
        for name, step in candidates.items():
            for _ in range(args.steps):
                idx = torch.randint(0, NUM_DATA, (args.batch_size,), generator=generator)
                xb, yb = x[idx], y[idx]
                start = time.perf_counter()
                step(xb, yb, idx)
                elapsed = time.perf_counter() - start
                if round_index > 0:  # round 0 warms up
                    times[name].append(elapsed)
    medians = {name: 1000 * statistics.median(values) for name, values in times.items()}
    print(f"784-400-400-10, batch {args.batch_size}, {args.threads} threads, {args.rounds} rounds x "
          f"{args.steps} steps, torch {torch.__version__}, pyro {pyro.__version__}")
    for name, value in medians.items():
        print(f"  {name:<40} {value:7.2f} ms/step")
    print(f"ratio vs plain PyTorch: {medians['this project (Pyro, closed-form KL)'] / medians['plain PyTorch MLP']:.2f}")
    print(f"ratio vs bayesian-torch: {medians['this project (Pyro, closed-form KL)'] / medians['bayesian-torch']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
