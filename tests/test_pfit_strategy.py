"""PFIT's reward-weighted aggregation and the RLHF strategies' messages, on real Flower messages."""

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from pfl_app.records import from_arrayrecord, to_arrayrecord
from pfl_app.strategies import PFIT, RlhfFedAvgUniform, RlhfLocal, RlhfSingleReward
from pfl_app.strategies.pfit import reward_weights

from .helpers import FakeGrid, configured_round


LORA_B = "base_model.model.model.layers.1.self_attn.q_proj.lora_B.default.weight"


def test_reward_weights_are_examples_times_a_softmax_of_rewards():
    w = reward_weights([10, 30], [1.0, 0.0], temperature=1.0)
    expected = np.array([10 * math.e, 30 * 1.0])
    np.testing.assert_allclose(w, expected / expected.sum())
    assert sum(w) == pytest.approx(1.0)


def test_infinite_temperature_is_fedavg_and_a_cold_one_picks_the_best_client():
    assert reward_weights([10, 30], [5.0, -5.0], math.inf) == pytest.approx([0.25, 0.75])
    cold = reward_weights([1, 1, 1], [0.2, 0.9, 0.1], 0.001)
    assert cold[1] == pytest.approx(1.0) and cold[0] < 1e-100
    # Only differences in reward matter, and huge rewards do not overflow.
    assert reward_weights([1, 2], [1000.0, 999.0], 1.0) == pytest.approx(reward_weights([1, 2], [1.0, 0.0], 1.0))
    with pytest.raises(ValueError, match="temperature"):
        reward_weights([1], [0.0], 0.0)


def _reply(msg, value, n, reward):
    return Message(RecordDict({
        "arrays": to_arrayrecord({LORA_B: np.full(3, value, np.float32)}),
        "metrics": MetricRecord({"num-examples": n, "train-loss": 0.1, "train-reward": reward}),
        "client": ConfigRecord({"client-id": int(value), "task": "rlhf"}),
    }), reply_to=msg)


def test_pfit_averages_the_policy_lora_by_reward_and_records_the_weights(flower_identity):
    strategy = PFIT(method="pfit", min_available_nodes=2, min_train_nodes=2)
    strategy.temperature = 0.5
    msgs, _ = configured_round(strategy, [11, 22], {LORA_B: np.zeros(3, np.float32)})
    config = msgs[11].content["config"]
    assert config["shared-groups"] == "lora_A,lora_B" and config["preference"] == "own"
    assert config["start-from"] == "personal"  # each client carries its own policy on
    arrays, _ = strategy.aggregate_train(1, [_reply(msgs[11], 1.0, 8, 0.5), _reply(msgs[22], 2.0, 8, -0.5)])
    w = reward_weights([8, 8], [0.5, -0.5], 0.5)
    np.testing.assert_allclose(from_arrayrecord(arrays)[LORA_B], np.full(3, w[0] * 1.0 + w[1] * 2.0), rtol=1e-6)
    assert w[0] > 0.85  # e^2 : 1
    rows = strategy._ledger_for(1).rows()
    assert [r["aggregation_weight"] for r in rows] == pytest.approx(w)
    assert [r["train_reward"] for r in rows] == [0.5, -0.5]


def test_pfit_at_infinite_temperature_matches_fedavg(flower_identity):
    strategy = PFIT(method="pfit", min_available_nodes=2, min_train_nodes=2)
    strategy.temperature = math.inf
    msgs, _ = configured_round(strategy, [11, 22], {LORA_B: np.zeros(3, np.float32)})
    arrays, _ = strategy.aggregate_train(1, [_reply(msgs[11], 1.0, 1, 9.0), _reply(msgs[22], 4.0, 3, -9.0)])
    np.testing.assert_allclose(from_arrayrecord(arrays)[LORA_B], np.full(3, 3.25))


@pytest.mark.parametrize("metrics", [{"num-examples": 1, "train-loss": 0.1},
                                     {"num-examples": 1, "train-loss": 0.1, "train-reward": float("nan")}])
def test_an_update_without_a_usable_reward_is_rejected(flower_identity, metrics):
    strategy = PFIT(method="pfit", min_available_nodes=2, min_train_nodes=2)
    msgs, _ = configured_round(strategy, [11, 22], {LORA_B: np.zeros(3, np.float32)})
    plain = Message(RecordDict({"arrays": to_arrayrecord({LORA_B: np.full(3, 50.0, np.float32)}),
                                "metrics": MetricRecord(metrics)}), reply_to=msgs[11])
    arrays, _ = strategy.aggregate_train(1, [plain, _reply(msgs[22], 1.0, 1, 0.0)])
    np.testing.assert_allclose(from_arrayrecord(arrays)[LORA_B], np.ones(3))
    assert [n for _, n, _ in strategy.rejected] == [11] and "train-reward" in strategy.rejected[0][2]


def test_baselines_send_uniform_preferences_or_nothing_and_the_last_round_asks_for_the_base_model(flower_identity):
    uniform = RlhfFedAvgUniform(method="rlhf-fedavg", min_available_nodes=1, min_train_nodes=1, min_evaluate_nodes=1)
    msgs, _ = configured_round(uniform, [5], {LORA_B: np.zeros(3, np.float32)})
    assert msgs[5].content["config"]["preference"] == "uniform"
    assert msgs[5].content["config"]["start-from"] == "global"  # plain FedAvg restarts from the average
    single = RlhfSingleReward(method="rlhf-single", min_available_nodes=1, min_train_nodes=1)
    msgs, _ = configured_round(single, [5], {LORA_B: np.zeros(3, np.float32)})
    assert msgs[5].content["config"]["preference"] == "helpfulness"
    local = RlhfLocal(method="rlhf-local", min_available_nodes=1, min_train_nodes=1, min_evaluate_nodes=1)
    msgs, _ = configured_round(local, [5], {})
    assert msgs[5].content["config"]["shared-groups"] == "none"
    assert msgs[5].content["config"]["trained-groups"] == "lora_A,lora_B"
    uniform.num_rounds = 2
    for rnd, expected in ((1, False), (2, True)):
        (ev,) = uniform.configure_evaluate(rnd, to_arrayrecord({}), ConfigRecord({"run-dir": "/x"}), FakeGrid([5]))
        assert ev.content["config"]["last-round"] is expected
