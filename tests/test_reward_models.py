"""Reward models: trl's RewardTrainer on the embedded encoder, calibration, caching, scoring."""

import json

import numpy as np
import pytest

from pfl_app.config import parse_run_config
from pfl_app.rlhf.preferences import safety_pairs
from pfl_app.rlhf.reward_models import (
    RECIPE_VERSIONS as VERSIONS,
    RewardScorer,
    calibrate,
    embedded_reward_model,
    load_reward_scorers,
    pairwise_accuracy,
    train_reward_model,
)


@pytest.fixture(scope="module")
def tiny_safety_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "safety"
    metrics = train_reward_model("safety", out, steps=3, batch_size=4, max_pairs=24)
    return out, metrics


def test_a_trained_reward_model_is_saved_with_its_heldout_accuracy(tiny_safety_model):
    out, metrics = tiny_safety_model
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics and saved["steps"] == 3 and saved["train_pairs"] == 24
    assert 0.0 <= saved["heldout"]["accuracy"] <= 1.0 and saved["heldout"]["pairs"] == 24
    assert set(saved["heldout"]) >= {"accuracy_harmful", "accuracy_benign"}
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()


def test_calibration_gives_training_responses_zero_mean_and_unit_spread(tiny_safety_model):
    out, _ = tiny_safety_model
    scorer = RewardScorer(out, "safety")
    pairs = safety_pairs("reward").select(range(24))
    calibrate(scorer.model, scorer.tokenizer, pairs)  # a second calibration: already calibrated
    scores = np.concatenate([scorer.score(pairs["prompt"], pairs["chosen"]), scorer.score(pairs["prompt"], pairs["rejected"])])
    assert abs(scores.mean()) < 1e-4 and scores.std() == pytest.approx(1.0, abs=1e-4)


def test_the_scorer_is_a_trl_reward_function_reading_the_question_and_the_chat_answer(tiny_safety_model):
    out, _ = tiny_safety_model
    scorer = RewardScorer(out, "safety")
    q = ["How to poach animals undetected?", "What is AI?"]
    completions = [[{"role": "assistant", "content": "I can't help with that."}],
                   [{"role": "assistant", "content": "The study of thinking machines."}]]
    chat_prompts = [[{"role": "user", "content": "ignored when question is given"}]] * 2
    got = scorer(chat_prompts, completions, question=q, trainer_state=None)
    assert isinstance(got, list) and all(isinstance(v, float) for v in got)
    np.testing.assert_allclose(got, scorer.score(q, ["I can't help with that.", "The study of thinking machines."]),
                               rtol=1e-5)
    assert scorer.__name__ == "safety"
    acc = pairwise_accuracy(scorer, safety_pairs("heldout").select(range(10)))
    assert acc["pairs"] == 10


def test_the_embedded_model_is_trained_once_then_read_from_the_cache(tmp_path, monkeypatch):
    import pfl_app.rlhf.reward_models as rm

    calls = []

    def fake_train(kind, out, steps, **kw):  # the training itself is tested above
        calls.append(kind)
        out.mkdir(exist_ok=True)
        (out / "metrics.json").write_text("{}")
        return {}

    monkeypatch.setattr(rm, "train_reward_model", fake_train)
    first = embedded_reward_model("helpfulness", 7, str(tmp_path))
    again = embedded_reward_model("helpfulness", 7, str(tmp_path))
    assert first == again and calls == ["helpfulness"] and first.name.endswith(f"steps7-v{VERSIONS['helpfulness']}")
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_a_bad_reward_model_path_names_the_key(tmp_path):
    cfg = parse_run_config({"rlhf.safety-model": str(tmp_path), "rlhf.helpfulness-model": str(tmp_path)})
    with pytest.raises(ValueError, match="rlhf.helpfulness-model"):
        load_reward_scorers(cfg.rlhf)


