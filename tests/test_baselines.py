"""Each baseline's defining property, checked on what its clients really send and train."""

import numpy as np
import pytest
from flwr.app import ConfigRecord

from pfl_app.client.task_tuning import handle_train
from pfl_app.models.personalized import shared_model_bundle, tensor_group
from pfl_app.records import from_arrayrecord, to_arrayrecord
from pfl_app.strategies import STRATEGIES

from pfl_app.config import RLHF_METHODS, parse_run_config

from .helpers import TINY, FakeGrid, client_context, kept_on_disk, server_message

# method -> (groups it must send, groups it must train)
DEFINING = {
    "pftt": ({"adapter"}, {"adapter", "lora_A", "lora_B"}),
    "send-all": ({"adapter", "lora_A", "lora_B"}, {"adapter", "lora_A", "lora_B"}),
    "fedit": ({"lora_A", "lora_B"}, {"lora_A", "lora_B"}),
    "fedadapter": ({"adapter"}, {"adapter"}),
    "ffa-lora": ({"lora_B"}, {"lora_B"}),
    "fedsa-lora": ({"lora_A"}, {"lora_A", "lora_B"}),
    "local-only": (set(), {"adapter", "lora_A", "lora_B"}),
    "centralized": ({"adapter", "lora_A", "lora_B"}, {"adapter", "lora_A", "lora_B"}),
    "feddpa": ({"lora_A", "lora_B"}, {"lora_A", "lora_B", "local_lora_A", "local_lora_B"}),
    "pftt-median": ({"adapter"}, {"adapter", "lora_A", "lora_B"}),
    "flexlora": ({"lora_A", "lora_B"}, {"lora_A", "lora_B"}),
}
ALL = ("adapter", "lora_A", "lora_B", "local_lora_A", "local_lora_B")


def test_every_task_tuning_method_is_covered():
    # The RLHF methods' messages are checked in test_pfit_strategy.py and test_client_rlhf_tuning.py.
    assert set(DEFINING) == set(STRATEGIES) - set(RLHF_METHODS)


@pytest.mark.parametrize("method", sorted(DEFINING))
def test_what_a_method_sends_and_trains(flower_identity, tmp_path, method):
    sends, trains = DEFINING[method]
    strategy = STRATEGIES[method](method=method, min_available_nodes=1, min_train_nodes=1)
    cfg = parse_run_config({**TINY, "method": method})
    bundle = shared_model_bundle(cfg)
    glob = bundle.initial_tensors(strategy.shared_groups)
    (server_msg,) = strategy.configure_train(1, to_arrayrecord(glob), ConfigRecord({"run-dir": str(tmp_path)}),
                                             FakeGrid([5]))
    assert {tensor_group(k) for k in from_arrayrecord(server_msg.content["arrays"])} == sends

    ctx = client_context(5, 0, method=method)
    msg = server_message("train", server_msg.content["config"]["shared-groups"], glob, tmp_path)
    for key in ("trained-groups", "pooled-data"):
        if key in server_msg.content["config"]:
            msg.content["config"][key] = server_msg.content["config"][key]
    reply = handle_train(msg, ctx)
    sent = from_arrayrecord(reply.content["arrays"])
    assert {tensor_group(k) for k in sent} == sends  # and nothing else ever leaves the client

    kept = kept_on_disk(tmp_path, 0)
    assert set(sent).isdisjoint(kept)
    after = {**sent, **kept}
    assert set(after) == set(bundle.initial)  # every tensor is either sent or kept
    for group in ALL:
        names = [k for k in after if tensor_group(k) == group]
        if not names:
            assert group not in trains and group not in sends
            continue
        changed = any(not np.array_equal(after[k], bundle.initial[k]) for k in names)
        assert changed == (group in trains), f"{method}: {group} trained={changed}"


def test_centralized_trains_one_client_on_everyones_data(flower_identity, tmp_path):
    strategy = STRATEGIES["centralized"](method="centralized", min_available_nodes=3)
    cfg = parse_run_config({**TINY, "method": "centralized"})
    glob = shared_model_bundle(cfg).initial_tensors(strategy.shared_groups)
    msgs = list(strategy.configure_train(1, to_arrayrecord(glob), ConfigRecord({"run-dir": str(tmp_path)}),
                                         FakeGrid([5, 6, 7])))
    assert len(msgs) == 1 and msgs[0].content["config"]["pooled-data"] is True
    m = server_message("train", msgs[0].content["config"]["shared-groups"], glob, tmp_path)
    m.content["config"]["pooled-data"] = True
    reply = handle_train(m, client_context(5, 0, num=3, method="centralized"))
    single = handle_train(server_message("train", "adapter,lora_A,lora_B", glob, tmp_path / "one"),
                          client_context(5, 0, num=3, method="centralized"))
    assert reply.content["metrics"]["num-examples"] > 2 * single.content["metrics"]["num-examples"]
    assert reply.content["metrics"]["train-steps"] == 3 * TINY["train.local-steps"]


def test_feddpa_keeps_its_local_lora_apart_from_the_global_one(flower_identity, tmp_path):
    cfg = parse_run_config({**TINY, "method": "feddpa"})
    bundle = shared_model_bundle(cfg)
    groups = {tensor_group(n) for n in bundle.initial}
    assert {"local_lora_A", "local_lora_B", "lora_A", "lora_B"} <= groups
    active = bundle.model.base_model.active_adapters
    assert sorted(active) == ["default", "local"]
