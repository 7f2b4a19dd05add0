"""PFIT: personalized federated instruction tuning (Jiang et al., arXiv 2404.13238)."""

from __future__ import annotations

import math
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import MetricRecord
from flwr.common.logger import log

from ..config import START_POINTS, RunConfig
from ..methods import register_method
from ..protocol import START_FROM_PERSONAL, TRAIN_REWARD_KEY
from .rlhf_base import RlhfFedAvg

# The metric PFIT weighs updates by, under the name it had here before pfl_app.protocol.
REWARD_KEY = TRAIN_REWARD_KEY


def reward_weights(examples: list[float], rewards: list[float], temperature: float) -> list[float]:
    """Aggregation weights ``n_i * softmax(r / T)_i``, normalised to sum to one.

    ``examples`` are the clients' numbers of examples and ``rewards`` their mean rewards
    this round. A lower ``temperature`` favours high-reward clients more; at ``inf`` the
    weights are FedAvg's (``n_i / sum n``).
    """
    if len(examples) != len(rewards):
        raise ValueError("one reward per client is needed")
    n = np.asarray(examples, dtype=np.float64)
    if math.isinf(temperature):
        w = n
    else:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 or inf, got {temperature}")
        z = np.asarray(rewards, dtype=np.float64) / temperature
        w = n * np.exp(z - z.max())  # shifting by the max keeps exp() finite
    return (w / w.sum()).tolist()


@register_method("pfit")
class PFIT(RlhfFedAvg):
    """Average the clients' policy LoRA weighted by their examples times a softmax of their
    mean personalized reward this round (``train-reward``, each client's own mix of the
    helpfulness and safety rewards); log the weights used.

    Each client starts a round from its own policy of the last round, held near the global
    one by the proximal term (``rlhf.proximal-mu``): the personalized objective of the
    paper, task reward plus a penalty on the distance from the global model
    (:attr:`start_from`, ``rlhf.start-from``; ``"global"`` restarts every client from the
    global policy each round).

    With a sparse attention update (``rlhf.sparse-update``) the LoRA, and so every message,
    covers only the chosen layers.
    """

    #: Softmax temperature; ``math.inf`` gives plain FedAvg.
    temperature: float = 1.0
    start_from: str = START_FROM_PERSONAL
    option_checks = {
        "temperature": lambda v: None if v > 0 else "a number > 0, or inf",
        "start_from": lambda v: None if v in START_POINTS else f"one of {', '.join(START_POINTS)}",
    }

    @classmethod
    def run_config_options(cls, cfg: RunConfig) -> dict[str, Any]:
        return {**super().run_config_options(cfg), "temperature": cfg.rlhf.aggregation_temperature,
                "start_from": cfg.rlhf.start_from}

    def check_metrics(self, node_id: int, metrics: MetricRecord) -> str | None:
        if TRAIN_REWARD_KEY not in metrics or not math.isfinite(float(metrics[TRAIN_REWARD_KEY])):
            return f"its metrics carry no finite '{TRAIN_REWARD_KEY}' to weight it by"
        return None

    def aggregation_weights(self, server_round: int, updates: list[tuple[int, MetricRecord]]) -> list[float]:
        weights = reward_weights(
            [float(m[self.weighted_by_key]) for _, m in updates],
            [float(m[TRAIN_REWARD_KEY]) for _, m in updates],
            self.temperature,
        )
        log(INFO, "round %d: reward-weighted aggregation (temperature %s): %s", server_round, self.temperature,
            ", ".join(f"node {node}: reward {float(m[TRAIN_REWARD_KEY]):+.3f} -> weight {w:.3f}"
                      for (node, m), w in zip(updates, weights)))
        return weights
