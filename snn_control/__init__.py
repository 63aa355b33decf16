"""snn_control: spiking neural network controllers for torque-controlled robot arms."""

__version__ = "0.1.0"
