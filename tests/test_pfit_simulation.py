"""End to end: PFIT through a real `flwr run` simulation (SuperLink + Ray), tiny policy,
tiny reward models."""

import json

import pytest
from safetensors.numpy import load_file

from pfl_app.client.rlhf_tuning import SAMPLES_FILE
from pfl_app.launch import Scenario, launch

from .helpers import TINY_RLHF

pytestmark = pytest.mark.simulation


def test_pfit_runs_grpo_on_every_client_and_aggregates_by_reward(tmp_path, project_dir, tiny_reward_models):
    scenario = Scenario(
        federation={"num-supernodes": 2, "client-resources-num-cpus": 1},
        run_config={**TINY_RLHF, **tiny_reward_models, "num-server-rounds": 2, "results-dir": str(tmp_path),
                    "run-name": "pfit", "rlhf.aggregation-temperature": 0.5},
    )
    lines = []
    status, run_dir = launch(project_dir, scenario, {}, echo=lines.append)
    assert status["status"] == "finished:completed"
    assert any(line.startswith("round 2/2") and "train reward" in line for line in lines)

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["round"], r["client"]) for r in rows) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for rnd in (1, 2):
        these = [r for r in rows if r["round"] == rnd]
        assert sum(r["aggregation_weight"] for r in these) == pytest.approx(1.0)
        assert [r["safety_weight"] for r in these] == [0.1, 0.9]
        for r in these:
            assert r["status"] == "ok" and r["task"] == "rlhf" and r["train_steps"] == 2
            for key in ("train_reward", "personalized_helpfulness", "global_safety", "personalized_objective"):
                assert isinstance(r[key], float)
        assert all(("base_safety" in r) == (rnd == 2) for r in these)  # the base model: last round only

    # Only the last layer's attention LoRA travels (sparse update, k = 1).
    shared = load_file(str(run_dir / "global_shared.safetensors"))
    assert shared and all(".layers.1.self_attn." in k and ".lora_" in k for k in shared)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "pfit" and summary["rounds_completed"] == 2
    for key in ("personalized_helpfulness_mean", "personalized_safety_mean", "base_harmful_compliance_mean",
                "global_benign_refusal_mean"):
        assert summary[key] is not None
    assert summary["per_client"]["1"]["safety_weight"] == 0.9
    for c in (0, 1):
        folder = run_dir / "clients" / f"client-{c:03d}"
        assert (folder / "lora" / "adapter_model.safetensors").exists()
        models = {json.loads(line)["model"] for line in (folder / SAMPLES_FILE).read_text().splitlines()}
        assert models == {"personalized", "global", "base"}
