"""Centralized training: all clients' training data in one place (the upper bound)."""

from __future__ import annotations

from flwr.app import ConfigRecord

from ..methods import register_method
from ..protocol import POOLED_DATA_KEY
from .base import PersonalizedFedAvg


@register_method("centralized")
class Centralized(PersonalizedFedAvg):
    """One client per round trains the PFTT model on the union of every client's training
    split, for ``local-steps x number of clients`` steps (the compute the federation spends);
    every client then evaluates the resulting model on its own test split.

    This is what the data could give without federation's constraints, the usual upper
    bound; it shares nothing client-specific, so personalized and global scores coincide.
    """

    shared_groups = ("adapter", "lora_A", "lora_B")
    trained_groups = ("adapter", "lora_A", "lora_B")
    pools_data = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # Flower's sampling then picks max(int(n * fraction), min_train_nodes) = 1 node.
        self.fraction_train = 1e-9
        self.min_train_nodes = 1

    def _with_groups(self, config: ConfigRecord) -> ConfigRecord:
        config = super()._with_groups(config)
        config[POOLED_DATA_KEY] = True
        return config
