"""The RLHF client handlers on the tiny policy with tiny reward models."""

import json

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

from pfl_app.client.rlhf_tuning import SAMPLES_FILE, handle_evaluate, handle_train
from pfl_app.client.state import client_dir
from pfl_app.config import parse_run_config
from pfl_app.models.personalized import shared_model_bundle, tensor_group
from pfl_app.records import from_arrayrecord, to_arrayrecord

from .helpers import TINY_RLHF, kept_on_disk


def _run_config(models, **kw):
    return {**TINY_RLHF, **models, **kw}


def _message(kind, run_config, run_dir, rnd=1, preference="own", **extra):
    cfg = parse_run_config(run_config)
    groups = "none" if cfg.method == "rlhf-local" else "lora_A,lora_B"
    glob = shared_model_bundle(cfg).initial_tensors(() if groups == "none" else ("lora_A", "lora_B"))
    content = RecordDict({
        "arrays": to_arrayrecord(glob),
        "config": ConfigRecord({"server-round": rnd, "shared-groups": groups, "trained-groups": "lora_A,lora_B",
                                "run-dir": str(run_dir), "preference": preference, **extra}),
    })
    return Message(content=content, dst_node_id=0, message_type=kind), glob


def _context(run_config, client_id=0, num=2):
    return Context(run_id=1, node_id=client_id + 10, node_config={"partition-id": client_id, "num-partitions": num},
                   state=RecordDict(), run_config=run_config)


def test_pfit_client_sends_its_trained_policy_lora_with_its_rewards(flower_identity, tiny_reward_models, tmp_path):
    rc = _run_config(tiny_reward_models, **{"train.learning-rate": 0.05})
    msg, glob = _message("train", rc, tmp_path)
    reply = handle_train(msg, _context(rc, client_id=1))
    sent = from_arrayrecord(reply.content["arrays"])
    assert set(sent) == set(glob) and {tensor_group(k) for k in sent} == {"lora_A", "lora_B"}
    assert any(not np.array_equal(sent[k], glob[k]) for k in sent)
    m = reply.content["metrics"]
    assert m["safety-weight"] == 0.9  # the last of two clients is the safety-first one
    assert m["num-examples"] == 4 and np.isfinite(m["train-reward"])
    assert m["train-reward"] == pytest.approx(0.1 * m["train-reward-helpfulness"] + 0.9 * m["train-reward-safety"])


@pytest.mark.parametrize("method,preference,weight", [("rlhf-fedavg", "uniform", 0.5),
                                                     ("rlhf-single", "helpfulness", 0.0)])
def test_the_servers_preference_overrides_the_clients_own(flower_identity, tiny_reward_models, tmp_path,
                                                         method, preference, weight):
    rc = _run_config(tiny_reward_models, method=method)
    msg, _ = _message("train", rc, tmp_path, preference=preference)
    assert handle_train(msg, _context(rc, client_id=1)).content["metrics"]["safety-weight"] == weight


def test_local_only_client_continues_from_its_own_policy_and_evaluates_it(flower_identity, tiny_reward_models,
                                                                        tmp_path):
    rc = _run_config(tiny_reward_models, method="rlhf-local",
                     **{"train.learning-rate": 0.05, "rlhf.final-eval-prompts": 6})
    ctx = _context(rc)
    msg, glob = _message("train", rc, tmp_path)
    reply = handle_train(msg, ctx)
    assert not from_arrayrecord(reply.content["arrays"])  # nothing leaves the client
    kept1 = kept_on_disk(tmp_path, 0)
    msg2, _ = _message("train", rc, tmp_path, rnd=2)
    handle_train(msg2, ctx)
    kept2 = kept_on_disk(tmp_path, 0)
    b_key = next(k for k in kept1 if tensor_group(k) == "lora_B")
    assert np.abs(kept1[b_key]).sum() > 0 and not np.array_equal(kept1[b_key], kept2[b_key])

    ev, _ = _message("evaluate", rc, tmp_path, rnd=2, **{"last-round": True})
    metrics = handle_evaluate(ev, ctx).content["metrics"]
    assert metrics["num-examples"] == 6  # the last round asks rlhf.final-eval-prompts
    assert "global-helpfulness" not in metrics  # nothing is shared, so there is no global model
    for model in ("personalized", "base"):
        for score in ("helpfulness", "safety", "objective", "harmful-compliance", "benign-refusal"):
            assert np.isfinite(metrics[f"{model}-{score}"])
    assert metrics["personalized-objective"] == pytest.approx(
        0.9 * metrics["personalized-helpfulness"] + 0.1 * metrics["personalized-safety"])
    samples = [json.loads(line) for line in (client_dir(tmp_path, 0) / SAMPLES_FILE).read_text().splitlines()]
    assert {s["model"] for s in samples} == {"personalized", "base"}
    assert len({s["prompt"] for s in samples}) == 6
    assert {s["harmful"] for s in samples} == {True, False}
    assert all(isinstance(s["answer"], str) and s["round"] == 2 for s in samples)


