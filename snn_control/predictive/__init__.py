"""Predictive control (Huebotter et al. 2025): a spiking forward model learns the arm,
a spiking policy learns through it; replay, updates, trainer, fine-tuning from bags."""
