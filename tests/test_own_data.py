"""A user's own data, end to end: every source form through a real `flwr run`, and the
source forms and pre-flight checks on their own."""

import json
import sys

import datasets
import pytest

from pfl_app.config import ConfigError, parse_run_config
from pfl_app.data.sources import Columns, load_source, source_form
from pfl_app.launch import Scenario, launch
from pfl_app.preflight import _smallest_fraction, check_data, check_federation_fit, check_model, sampled_clients

from .helpers import TINY

TOPICS = ("sport", "art", "news")


def _rows(n=36):
    return [{"body": f"{TOPICS[i % 3]} story number {i} about {TOPICS[i % 3]}", "topic": TOPICS[i % 3]}
            for i in range(n)]


def write_every_form(root):
    """The same rows as .jsonl (in a folder whose name has a space), .json, .csv, .parquet,
    a save_to_disk folder, and a module function; returns the data.tasks entry of each."""
    table = datasets.Dataset.from_list(_rows())
    spaced = root / "my data"
    spaced.mkdir()
    forms = {
        "jsonl": spaced / "news items.jsonl",
        "json": root / "items.json",
        "csv": root / "items.csv",
        "parquet": root / "items.parquet",
        "folder": root / "saved",
    }
    forms["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    forms["json"].write_text(json.dumps(_rows()))
    table.to_csv(str(forms["csv"]), index=False)
    table.to_parquet(str(forms["parquet"]))
    table.save_to_disk(str(forms["folder"]))
    package = root / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "newsdata.py").write_text(
        "import datasets\n\n\ndef load():\n"
        f"    return datasets.Dataset.from_list({_rows()!r})\n"
    )
    entries = {k: str(v) for k, v in forms.items()}
    entries["function"] = "userpkg.newsdata:load"
    return entries


@pytest.fixture
def user_package_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    # Inherited by the SuperLink, flwr-simulation and Ray's workers, which import it too.
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    yield tmp_path
    sys.modules.pop("userpkg.newsdata", None)
    sys.modules.pop("userpkg", None)


def test_every_source_form_loads_the_same_rows(user_package_path):
    entries = write_every_form(user_package_path)
    assert {k: source_form(v) for k, v in entries.items()} == {
        "jsonl": "file", "json": "file", "csv": "file", "parquet": "file", "folder": "folder", "function": "function"}
    loaded = {k: load_source(v, Columns(text="body", label="topic")) for k, v in entries.items()}
    for name, ds in loaded.items():
        assert ds.features["label"].names == sorted(TOPICS), name
        assert ds["text"] == [r["body"] for r in _rows()], name


@pytest.mark.simulation
def test_a_run_on_every_source_form_trains_and_scores_each_client(tmp_path, project_dir, user_package_path):
    entries = write_every_form(user_package_path)
    order = list(entries)
    config = {**TINY, "num-server-rounds": 1, "data.partitioner": "iid", "data.tasks": ",".join(entries[k] for k in order),
              "data.text-column": "body", "data.label-column": "topic", "results-dir": str(tmp_path / "results"),
              "run-name": "own-data", "data.max-train-examples": 4, "data.max-test-examples": 4}
    scenario = Scenario({"num-supernodes": len(order), "client-resources-num-cpus": 1}, config)
    status, run_dir = launch(project_dir, scenario, {}, echo=lambda _line: None)
    assert status["status"] == "finished:completed"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["client"] for r in rows) == list(range(len(order)))
    for r in rows:  # client i holds data.tasks[i]: every form was trained on and scored
        assert r["status"] == "ok", r.get("error")
        assert r["task"] == entries[order[r["client"]]]
        assert isinstance(r["personalized_accuracy"], float) and r["num_train_examples"] > 0
    assert json.loads((run_dir / "summary.json").read_text())["client_failures"] == 0


# --- pre-flight checks on their own ---------------------------------------------------

def _cfg(**overrides):
    return parse_run_config({**TINY, **overrides})


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("rows, expected", [
    ([{"text": None if i % 4 == 0 else f"t{i}", "label": i % 2} for i in range(12)],
     r"column 'text' \(data.text-column\) is empty \(null\) in 3 of 12 rows"),
    ([{"text": f"t{i}", "label": "only"} for i in range(12)], "at least two labels"),
    ([{"text": f"t{i}", "label": None if i == 5 else i % 2} for i in range(12)],
     r"column 'label' \(data.label-column\) is empty \(null\) in 1 of 12 rows"),
])
def test_bad_rows_are_named_before_training(tmp_path, rows, expected):
    path = _jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(ConfigError, match=expected) as err:
        check_data(_cfg(**{"data.tasks": path}), 2)
    assert path in str(err.value) and "data.tasks" in str(err.value)


def test_a_broken_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n{"text": "c" "label": 0}\n')
    with pytest.raises(ConfigError, match=r"line 3: not valid JSON"):
        check_data(_cfg(**{"data.tasks": str(path)}), 2)


def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nfine,0\ncaf\xe9,1\n")
    with pytest.raises(ConfigError, match=r"d.csv.*not UTF-8.*line 3"):
        check_data(_cfg(**{"data.tasks": str(path)}), 2)


def test_too_few_rows_for_the_clients_is_refused(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(6)])
    check_data(_cfg(**{"data.tasks": path, "data.partitioner": "iid"}), 2)
    with pytest.raises(ConfigError, match="data.partitioner.*client"):
        check_data(_cfg(**{"data.tasks": path, "data.partitioner": "iid"}), 5)


