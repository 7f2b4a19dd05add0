"""Flower's server optimizers composed with our strategies."""

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.serverapp.strategy import FedAdam, FedProx

from pfl_app.client.task_tuning import handle_train
from pfl_app.config import SERVER_OPTIMIZERS as CONFIG_OPTIMIZERS
from pfl_app.models.personalized import shared_model_bundle
from pfl_app.records import from_arrayrecord, to_arrayrecord
from pfl_app.strategies import PFTT, STRATEGIES
from pfl_app.strategies.server_optimizers import SERVER_OPTIMIZERS, build_strategy

from .helpers import ADAPTER, LORA_A, FakeGrid, client_context, client_reply, server_message


def test_config_offers_exactly_the_available_optimizers():
    assert set(CONFIG_OPTIMIZERS) == set(SERVER_OPTIMIZERS)


@pytest.mark.parametrize("optimizer", sorted(SERVER_OPTIMIZERS))
def test_every_method_composes_with_every_optimizer(optimizer):
    for method in STRATEGIES:
        strategy = build_strategy(method, STRATEGIES, optimizer=optimizer, learning_rate=0.1, proximal_mu=0.5)
        assert isinstance(strategy, STRATEGIES[method]) and strategy.method == method


def test_fedadam_steps_from_our_filtered_average_and_still_rejects_leaks(flower_identity):
    strategy = build_strategy("pftt", STRATEGIES, optimizer="fedadam", learning_rate=0.1,
                              min_available_nodes=2, min_train_nodes=2)
    assert isinstance(strategy, FedAdam) and isinstance(strategy, PFTT)
    glob = {ADAPTER: np.zeros(3, np.float32)}
    msgs = {m.metadata.dst_node_id: m for m in strategy.configure_train(
        1, to_arrayrecord(glob), ConfigRecord({"run-dir": "/x"}), FakeGrid([1, 2]))}
    assert msgs[1].content["config"]["shared-groups"] == "adapter"
    leaky = {ADAPTER: np.full(3, 50.0, np.float32), LORA_A: np.ones(2, np.float32)}
    arrays, _ = strategy.aggregate_train(1, [client_reply(msgs[1], {ADAPTER: np.ones(3, np.float32)}), client_reply(msgs[2], leaky)])
    out = from_arrayrecord(arrays)[ADAPTER]
    # Adam's first step moves every coordinate by about eta towards the (leak-free) average
    assert np.all(out > 0) and np.all(out < 0.2)
    assert [n for _, n, _ in strategy.rejected] == [2]


def test_fedprox_sends_mu_and_the_proximal_term_holds_clients_near_the_global(flower_identity, tiny_cfg, tmp_path):
    strategy = build_strategy("send-all", STRATEGIES, optimizer="fedprox", proximal_mu=1e4,
                              min_available_nodes=1, min_train_nodes=1)
    assert isinstance(strategy, FedProx)
    bundle = shared_model_bundle(tiny_cfg)
    glob = bundle.initial_tensors(strategy.shared_groups)
    (msg,) = strategy.configure_train(1, to_arrayrecord(glob), ConfigRecord({"run-dir": str(tmp_path)}), FakeGrid([5]))
    assert msg.content["config"]["proximal-mu"] == 1e4

    def drift(mu):
        m = server_message("train", "adapter,lora_A,lora_B", glob, tmp_path / str(mu))
        m.content["config"]["proximal-mu"] = mu
        sent = from_arrayrecord(handle_train(m, client_context(5, 0)).content["arrays"])
        return sum(float(np.sum((sent[k] - glob[k]) ** 2)) for k in glob)

    assert drift(1e4) < 0.5 * drift(0.0)
