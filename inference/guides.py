"""Guides (variational families) for ``BayesianMLP``, with their complexity terms in closed form.

All guides keep their parameters as one flat vector over every latent site (weights and biases
of all layers, in the model's order) and hand Pyro per-site views of it. A flat vector lets the
complexity term be one fused expression over all parameters instead of one per site.

- ``MeanFieldNormalGuide``: q(w) = prod_i Normal(loc_i, scale_i), scale = exp(log_scale). Its
  sites are ``Normal(loc, scale).to_event(k)`` themselves (not a Delta behind an auxiliary
  site, as in Pyro's ``AutoNormal``), so ``TraceMeanField_ELBO`` evaluates the KL with
  ``kl_divergence(Normal, Normal)`` in closed form. ``complexity()`` is that same KL, fused.
- ``PointGuide``: q(w) = Delta(w) (point estimates). ``complexity()`` is -log p(w), the
  negative log prior density: the L2 penalty for a Gaussian prior (MAP), 0 for the flat prior
  (MLE).

The training objective is the same for both: E_q[-log p(y | w)] + beta * complexity(q).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_models.bayesian_mlp import BayesianMLP, LatentSite

LOC_INITS = ("he", "prior", "zeros")
HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class FlatGuide(nn.Module):
    """Shared machinery: the site table, flat-vector views and the prior as flat vectors."""

    def __init__(self, model: BayesianMLP):
        super().__init__()
        self.sites: list[LatentSite] = model.latent_sites()
        self.weights_from_sites = model.weights_from_sites
        self.offsets = [0]
        for site in self.sites:
            self.offsets.append(self.offsets[-1] + site.numel)
        self.num_params = self.offsets[-1]
        self.has_gaussian_prior = all(site.prior_scale is not None for site in self.sites)
        if self.has_gaussian_prior:
            self.register_buffer("prior_loc", self._per_site([site.prior_loc for site in self.sites]))
            self.register_buffer("prior_scale", self._per_site([site.prior_scale for site in self.sites]))
        else:
            self.prior_loc = self.prior_scale = None

    def _per_site(self, values: list[float]) -> torch.Tensor:
        """A flat vector holding ``values[i]`` over the parameters of site i."""
        return torch.cat([torch.full((site.numel,), float(v)) for site, v in zip(self.sites, values, strict=True)])

    def chunks(self, flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-site pieces ``(..., numel)`` of a flat tensor ``(..., P)``, from one ``split``.

        One split op (its backward is one concatenation) instead of one slice per site (each
        slice's backward writes its gradient into a fresh zero tensor of size P).
        """
        return flat.split([site.numel for site in self.sites], dim=-1)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-site views of a flat tensor ``(..., P)``: ``{name: (..., *shape)}``."""
        lead = flat.shape[:-1]
        return {site.name: piece.reshape(*lead, *site.shape)
                for site, piece in zip(self.sites, self.chunks(flat), strict=True)}

    def site_slices(self) -> dict[str, slice]:
        return {site.name: slice(a, b) for site, a, b in zip(self.sites, self.offsets[:-1], self.offsets[1:],
                                                             strict=True)}

    def layer_of_parameter(self) -> torch.Tensor:
        """Layer index of every flat parameter ``(P,)``."""
        return torch.cat([torch.full((site.numel,), site.layer, dtype=torch.long) for site in self.sites])

    def initial_locs(self, how: str) -> torch.Tensor:
        """Initial weight values: He-normal (weights ~ N(0, 2/fan_in), last layer 1/fan_in, biases 0),
        draws from the prior, or zeros. Uses torch's global RNG (seed it first)."""
        if how not in LOC_INITS:
            raise ValueError(f"loc initialisation must be one of {LOC_INITS}, got {how!r}")
        if how == "zeros":
            return torch.zeros(self.num_params)
        if how == "prior":
            if not self.has_gaussian_prior:
                raise ValueError("cannot initialise from a flat prior")
            return self.prior_loc + self.prior_scale * torch.randn(self.num_params)
        parts = []
        last_layer = max(site.layer for site in self.sites)
        for site in self.sites:
            if len(site.shape) == 2:
                gain = 1.0 if site.layer == last_layer else 2.0
                parts.append(torch.randn(site.numel) * math.sqrt(gain / site.shape[1]))
            else:
                parts.append(torch.zeros(site.numel))
        return torch.cat(parts)

    def mean_values(self) -> torch.Tensor:
        raise NotImplementedError

    def mean_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer ``(W, b)`` at the posterior mean (the point estimate for point guides)."""
        return self.weights_from_sites(self.split(self.mean_values()))

    def complexity(self, returned=None) -> torch.Tensor:
        """The complexity term of the objective; ``returned`` is what ``forward`` returned."""
        raise NotImplementedError


class MeanFieldNormalGuide(FlatGuide):
    """A fully factorised Normal posterior over every weight and bias.

    :param model: the ``BayesianMLP`` (must have a Gaussian prior).
    :param init_scale: initial posterior standard deviation of every parameter.
    :param init_loc: ``"he"``, ``"prior"`` or ``"zeros"`` (see ``initial_locs``).
    """

    def __init__(self, model: BayesianMLP, init_scale: float = 1e-3, init_loc: str = "he"):
        super().__init__(model)
        if not self.has_gaussian_prior:
            raise ValueError("variational inference needs a proper (Gaussian) prior")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        self.loc = nn.Parameter(self.initial_locs(init_loc))
        # The scales are optimised in log space: Adam then moves each by about lr per step in
        # relative terms, and log(scale), which the KL needs, is the parameter itself.
        self.log_scale = nn.Parameter(torch.full((self.num_params,), math.log(init_scale)))

    def scale(self) -> torch.Tensor:
        return torch.exp(self.log_scale)

    def forward(self, *args, **kwargs) -> tuple:
        """Sample every site from q. Returns the flat scale vector and the per-site pieces of
        the locations and scales, so that the objective's KL reuses them (no second exp, no
        second split)."""
        scale = self.scale()
        loc_pieces, scale_pieces = self.chunks(self.loc), self.chunks(scale)
        for site, m, s in zip(self.sites, loc_pieces, scale_pieces, strict=True):
            pyro.sample(site.name, dist.Normal(m.view(site.shape), s.view(site.shape)).to_event(len(site.shape)))
        return scale, loc_pieces, scale_pieces

    def mean_values(self) -> torch.Tensor:
        return self.loc

    def kl_per_parameter(self) -> torch.Tensor:
        """KL(q_i || p_i) of every parameter ``(P,)``, in nats, in closed form."""
        ratio = self.scale() / self.prior_scale
        log_ratio = self.log_scale - torch.log(self.prior_scale)
        return 0.5 * (ratio.square() + ((self.loc - self.prior_loc) / self.prior_scale).square() - 1) - log_ratio

    def complexity(self, returned: tuple | None = None) -> torch.Tensor:
        """KL(q || p) in nats (closed form), summed site by site without a per-parameter vector.

        :param returned: what ``forward`` returned (reused), or None to compute from scratch.

        Within a site the prior is one Normal(m0, s0), so
        KL = (sum s^2 + sum (m - m0)^2) / (2 s0^2) - sum log s + numel * (log s0 - 1/2),
        where the sums of squares are dot products (one read of each vector).
        """
        if returned is None:
            scale = self.scale()
            returned = scale, self.chunks(self.loc), self.chunks(scale)
        scale, loc_pieces, scale_pieces = returned
        squares = []
        for site, m, s in zip(self.sites, loc_pieces, scale_pieces, strict=True):
            centred = m if site.prior_loc == 0 else m - site.prior_loc
            squares.append((torch.dot(s, s) + torch.dot(centred, centred)) * (0.5 / site.prior_scale**2))
        return torch.stack(squares).sum() - self.log_scale.sum() + self._kl_constant

    @property
    def _kl_constant(self) -> float:
        return sum(site.numel * (math.log(site.prior_scale) - 0.5) for site in self.sites)

    @torch.no_grad()
    def sample_values(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws ``(S, P)`` from q."""
        eps = torch.randn(num_samples, self.num_params, generator=generator, device=self.loc.device)
        return self.loc + self.scale() * eps

    def sample_weights(self, num_samples: int, generator: torch.Generator | None = None):
        """Per-layer ``(W, b)`` with a leading sample dimension ``S``."""
        return self.weights_from_sites(self.split(self.sample_values(num_samples, generator)))


class PointGuide(FlatGuide):
    """Point estimates (a Delta posterior): MAP under a Gaussian prior, MLE under the flat prior.

    :param model: the ``BayesianMLP``.
    :param init_loc: ``"he"``, ``"prior"`` or ``"zeros"``.
    """

    def __init__(self, model: BayesianMLP, init_loc: str = "he"):
        super().__init__(model)
        self.value = nn.Parameter(self.initial_locs(init_loc))

    def forward(self, *args, **kwargs):
        values = self.split(self.value)
        for site in self.sites:
            pyro.sample(site.name, dist.Delta(values[site.name], event_dim=len(site.shape)))

    def mean_values(self) -> torch.Tensor:
        return self.value

    def negative_log_prior(self) -> torch.Tensor:
        """-log p(w) in nats: sum of (w - m)^2 / (2 s^2) + log s + log(2 pi)/2; 0 for a flat prior."""
        if not self.has_gaussian_prior:
            return self.value.new_zeros(())
        z = (self.value - self.prior_loc) / self.prior_scale
        return (0.5 * z.square() + torch.log(self.prior_scale) + HALF_LOG_TWO_PI).sum()

    def complexity(self, returned=None) -> torch.Tensor:
        return self.negative_log_prior()
