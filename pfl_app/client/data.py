"""Which task and which slice of data each client holds."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedTokenizerBase

from ..config import RunConfig
from ..data.assignment import client_split, task_slot  # noqa: F401 - task_slot re-exported
from ..tasks import Task, task_of, tokenize


@dataclass(frozen=True)
class ClientData:
    """A client's task and its tokenized train and test examples."""

    task: Task
    train: Dataset
    test: Dataset


@lru_cache(maxsize=64)
def _client_data(cfg: RunConfig, client_id: int, num_clients: int, tokenizer: PreTrainedTokenizerBase) -> ClientData:
    name, split = client_split(cfg.data, cfg.seed, client_id, num_clients)
    task = task_of(name, split["train"])
    max_length = cfg.model.max_length
    return ClientData(
        task,
        tokenize(task, split["train"], tokenizer, max_length),
        tokenize(task, split["test"], tokenizer, max_length),
    )


def client_data(cfg: RunConfig, client_id: int, num_clients: int, tokenizer: PreTrainedTokenizerBase) -> ClientData:
    """The client's data, built once per process (a Ray worker serves many clients)."""
    return _client_data(cfg, client_id, num_clients, tokenizer)


@lru_cache(maxsize=4)
def pooled_train(cfg: RunConfig, num_clients: int, tokenizer: PreTrainedTokenizerBase) -> Dataset:
    """Every client's training examples in one dataset (for centralized training)."""
    return concatenate_datasets([client_data(cfg, i, num_clients, tokenizer).train for i in range(num_clients)])
