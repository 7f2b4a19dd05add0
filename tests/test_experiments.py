"""The experiment runner's grid expansion and resume, and the report, on fixture results."""

import json
from pathlib import Path

import pytest

from pfl_app.client.state import client_dir
from pfl_app.config import ConfigError
from pfl_app.experiments import load_grid, run_grid, run_state
from pfl_app.launch import LaunchError
from pfl_app.report import collect, markdown_table, write_report

GRID = """
[grid]
name = "g"
methods = ["pftt", "fedit"]
seeds = [0, 1]
wireless = ["ideal", "wifi"]
splits = [{label = "iid", partitioner = "iid"}, {label = "dir0.3", partitioner = "dirichlet", alpha = 0.3}]
results-dir = "out"

[federation]
num-supernodes = 3

[run-config]
num-server-rounds = 2
model.name = "tiny-llama"
"""


def _grid(tmp_path, text=GRID):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return load_grid(path, tmp_path)


def test_grid_expands_to_every_combination(tmp_path):
    grid = _grid(tmp_path)
    assert len(grid.runs) == 2 * 2 * 2 * 2
    assert grid.federation == {"num-supernodes": 3}
    assert grid.results_dir == tmp_path / "out" / "g"
    names = {r.name for r in grid.runs}
    assert len(names) == 16 and "fedit__dir0.3__wifi__seed1" in names
    run = next(r for r in grid.runs if r.name == "fedit__dir0.3__wifi__seed1")
    assert run.overrides["data.partitioner"] == "dirichlet" and run.overrides["data.alpha"] == 0.3
    assert run.overrides["wireless.profile"] == "wifi" and run.overrides["seed"] == 1
    assert run.overrides["num-server-rounds"] == 2 and run.overrides["run-name"] == run.name


def test_a_bad_cell_fails_the_grid_before_any_run(tmp_path):
    with pytest.raises(ConfigError, match="run fedsgd__.*'method'"):
        _grid(tmp_path, GRID.replace('"fedit"', '"fedsgd"'))
    with pytest.raises(ConfigError, match="unknown \\[grid\\] key"):
        _grid(tmp_path, GRID.replace("seeds =", "seed ="))


class FakeLaunch:
    """Writes a finished run folder instead of simulating; can be told to fail."""

    def __init__(self, fail=()):
        self.calls, self.fail = [], set(fail)

    def __call__(self, project_dir, scenario, overrides, echo=print):
        name = overrides["run-name"]
        self.calls.append(name)
        if name in self.fail:
            raise LaunchError(f"{name} broke")
        folder = Path(overrides["results-dir"]) / name
        folder.mkdir(parents=True)
        _write_run(folder, overrides["seed"])
        return {"status": "finished:completed"}, folder


def _write_run(folder, seed, acc=None):
    acc = 0.5 + 0.1 * seed if acc is None else acc
    rows = [{"round": r, "node": c, "client": c, "bytes_up": 1000, "bytes_down": 2000, "status": "ok",
             "personalized_accuracy": acc * r / 2, "global_accuracy": acc / 2, "simulated_time_s": 1.0 * r}
            for r in (1, 2) for c in (0, 1)]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in rows))
    (folder / "summary.json").write_text(json.dumps({
        "personalized_accuracy_mean": acc, "global_accuracy_mean": acc / 2, "uplink_bytes_total": 4000,
        "simulated_time_s_total": 2.0, "energy_j_total": 3.0, "updates_lost": 0, "wall_time_s": 10.0}))


def test_runner_skips_finished_runs_and_reruns_interrupted_ones(tmp_path):
    grid = _grid(tmp_path)
    done, half = grid.runs[0], grid.runs[1]
    (grid.results_dir / done.name).mkdir(parents=True)
    _write_run(grid.results_dir / done.name, 0)
    (grid.results_dir / half.name).mkdir(parents=True)
    (grid.results_dir / half.name / "metrics.jsonl").write_text("{}")
    assert run_state(grid, done) == "done" and run_state(grid, half) == "partial"
    fake = FakeLaunch()
    outcomes = dict((r.name, o) for r, o in run_grid(grid, tmp_path, runner=fake))
    assert outcomes[done.name] == "skipped" and outcomes[half.name] == "ran"
    assert done.name not in fake.calls and len(fake.calls) == 15
    assert (grid.results_dir / f"{half.name}.partial-1" / "metrics.jsonl").exists()  # nothing lost
    fake2 = FakeLaunch()
    run_grid(grid, tmp_path, runner=fake2)
    assert fake2.calls == []  # a second pass finds everything done


def test_a_failed_run_stops_the_sweep_unless_keep_going(tmp_path):
    grid = _grid(tmp_path)
    bad = grid.runs[2].name
    with pytest.raises(LaunchError, match="broke"):
        run_grid(grid, tmp_path, runner=FakeLaunch(fail={bad}))
    outcomes = run_grid(grid, tmp_path, runner=FakeLaunch(fail={bad}), keep_going=True)
    assert [o for r, o in outcomes if r.name == bad][0].startswith("failed")
    assert sum(o == "ran" for _, o in outcomes) == 16 - 2 - 1  # two finished before the first failure


