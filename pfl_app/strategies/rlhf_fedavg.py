"""Federated RLHF with uniform preferences and plain FedAvg: the baseline PFIT improves on."""

from __future__ import annotations

from ..methods import register_method
from ..protocol import PREFERENCE_UNIFORM
from .rlhf_base import RlhfFedAvg


@register_method("rlhf-fedavg")
class RlhfFedAvgUniform(RlhfFedAvg):
    """Every client mixes the two rewards 0.5/0.5, whatever its own preference, and the
    policy LoRA is averaged by examples alone: one model for everyone, tuned for the
    average user."""

    preference = PREFERENCE_UNIFORM
    # One model for everyone: the aggregated policy is the result.
    delivered_model = "global"
