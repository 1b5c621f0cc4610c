"""The training objective: E_q[-log p(y | w)] + beta * complexity(q), built from Pyro traces.

One sample of the weights is drawn by running the guide under ``poutine.trace``; the model is
replayed on that sample, and only its observed site is scored (the mini-batch log-likelihood,
already scaled by the plate to the size of the full training set). The complexity term comes
from the guide in closed form: KL(q || p) for the mean-field Normal guide (VI), -log p(w) for a
point guide (MAP; 0 under the flat prior, i.e. MLE).

So the objective skips what a closed-form objective does not need: log-densities of the latent
sites under model and guide (Pyro's ``TraceMeanField_ELBO`` computes them, then replaces their
difference by the KL). With ``beta = 1`` and the Normal guide it equals the negative ELBO of
``TraceMeanField_ELBO`` for the same weight sample (tested).

Where beta enters: it multiplies the KL only; the data term always counts every training
example once. ``beta < 1`` is a tempered ("cold") posterior; ``beta = 1`` is Bayes' rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro import poutine


@dataclass
class ObjectiveTerms:
    loss: torch.Tensor  # data + beta * complexity (what the optimiser minimises)
    data: torch.Tensor  # -log p(y | w) of the batch, scaled to the whole training set
    complexity: torch.Tensor  # KL(q || p) (VI) or -log p(w) (point estimates)
    logits: torch.Tensor  # (B, K) logits of the batch under the sampled weights


def objective_terms(model, guide, x: torch.Tensor, y: torch.Tensor, num_data: int, subsample: torch.Tensor | None,
                    beta: float = 1.0) -> ObjectiveTerms:
    """The objective for one mini-batch and one weight sample.

    :param model: a ``BayesianMLP``.
    :param guide: a guide with a closed-form ``complexity()``.
    :param x: mini-batch inputs ``(B, D)``; ``y``: its labels ``(B,)``.
    :param num_data: size of the full training set (the likelihood is scaled by num_data / B).
    :param subsample: the mini-batch's indices in the training set (None for the full set).
    :param beta: weight of the complexity term.
    """
    guide_trace = poutine.trace(guide).get_trace()
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        x, y, num_data=num_data, subsample=subsample
    )
    observed = model_trace.nodes["obs"]
    data = -observed["fn"].log_prob(observed["value"]).sum() * observed["scale"]
    complexity = guide.complexity(guide_trace.nodes["_RETURN"]["value"])
    return ObjectiveTerms(data + beta * complexity, data, complexity, model_trace.nodes["_RETURN"]["value"])