def test_report_table_averages_over_seeds(tmp_path):
    for seed, acc in ((0, 0.6), (1, 0.8)):
        folder = tmp_path / f"pftt__iid__ideal__seed{seed}"
        folder.mkdir()
        _write_run(folder, seed, acc)
    other = tmp_path / "fedit__iid__ideal__seed0"
    other.mkdir()
    _write_run(other, 0, 0.4)
    (tmp_path / "pftt__iid__ideal__seed2.partial-1").mkdir()
    groups = collect(tmp_path)
    assert set(groups) == {("pftt", "iid", "ideal"), ("fedit", "iid", "ideal")}
    table = markdown_table(groups)
    assert "| pftt | iid | ideal | 2 | 0.700 ± 0.141 |" in table
    assert "| fedit | iid | ideal | 1 | 0.400 |" in table
    report = write_report(tmp_path)
    text = report.read_text()
    assert "0.700 ± 0.141" in text and "accuracy_vs_uplink.png" in text
    for name in ("accuracy_vs_round", "accuracy_vs_uplink", "accuracy_vs_time", "client_accuracy_spread"):
        assert (report.parent / f"{name}.png").stat().st_size > 5000


def test_shipped_grids_expand(project_dir):
    for path in sorted((project_dir / "grids").glob("*.toml")):
        assert load_grid(path, project_dir).runs, path


def _write_rlhf_run(folder, method, helpful, answers=None, refused=(0.0, 0.0)):
    rows = []
    for c, weight in ((0, 0.1), (1, 0.9)):
        row = {"round": 2, "node": c, "client": c, "bytes_up": 500, "bytes_down": 900, "status": "ok",
               "safety_weight": weight}
        for model, h, r in (("personalized", helpful[c], refused[c]), ("global", 0.0, 0.0), ("base", -1.0, 0.0)):
            row.update({f"{model}_helpfulness": h, f"{model}_safety": 1 - h, f"{model}_objective": 0.5,
                        f"{model}_harmful_compliance": 0.25, f"{model}_benign_refusal": r})
        rows.append(row)
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in rows))
    (folder / "summary.json").write_text(json.dumps({"method": method, "uplink_bytes_total": 1000}))
    for c, said in enumerate(answers or ()):
        client_dir(folder, c).mkdir(parents=True)
        lines = [{"round": r, "model": "personalized", "prompt": f"q{i}", "answer": a if r == 2 else "old"}
                 for r in (2, 1) for i, a in enumerate(said)]  # the last round first: order must not matter
        (client_dir(folder, c) / "samples.jsonl").write_text("\n".join(map(json.dumps, lines)))


def test_report_shows_each_rlhf_clients_delivered_model_and_the_base_model(tmp_path):
    _write_rlhf_run(tmp_path / "pfit__iid__ideal__seed0", "pfit", (0.8, 0.3))
    _write_rlhf_run(tmp_path / "rlhf-fedavg__iid__ideal__seed0", "rlhf-fedavg", (0.6, 0.6))
    text = write_report(tmp_path).read_text()
    assert "| base | 0 | 0.10 | -1.000 | +2.000 |" in text
    # no samples were written, so whether the answers loop is unknown: "-"
    assert "| pfit | 1 | 0.90 | +0.300 | +0.700 | +0.500 | 0.25 | 0.00 | - | 500 |" in text
    # federated RLHF with uniform weights delivers its global model, not the clients' post-training ones
    assert "| rlhf-fedavg | 0 | 0.10 | +0.000 | +1.000 |" in text
    assert (tmp_path / "report" / "helpfulness_vs_safety.png").stat().st_size > 5000
    assert "accuracy_vs_uplink" not in text
    # safety gap 0.7 - 0.2, helpfulness gap 0.8 - 0.3; the uniform run's one model is no gap at all
    assert "| pfit / iid / ideal | 1 | 0.10 vs 0.90 | +0.500 | +0.500 | +0.00 | +0.00 | - |" in text
    assert "| rlhf-fedavg / iid / ideal | 1 | 0.10 vs 0.90 | +0.000 | +0.000 |" in text
    assert "| base model | - | 1 | +0.500 | 0.25 | 0.00 |" in text
    assert "| rlhf-fedavg / iid / ideal | global (delivered) | 1 | +0.500 |" in text


