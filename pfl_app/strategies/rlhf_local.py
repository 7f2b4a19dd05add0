"""Local-only RLHF: each client tunes its policy alone, with its own preference."""

from __future__ import annotations

from ..methods import register_method
from .rlhf_base import RlhfFedAvg


@register_method("rlhf-local")
class RlhfLocal(RlhfFedAvg):
    """Clients train their policy LoRA with their own reward mix and share nothing; Flower
    still drives the rounds, so the runs compare round by round."""

    shared_groups = ()
