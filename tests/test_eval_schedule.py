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