def test_more_datasets_than_clients_is_refused():
    with pytest.raises(ConfigError, match="data.tasks' lists 3 datasets but the federation has 2"):
        check_data(_cfg(**{"data.tasks": "bbc-news,chatterbot-qa,bbc-news"}), 2)


def test_a_natural_split_must_match_the_number_of_clients():
    with pytest.raises(ConfigError, match="num-supernodes to 5"):
        check_data(_cfg(**{"data.partitioner": "natural"}), 4)
    check_data(_cfg(**{"data.partitioner": "natural"}), 5)


def test_a_max_length_too_short_for_the_prompt_is_refused():
    with pytest.raises(ConfigError, match=r"model.max-length.*allowed: >= \d+"):
        check_data(_cfg(**{"model.max-length": 24}), 2)
    with pytest.raises(ConfigError, match="model.max-length"):
        check_data(_cfg(**{"model.max-length": 12, "data.tasks": "chatterbot-qa",
                           "data.partitioner": "iid"}), 2)


def test_min_clients_and_min_answers_are_checked_against_the_federation():
    check_federation_fit(_cfg(**{"min-clients": 2}), 2)
    with pytest.raises(ConfigError, match="'min-clients' = 3 is more than the federation's 2"):
        check_federation_fit(_cfg(**{"min-clients": 3}), 2)
    with pytest.raises(ConfigError, match="'min-answers' = 3 is more than the 2 client"):
        check_federation_fit(_cfg(**{"min-clients": 2, "min-answers": 3, "fraction-train": 0.5}), 4)


def test_a_fraction_that_samples_fewer_than_min_clients_is_refused_with_what_would_work():
    check_federation_fit(_cfg(**{"fraction-train": 0.1, "fraction-evaluate": 0.1, "min-clients": 2}), 1000)
    check_federation_fit(_cfg(**{"fraction-train": 0.2, "min-clients": 2}), 10)
    with pytest.raises(ConfigError) as err:
        check_federation_fit(_cfg(**{"fraction-train": 0.1, "min-clients": 2}), 10)
    for needle in ("'fraction-train' = 0.1", "'min-clients' = 2", "= 1 client(s)", "fraction-train >= 0.2",
                   "min-clients <= 1"):
        assert needle in str(err.value)
    with pytest.raises(ConfigError, match=r"'fraction-evaluate' = 0.2 .* fraction-evaluate >= 0.3"):
        check_federation_fit(_cfg(**{"fraction-evaluate": 0.2, "min-clients": 30}), 100)
    # a ServerApp counting the nodes connected so far does not know the federation's size
    check_federation_fit(_cfg(**{"fraction-train": 0.1, "min-clients": 2}), 10, size_known=False)


@pytest.mark.parametrize("n", [7, 10, 29, 100, 333, 1000])
@pytest.mark.parametrize("m", [1, 2, 3, 29])
def test_the_suggested_fraction_samples_min_clients_in_floating_point(n, m):
    if m > n:
        return
    f = _smallest_fraction(n, m)
    assert sampled_clients(n, f) >= m and (f == 0.001 or sampled_clients(n, round(f - 0.001, 3)) < m)


def test_a_model_that_is_nowhere_says_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        check_model(_cfg(**{"model.name": "someone/no-such-model"}))
    message = str(err.value)
    assert "not an embedded model (smollm2-135m-instruct, tiny-llama)" in message
    assert "not an existing local folder" in message and "hub" in message
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(ConfigError, match="not a model folder"):
        check_model(_cfg(**{"model.name": str(tmp_path / "weights.bin")}))
    with pytest.raises(ConfigError, match="not a model folder"):
        check_model(_cfg(**{"model.name": str(tmp_path)}))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # a model folder, but no tokenizer
    with pytest.raises(ConfigError, match="'model.name' = .*its tokenizer cannot be loaded"):
        check_data(_cfg(**{"model.name": str(tmp_path)}), 2)


def test_a_source_registered_by_name_loads_through_the_same_path():
    from pfl_app.data.sources import _REGISTERED, register_source

    @register_source("three-topics")
    def three_topics():
        names = datasets.ClassLabel(names=sorted(TOPICS))
        rows = _rows()
        return datasets.Dataset.from_dict(
            {"text": [r["body"] for r in rows], "label": [names.str2int(r["topic"]) for r in rows]},
            features=datasets.Features({"text": datasets.Value("string"), "label": names}))

    try:
        assert source_form("three-topics") == "registered"
        ds = load_source("three-topics")
        assert ds.features["label"].names == sorted(TOPICS) and ds.num_rows == 36
        check_data(_cfg(**{"data.tasks": "three-topics", "data.partitioner": "iid"}), 2)
        with pytest.raises(ValueError, match="registered already"):
            register_source("three-topics")(three_topics)
    finally:
        _REGISTERED.pop("three-topics", None)


def test_a_file_is_parsed_once_while_unchanged_and_again_when_it_changes(tmp_path):
    import os

    path = tmp_path / "d.jsonl"
    _jsonl(path, [{"text": f"t{i}", "label": i % 2} for i in range(6)])
    first = load_source(str(path))
    assert load_source(str(path)) is first  # the pre-flight checks and each client share one parse
    _jsonl(path, [{"text": f"t{i}", "label": i % 3} for i in range(9)])
    os.utime(path, ns=(first_ns := path.stat().st_mtime_ns + 10**9, first_ns))
    again = load_source(str(path))
    assert again is not first and again.num_rows == 9 and again.features["label"].names == ["0", "1", "2"]
