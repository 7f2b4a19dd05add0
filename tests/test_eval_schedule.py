"""Which rounds and clients evaluate: ``eval.every`` and ``eval.fraction``."""

import random

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from pfl_app.config import ConfigError, defaults, parse_run_config
from pfl_app.records import to_arrayrecord
from pfl_app.strategies import PFTT

from .helpers import ADAPTER, FakeGrid

NODES = list(range(1, 11))


def _strategy(**options):
    return PFTT(method="pftt", min_available_nodes=1, min_evaluate_nodes=1, **options)


def _evaluate_round(strategy, server_round, value):
    """Run one round's evaluation on FakeGrid(NODES); returns the nodes asked and what
    on_round_end received."""
    ended = {}
    strategy.on_round_end = lambda r, rows, shared: ended.update(round=r, rows=rows, shared=shared)
    arrays = to_arrayrecord({ADAPTER: np.full(3, value, np.float32)})
    msgs = list(strategy.configure_evaluate(server_round, arrays, ConfigRecord(), FakeGrid(NODES)))
    replies = [Message(RecordDict({"metrics": MetricRecord({"num-examples": 1, "personalized-accuracy": 0.5})}),
                       reply_to=m) for m in msgs]
    strategy.aggregate_evaluate(server_round, replies)
    return sorted(m.metadata.dst_node_id for m in msgs), ended


def test_eval_every_skips_rounds_but_never_the_last(flower_identity):
    strategy = _strategy(eval_every=2, num_rounds=5)
    asked = {r: _evaluate_round(strategy, r, float(r))[0] for r in range(1, 6)}
    assert asked == {1: [], 2: NODES, 3: [], 4: NODES, 5: NODES}


def test_a_round_without_evaluation_still_ends_with_its_own_global_tensors(flower_identity):
    strategy = _strategy(eval_every=3, num_rounds=3)
    _evaluate_round(strategy, 1, 1.0)
    asked, ended = _evaluate_round(strategy, 2, 2.0)
    assert asked == [] and ended["round"] == 2 and ended["rows"] == []
    # Not round 1's tensors: the checkpoint of round 2 must hold round 2's.
    np.testing.assert_array_equal(ended["shared"][ADAPTER], np.full(3, 2.0, np.float32))


def test_eval_fraction_thins_rounds_before_the_last_only(flower_identity):
    random.seed(0)
    strategy = _strategy(eval_fraction=0.3, num_rounds=2)
    first, ended = _evaluate_round(strategy, 1, 1.0)
    assert len(first) == 3 and set(first) <= set(NODES)
    assert sorted(r["node"] for r in ended["rows"]) == first
    assert _evaluate_round(strategy, 2, 2.0)[0] == NODES


def test_eval_fraction_keeps_at_least_one_client(flower_identity):
    strategy = _strategy(eval_fraction=0.01, num_rounds=9)
    assert len(_evaluate_round(strategy, 1, 1.0)[0]) == 1


def test_defaults_evaluate_every_client_every_round(flower_identity):
    strategy = _strategy()
    assert all(_evaluate_round(strategy, r, 0.0)[0] == NODES for r in (1, 2, 3))


def test_the_run_config_reaches_the_strategy():
    cfg = parse_run_config({**defaults(), "eval.every": 4, "eval.fraction": 0.5, "num-server-rounds": 9})
    strategy = PFTT.from_run_config(cfg, method="pftt")
    assert (strategy.eval_every, strategy.eval_fraction, strategy.num_rounds) == (4, 0.5, 9)


