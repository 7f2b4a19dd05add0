"""Tests for pfl_app.data.partition."""

import collections

import datasets
import pytest
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    NaturalIdPartitioner,
    PathologicalPartitioner,
)

from pfl_app.data.partition import PARTITIONERS, load_client_data, make_partitioner
from pfl_app.data.sources import load_source


def _synthetic(n=600, num_labels=6):
    """Label-sorted rows with a unique id, like the embedded corpora."""
    labels = sorted(i % num_labels for i in range(n))
    return datasets.Dataset.from_dict(
        {"id": list(range(n)), "text": [f"t{i}" for i in range(n)], "label": labels},
        features=datasets.Features(
            {
                "id": datasets.Value("int64"),
                "text": datasets.Value("string"),
                "label": datasets.ClassLabel(num_classes=num_labels),
            }
        ),
    )


def _client_rows(ds, kind, num_partitions, **kw):
    out = []
    for pid in range(num_partitions):
        dd = load_client_data(ds, partitioner=kind, partition_id=pid,
                              num_partitions=num_partitions, partition_by="label", **kw)
        out.append(dd)
    return out


def _labels(dd, column="label"):
    return list(dd["train"][column]) + list(dd["test"][column])


def _mean_max_share(clients):
    shares = []
    for dd in clients:
        counts = collections.Counter(_labels(dd))
        shares.append(max(counts.values()) / sum(counts.values()))
    return sum(shares) / len(shares)


def test_make_partitioner_types():
    kw = dict(num_partitions=4, partition_by="label")
    assert isinstance(make_partitioner("iid", **kw), IidPartitioner)
    assert isinstance(make_partitioner("dirichlet", **kw), DirichletPartitioner)
    assert isinstance(make_partitioner("pathological", **kw), PathologicalPartitioner)
    assert isinstance(make_partitioner("natural", **kw), NaturalIdPartitioner)


def test_unknown_partitioner():
    with pytest.raises(ValueError) as err:
        make_partitioner("shards", num_partitions=2, partition_by="label")
    message = str(err.value)
    assert "data.partitioner" in message
    for kind in PARTITIONERS:
        assert kind in message
    with pytest.raises(ValueError, match="data.partitioner"):
        load_client_data(_synthetic(), partitioner="shards", partition_id=0,
                         num_partitions=2, partition_by="label")


def test_iid_disjoint_cover_and_mixed():
    ds = _synthetic()
    clients = _client_rows(ds, "iid", 5)
    ids = [set(_labels(dd, "id")) for dd in clients]
    assert sum(len(s) for s in ids) == ds.num_rows
    assert set().union(*ids) == set(range(ds.num_rows))
    # The source is label-sorted; IID clients must still see every label.
    for dd in clients:
        assert len(set(_labels(dd))) == 6


def test_dirichlet_skews_labels_more_than_iid():
    ds = load_source("bbc-news")
    iid = _mean_max_share(_client_rows(ds, "iid", 10))
    skewed = _mean_max_share(_client_rows(ds, "dirichlet", 10, alpha=0.1))
    assert iid < 0.35
    assert skewed > iid + 0.3


def test_pathological_at_most_k_labels():
    ds = _synthetic()
    clients = _client_rows(ds, "pathological", 8, labels_per_client=2)
    used = set()
    for dd in clients:
        labels = set(_labels(dd))
        assert 1 <= len(labels) <= 2
        used |= labels
    # "first-deterministic" uses every class when clients >= classes.
    assert used == set(range(6))


def test_natural_one_category_per_client():
    ds = load_source("chatterbot-qa")
    n = len(ds.features["category"].names)
    seen = []
    for pid in range(n):
        dd = load_client_data(ds, partitioner="natural", partition_id=pid,
                              num_partitions=n, partition_by="category")
        cats = set(_labels(dd, "category"))
        assert len(cats) == 1
        seen.append(cats.pop())
    assert sorted(seen) == list(range(n))


def test_natural_wrong_client_count():
    ds = load_source("chatterbot-qa")
    with pytest.raises(ValueError) as err:
        load_client_data(ds, partitioner="natural", partition_id=0,
                         num_partitions=5, partition_by="category")
    message = str(err.value)
    assert "num-supernodes" in message
    assert "21" in message and "5" in message


def test_train_test_disjoint_and_deterministic():
    ds = _synthetic()
    kw = dict(partitioner="dirichlet", partition_id=2, num_partitions=4,
              partition_by="label", alpha=0.5, seed=7)
    a = load_client_data(ds, **kw)
    b = load_client_data(ds, **kw)
    assert not set(a["train"]["id"]) & set(a["test"]["id"])
    assert list(a["train"]["id"]) == list(b["train"]["id"])
    assert list(a["test"]["id"]) == list(b["test"]["id"])
    assert a["test"].num_rows == pytest.approx(0.2 * (a["train"].num_rows
                                                      + a["test"].num_rows), abs=1)
    # A fresh dataset object with the same content gives the same split.
    c = load_client_data(_synthetic(), **kw)
    assert list(a["train"]["id"]) == list(c["train"]["id"])


def test_caps_are_deterministic_subsets():
    ds = _synthetic()
    kw = dict(partitioner="iid", partition_id=0, num_partitions=2, partition_by="label")
    full = load_client_data(ds, **kw)
    capped = load_client_data(ds, max_train_examples=10, max_test_examples=3, **kw)
    again = load_client_data(ds, max_train_examples=10, max_test_examples=3, **kw)
    assert capped["train"].num_rows == 10 and capped["test"].num_rows == 3
    assert set(capped["train"]["id"]) <= set(full["train"]["id"])
    assert set(capped["test"]["id"]) <= set(full["test"]["id"])
    assert list(capped["train"]["id"]) == list(again["train"]["id"])


def test_too_small_partition():
    ds = _synthetic(n=6)
    with pytest.raises(ValueError, match="Partition 0 has 1 example"):
        load_client_data(ds, partitioner="iid", partition_id=0, num_partitions=6,
                         partition_by="label")


def test_impossible_dirichlet_is_explained():
    ds = _synthetic(n=60)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="fewer clients"):
        load_client_data(ds, partitioner="dirichlet", partition_id=0,
                         num_partitions=50, partition_by="label", alpha=0.01)


def test_partitioner_is_reused_across_partitions(monkeypatch):
    import pfl_app.data.partition as partition

    calls = []
    real = partition.make_partitioner
    monkeypatch.setattr(partition, "make_partitioner",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    ds = _synthetic(n=300)
    for pid in range(3):
        load_client_data(ds, partitioner="dirichlet", partition_id=pid,
                         num_partitions=3, partition_by="label", seed=123)
    assert len(calls) <= 1
