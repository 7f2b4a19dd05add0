"""Which dataset and which rows each client holds: the one function that the clients and the
pre-flight checks both call, so that what is checked before a run is what the clients load."""

from __future__ import annotations

from typing import TYPE_CHECKING

import datasets

from .partition import load_client_data
from .sources import load_source, source_kind

if TYPE_CHECKING:  # config imports this package: no import at run time
    from ..config import DataSettings


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


def load_task_source(data: DataSettings, name: str) -> datasets.Dataset:
    """Load one dataset of ``data.tasks`` with the configured column names."""
    return load_source(name, data.columns)


def client_split(data: DataSettings, seed: int, client_id: int, num_clients: int) -> tuple[str, datasets.DatasetDict]:
    """Client ``client_id``'s dataset name and its ``train``/``test`` rows (untokenized,
    with the source's features, so the task can be read off them)."""
    task_index, slot, slots = task_slot(client_id, num_clients, len(data.tasks))
    name = data.tasks[task_index]
    dataset = load_task_source(data, name)
    # data.partition-by empty: the label for classification, the category for Q/A.
    partition_by = data.partition_by or ("label" if source_kind(dataset) == "classification" else "category")
    split = load_client_data(
        dataset,
        partitioner=data.partitioner,
        partition_id=slot,
        num_partitions=slots,
        partition_by=partition_by,
        alpha=data.alpha,
        labels_per_client=data.labels_per_client,
        test_fraction=data.test_fraction,
        seed=seed,
        max_train_examples=data.max_train_examples or None,
        max_test_examples=data.max_test_examples or None,
    )
    return name, split
