"""FedSA-LoRA: share A, keep B (Guo et al., "Selective Aggregation for Low-Rank Adaptation in
Federated Learning", ICLR 2025, arXiv 2410.01463)."""

from __future__ import annotations

from ..methods import register_method
from .base import PersonalizedFedAvg


@register_method("fedsa-lora")
class FedSALoRA(PersonalizedFedAvg):
    """Train both LoRA factors; average A, which learns what clients share, and keep each
    client's B, which learns what is its own."""

    shared_groups = ("lora_A",)
    trained_groups = ("lora_A", "lora_B")