@pytest.mark.parametrize("start_from", ["personal", "global"])
def test_a_round_starts_from_the_clients_own_policy_or_the_global_one_and_is_anchored_to_the_global(
        flower_identity, tiny_reward_models, tmp_path, monkeypatch, start_from):
    from pfl_app.client import rlhf_tuning
    from pfl_app.models.personalized import get_tensors
    from pfl_app.rlhf.grpo import PolicyResult

    rc = _run_config(tiny_reward_models)
    ctx = _context(rc)
    seen = {}

    def fake_train(model, tokenizer, prompts, scorers, preference, settings, rlhf, seed, anchor, optimizer_state):
        seen["start"], seen["anchor"] = get_tensors(model, ("lora_A", "lora_B")), anchor
        with torch.no_grad():  # a stand-in for GRPO: move every trained tensor
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.01 * (seed + 1))
        return PolicyResult(0.0, 1, 0.0, 0.5, 0.5, 0.5, 0.0, 0.0)

    monkeypatch.setattr(rlhf_tuning, "train_policy", fake_train)
    msg, glob = _message("train", rc, tmp_path, **{"start-from": start_from})
    own1 = from_arrayrecord(handle_train(msg, ctx).content["arrays"])
    np.testing.assert_equal(seen["start"], glob)  # round 1: nothing of its own yet
    msg2, glob2 = _message("train", rc, tmp_path, rnd=2, **{"start-from": start_from})
    handle_train(msg2, ctx)
    np.testing.assert_equal(seen["anchor"], glob2)  # the proximal term pulls toward the global policy
    np.testing.assert_equal(seen["start"], own1 if start_from == "personal" else glob2)
    assert any(not np.array_equal(own1[k], glob2[k]) for k in own1)


@pytest.mark.parametrize("start_from,carry,continued", [("personal", True, True), ("global", True, False),
                                                        ("personal", False, False)])
def test_a_round_continues_the_optimizer_only_when_it_continues_the_clients_own_policy(
        flower_identity, tiny_reward_models, tmp_path, monkeypatch, start_from, carry, continued):
    from pfl_app.client import rlhf_tuning
    from pfl_app.rlhf.grpo import PolicyResult

    rc = _run_config(tiny_reward_models, **{"rlhf.carry-optimizer": carry})
    seen = []

    def fake_train(model, tokenizer, prompts, scorers, preference, settings, rlhf, seed, anchor, optimizer_state):
        seen.append(optimizer_state)
        return PolicyResult(0.0, 1, 0.0, 0.5, 0.5, 0.5, 0.0, 0.0,
                            optimizer_state={"w::step": np.array([float(seed)], dtype=np.float32)})

    monkeypatch.setattr(rlhf_tuning, "train_policy", fake_train)
    ctx = _context(rc)
    for rnd in (1, 2):
        msg, _ = _message("train", rc, tmp_path, rnd=rnd, **{"start-from": start_from})
        handle_train(msg, ctx)
    assert seen[0] is None  # a first round has nothing to continue
    if continued:
        first_seed = parse_run_config(rc).seed + 7919
        np.testing.assert_equal(seen[1], {"w::step": np.array([first_seed], dtype=np.float32)})
        # kept on disk too, so a restarted node continues it
        assert (client_dir(tmp_path, 0) / "optimizer_state.safetensors").exists()
    else:
        assert seen[1] is None
    # a client restarted from the global policy every round keeps no optimizer state at all
    assert (client_dir(tmp_path, 0) / "optimizer_state.safetensors").exists() == (start_from == "personal" and carry)
