"""Split a dataset across simulated clients with flwr-datasets partitioners."""

from __future__ import annotations

import collections

import datasets
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    NaturalIdPartitioner,
    PathologicalPartitioner,
    Partitioner,
)

PARTITIONERS = ("iid", "dirichlet", "pathological", "natural")

# A few (dataset, settings) combinations per process is typical; keep the
# cache small because each entry holds a reference to its dataset.
_CACHE_SIZE = 8
_partitioner_cache: collections.OrderedDict[tuple, Partitioner] = collections.OrderedDict()


def make_partitioner(
    kind: str,
    *,
    num_partitions: int,
    partition_by: str,
    alpha: float = 0.5,
    labels_per_client: int = 2,
    seed: int = 0,
    min_partition_size: int = 2,
) -> Partitioner:
    """Build an (unassigned) flwr-datasets partitioner.

    Parameters
    ----------
    kind : str
        One of :data:`PARTITIONERS`.
    num_partitions : int
        Number of clients. Ignored by ``"natural"``, whose number of
        partitions is the number of unique values of ``partition_by``.
    partition_by : str
        Column holding the label (dirichlet, pathological) or the natural id
        (natural). Unused by ``"iid"``.
    alpha : float
        Dirichlet concentration; smaller means more label skew.
    labels_per_client : int
        Number of distinct labels per client for ``"pathological"``.
    seed : int
        Random seed.
    min_partition_size : int
        Smallest partition the Dirichlet sampler accepts before resampling.

    Returns
    -------
    flwr_datasets.partitioner.Partitioner
        A partitioner without a dataset assigned.
    """
    if kind == "iid":
        # IidPartitioner takes contiguous shards without shuffling; callers
        # must shuffle first (load_client_data does).
        return IidPartitioner(num_partitions=num_partitions)
    if kind == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by=partition_by,
            alpha=float(alpha),
            min_partition_size=min_partition_size,
            # Stop giving a client more of later classes once it is above the
            # mean size, so small alphas do not make one giant client.
            self_balancing=True,
            seed=seed,
        )
    if kind == "pathological":
        # "first-deterministic" gives client i class i % num_classes first, so
        # every class is used whenever num_partitions >= num_classes; "random"
        # can leave classes unused (it only warns).
        return PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by=partition_by,
            num_classes_per_partition=labels_per_client,
            class_assignment_mode="first-deterministic",
            seed=seed,
        )
    if kind == "natural":
        return NaturalIdPartitioner(partition_by=partition_by)
    raise ValueError(
        f"Unknown data.partitioner {kind!r}; allowed values: {', '.join(PARTITIONERS)}."
    )


def load_client_data(
    dataset: datasets.Dataset,
    *,
    partitioner: str,
    partition_id: int,
    num_partitions: int,
    partition_by: str,
    alpha: float = 0.5,
    labels_per_client: int = 2,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train_examples: int | None = None,
    max_test_examples: int | None = None,
) -> datasets.DatasetDict:
    """Load one client's partition, split into ``train`` and ``test``.

    Parameters
    ----------
    dataset : datasets.Dataset
        The full (standardized) dataset.
    partitioner : str
        One of :data:`PARTITIONERS`.
    partition_id : int
        Index of this client, ``0 <= partition_id < num_partitions``.
    num_partitions : int
        Number of clients. For ``"natural"`` it must equal the number of
        unique values in ``partition_by``.
    partition_by : str
        Label / natural-id column (see :func:`make_partitioner`).
    alpha, labels_per_client : float, int
        Passed to :func:`make_partitioner`.
    test_fraction : float
        Fraction of the partition held out as ``test``.
    seed : int
        Seed for partitioning, the split and capping.
    max_train_examples, max_test_examples : int or None
        Keep at most this many (randomly chosen) examples in each split.

    Returns
    -------
    datasets.DatasetDict
        ``train`` and ``test`` splits of the client's partition; the same
        arguments always give the same rows.
    """
    if partition_by not in dataset.column_names and partitioner != "iid":
        raise ValueError(
            f"Cannot partition by {partition_by!r}: the dataset has columns "
            f"{dataset.column_names}."
        )
    if num_partitions < 1:
        raise ValueError(f"The number of clients must be >= 1, got {num_partitions}.")
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"partition_id {partition_id} is out of range for {num_partitions} clients."
        )
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")

    part = _assigned_partitioner(
        dataset, partitioner, num_partitions, partition_by,
        float(alpha), int(labels_per_client), int(seed),
    )
    client = part.load_partition(partition_id)

    if client.num_rows < 2:
        raise ValueError(
            f"Partition {partition_id} has {client.num_rows} example(s); at least 2 "
            f"are needed for a train/test split. Use fewer clients or a larger alpha."
        )
    # keep_in_memory: only an indices mapping is made, no need for cache files.
    split = client.train_test_split(test_size=test_fraction, seed=seed, keep_in_memory=True)
    return datasets.DatasetDict(
        train=_cap(split["train"], max_train_examples, seed),
        test=_cap(split["test"], max_test_examples, seed),
    )


def _cap(ds: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """Keep a seeded random subset of at most ``limit`` rows."""
    if limit is None or ds.num_rows <= limit:
        return ds
    return ds.shuffle(seed=seed, keep_in_memory=True).select(range(max(int(limit), 0)))


def _assigned_partitioner(
    dataset: datasets.Dataset,
    kind: str,
    num_partitions: int,
    partition_by: str,
    alpha: float,
    labels_per_client: int,
    seed: int,
) -> Partitioner:
    """Return a partitioner with ``dataset`` assigned, cached per process.

    The partitioners compute all partitions' indices on first use, so reusing
    the object makes loading further partitions cheap.
    """
    key = (dataset._fingerprint, kind, num_partitions, partition_by, alpha,
           labels_per_client, seed)
    cached = _partitioner_cache.get(key)
    if cached is not None:
        _partitioner_cache.move_to_end(key)
        return cached

    part = make_partitioner(
        kind,
        num_partitions=num_partitions,
        partition_by=partition_by,
        alpha=alpha,
        labels_per_client=labels_per_client,
        seed=seed,
    )
    if kind == "iid":
        # Contiguous shards of a class-sorted corpus would not be IID.
        dataset = dataset.shuffle(seed=seed, keep_in_memory=True)
    if kind == "natural":
        n_ids = len(dataset.unique(partition_by))
        if n_ids != num_partitions:
            raise ValueError(
                f"The 'natural' partitioner makes one client per {partition_by!r} "
                f"value: the dataset has {n_ids} categories but num-supernodes "
                f"(the number of clients) is {num_partitions}. Set num-supernodes "
                f"to {n_ids}."
            )
    part.dataset = dataset
    try:
        # Forces the (lazy) index assignment now, so a failure is reported
        # here and a half-built partitioner never enters the cache.
        _ = part.num_partitions
    except ValueError as exc:
        raise ValueError(
            f"The {kind!r} partitioner could not split {dataset.num_rows} examples "
            f"into {num_partitions} clients by {partition_by!r} (alpha={alpha}, "
            f"labels_per_client={labels_per_client}); use fewer clients, a larger "
            f"alpha or fewer labels per client. Cause: {exc}"
        ) from exc

    _partitioner_cache[key] = part
    while len(_partitioner_cache) > _CACHE_SIZE:
        _partitioner_cache.popitem(last=False)
    return part
