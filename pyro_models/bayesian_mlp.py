"""A Bayesian multilayer perceptron for classification, declared in Pyro.

Every weight matrix and bias vector is a latent sample site with a Gaussian prior
``Normal(loc, scale)``; the likelihood is categorical over the classes. With no hidden layer
the network is multinomial logistic regression (binary logistic regression when there are two
classes: one output logit). The same declaration serves three ways of learning, chosen by the
guide (see ``inference/guides.py``):

- VI: a mean-field Normal posterior over every weight and bias;
- MAP: point estimates under the Gaussian prior (L2 regularisation);
- MLE: point estimates under a flat, improper prior (``prior=None``), whose log-density is 0,
  so MAP under it is maximum likelihood.

References: C. Blundell et al., "Weight uncertainty in neural networks" (ICML 2015);
R. Neal, "Bayesian learning for neural networks" (1996).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroSample
from torch import nn

PRIOR_SCALINGS = ("fixed", "fan_in")


@dataclass(frozen=True)
class GaussianPrior:
    """An isotropic Gaussian prior on every weight and bias.

    :param loc: prior mean of every parameter.
    :param scale: prior standard deviation; with ``scaling="fan_in"`` it is divided by
        sqrt(fan_in) of the layer (so ``scale=1`` gives the 1/sqrt(fan_in) prior).
    :param scaling: ``"fixed"`` or ``"fan_in"``.
    """

    loc: float = 0.0
    scale: float = 0.1
    scaling: str = "fixed"

    def __post_init__(self):
        if not math.isfinite(self.loc):
            raise ValueError(f"the prior mean must be a finite number, got {self.loc}")
        if not self.scale > 0 or not math.isfinite(self.scale):
            raise ValueError(f"the prior scale must be a positive number, got {self.scale}")
        if self.scaling not in PRIOR_SCALINGS:
            raise ValueError(f"prior scaling must be one of {PRIOR_SCALINGS}, got {self.scaling!r}")

    def scale_for(self, fan_in: int) -> float:
        return self.scale / math.sqrt(fan_in) if self.scaling == "fan_in" else self.scale

    def to_dict(self) -> dict:
        return asdict(self)

    def l2_coefficient(self, num_data: int, fan_in: int | None = None) -> float:
        """The L2 coefficient lambda that makes L2-regularised training the MAP estimate.

        With the likelihood summed over the ``num_data`` training examples (as the model does),
        -log p(y, w) = sum_i CE_i + sum_j (w_j - loc)^2 / (2 s^2) + const. Dividing by n, the
        plain-PyTorch objective  mean_i CE_i + lambda * ||w - loc||^2  has the same minimiser when
            lambda = 1 / (2 n s^2),   i.e.   s = 1 / sqrt(2 n lambda).
        (``torch.optim`` weight decay wd on the mean loss corresponds to lambda = wd / 2.)
        """
        scale = self.scale_for(fan_in) if fan_in is not None else self.scale
        return 1.0 / (2.0 * num_data * scale**2)

    @staticmethod
    def scale_for_l2(l2_coefficient: float, num_data: int) -> float:
        """The prior scale s whose MAP estimate equals training with L2 coefficient lambda."""
        return 1.0 / math.sqrt(2.0 * num_data * l2_coefficient)


def output_units(num_classes: int) -> int:
    """Units of the output layer: one logit for a binary task, else one per class."""
    return 1 if num_classes == 2 else num_classes


def layer_sizes(in_features: int, hidden: tuple[int, ...], num_classes: int) -> list[tuple[int, int]]:
    """``(fan_in, fan_out)`` of each linear layer, input to output."""
    widths = [in_features, *hidden, output_units(num_classes)]
    return list(zip(widths[:-1], widths[1:], strict=True))


def mlp_logits(x: torch.Tensor, weights: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Class logits of a ReLU MLP for given weights.

    :param x: inputs ``(B, D)``.
    :param weights: per layer ``(W, b)`` with ``W`` of shape ``(out, in)`` and ``b`` of shape
        ``(out,)``, or with a leading sample dimension ``(S, out, in)`` / ``(S, out)``.
    :returns: logits ``(B, K)``, or ``(S, B, K)`` with a sample dimension. For one output
        unit (binary task) the logits are ``[0, z]``, so softmax gives ``sigmoid(z)``.
    """
    h = x
    last = len(weights) - 1
    for i, (w, b) in enumerate(weights):
        if w.dim() == 3:  # (S, out, in): a batch of weight samples
            h = torch.baddbmm(b.unsqueeze(1), h if h.dim() == 3 else h.expand(w.shape[0], -1, -1), w.transpose(1, 2))
        else:
            h = torch.nn.functional.linear(h, w, b)
        if i < last:
            h = torch.relu(h)
    if h.shape[-1] == 1:
        h = torch.cat([torch.zeros_like(h), h], dim=-1)
    return h


