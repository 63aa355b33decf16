"""Spiking building blocks: neurons, surrogate gradients, connections, init, readout.

Knows nothing of robots.
"""

from .connections import LowRankLinear, make_connection
from .network import SpikingNet, SpikingNetState
from .neurons import LeakyReadout, NeuronState, SpikingLayer, neuron_step
from .surrogate import SURROGATES, Surrogate

__all__ = [
    "LeakyReadout", "LowRankLinear", "NeuronState", "SURROGATES", "SpikingLayer",
    "SpikingNet", "SpikingNetState", "Surrogate", "make_connection", "neuron_step",
]
