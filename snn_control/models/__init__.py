"""Prediction and policy networks (spiking and baselines) and the checkpoint I/O spec."""

from .io_spec import IOSpec, IOSpecMismatch, ObservationError
from .networks import (ForwardModel, GRUPredictor, PredictorState, MLPPolicy, SpikingPolicy, SpikingPredictor, build_networks,
                       detach_state, parameter_count, spiking_nets)

__all__ = ["ForwardModel", "GRUPredictor", "PredictorState", "IOSpec", "IOSpecMismatch", "ObservationError", "MLPPolicy", "SpikingPolicy",
           "SpikingPredictor", "build_networks", "detach_state", "parameter_count", "spiking_nets"]
