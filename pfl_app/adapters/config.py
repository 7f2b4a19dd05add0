"""Configuration of the bottleneck adapter tuner."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BottleneckConfig:
    """Where and how bottleneck adapters are inserted.

    Parameters
    ----------
    bottleneck_dim : int
        Width of the down-projection.
    non_linearity : str
        ``relu``, ``gelu``, ``silu`` or ``tanh``.
    dropout : float
        Dropout applied to the adapter's input.
    adapter_name : str
        Name of this adapter; several adapters can live side by side under different
        names, and every tensor name carries it.
    target_module : str
        Attribute of each decoder block whose output the adapter transforms (``mlp``:
        after the feed-forward sub-layer, before its residual addition).
    """

    bottleneck_dim: int = 32
    non_linearity: str = "relu"
    dropout: float = 0.0
    adapter_name: str = "default"
    target_module: str = "mlp"
