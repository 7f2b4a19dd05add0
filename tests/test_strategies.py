"""The strategies' defining behaviour, checked on real Flower messages."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from pfl_app.records import from_arrayrecord, message_bytes, to_arrayrecord
from pfl_app.strategies import PFTT, SendAll
from pfl_app.strategies.validation import update_problem

from .helpers import ADAPTER, LORA_A, FakeGrid, client_reply, configured_round

def test_pftt_sends_and_averages_only_adapters_weighted_by_examples(flower_identity):
    strategy = PFTT(method="pftt", min_available_nodes=2, min_train_nodes=2)
    msgs, _ = configured_round(strategy, [11, 22], {ADAPTER: np.zeros((2, 2), np.float32)})
    assert all(m.content["config"]["shared-groups"] == "adapter" for m in msgs.values())
    replies = [
        client_reply(msgs[11], {ADAPTER: np.full((2, 2), 1.0, np.float32)}, n=1, client=0),
        client_reply(msgs[22], {ADAPTER: np.full((2, 2), 4.0, np.float32)}, n=3, client=1),
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(from_arrayrecord(arrays)[ADAPTER], np.full((2, 2), 3.25))  # (1*1 + 3*4) / 4
    assert metrics["train-loss"] == pytest.approx(0.5)


def test_an_update_carrying_lora_is_rejected_and_never_averaged(flower_identity):
    strategy = PFTT(method="pftt", min_available_nodes=2, min_train_nodes=2)
    msgs, _ = configured_round(strategy, [11, 22], {ADAPTER: np.zeros(3, np.float32)})
    leaky = {ADAPTER: np.full(3, 100.0, np.float32), LORA_A: np.ones(2, np.float32)}
    arrays, _ = strategy.aggregate_train(
        1, [client_reply(msgs[11], {ADAPTER: np.ones(3, np.float32)}), client_reply(msgs[22], leaky)]
    )
    np.testing.assert_array_equal(from_arrayrecord(arrays)[ADAPTER], np.ones(3))
    assert [(r, n) for r, n, _ in strategy.rejected] == [(1, 22)]
    assert "not shared" in strategy.rejected[0][2]


@pytest.mark.parametrize(
    "bad, why",
    [({ADAPTER: np.full(3, np.nan, np.float32)}, "NaN"), ({ADAPTER: np.ones(4, np.float32)}, "shape"), ({}, "lacks")],
)
def test_malformed_updates_are_rejected(flower_identity, bad, why):
    strategy = PFTT(method="pftt", min_available_nodes=2, min_train_nodes=2)
    msgs, _ = configured_round(strategy, [11, 22], {ADAPTER: np.zeros(3, np.float32)})
    arrays, _ = strategy.aggregate_train(
        1, [client_reply(msgs[11], {ADAPTER: np.full(3, 2.0, np.float32)}), client_reply(msgs[22], bad)]
    )
    np.testing.assert_array_equal(from_arrayrecord(arrays)[ADAPTER], np.full(3, 2.0))
    assert why in strategy.rejected[0][2]


def test_a_round_with_no_usable_update_keeps_the_old_tensors(flower_identity):
    strategy = PFTT(method="pftt", min_available_nodes=2, min_train_nodes=2)
    msgs, _ = configured_round(strategy, [11, 22], {ADAPTER: np.zeros(3, np.float32)})
    failed = Message(Error(code=0, reason="boom"), reply_to=msgs[11])
    assert strategy.aggregate_train(1, [failed, client_reply(msgs[22], {})]) == (None, None)


def test_a_silent_nodes_error_from_the_superlink_is_booked_to_that_node(flower_identity):
    from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

    strategy = PFTT(method="pftt", min_available_nodes=2, min_train_nodes=2)
    msgs, rows = configured_round(strategy, [11, 22], {ADAPTER: np.zeros(3, np.float32)})
    for i, m in enumerate(msgs.values()):  # what the grid does when it sends them
        m.metadata.__dict__["_message_id"] = f"ins-{i}"
    # The SuperLink's own reply for a node whose heartbeat stopped (from node id 1).
    unavailable = create_message_error_unavailable_res_message(msgs[22].metadata, "node_unavail")
    assert unavailable.metadata.src_node_id not in (11, 22)
    strategy.aggregate_train(1, [client_reply(msgs[11], {ADAPTER: np.ones(3, np.float32)}), unavailable])
    evaluate = {m.metadata.dst_node_id: m for m in strategy.configure_evaluate(
        1, to_arrayrecord({ADAPTER: np.ones(3, np.float32)}), ConfigRecord(), FakeGrid([11, 22]))}
    strategy.aggregate_evaluate(1, [Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}),
                                            reply_to=evaluate[11])])
    by_node = {r["node"]: r for r in rows}
    assert set(by_node) == {11, 22}
    assert by_node[22]["status"] == "error" and "heartbeat" in by_node[22]["error"]
    assert by_node[22]["bytes_down"] > 0  # the instruction it never answered


def test_bytes_are_measured_on_the_messages_both_ways(flower_identity):
    strategy = SendAll(method="send-all", min_available_nodes=1, min_train_nodes=1, min_evaluate_nodes=1)
    glob = {ADAPTER: np.zeros((4, 4), np.float32), LORA_A: np.zeros(8, np.float32)}
    msgs, rows = configured_round(strategy, [7], glob)
    assert msgs[7].content["config"]["shared-groups"] == "adapter,lora_A,lora_B"
    reply = client_reply(msgs[7], {k: v + 1 for k, v in glob.items()})
    strategy.aggregate_train(1, [reply])
    evals = list(strategy.configure_evaluate(1, to_arrayrecord(glob), ConfigRecord(), FakeGrid([7])))
    eval_reply = Message(
        RecordDict({"metrics": MetricRecord({"num-examples": 2, "personalized-accuracy": 0.5}),
                    "client": ConfigRecord({"client-id": 3, "task": "t"})}),
        reply_to=evals[0],
    )
    strategy.aggregate_evaluate(1, [eval_reply])
    (row,) = rows
    assert row["bytes_down"] == message_bytes(msgs[7]) + message_bytes(evals[0])
    assert row["bytes_up"] == message_bytes(reply) + message_bytes(eval_reply)
    # the arrays dominate: 16 + 8 float32 values each way at least
    assert row["bytes_up"] > 24 * 4
    assert row["client"] == 3 and row["personalized_accuracy"] == 0.5 and row["method"] == "send-all"


def test_update_problem_accepts_a_well_formed_update():
    assert update_problem({"a": np.zeros(2)}, {"a": (2,)}) is None
    assert "Inf" in update_problem({"a": np.array([np.inf, 0])}, {"a": (2,)})


def test_too_few_answers_stop_the_run_with_a_clear_message(flower_identity):
    from pfl_app.strategies.base import TooFewClients

    strategy = PFTT(method="pftt", min_available_nodes=2, min_train_nodes=3)
    strategy.min_answers = 2
    msgs, _ = configured_round(strategy, [11, 22, 33], {ADAPTER: np.zeros(3, np.float32)})
    ok = client_reply(msgs[11], {ADAPTER: np.ones(3, np.float32)})
    failed = [Message(Error(code=0, reason="boom"), reply_to=msgs[n]) for n in (22, 33)]
    with pytest.raises(TooFewClients, match="round 1: 1 of 3 client\\(s\\) answered \\(2 failed, 0 timed out.*min-answers=2"):
        strategy.aggregate_train(1, [ok, *failed])
    # two answers of three are enough, the failed one is left out
    arrays, _ = strategy.aggregate_train(1, [ok, client_reply(msgs[22], {ADAPTER: np.full(3, 3.0, np.float32)}), failed[1]])
    np.testing.assert_allclose(from_arrayrecord(arrays)[ADAPTER], np.full(3, 2.0))


def test_an_update_that_moved_far_more_than_the_others_is_rejected(flower_identity):
    strategy = PFTT(method="pftt", min_available_nodes=1, min_train_nodes=4)
    msgs, _ = configured_round(strategy, [1, 2, 3, 4], {ADAPTER: np.zeros(4, np.float32)})
    replies = [client_reply(msgs[n], {ADAPTER: np.full(4, v, np.float32)}) for n, v in ((1, 1.0), (2, 1.2), (3, 0.9), (4, 500.0))]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(from_arrayrecord(arrays)[ADAPTER], np.full(4, (1.0 + 1.2 + 0.9) / 3), rtol=1e-6)
    assert [n for _, n, _ in strategy.rejected] == [4] and "median" in strategy.rejected[0][2]
    strategy.norm_factor = 0.0  # off: everything is averaged
    msgs, _ = configured_round(strategy, [1, 2, 3, 4], {ADAPTER: np.zeros(4, np.float32)})
    replies = [client_reply(msgs[n], {ADAPTER: np.full(4, v, np.float32)}) for n, v in ((1, 1.0), (2, 1.2), (3, 0.9), (4, 500.0))]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert from_arrayrecord(arrays)[ADAPTER][0] > 100
