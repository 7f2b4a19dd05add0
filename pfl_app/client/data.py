"""Which task and which slice of data each client holds."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedTokenizerBase

from ..config import RunConfig
from ..data import load_client_data, load_source
from ..tasks import CLASSIFICATION, Task, task_of, tokenize


@dataclass(frozen=True)
class ClientData:
    """A client's task and its tokenized train and test examples."""

    task: Task
    train: Dataset
    test: Dataset


def task_slot(client_id: int, num_clients: int, num_tasks: int) -> tuple[int, int, int]:
    """Assign tasks round-robin: client ``i`` holds task ``i % num_tasks``.

    Returns
    -------
    tuple
        ``(task index, this client's index among the clients of that task, how many
        clients hold that task)``.
    """
    if num_clients < num_tasks:
        raise ValueError(
            f"data.tasks lists {num_tasks} datasets but the federation has only {num_clients} "
            "clients (num-supernodes); every dataset needs at least one client"
        )
    task_index = client_id % num_tasks
    return task_index, client_id // num_tasks, len(range(task_index, num_clients, num_tasks))


def _source(cfg: RunConfig, name: str) -> Dataset:
    d = cfg.data
    return load_source(
        name,
        text_column=d.text_column,
        label_column=d.label_column,
        prompt_column=d.prompt_column,
        completion_column=d.completion_column,
    )


@lru_cache(maxsize=64)
def _client_data(cfg: RunConfig, client_id: int, num_clients: int, tokenizer: PreTrainedTokenizerBase) -> ClientData:
    task_index, slot, slots = task_slot(client_id, num_clients, len(cfg.data.tasks))
    name = cfg.data.tasks[task_index]
    dataset = _source(cfg, name)
    task = task_of(name, dataset)
    partition_by = cfg.data.partition_by or ("label" if task.kind == CLASSIFICATION else "category")
    split = load_client_data(
        dataset,
        partitioner=cfg.data.partitioner,
        partition_id=slot,
        num_partitions=slots,
        partition_by=partition_by,
        alpha=cfg.data.alpha,
        labels_per_client=cfg.data.labels_per_client,
        test_fraction=cfg.data.test_fraction,
        seed=cfg.seed,
        max_train_examples=cfg.data.max_train_examples or None,
        max_test_examples=cfg.data.max_test_examples or None,
    )
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
