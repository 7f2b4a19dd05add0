"""Each baseline's defining property, checked on what its clients really send and train."""

import numpy as np
import pytest
from flwr.app import ConfigRecord

from pfl_app.client.personalized_client import handle_train
from pfl_app.models.personalized import shared_model_bundle, tensor_group
from pfl_app.records import from_arrayrecord, to_arrayrecord
from pfl_app.strategies import STRATEGIES

from .test_client import _context, _message
from .test_strategies import FakeGrid

# method -> (groups it must send, groups it must train)
DEFINING = {
    "pftt": ({"adapter"}, {"adapter", "lora_A", "lora_B"}),
    "send-all": ({"adapter", "lora_A", "lora_B"}, {"adapter", "lora_A", "lora_B"}),
    "fedit": ({"lora_A", "lora_B"}, {"lora_A", "lora_B"}),
    "fedadapter": ({"adapter"}, {"adapter"}),
    "ffa-lora": ({"lora_B"}, {"lora_B"}),
    "fedsa-lora": ({"lora_A"}, {"lora_A", "lora_B"}),
    "local-only": (set(), {"adapter", "lora_A", "lora_B"}),
}


def test_every_method_is_covered():
    assert set(DEFINING) == set(STRATEGIES)


@pytest.mark.parametrize("method", sorted(DEFINING))
def test_what_a_method_sends_and_trains(flower_identity, tiny_cfg, tmp_path, method):
    sends, trains = DEFINING[method]
    strategy = STRATEGIES[method](method=method, min_available_nodes=1, min_train_nodes=1)
    bundle = shared_model_bundle(tiny_cfg)
    glob = bundle.initial_tensors(strategy.shared_groups)
    (server_msg,) = strategy.configure_train(1, to_arrayrecord(glob), ConfigRecord({"run-dir": str(tmp_path)}),
                                             FakeGrid([5]))
    assert {tensor_group(k) for k in from_arrayrecord(server_msg.content["arrays"])} == sends

    ctx = _context(5, 0)
    msg = _message("train", server_msg.content["config"]["shared-groups"], glob, tmp_path)
    msg.content["config"]["trained-groups"] = server_msg.content["config"]["trained-groups"]
    reply = handle_train(msg, ctx)
    sent = from_arrayrecord(reply.content["arrays"])
    assert {tensor_group(k) for k in sent} == sends  # and nothing else ever leaves the client

    kept = from_arrayrecord(ctx.state["pfl.local-tensors"]) if "pfl.local-tensors" in ctx.state else {}
    assert set(sent).isdisjoint(kept)
    after = {**sent, **kept}
    assert set(after) == set(bundle.initial)  # every tensor is either sent or kept
    for group in ("adapter", "lora_A", "lora_B"):
        names = [k for k in after if tensor_group(k) == group]
        changed = any(not np.array_equal(after[k], bundle.initial[k]) for k in names)
        assert changed == (group in trains), f"{method}: {group} trained={changed}"
