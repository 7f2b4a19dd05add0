"""FedAdapter: federated bottleneck adapters (Cai et al., "FedAdapter: Efficient Federated
Learning for Modern NLP", MobiCom 2023, arXiv 2205.10162)."""

from __future__ import annotations

from ..methods import register_method
from .base import PersonalizedFedAvg


@register_method("fedadapter")
class FedAdapter(PersonalizedFedAvg):
    """Train and average the bottleneck adapters; no LoRA is trained (its B stays zero).

    It sends exactly what PFTT sends, without PFTT's private LoRA: the pair isolates what
    the personalization adds.
    """

    shared_groups = ("adapter",)
    trained_groups = ("adapter",)
