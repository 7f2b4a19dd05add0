"""What an RLHF run needs before its first round: the two reward models and the policy
every client starts from. The ServerApp and ``pfl-app reward-models`` both call this, so
a run and its preparation ahead of time use the same models."""

from __future__ import annotations

from dataclasses import dataclass

from ..models.personalized import base_policy
from .reward_models import RewardScorer, load_reward_scorers


@dataclass(frozen=True)
class RlhfModels:
    """The loaded (helpfulness, safety) scorers and the starting policy's name or folder."""

    scorers: tuple[RewardScorer, RewardScorer]
    policy: str


def prepare_rlhf_models(cfg) -> RlhfModels:
    """Load, training and caching first where needed, a run's reward models, then its
    warmed-up policy (``rlhf.warmup-steps``; ``model.name`` itself when that is 0)."""
    scorers = load_reward_scorers(cfg.rlhf, cfg.model.cache_dir, cfg.model.name)
    return RlhfModels(scorers=scorers, policy=base_policy(cfg))
