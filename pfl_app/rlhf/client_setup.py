"""What each PFIT client has of its own: its preference weights and its prompts.

Clients are heterogeneous by default: client 0 weights helpfulness most and sees the
fewest harmful requests, the last client weights safety most and sees the most; the
settings in between are spread evenly (``rlhf.safety-weight-*``,
``rlhf.harmful-fraction-*``). A SuperNode can set its own weight with
``--node-config "safety-weight=0.8"``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import datasets
from flwr_datasets.partitioner import IidPartitioner

from ..config import RlhfSettings
from ..protocol import PREFERENCE_HELPFULNESS, PREFERENCE_UNIFORM, SAFETY_WEIGHT_NODE_KEY
from .preferences import PromptItem, prompts_in


def spread(low: float, high: float, client_id: int, num_clients: int) -> float:
    """Client ``client_id``'s value on an even spread from ``low`` (client 0) to ``high``."""
    if num_clients <= 1:
        return low
    return low + (high - low) * client_id / (num_clients - 1)


@dataclass(frozen=True)
class Preference:
    """A client's reward weights: ``helpfulness + safety == 1``."""

    helpfulness: float
    safety: float

    @property
    def weights(self) -> list[float]:
        """In the order of the reward functions: helpfulness, safety."""
        return [self.helpfulness, self.safety]

    def mix(self, helpfulness: float, safety: float) -> float:
        """The client's objective: the weighted sum of the two rewards."""
        return self.helpfulness * helpfulness + self.safety * safety


UNIFORM = Preference(0.5, 0.5)
HELPFULNESS_ONLY = Preference(1.0, 0.0)
# What a server's ``preference`` message setting may impose instead of the client's own
# weights (``"own"``): the names are pfl_app.protocol's, the RLHF strategies send them.
FIXED_PREFERENCES = {PREFERENCE_UNIFORM: UNIFORM, PREFERENCE_HELPFULNESS: HELPFULNESS_ONLY}


def client_preference(
    settings: RlhfSettings, client_id: int, num_clients: int, node_config: Mapping[str, Any] | None = None
) -> Preference:
    """The client's own weights: the node config's ``safety-weight`` if set, else its place
    on the spread."""
    if node_config and SAFETY_WEIGHT_NODE_KEY in node_config:
        safety = float(node_config[SAFETY_WEIGHT_NODE_KEY])
        if not 0.0 <= safety <= 1.0:
            raise ValueError(f"node config '{SAFETY_WEIGHT_NODE_KEY}' = {safety} must be in [0, 1]")
    else:
        safety = spread(settings.safety_weight_min, settings.safety_weight_max, client_id, num_clients)
    return Preference(round(1.0 - safety, 6), round(safety, 6))


@dataclass(frozen=True)
class ClientPrompts:
    """A client's training prompts and its held-out evaluation prompts: ``evaluate`` for
    every round, ``evaluate_final`` (which holds them: the first of its harmful and of its
    benign prompts) for the last."""

    train: list[PromptItem]
    evaluate: list[PromptItem]
    harmful_fraction: float
    evaluate_final: list[PromptItem]


def _partition(items: list[PromptItem], client_id: int, num_clients: int, seed: int) -> list[PromptItem]:
    ds = datasets.Dataset.from_dict({"i": list(range(len(items)))}).shuffle(seed=seed)
    partitioner = IidPartitioner(num_partitions=num_clients)
    partitioner.dataset = ds
    return [items[i] for i in partitioner.load_partition(client_id)["i"]]


def _take(items: list[PromptItem], n: int) -> list[PromptItem]:
    # A small partition is cycled: GRPO samples fresh completions for a repeated prompt.
    return list(itertools.islice(itertools.cycle(items), n)) if items else []


def _shuffled(items: list[PromptItem], seed: int) -> list[PromptItem]:
    order = datasets.Dataset.from_dict({"i": list(range(len(items)))}).shuffle(seed=seed)["i"]
    return [items[i] for i in order]


@functools.lru_cache(maxsize=64)
def client_prompts(settings: RlhfSettings, client_id: int, num_clients: int, seed: int) -> ClientPrompts:
    """Client ``client_id``'s evaluation and training prompts, from the held-out pool.

    The evaluation prompts (``final-eval-prompts``, or ``eval-prompts`` when that is 0;
    half harmful, half benign) are the same for every client and set aside first: clients'
    models are then compared on the same questions, so a difference between two clients is a
    difference between their models. Rounds before the last score the first
    ``eval-prompts`` of them (half from each half). The rest of the pool is split across
    clients (flwr-datasets' IID partitioner on the benign and on the harmful list), and each
    client's training prompts hold its own share of harmful requests.
    """
    benign, harmful = prompts_in("heldout")
    key, n_final = ("rlhf.final-eval-prompts", settings.final_eval_prompts) if settings.final_eval_prompts \
        else ("rlhf.eval-prompts", settings.eval_prompts)
    n_final_harmful, n_eval_harmful = n_final // 2, settings.eval_prompts // 2
    n_final_benign, n_eval_benign = n_final - n_final_harmful, settings.eval_prompts - n_eval_harmful
    if n_final_harmful >= len(harmful) or n_final_benign >= len(benign):
        raise ValueError(
            f"run-config key '{key}' = {n_final} leaves no training prompts: the "
            f"held-out pool has {len(harmful)} harmful and {len(benign)} benign prompts, half of it are asked"
        )
    benign, harmful = _shuffled(benign, seed), _shuffled(harmful, seed + 1)
    evaluate = harmful[:n_eval_harmful] + benign[:n_eval_benign]
    evaluate_final = harmful[:n_final_harmful] + benign[:n_final_benign]
    rest_benign, rest_harmful = benign[n_final_benign:], harmful[n_final_harmful:]
    if min(len(rest_benign), len(rest_harmful)) < num_clients:
        raise ValueError(
            f"{num_clients} clients cannot each get training prompts: the held-out pool, less run-config key "
            f"'{key}' = {n_final}, holds {len(rest_benign)} benign and "
            f"{len(rest_harmful)} harmful prompts; lower it or use fewer clients"
        )
    mine_benign = _partition(rest_benign, client_id, num_clients, seed)
    mine_harmful = _partition(rest_harmful, client_id, num_clients, seed + 1)
    fraction = spread(settings.harmful_fraction_min, settings.harmful_fraction_max, client_id, num_clients)
    n_harmful = round(fraction * settings.train_prompts)
    train = _take(mine_harmful, n_harmful) + _take(mine_benign, settings.train_prompts - n_harmful)
    return ClientPrompts(train=train, evaluate=evaluate, harmful_fraction=fraction, evaluate_final=evaluate_final)


def check_prompt_pool(settings: RlhfSettings, num_clients: int, seed: int) -> None:
    """Raise the error :func:`client_prompts` would raise for any of ``num_clients``
    clients, so a server can refuse a config before it spends minutes on reward models."""
    for client_id in range(num_clients):
        client_prompts(settings, client_id, num_clients, seed)


def as_conversation(item: PromptItem) -> list[dict[str, str]]:
    """The prompt as a one-turn chat, which trl renders with the policy's chat template."""
    return [{"role": "user", "content": item.text}]


def prompt_dataset(items: list[PromptItem]) -> datasets.Dataset:
    """A GRPO training set: ``prompt`` (a chat) plus ``question`` and ``harmful``, which trl
    passes on to the reward functions."""
    return datasets.Dataset.from_dict({
        "prompt": [as_conversation(p) for p in items],
        "question": [p.text for p in items],
        "harmful": [p.harmful for p in items],
    })
