"""KL(q || p) accounting for a trained mean-field Normal posterior.

For q_i = Normal(m_i, s_i) and p_i = Normal(m0_i, s0_i), in closed form per parameter:
    KL_i = log(s0_i / s_i) + (s_i^2 + (m_i - m0_i)^2) / (2 s0_i^2) - 1/2,
and KL(q || p) = sum_i KL_i because both distributions factorise.

The summaries reported for every model (the word "norm" alone is ambiguous, so each is named):
- ``total``: KL(q || p) in nats;
- ``mean_per_param``: total / number of parameters;
- ``l2_norm``: the Euclidean norm of the vector (KL_1, ..., KL_P) of per-parameter KLs;
- ``per_n``: total / n, n = number of training examples (the quantity in PAC-Bayes bounds);
- ``per_layer`` and ``per_site``: totals of each layer (weights + bias) and of each site.
"""

from __future__ import annotations

import math

import torch

from inference.guides import MeanFieldNormalGuide


@torch.no_grad()
def kl_summary(guide: MeanFieldNormalGuide, num_data: int) -> dict:
    """Closed-form KL(q || p) and its summaries (see the module docstring)."""
    per_parameter = guide.kl_per_parameter().double()
    total = per_parameter.sum().item()
    per_site = {name: per_parameter[part].sum().item() for name, part in guide.site_slices().items()}
    layers = guide.layer_of_parameter().to(per_parameter.device)
    per_layer = torch.zeros(int(layers.max()) + 1, dtype=torch.float64, device=per_parameter.device)
    per_layer.index_add_(0, layers, per_parameter)
    return {
        "total": total,
        "mean_per_param": total / guide.num_params,
        "l2_norm": per_parameter.norm().item(),
        "per_n": total / num_data,
        "num_params": guide.num_params,
        "per_layer": [v.item() for v in per_layer],
        "per_site": per_site,
    }


@torch.no_grad()
def monte_carlo_kl(guide: MeanFieldNormalGuide, num_samples: int = 64, generator: torch.Generator | None = None
                   ) -> tuple[float, float]:
    """Monte Carlo estimate of KL(q || p) = E_q[log q(w) - log p(w)] and its standard error."""
    loc, scale = guide.loc.double(), guide.scale().double()
    prior_loc, prior_scale = guide.prior_loc.double(), guide.prior_scale.double()
    estimates = []
    for _ in range(num_samples):
        eps = torch.randn(loc.shape, generator=generator, dtype=torch.float64, device=loc.device)
        w = loc + scale * eps
        log_q = (-0.5 * eps.square() - torch.log(scale)).sum()
        log_p = (-0.5 * ((w - prior_loc) / prior_scale).square() - torch.log(prior_scale)).sum()
        estimates.append((log_q - log_p).item())
    values = torch.tensor(estimates, dtype=torch.float64)
    return values.mean().item(), (values.std(unbiased=True) / math.sqrt(num_samples)).item()