@dataclass(frozen=True)
class LatentSite:
    """One latent site: its name, shape, layer index and prior (loc/scale None = flat prior)."""

    name: str
    shape: tuple[int, ...]
    layer: int
    prior_loc: float | None
    prior_scale: float | None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class BayesianLinear(PyroModule):
    """A linear layer whose weight and bias are latent sites with a Gaussian (or flat) prior."""

    def __init__(self, fan_in: int, fan_out: int, prior: GaussianPrior | None):
        super().__init__()
        self.fan_in, self.fan_out = fan_in, fan_out
        if prior is None:
            self.weight = PyroSample(lambda self: flat_prior((self.fan_out, self.fan_in)))
            self.bias = PyroSample(lambda self: flat_prior((self.fan_out,)))
        else:
            self.register_buffer("prior_loc", torch.tensor(float(prior.loc)))
            self.register_buffer("prior_scale", torch.tensor(prior.scale_for(fan_in)))
            self.weight = PyroSample(lambda self: self._gaussian((self.fan_out, self.fan_in)))
            self.bias = PyroSample(lambda self: self._gaussian((self.fan_out,)))

    def _gaussian(self, shape: tuple[int, ...]):
        return dist.Normal(self.prior_loc, self.prior_scale).expand(shape).to_event(len(shape))


def flat_prior(shape: tuple[int, ...]):
    """An improper uniform prior over real tensors of ``shape`` (log-density 0)."""
    return dist.ImproperUniform(constraints.real, (), torch.Size(shape))


class BayesianMLP(PyroModule):
    """A ReLU MLP classifier with a prior on every weight and bias.

    :param in_features: input dimension (784 for MNIST).
    :param hidden: hidden-layer widths; ``()`` gives logistic regression.
    :param num_classes: number of classes (2 gives a single output logit).
    :param prior: the Gaussian prior, or None for a flat prior (maximum likelihood).
    """

    def __init__(self, in_features: int = 784, hidden: tuple[int, ...] = (400, 400), num_classes: int = 10,
                 prior: GaussianPrior | None = GaussianPrior()):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        if any(not isinstance(h, int) or isinstance(h, bool) or h <= 0 for h in hidden):
            raise ValueError(f"hidden sizes must be positive, got {list(hidden)}")
        self.in_features, self.hidden, self.num_classes = in_features, tuple(int(h) for h in hidden), num_classes
        self.prior = prior
        self.layers = PyroModule[nn.ModuleList](
            [BayesianLinear(a, b, prior) for a, b in layer_sizes(in_features, self.hidden, num_classes)]
        )

    def latent_sites(self) -> list[LatentSite]:
        """The latent sample sites, in the order the model samples them, with their priors."""
        sites = []
        for i, (fan_in, fan_out) in enumerate(layer_sizes(self.in_features, self.hidden, self.num_classes)):
            scale = None if self.prior is None else self.prior.scale_for(fan_in)
            loc = None if self.prior is None else self.prior.loc
            sites.append(LatentSite(f"layers.{i}.weight", (fan_out, fan_in), i, loc, scale))
            sites.append(LatentSite(f"layers.{i}.bias", (fan_out,), i, loc, scale))
        return sites

    @staticmethod
    def weights_from_sites(values: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer ``(W, b)`` from a mapping of site name to value (any leading sample dims)."""
        count = sum(1 for name in values if name.endswith(".weight"))
        return [(values[f"layers.{i}.weight"], values[f"layers.{i}.bias"]) for i in range(count)]

    def architecture(self) -> dict:
        return {"in_features": self.in_features, "hidden": list(self.hidden), "num_classes": self.num_classes}

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None,
                subsample: torch.Tensor | None = None) -> torch.Tensor:
        """Sample the weights, compute logits and observe the labels.

        :param x: a mini-batch of inputs ``(B, D)``.
        :param y: its labels ``(B,)``, or None to sample them.
        :param num_data: size of the full training set; the likelihood of the mini-batch is
            scaled by ``num_data / B`` so that the objective is that of the whole set.
        :param subsample: the mini-batch's indices in the training set (no ``randperm``).
        """
        logits = mlp_logits(x, [(layer.weight, layer.bias) for layer in self.layers])
        size = x.shape[0] if num_data is None else num_data
        with pyro.plate("data", size=size, subsample=subsample if subsample is not None else None,
                        subsample_size=None if subsample is not None else x.shape[0]):
            pyro.sample("obs", dist.Categorical(logits=logits), obs=y)
        return logits