@pytest.mark.parametrize("key, value, allowed", [
    ("eval.every", 0, "a number > 0"),
    ("eval.every", 1.5, "int"),
    ("eval.fraction", 0.0, "(0, 1]"),
    ("eval.fraction", 1.5, "(0, 1]"),
])
def test_bad_evaluation_settings_are_refused_naming_the_key(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        parse_run_config({**defaults(), key: value})
    assert key in str(err.value) and allowed in str(err.value)


@pytest.mark.parametrize("option, value", [("eval_every", 0), ("eval_fraction", 0.0), ("num_rounds", -1)])
def test_the_strategy_checks_its_evaluation_settings(option, value):
    with pytest.raises(ValueError, match=option):
        _strategy(**{option: value})


def _train_round(strategy, server_round, nodes, scores=None):
    """Configure and aggregate one train round on ``nodes``; each reply carries ``scores``
    (prefixed received-) when given. Returns the train messages by node."""
    from .helpers import client_reply

    glob = {ADAPTER: np.zeros(3, np.float32)}
    msgs = {m.metadata.dst_node_id: m for m in strategy.configure_train(
        server_round, to_arrayrecord(glob), ConfigRecord({"run-dir": "/x"}), FakeGrid(nodes))}
    replies = []
    for i, (node, msg) in enumerate(sorted(msgs.items())):
        reply = client_reply(msg, {ADAPTER: np.full(3, 0.1, np.float32)}, client=i)
        if scores is not None:
            for k, v in {**scores, "num-examples": 7}.items():
                reply.content["metrics"][f"received-{k}"] = v + i if k != "num-examples" else v
        replies.append(reply)
    strategy.aggregate_train(server_round, replies)
    return msgs


def test_eval_in_train_scores_the_last_round_in_the_next_train_message(flower_identity):
    nodes = [11, 22]
    strategy = _strategy(eval_in_train=True, num_rounds=3)
    ended = []
    strategy.on_round_end = lambda r, rows, shared: ended.append((r, rows))
    for r in (1, 2, 3):
        msgs = _train_round(strategy, r, nodes, scores={"personalized-accuracy": 0.5, "global-accuracy": 0.25}
                            if r > 1 else None)
        # Round 1 receives the initial model: nothing of a delivered round to score.
        assert all(bool(m.content["config"].get("score-received", False)) == (r > 1) for m in msgs.values())
        evals = list(strategy.configure_evaluate(r, to_arrayrecord({ADAPTER: np.zeros(3, np.float32)}),
                                                 ConfigRecord(), FakeGrid(nodes)))
        # No second downlink of the same tensors, but in the last round, which has no next one.
        assert len(evals) == (2 if r == 3 else 0)
        replies = [Message(RecordDict({"metrics": MetricRecord({"num-examples": 1, "personalized-accuracy": 0.9})}),
                           reply_to=m) for m in evals]
        strategy.aggregate_evaluate(r, replies)
    scored = {r: [row for row in rows if row.get("status") == "scored"] for r, rows in ended}
    assert scored[1] == [] and [row["round"] for row in scored[2]] == [1, 1] and [row["round"] for row in scored[3]] == [2, 2]
    first = sorted(scored[2], key=lambda row: row["client"])
    assert [row["personalized_accuracy"] for row in first] == [0.5, 1.5]
    assert [row["global_accuracy"] for row in first] == [0.25, 1.25]
    assert all(row["num_test_examples"] == 7 and row["scored_in_round"] == 2 and row["bytes_up"] == 0
               for row in first)
    last = [row for row in ended[-1][1] if row["round"] == 3]
    assert [row["personalized_accuracy"] for row in last] == [0.9, 0.9]


def test_eval_in_train_follows_eval_every(flower_identity):
    strategy = _strategy(eval_in_train=True, eval_every=2, num_rounds=5)
    asks = {r: any(m.content["config"].get("score-received", False)
                   for m in _train_round(strategy, r, [11, 22]).values()) for r in range(1, 6)}
    assert asks == {1: False, 2: False, 3: True, 4: False, 5: True}


def test_eval_in_train_is_refused_for_an_rlhf_method():
    with pytest.raises(ConfigError, match="eval.in-train"):
        parse_run_config({**defaults(), "eval.in-train": True, "method": "pfit"})


def test_scored_rows_are_written_under_the_round_they_score(tmp_path, capsys):
    from pfl_app.plots import load_run, round_curve
    from pfl_app.results import RunRecorder

    cfg = parse_run_config({**defaults(), "eval.in-train": True, "num-server-rounds": 2})
    recorder = RunRecorder(tmp_path / "run", cfg)
    train = {"node": 1, "client": 0, "status": "ok", "bytes_up": 10, "bytes_down": 20, "method": "pftt"}
    recorder.round_done(1, [{**train, "round": 1}])
    scored = {"round": 1, "node": 1, "client": 0, "status": "scored", "scored_in_round": 2, "bytes_up": 0,
              "bytes_down": 0, "personalized_accuracy": 0.75, "global_accuracy": 0.5, "method": "pftt"}
    final = {**train, "round": 2, "personalized_accuracy": 0.875, "global_accuracy": 0.625}
    recorder.round_done(2, [final, scored])
    line = capsys.readouterr().out.splitlines()[-1]
    assert "0.875" in line and "0.750" not in line  # round 2's line shows round 2's scores
    summary = recorder.summary()
    assert summary["personalized_accuracy_mean"] == 0.875 and summary["uplink_bytes_total"] == 20
    _, rows = load_run(tmp_path / "run")
    curve = round_curve(rows)
    assert [p["personalized_accuracy"] for p in curve] == [0.75, 0.875]
