"""FedIT: FedAvg over LoRA (Zhang et al., "Towards Building the Federated GPT: Federated
Instruction Tuning", ICASSP 2024, arXiv 2305.05644)."""

from __future__ import annotations

from ..methods import register_method
from .base import PersonalizedFedAvg


@register_method("fedit")
class FedIT(PersonalizedFedAvg):
    """Train and average every LoRA tensor; the adapters stay at their identity init.

    No personalization: every client ends the round with the same LoRA.
    """

    shared_groups = ("lora_A", "lora_B")
    trained_groups = ("lora_A", "lora_B")
