"""End to end: real `flwr run` simulations (SuperLink + Ray) with the tiny model."""

import json

import pytest
from safetensors.numpy import load_file

from pfl_app.cli import main as cli_main
from pfl_app.launch import LaunchError, Scenario, launch
from pfl_app.models.personalized import tensor_group

from .helpers import TINY

pytestmark = pytest.mark.simulation


# One uninterrupted two-task run serves two tests: its results are checked, and a run with
# the same config killed after round 1 and resumed must reproduce its numbers.
TWO_TASKS = {**TINY, "num-server-rounds": 2, "data.tasks": "bbc-news,chatterbot-qa", "data.partitioner": "iid"}
TWO_TASKS_FEDERATION = {"num-supernodes": 3, "client-resources-num-cpus": 1}


@pytest.fixture(scope="module")
def two_task_run(tmp_path_factory):
    from pathlib import Path

    project_dir = Path(__file__).resolve().parents[1]
    results = tmp_path_factory.mktemp("two-tasks")
    lines = []
    scenario = Scenario(TWO_TASKS_FEDERATION, {**TWO_TASKS, "results-dir": str(results), "run-name": "sim"})
    status, run_dir = launch(project_dir, scenario, {}, echo=lines.append)
    return status, run_dir, lines


@pytest.mark.xdist_group("two-task-run")  # one worker, so the module's run is made once
def test_pftt_simulation_with_two_tasks_completes_and_writes_results(two_task_run):
    status, run_dir, lines = two_task_run
    assert status["status"] == "finished:completed"
    assert any(line.startswith("round 2/2") for line in lines)  # progress was shown

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "pftt" and summary["rounds_completed"] == 2 and summary["clients"] == 3
    for key in ("uplink_bytes_total", "downlink_bytes_total"):
        assert summary[key] > 0
    assert 0.0 <= summary["personalized_accuracy_mean"] <= 1.0
    assert 0.0 <= summary["global_accuracy_mean"] <= 1.0

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["round"], r["client"]) for r in rows) == [(r, c) for r in (1, 2) for c in range(3)]
    assert {r["task"] for r in rows if r["client"] in (0, 2)} == {"bbc-news"}
    assert {r["task"] for r in rows if r["client"] == 1} == {"chatterbot-qa"}
    for r in rows:
        assert r["status"] == "ok" and r["method"] == "pftt"
        assert r["bytes_up"] > 0 and r["bytes_down"] > r["bytes_up"]  # two downlinks, one big uplink
        for key in ("train_loss", "personalized_accuracy", "global_accuracy"):
            assert isinstance(r[key], float)

    shared = load_file(str(run_dir / "global_shared.safetensors"))
    assert shared and all(".bottleneck_adapter." in k for k in shared)
    for c in range(3):
        lora = run_dir / "clients" / f"client-{c:03d}" / "lora"
        assert (lora / "adapter_model.safetensors").exists() and (lora / "adapter_config.json").exists()
        kept = load_file(str(lora.parent / "local_tensors.safetensors"))
        assert {tensor_group(k) for k in kept} == {"lora_A", "lora_B"}
    assert json.loads((run_dir / "config.json").read_text())["run_config"]["data.tasks"] == "bbc-news,chatterbot-qa"


def test_a_crashing_server_app_fails_the_launch(tmp_path, project_dir):
    import shutil

    from pfl_app.models.loading import TINY_TOKENIZER_FROM, embedded_tokenizer_dir

    # A model folder that passes the launcher's checks (a tokenizer and a config.json) but is no
    # causal LM, so the ServerApp itself crashes when it builds the model.
    model = tmp_path / "not-a-causal-lm"
    shutil.copytree(embedded_tokenizer_dir(TINY_TOKENIZER_FROM), model)
    (model / "config.json").write_text('{"model_type": "bert"}')
    scenario = Scenario(
        federation={"num-supernodes": 2},
        run_config={**TINY, "model.name": str(model), "results-dir": str(tmp_path)},
    )
    with pytest.raises(LaunchError, match="finished:failed"):
        launch(project_dir, scenario, {}, echo=lambda _line: None)


