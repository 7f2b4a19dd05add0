"""End to end: real `flwr run`s with central and local differential privacy."""

import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file

from pfl_app.config import parse_run_config
from pfl_app.launch import Scenario, launch
from pfl_app.models.personalized import shared_model_bundle
from pfl_app.privacy import SAMPLING_UNIFORM, central_epsilon, central_events

from .helpers import TINY

pytestmark = pytest.mark.simulation


def _run(tmp_path, project_dir, name, clients, **run_config):
    scenario = Scenario(federation={"num-supernodes": clients, "client-resources-num-cpus": 1},
                        run_config={**TINY, "num-server-rounds": 2, "results-dir": str(tmp_path), "run-name": name,
                                    **run_config})
    status, run_dir = launch(project_dir, scenario, {}, echo=lambda _line: None)
    assert status["status"] == "finished:completed"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows, json.loads((run_dir / "summary.json").read_text()), run_dir


def _moved(run_dir, run_config, groups):
    """How far the final global shared tensors moved from their initial values (L2, all together)."""
    initial = shared_model_bundle(parse_run_config({**TINY, **run_config})).initial_tensors(groups)
    final = load_file(str(run_dir / "global_shared.safetensors"))
    by_name = {k.removeprefix("base_model.model."): v for k, v in initial.items()}
    assert set(final) == set(by_name)
    return math.sqrt(sum(float(np.sum((final[k] - by_name[k]) ** 2)) for k in final))


def test_central_dp_bounds_how_far_the_model_moves_and_reports_its_epsilon(tmp_path, project_dir):
    # 2 of 4 clients a round, int8 updates over a radio link, clipped to a norm far below what
    # a round of training moves them: the global can move at most C a round, plus the noise.
    config = {"method": "fedsa-lora", "fraction-train": 0.5, "min-clients": 2, "wireless.profile": "wifi",
              "compression.uplink": "int8", "dp.mode": "central", "dp.clipping-norm": 1e-3,
              "dp.noise-multiplier": 0.01, "dp.delta": 1e-4}
    rows, summary, run_dir = _run(tmp_path, project_dir, "central", 4, **config)
    trained = [r for r in rows if r.get("status") == "ok"]
    assert len(trained) == 4  # 2 rounds x 2 sampled clients
    for r in trained:
        assert r["clipped"] and r["update_norm"] > 1e-3
        assert r["aggregation_weight"] == pytest.approx(0.5)
    events = central_events(rows)
    assert [(e["sample_size"], e["population"], e["sampling"]) for e in events] == [(2, 4, SAMPLING_UNIFORM)] * 2
    privacy = summary["privacy"]
    assert privacy["mode"] == "central" and privacy["releases"] == 2
    assert privacy["epsilon"] == pytest.approx(central_epsilon(events, 0.01, 1e-4)) and privacy["epsilon"] > 0
    # FedSA-LoRA shares lora_A; each round moves it by the mean of two updates of norm <= C,
    # plus noise of std z C / 2 on each of its elements.
    moved = _moved(run_dir, config, ["lora_A"])
    elements = sum(v.size for v in load_file(str(run_dir / "global_shared.safetensors")).values())
    assert 0 < moved <= 2 * 1e-3 * 1.01 + 4 * 0.01 * 1e-3 / 2 * math.sqrt(2 * elements)


def test_local_dp_noises_every_update_and_composes_its_epsilon(tmp_path, project_dir):
    config = {"method": "pftt", "dp.mode": "local", "dp.clipping-norm": 1e-3, "dp.epsilon": 0.5}
    rows, summary, run_dir = _run(tmp_path, project_dir, "local", 2, **config)
    trained = [r for r in rows if r.get("status") == "ok"]
    assert len(trained) == 4 and all(r["dp_epsilon"] == 0.5 for r in trained)
    privacy = summary["privacy"]
    assert privacy["epsilon"] == pytest.approx(1.0) and privacy["releases"] == 2  # each client twice
    # Each element's noise has std 2C sqrt(2 ln(1.25/delta)) / epsilon, about 19 C: the
    # average of two noised updates moves the adapters far more than the clipping allows.
    assert _moved(run_dir, config, ["adapter"]) > 50 * 1e-3
    assert all(math.isfinite(r["personalized_accuracy"]) for r in rows if r["round"] == 2)


def test_adaptive_clipping_runs_and_moves_its_norm_between_rounds(tmp_path, project_dir):
    config = {"method": "fedit", "dp.mode": "central", "dp.clipping": "adaptive", "dp.clipping-norm": 1e-4,
              "dp.noise-multiplier": 0.1, "dp.clipped-count-stddev": 0.1, "dp.clip-learning-rate": 1.0}
    rows, summary, _ = _run(tmp_path, project_dir, "adaptive", 2, **config)
    norms = {r["round"]: r["dp_clipping_norm"] for r in rows if r.get("dp_clipping_norm")}
    assert norms[1] == pytest.approx(1e-4)
    # Every round-1 update is far above 1e-4, so the norm grows by about exp(1.0 x 0.5).
    assert all(r["clipped"] for r in rows if r["round"] == 1 and r.get("status") == "ok")
    assert norms[2] > 1e-4 * 1.2
    assert summary["privacy"]["clipping"] == "adaptive" and summary["privacy"]["clipping_norm_last"] == norms[2]
