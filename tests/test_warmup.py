"""The supervised warm-up that RLHF methods start from."""

import json

import pytest
import torch

from pfl_app.config import ConfigError, parse_run_config
from pfl_app.models.loading import load_causal_lm
from pfl_app.models.personalized import base_policy, build_personalized_model
from pfl_app.rlhf.preferences import PromptItem, is_refusal, pool_of
from pfl_app.rlhf.warmup import demonstration_prompts, demonstrations, warmed_policy, warmup_spec

from .helpers import TINY_RLHF


def _items(n, harmful):
    return [PromptItem(f"question {i} {'harm' if harmful else 'ok'}", harmful, "test", "test") for i in range(n)]


def test_demonstrations_refuse_exactly_the_chosen_prompts_and_keep_only_non_refusing_own_answers():
    to_refuse, harmful_own, benign_own = _items(4, True), _items(3, True)[1:], _items(3, False)
    harmful_answers = ["Step one is to buy a map.", "I'm sorry, but I can't help with that."]
    benign_answers = ["Paris is the capital of France.", "", "I cannot assist with that request."]
    demos = demonstrations(to_refuse, harmful_own, harmful_answers, benign_own, benign_answers)
    kinds = demos["kind"]
    assert kinds.count("refusal") == 4 and kinds.count("harmful-own") == 1 and kinds.count("benign-own") == 1
    for row in demos:
        answer = row["completion"][0]["content"]
        assert row["prompt"][0]["role"] == "user" and row["completion"][0]["role"] == "assistant"
        assert is_refusal(answer) == (row["kind"] == "refusal")
    # every other template refusal restates the request (the templates never say "question")
    refusals = [r["completion"][0]["content"] for r in demos if r["kind"] == "refusal"]
    assert sum("question" in r for r in refusals) == 2


def test_demonstration_prompts_are_reward_pool_prompts_split_by_the_refusal_share():
    to_refuse, harmful_own, benign_own = demonstration_prompts(12, 0.25)
    assert (len(to_refuse), len(harmful_own), len(benign_own)) == (3, 9, 6)
    assert all(p.harmful for p in to_refuse + harmful_own) and not any(p.harmful for p in benign_own)
    # clients train and are evaluated on the held-out pool: the warm-up never sees those prompts
    assert all(pool_of(p.text) == "reward" for p in to_refuse + harmful_own + benign_own)
    assert demonstration_prompts(12, 1.0)[1] == [] and demonstration_prompts(12, 0.0)[0] == []


def test_a_bad_warmup_setting_fails_naming_the_key():
    with pytest.raises(ConfigError, match="rlhf.warmup-refusal-share"):
        parse_run_config({**TINY_RLHF, "rlhf.warmup-refusal-share": 1.5})
    with pytest.raises(ConfigError, match="rlhf.warmup-steps"):
        parse_run_config({**TINY_RLHF, "rlhf.warmup-steps": -1})


def test_rlhf_runs_start_from_the_warmed_policy_which_is_trained_once(tmp_path):
    cfg = parse_run_config({**TINY_RLHF, "model.cache-dir": str(tmp_path), "rlhf.warmup-steps": 2,
                            "rlhf.warmup-prompts": 4})
    spec = warmup_spec(cfg)
    folder = warmed_policy(spec, str(tmp_path))
    record = json.loads((folder / "warmup.json").read_text())
    assert record["demonstrations"]["refusal"] == 2 and record["spec"]["steps"] == 2
    # a second call reuses the cached model
    stamp = (folder / "warmup.json").stat().st_mtime_ns
    assert warmed_policy(spec, str(tmp_path)) == folder and (folder / "warmup.json").stat().st_mtime_ns == stamp
    # the warm-up changed the weights (its LoRA is merged into them)
    base = dict(load_causal_lm("tiny-llama", seed=cfg.seed).named_parameters())
    warmed = dict(load_causal_lm(str(folder)).named_parameters())
    assert set(base) == set(warmed)
    assert any(not torch.equal(base[n], warmed[n]) for n in base)
    # the PFIT model is built on it, a task-tuning method's is not, nor a run with no warm-up
    assert base_policy(cfg) == str(folder)
    model, _ = build_personalized_model(cfg)
    q = "base_model.model.model.layers.0.self_attn.q_proj.weight"  # layer 0 carries no LoRA (last-k, k=1)
    plain = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(warmed[plain], base[plain])
    assert torch.equal(dict(model.named_parameters())[q], warmed[plain])
    assert base_policy(parse_run_config({**TINY_RLHF, "method": "pftt", "rlhf.warmup-steps": 2})) == "tiny-llama"
    assert base_policy(parse_run_config(TINY_RLHF)) == "tiny-llama"
    # another share is another warmed policy
    other = warmup_spec(parse_run_config({**TINY_RLHF, "rlhf.warmup-steps": 2, "rlhf.warmup-prompts": 4,
                                          "rlhf.warmup-refusal-share": 1.0}))
    assert other.tag != spec.tag
