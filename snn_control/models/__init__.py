"""Everything a model directory holds: the prediction and policy networks (spiking and
baselines, the TD3 actors with their population coding), their batch-1 fast paths, the
I/O spec, and saving and loading."""

from .checkpoint import CheckpointError, Model, io_spec_for, load_model, save_model
from .inference import FastPolicy, FastPredictor
from .io_spec import IOSpec, IOSpecMismatch, ObservationError
from .networks import (ForwardModel, GRUPredictor, PredictorState, MLPPolicy, SpikingPolicy, SpikingPredictor, build_networks,
                       detach_state, parameter_count, spiking_nets)

__all__ = ["CheckpointError", "FastPolicy", "FastPredictor", "ForwardModel", "GRUPredictor", "IOSpec",
           "IOSpecMismatch", "MLPPolicy", "Model", "ObservationError", "PredictorState", "SpikingPolicy",
           "SpikingPredictor", "build_networks", "detach_state", "io_spec_for", "load_model", "parameter_count",
           "save_model", "spiking_nets"]
