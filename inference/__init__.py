"""Inference: guides, the training objective and loop, KL accounting, metrics, bounds."""
