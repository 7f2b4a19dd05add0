"""Local-only training: every client trains the PFTT model alone (the no-federation baseline)."""

from __future__ import annotations

from ..methods import register_method
from .base import PersonalizedFedAvg


@register_method("local-only")
class LocalOnly(PersonalizedFedAvg):
    """Train adapters and LoRA on each client and share nothing. Flower still drives the
    rounds (so the runs are comparable round by round), but the messages carry no tensors."""

    shared_groups = ()
    trained_groups = ("adapter", "lora_A", "lora_B")