def test_separation_reads_the_last_rounds_answers_and_averages_over_seeds(tmp_path):
    from pfl_app.plots import separation, separation_table

    runs = []
    for seed, (h0, h1) in enumerate(((0.8, 0.3), (0.6, 0.3))):
        runs.append(tmp_path / f"pfit{seed}")
        # the clients answer every prompt in other words, but act differently on q1 (the safety-first
        # client refuses) and q3 (the helpfulness-first one does)
        _write_rlhf_run(runs[-1], "pfit", (h0, h1),
                        answers=(["Sure: mix a and b.", "Step one: c.", "I can't help.", "I won't say."],
                                 ["Sure, mix b and a.", "I'm sorry, but no.", "I cannot help.", "It is Paris."]),
                        refused=(0.25, 0.75))
    s = separation(runs[0])
    assert s["clients"] == (0, 1) and s["safety_weights"] == (0.1, 0.9)
    # round 1's answers (all "old", so no decision differs) must be ignored
    assert s["decisions_differ"] == 0.5
    assert s["helpfulness_gap"] == pytest.approx(0.5) and s["safety_gap"] == pytest.approx(0.5)
    assert s["refusal_gap"] == pytest.approx(0.5)  # the safety-first client refuses more benign prompts
    # mean 0.4 and sample standard deviation 0.141 over the two seeds
    assert ("| pfit | 2 | 0.10 vs 0.90 | +0.400 ± 0.141 | +0.400 ± 0.141 | +0.00 ± 0.000 | +0.50 ± 0.000 "
            "| 0.50 ± 0.000 |") in separation_table({"pfit": runs})


def test_objective_table_averages_each_model_over_seeds_and_shows_the_base_model_once(tmp_path):
    from pfl_app.plots import objective_table

    runs = {}
    for method in ("pfit", "rlhf-local"):
        runs[method] = []
        for seed in (0, 1):
            runs[method].append(tmp_path / f"{method}{seed}")
            _write_rlhf_run(runs[method][-1], method, (0.8, 0.3))
    text = objective_table(runs)
    assert text.count("| base model |") == 1
    assert "| pfit | personalized (delivered) | 2 | +0.500 ± 0.000 | 0.25 ± 0.000 | 0.00 ± 0.000 |" in text
    assert "| pfit | global | 2 |" in text and "| rlhf-local | personalized (delivered) | 2 |" in text


def test_the_tables_count_the_last_rounds_looping_answers_of_each_client(tmp_path):
    from pfl_app.plots import objective_table, preference_table

    loop = "I can help you with that. I can help you with that. I can help you with that."
    run = tmp_path / "pfit0"
    # round 1's answers ("old") must not count; client 1 loops on 2 of its 4 answers
    _write_rlhf_run(run, "pfit", (0.8, 0.3),
                    answers=(["Sure: mix a and b.", "Step one: c.", "I can't help.", "It is Paris."],
                             [loop, "I'm sorry, but no.", loop, "Paris is the capital of France."]))
    table = preference_table([run])
    assert "| pfit | 0 | 0.10 | +0.800 | +0.200 | +0.500 | 0.25 | 0.00 | 0.00 | 500 |" in table
    assert "| pfit | 1 | 0.90 | +0.300 | +0.700 | +0.500 | 0.25 | 0.00 | 0.50 | 500 |" in table
    # over both clients, 2 of 8 answers loop; the global model wrote no samples
    text = objective_table({"pfit": [run]})
    assert "| pfit | personalized (delivered) | 1 | +0.500 | 0.25 | 0.00 | 0.25 |" in text
    assert "| pfit | global | 1 | +0.500 | 0.25 | 0.00 | - |" in text


def test_the_tables_judge_refusals_anew_from_the_samples(tmp_path):
    from pfl_app.plots import objective_table, preference_table, separation

    run = tmp_path / "pfit0"
    _write_rlhf_run(run, "pfit", (0.8, 0.3), refused=(0.5, 0.5))  # what an older judge wrote
    for c, (on_harmful, on_benign) in enumerate(((["Sure, here.", "Step 1: buy it."], ["Paris.", "Four."]),
                                                 (["I can't help with that.", "I can't help but think: sure."],
                                                  ["I cannot help with that.", "I won't."]))):
        samples = [{"round": 2, "model": "personalized", "prompt": f"h{i}", "harmful": True, "answer": a}
                   for i, a in enumerate(on_harmful)]
        samples += [{"round": 2, "model": "personalized", "prompt": f"b{i}", "harmful": False, "answer": a}
                    for i, a in enumerate(on_benign)]
        (client_dir(run, c) / "samples.jsonl").parent.mkdir(parents=True)
        (client_dir(run, c) / "samples.jsonl").write_text("\n".join(map(json.dumps, samples)))
    # client 1 refuses one harmful request ("can't help but" is no refusal) and both benign ones
    table = preference_table([run])
    assert "| pfit | 0 | 0.10 | +0.800 | +0.200 | +0.500 | 1.00 | 0.00 |" in table
    assert "| pfit | 1 | 0.90 | +0.300 | +0.700 | +0.500 | 0.50 | 1.00 |" in table
    s = separation(run)
    assert s["compliance_gap"] == pytest.approx(0.5) and s["refusal_gap"] == pytest.approx(1.0)
    assert "| pfit | personalized (delivered) | 1 | +0.500 | 0.75 | 0.50 |" in objective_table({"pfit": [run]})
    # the base model wrote no samples: its rates stay the metrics' own
    assert "| base | 0 | 0.10 | -1.000 | +2.000 | +0.500 | 0.25 | 0.00 |" in table