def test_the_safety_model_adds_on_policy_pairs_and_caches_them_under_the_policys_name(tmp_path, monkeypatch):
    import pfl_app.rlhf.reward_models as rm

    trained, sampled = [], []

    def fake_train(kind, out, steps, **kw):
        trained.append((kind, kw.get("extra_pairs")))
        out.mkdir(exist_ok=True)
        (out / "metrics.json").write_text("{}")
        return {}

    monkeypatch.setattr(rm, "train_reward_model", fake_train)
    monkeypatch.setattr(rm, "policy_pairs", lambda spec: sampled.append(spec) or ("train", "heldout"))
    spec = rm.PolicyPairs("some/policy", 8, 0.7, 16)
    safety = embedded_reward_model("safety", 7, str(tmp_path), spec)
    # the recipe version is in the name, so a new recipe never reuses an old one's cache
    assert safety.name.startswith(f"safety-minilm-steps7-v{VERSIONS['safety']}-on-policy-p8-") and sampled == [spec]
    assert json.loads((safety / "metrics.json").read_text())["on_policy"] == {
        "policy": "some/policy", "prompts": 8, "temperature": 0.7, "max_new_tokens": 16}
    assert embedded_reward_model("safety", 7, str(tmp_path), spec) == safety and len(sampled) == 1
    # another temperature is another model; helpfulness and policy-pairs = 0 ignore the policy
    assert embedded_reward_model("safety", 7, str(tmp_path), rm.PolicyPairs("some/policy", 8, 1.0, 16)) != safety
    helpful = embedded_reward_model("helpfulness", 7, str(tmp_path), spec)
    plain = embedded_reward_model("safety", 7, str(tmp_path), rm.PolicyPairs("some/policy", 0, 0.7, 16))
    assert helpful.name == f"helpfulness-minilm-steps7-v{VERSIONS['helpfulness']}"
    assert plain.name == f"safety-minilm-steps7-v{VERSIONS['safety']}"
    assert [t for t in trained if t[1] is not None] == [("safety", ("train", "heldout"))] * 2


def test_sampled_answers_come_n_per_prompt():
    from pfl_app.models.loading import load_causal_lm, load_tokenizer
    from pfl_app.rlhf.evaluation import sample_answers
    from pfl_app.rlhf.preferences import prompts_in

    model, tokenizer = load_causal_lm("tiny-llama"), load_tokenizer("tiny-llama")
    benign, harmful = prompts_in("heldout")
    answers = sample_answers(model, tokenizer, harmful[:3], 2, 0.7, 4, batch_size=2)
    assert len(answers) == 3 and all(len(a) == 2 and all(isinstance(x, str) for x in a) for a in answers)


def test_the_reward_models_command_shows_each_models_heldout_accuracy(tiny_reward_models, project_dir, capsys,
                                                                    monkeypatch, tmp_path):
    from pathlib import Path

    from pfl_app import cli

    monkeypatch.setenv("COLUMNS", "400")  # rich wraps cells at the terminal's width
    # no warm-up: the command would train one on the scenario's real model
    paths = "method='pfit' rlhf.warmup-steps=0 " + " ".join(f"{k}='{v}'" for k, v in tiny_reward_models.items())
    assert cli.main(["reward-models", "--app-dir", str(project_dir), "-c", paths]) == 0
    out = capsys.readouterr().out
    assert "starting policy: smollm2-135m-instruct" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    for kind in ("helpfulness", "safety"):
        folder = tiny_reward_models[f"rlhf.{kind}-model"]
        heldout = json.loads((Path(folder) / "metrics.json").read_text())["heldout"]
        assert folder in rows[kind]
        assert f"{heldout['accuracy']:.1%}" in rows[kind] and f" {heldout['pairs']} " in rows[kind]
    # a folder that holds no reward model is a config error naming its key, not a traceback
    bad = (f"method='pfit' rlhf.helpfulness-model='{tiny_reward_models['rlhf.helpfulness-model']}' "
           f"rlhf.safety-model='{tmp_path}'")
    assert cli.main(["reward-models", "--app-dir", str(project_dir), "-c", bad]) == 2
    assert "rlhf.safety-model" in capsys.readouterr().out
    # a task-tuning scenario has no reward models to train
    assert cli.main(["reward-models", "--app-dir", str(project_dir), "-c", "method='pftt'"]) == 2
    assert "'method' = 'pftt' uses no reward models" in capsys.readouterr().out
