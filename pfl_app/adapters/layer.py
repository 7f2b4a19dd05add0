"""The bottleneck adapter layer."""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class BottleneckAdapter(nn.Module):
    """``h + up(act(down(dropout(h))))``, with ``up`` zero-initialised.

    Zero-initialising the up-projection makes a fresh adapter the identity, so inserting
    it leaves the pretrained model's outputs unchanged until it is trained.

    Parameters
    ----------
    hidden_size : int
        Width of the hidden states the adapter transforms.
    bottleneck_dim : int
        Width of the bottleneck.
    non_linearity : str
        Activation between the projections.
    dropout : float
        Dropout on the adapter input.
    """

    def __init__(
        self, hidden_size: int, bottleneck_dim: int, non_linearity: str = "relu", dropout: float = 0.0
    ) -> None:
        super().__init__()
        if non_linearity not in _ACTIVATIONS:
            raise ValueError(
                f"adapter non_linearity {non_linearity!r} is not one of {sorted(_ACTIVATIONS)}"
            )
        self.down = nn.Linear(hidden_size, bottleneck_dim)
        self.act = _ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(bottleneck_dim, hidden_size)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.down.weight, std=hidden_size**-0.5)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        delta = self.up(self.act(self.down(self.dropout(hidden.to(self.down.weight.dtype)))))
        return hidden + delta.to(hidden.dtype)