def test_bad_config_fails_before_anything_starts(tmp_path, project_dir, capsys):
    code = cli_main(["run", "--app-dir", str(project_dir), "--scenario", str(project_dir / "simulation.toml"),
                     "-c", "lora.r=0", "-c", f"results-dir='{tmp_path}'"])
    assert code == 2
    assert "lora.r" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_a_lossy_channel_run_completes_every_round_and_reports_the_air(tmp_path, project_dir):
    scenario = Scenario(
        federation={"num-supernodes": 3, "client-resources-num-cpus": 1},
        run_config={**TINY, "num-server-rounds": 3, "results-dir": str(tmp_path), "run-name": "lossy",
                    "wireless.profile": "lte-cell-edge", "wireless.max-retransmissions": 0,
                    "wireless.loss-mode": "partial", "wireless.deadline-s": 30.0},
    )
    status, run_dir = launch(project_dir, scenario, {}, echo=lambda _line: None)
    assert status["status"] == "finished:completed"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 3
    assert summary["updates_delivered"] + summary["updates_lost"] == 9
    assert summary["air_time_s_total"] > 0 and summary["energy_j_total"] > 0
    assert 0 < summary["simulated_time_s_total"] <= 3 * 30.0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 9
    for r in rows:
        assert r["status"] in ("ok", "partial", "lost")
        for key in ("snr_db_down", "rate_bps_down", "air_time_s_down", "client_time_s", "round_air_time_s"):
            assert isinstance(r[key], float), key
        if r["status"] != "lost" or not r.get("error", "").startswith("downlink"):
            assert r["energy_j_up"] > 0 and r["retransmissions_up"] == 0


def _kill_tree(proc):
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)


@pytest.mark.xdist_group("two-task-run")  # one worker, so the module's run is made once
def test_a_run_killed_hard_resumes_from_its_last_round_and_matches_an_uninterrupted_one(
    tmp_path, project_dir, two_task_run
):
    import os
    import subprocess
    import sys
    import time

    _, straight, _ = two_task_run
    config = {**TWO_TASKS, "results-dir": str(tmp_path), "run-name": "crashed"}
    scenario = tmp_path / "crash.toml"
    scenario.write_text(
        "[federation]\n" + "".join(f"{k} = {v}\n" for k, v in TWO_TASKS_FEDERATION.items()) + "[run-config]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pfl_app", "run", "--app-dir", str(project_dir), "--scenario", str(scenario)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy(),
    )
    crashed = tmp_path / "crashed"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # kill it as soon as round 1 is committed
            pointer = crashed / "checkpoint.json"
            if pointer.exists() and json.loads(pointer.read_text())["round"] >= 1:
                break
            time.sleep(0.2)
        else:
            pytest.fail("round 1 never finished")
    finally:
        _kill_tree(proc)
    assert not (crashed / "summary.json").exists()

    assert cli_main(["run", "--app-dir", str(project_dir), "--resume-from", str(crashed)]) == 0
    rows = [json.loads(line) for line in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["round"], r["client"]) for r in rows) == [(r, c) for r in (1, 2) for c in (0, 1, 2)]
    summary = json.loads((crashed / "summary.json").read_text())
    assert summary["rounds_completed"] == 2
    reference = {(r["round"], r["client"]): r for r in
                 (json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines())}
    for r in rows:  # same seed, deterministic CPU math: the same numbers
        ref = reference[(r["round"], r["client"])]
        for key in ("train_loss", "personalized_loss", "global_loss"):
            assert r[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-5), (r["round"], r["client"], key)


def test_failing_and_corrupt_clients_are_left_out_and_the_run_goes_on(tmp_path, project_dir):
    scenario = Scenario(
        federation={"num-supernodes": 4, "client-resources-num-cpus": 1},
        run_config={**TINY, "num-server-rounds": 2, "data.partitioner": "iid", "results-dir": str(tmp_path),
                    "run-name": "faults", "faults.fail-fraction": 0.25, "faults.corrupt-fraction": 0.25},
    )
    status, run_dir = launch(project_dir, scenario, {}, echo=lambda _line: None)
    assert status["status"] == "finished:completed"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for rnd in (1, 2):
        statuses = sorted(r["status"] for r in rows if r["round"] == rnd)
        assert statuses == ["error", "ok", "ok", "rejected"], statuses
    assert any("injected fault" in r.get("error", "") for r in rows if r["status"] == "error")
    assert all("NaN" in r["error"] for r in rows if r["status"] == "rejected")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["client_failures"] == 2 and summary["updates_rejected"] == 2
