"""FedDPA: a global and a local LoRA side by side (Yang et al., "Dual-Personalizing Adapter for
Federated Foundation Models", NeurIPS 2024, arXiv 2403.19211)."""

from __future__ import annotations

from ..methods import register_method
from .base import PersonalizedFedAvg


@register_method("feddpa")
class FedDPA(PersonalizedFedAvg):
    """Each client trains two LoRA adapters on the same modules: the global one is averaged,
    the local one never leaves the client; their updates add up in the forward pass.

    The paper also mixes the two per test instance with a learned weight; here they are
    simply summed. The bottleneck adapters are not trained.
    """

    shared_groups = ("lora_A", "lora_B")
    trained_groups = ("lora_A", "lora_B", "local_lora_A", "local_lora_B")
    model_parts = ("local-lora",)
