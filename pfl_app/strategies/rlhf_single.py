"""Single-reward federated RLHF: the usual setup with one reward model, here helpfulness."""

from __future__ import annotations

from ..methods import register_method
from ..protocol import PREFERENCE_HELPFULNESS
from .rlhf_base import RlhfFedAvg


@register_method("rlhf-single")
class RlhfSingleReward(RlhfFedAvg):
    """Every client is rewarded by the helpfulness model alone (weights 1 / 0), whatever its
    own preference, and the policy LoRA is averaged by examples: what federated RLHF with a
    single reward model does, and what the safety reward model adds to it."""

    preference = PREFERENCE_HELPFULNESS
    # One model for everyone: the aggregated policy is the result.
    delivered_model = "global"
