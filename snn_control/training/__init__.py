"""Predictive-control training: replay, collection, trainer, checkpoints, evaluation."""
