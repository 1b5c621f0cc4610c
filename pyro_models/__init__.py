"""Models: what we believe about the data, declared in Pyro."""

from pyro_models.bayesian_mlp import BayesianMLP, GaussianPrior, LatentSite, layer_sizes, mlp_logits, output_units

__all__ = ["BayesianMLP", "GaussianPrior", "LatentSite", "layer_sizes", "mlp_logits", "output_units"]
