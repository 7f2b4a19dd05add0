"""load_personalized_model: a finished run's client model, for every method family.

Each family runs a real one-round, two-client simulation with the tiny model; the loaded
model of each client must then score exactly what that client reported for its
personalized model in the run's last round, and hold each tensor from where its method
keeps it (the run's global tensors or the client's own).
"""

import contextlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.numpy import load_file

from pfl_app.client.data import client_data
from pfl_app.client.rlhf_tuning import SAMPLES_FILE
from pfl_app.inference import finished_run, load_personalized_model
from pfl_app.launch import Scenario, launch
from pfl_app.models.loading import load_causal_lm
from pfl_app.models.personalized import LOCAL_LORA, base_policy, kept_groups, tensor_group
from pfl_app.results import PEFT_PREFIX
from pfl_app.rlhf.client_setup import client_preference, client_prompts
from pfl_app.rlhf.evaluation import evaluate_policy
from pfl_app.rlhf.reward_models import load_reward_scorers
from pfl_app.strategies import STRATEGIES
from pfl_app.tasks import evaluate as evaluate_task

from .helpers import TINY, TINY_RLHF

PROJECT_DIR = Path(__file__).resolve().parents[1]
FEDERATION = {"num-supernodes": 2, "client-resources-num-cpus": 1}
CLIENTS = (0, 1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """``finished(name, run_config)``: the folder of a finished one-round run, run once per
    name and module."""
    runs = {}

    def run(name, run_config):
        if name not in runs:
            results = tmp_path_factory.mktemp(name)
            config = {**run_config, "num-server-rounds": 1, "results-dir": str(results), "run-name": name}
            status, run_dir = launch(PROJECT_DIR, Scenario(FEDERATION, config), {}, echo=lambda _line: None)
            assert status["status"] == "finished:completed"
            runs[name] = run_dir
        return runs[name]

    return run


@contextlib.contextmanager
def one_thread():
    """Score as a client scored: a Ray worker with one CPU runs torch on one thread, and the
    order of a float sum depends on how many threads share it."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def last_round_row(run_dir, client):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["round"] for r in rows)
    (row,) = [r for r in rows if r["round"] == last and r.get("client") == client]
    return row


def assert_tensors_come_from_the_run(model, run_dir, client, cfg):
    """Every trainable tensor the client keeps is its saved one, every other shared one the
    run's final global one."""
    strategy = STRATEGIES[cfg.method]
    own = set(kept_groups(cfg, strategy.shared_groups, strategy.trained_groups))
    shared = {PEFT_PREFIX + k: v for k, v in load_file(str(run_dir / "global_shared.safetensors")).items()}
    kept = load_file(str(run_dir / "clients" / f"client-{client:03d}" / "local_tensors.safetensors"))
    checked = 0
    for name, param in model.named_parameters():
        group = tensor_group(name)
        if group in own:
            source = kept
        elif group in strategy.shared_groups:
            source = shared
        else:
            continue
        assert torch.equal(param.detach(), torch.from_numpy(source[name])), name
        checked += 1
    assert checked == len(kept) + len([k for k in shared if tensor_group(k) not in own])


TASK_METHODS = {
    # method: (groups in the global file, groups the client keeps and that it trained)
    "pftt": ({"adapter"}, {"lora_A", "lora_B"}),
    "feddpa": ({"lora_A", "lora_B"}, {"local_lora_A", "local_lora_B"}),
    "fedsa-lora": ({"lora_A"}, {"lora_B"}),
}


@pytest.mark.simulation
@pytest.mark.parametrize("method", list(TASK_METHODS))
def test_a_task_tuning_clients_loaded_model_scores_what_it_scored_in_the_runs_last_round(finished, method):
    run_dir = finished(method, {**TINY, "method": method})
    cfg, summary = finished_run(run_dir)
    global_groups, trained_own = TASK_METHODS[method]
    shared = load_file(str(run_dir / "global_shared.safetensors"))
    assert {tensor_group(PEFT_PREFIX + k) for k in shared} == global_groups
    for client in CLIENTS:
        model, tokenizer = load_personalized_model(run_dir, client)
        assert not model.training
        assert_tensors_come_from_the_run(model, run_dir, client, cfg)
        kept = load_file(str(run_dir / "clients" / f"client-{client:03d}" / "local_tensors.safetensors"))
        assert trained_own <= {tensor_group(k) for k in kept}
        if method == "feddpa":  # the global and the local LoRA both act, as in training
            lora_layers = [m for n, m in model.named_modules() if n.endswith("q_proj") and hasattr(m, "lora_A")]
            assert lora_layers and all(m.active_adapters == ["default", LOCAL_LORA] for m in lora_layers)

        data = client_data(cfg, client, summary["clients"], tokenizer)
        with one_thread():
            scores = evaluate_task(model, data.task, data.test, tokenizer, cfg.train.eval_batch_size)
        row = last_round_row(run_dir, client)
        assert scores["accuracy"] == row["personalized_accuracy"]
        assert scores["loss"] == row["personalized_loss"]


@pytest.mark.simulation
def test_a_pfit_clients_loaded_policy_is_the_warmed_base_with_its_own_lora_and_answers_as_in_the_run(
    finished, tiny_reward_models, tmp_path_factory
):
    cache = tmp_path_factory.mktemp("cache")
    run_dir = finished("pfit", {**TINY_RLHF, **tiny_reward_models, "model.cache-dir": str(cache),
                                "rlhf.warmup-steps": 2, "rlhf.warmup-prompts": 4})
    cfg, summary = finished_run(run_dir)
    num_clients = summary["clients"]
    scorers = load_reward_scorers(cfg.rlhf, cfg.model.cache_dir, cfg.model.name)
    # The base under the LoRA: the warmed-up policy, not the plain model.
    down_proj = "model.layers.0.mlp.down_proj.weight"
    warmed = load_causal_lm(base_policy(cfg), str(cache)).state_dict()[down_proj]
    plain = load_causal_lm(cfg.model.name, str(cache), seed=cfg.seed).state_dict()[down_proj]
    assert not torch.equal(warmed, plain)
    for client in CLIENTS:
        model, tokenizer = load_personalized_model(run_dir, client)
        assert torch.equal(model.get_base_model().state_dict()[down_proj], warmed)
        # The policy LoRA sits on the last layer alone (last-k, k = 1) and is the client's own.
        lora = [n for n, _ in model.named_parameters() if tensor_group(n) in ("lora_A", "lora_B")]
        assert lora and all(".layers.1.self_attn." in n for n in lora)
        assert_tensors_come_from_the_run(model, run_dir, client, cfg)

        # Greedy answers scored by the reward models: deterministic, so exactly the run's.
        prompts = client_prompts(cfg.rlhf, client, num_clients, cfg.seed).evaluate_final
        preference = client_preference(cfg.rlhf, client, num_clients)
        with one_thread():
            scores = evaluate_policy(model, tokenizer, prompts, scorers, preference,
                                     cfg.rlhf.max_completion_length, cfg.train.eval_batch_size)
        row = last_round_row(run_dir, client)
        for key in ("helpfulness", "safety", "objective"):
            assert scores.metrics[key] == row[f"personalized_{key}"], key
        samples = [json.loads(line) for line in
                   (run_dir / "clients" / f"client-{client:03d}" / SAMPLES_FILE).read_text().splitlines()]
        answered = [s["answer"] for s in samples if s["model"] == "personalized" and s["round"] == row["round"]]
        assert [s["answer"] for s in scores.samples] == answered


@pytest.mark.simulation
def test_a_client_the_run_does_not_have_is_refused_naming_those_it_has(finished):
    run_dir = finished("pftt", {**TINY, "method": "pftt"})
    with pytest.raises(ValueError, match=r"has no client 5; its clients are \[0, 1\]"):
        load_personalized_model(run_dir, 5)


def test_a_folder_that_is_not_a_finished_run_is_refused_naming_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a run's results folder: it has no config.json"):
        load_personalized_model(tmp_path, 0)
    (tmp_path / "config.json").write_text(json.dumps({"run_config": TINY}))
    with pytest.raises(FileNotFoundError, match="has not finished: it has no summary.json"):
        load_personalized_model(tmp_path, 0)
