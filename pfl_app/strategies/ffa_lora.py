"""FFA-LoRA: LoRA with A frozen (Sun et al., "Improving LoRA in Privacy-preserving Federated
Learning", ICLR 2024, arXiv 2403.12313)."""

from __future__ import annotations

from ..methods import register_method
from .base import PersonalizedFedAvg


@register_method("ffa-lora")
class FFALoRA(PersonalizedFedAvg):
    """Freeze every LoRA A at its random init (the same on every client, from the seed);
    train and average only B. Averaging B alone is then exact: the mean of the updates
    ``B_k A`` is ``(mean B_k) A``. Halves LoRA's uplink."""

    shared_groups = ("lora_B",)
    trained_groups = ("lora_B",)
