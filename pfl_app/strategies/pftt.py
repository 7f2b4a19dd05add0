"""PFTT: personalized federated task tuning (Jiang et al., arXiv 2404.13238)."""

from __future__ import annotations

from ..methods import register_method
from .base import PersonalizedFedAvg


@register_method("pftt")
class PFTT(PersonalizedFedAvg):
    """Share and average the bottleneck adapters; keep every client's LoRA on the client.

    The adapters learn what the clients have in common, and each client's LoRA, which
    never leaves it, is its personalization. Only the adapter tensors travel, in both
    directions.
    """

    shared_groups = ("adapter",)
