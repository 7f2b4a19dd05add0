"""Send-all: the PFTT model with nothing kept local (the communication baseline)."""

from __future__ import annotations

from ..methods import register_method
from .base import PersonalizedFedAvg


@register_method("send-all")
class SendAll(PersonalizedFedAvg):
    """Share and average both the adapters and the LoRA: FedAvg over every trainable
    tensor of the PFTT model, with no personalization. It costs what a non-personalized
    method costs on the air, which is what PFTT is measured against."""

    shared_groups = ("adapter", "lora_A", "lora_B")
