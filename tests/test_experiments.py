"""The experiment runner's grid expansion and resume, and the report, on fixture results."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from pfl_app.client.state import client_dir
from pfl_app.config import ConfigError
from pfl_app.experiments import load_grid, run_grid, run_state
from pfl_app.launch import LaunchError, Scenario, check_resume, resolve_run_config
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
        "num_server_rounds": 2, "rounds_completed": 2,
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


class CheckingLaunch(FakeLaunch):
    """Does what the real launch does before anything starts (the run config resolved, a resume
    checked against the folder's config and checkpoint), then writes a finished run."""

    def __init__(self, project_dir):
        super().__init__()
        self.project_dir, self.resumed = project_dir, []

    def __call__(self, project_dir, scenario, overrides, echo=print):
        flat = resolve_run_config(scenario, overrides, self.project_dir)
        if flat["resume-from"]:
            check_resume(Path(flat["resume-from"]), flat)  # raises ConfigError, as launch does
            self.resumed.append(overrides["run-name"])
            folder = Path(flat["resume-from"])
            self.calls.append(overrides["run-name"])
            _write_run(folder, overrides["seed"])
            return {"status": "finished:completed"}, folder
        return super().__call__(project_dir, scenario, overrides, echo)


def _interrupted(grid, run, project_dir, **changed):
    """A run folder as a kill after round 1 leaves it: config, federation, one checkpoint."""
    from pfl_app import checkpoint

    folder = grid.results_dir / run.name
    folder.mkdir(parents=True)
    flat = resolve_run_config(Scenario(dict(grid.federation), {}), run.overrides, project_dir)
    (folder / "config.json").write_text(json.dumps({"run_config": {**flat, **changed}}))
    (folder / "federation.json").write_text(json.dumps(grid.federation))
    checkpoint.write(folder, 1, {"w": np.zeros(2, np.float32)}, {}, {})
    checkpoint.commit(folder, 1)
    (folder / "metrics.jsonl").write_text(json.dumps({"round": 1, "node": 0}) + "\n")
    return folder


def test_an_interrupted_run_with_a_checkpoint_is_continued_not_restarted(tmp_path, project_dir):
    grid = _grid(tmp_path)
    run = grid.runs[0]
    folder = _interrupted(grid, run, project_dir)
    assert run_state(grid, run) == "partial"
    launch = CheckingLaunch(project_dir)
    outcomes = dict((r.name, o) for r, o in run_grid(grid, tmp_path, runner=launch))
    assert launch.resumed == [run.name] and outcomes[run.name] == "ran"
    assert not list(grid.results_dir.glob(f"{run.name}.partial-*"))  # continued in place
    assert (folder / "checkpoints" / "round-0001").is_dir() and run_state(grid, run) == "done"
    assert len(launch.calls) == 16


def test_an_interrupted_run_that_cannot_be_continued_is_kept_aside_and_rerun(tmp_path, project_dir):
    grid = _grid(tmp_path)
    run = grid.runs[0]
    # Its config was written with another value of a key (say, by an edited grid file).
    _interrupted(grid, run, project_dir, **{"train.local-steps": 99})
    launch = CheckingLaunch(project_dir)
    out = io.StringIO()
    outcomes = dict((r.name, o) for r, o in run_grid(grid, tmp_path, runner=launch,
                                                       console=Console(file=out, width=300)))
    assert launch.resumed == [] and outcomes[run.name] == "ran"
    aside = grid.results_dir / f"{run.name}.partial-1"
    assert (aside / "checkpoints" / "round-0001").is_dir()  # nothing lost
    assert run_state(grid, run) == "done" and launch.calls.count(run.name) == 1
    assert "cannot be continued" in out.getvalue() and "train.local-steps" in out.getvalue()


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
    (folder / "summary.json").write_text(json.dumps({"method": method, "uplink_bytes_total": 1000,
                                                     "num_server_rounds": 2, "rounds_completed": 2}))
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


# -- what counts as done, and what a failure leaves behind ------------------------------

def _write_stopped_run(folder, seed, acc=0.9, stopped="round 2: 0 of 2 client(s) answered", rounds=1):
    """A run that wrote a summary but did not finish: it must never count as done."""
    folder.mkdir(parents=True)
    _write_run(folder, seed, acc)
    summary = json.loads((folder / "summary.json").read_text())
    summary["rounds_completed"] = rounds
    if stopped:
        summary["stopped_early"] = stopped
    (folder / "summary.json").write_text(json.dumps(summary))


def test_an_incomplete_or_failed_run_is_run_again(tmp_path):
    grid = _grid(tmp_path)
    stopped, short, failed = grid.runs[0], grid.runs[1], grid.runs[2]
    _write_stopped_run(grid.results_dir / stopped.name, 0)
    _write_stopped_run(grid.results_dir / short.name, 0, stopped="")  # 1 of 2 rounds, no reason given
    (grid.results_dir / failed.name).mkdir(parents=True)
    (grid.results_dir / failed.name / "failure.json").write_text(json.dumps({"error": "it broke"}))
    assert [run_state(grid, r) for r in (stopped, short, failed)] == ["failed"] * 3
    fake = FakeLaunch()
    outcomes = dict((r.name, o) for r, o in run_grid(grid, tmp_path, runner=fake))
    assert all(outcomes[r.name] == "ran" for r in (stopped, short, failed)) and len(fake.calls) == 16
    for run in (stopped, short, failed):  # set aside, not lost
        assert (grid.results_dir / f"{run.name}.failed-1").is_dir()
        assert run_state(grid, run) == "done"
    again = FakeLaunch()
    run_grid(grid, tmp_path, runner=again)
    assert again.calls == []


class StoppingLaunch(FakeLaunch):
    """Writes what a run whose every client failed in round 1 leaves, echoes a log and fails
    as launch does; ``quietly`` returns instead of raising."""

    def __init__(self, quietly=False):
        super().__init__()
        self.quietly = quietly

    def __call__(self, project_dir, scenario, overrides, echo=print):
        name = overrides["run-name"]
        self.calls.append(name)
        folder = Path(overrides["results-dir"]) / name
        folder.mkdir(parents=True)
        trace = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                 "InjectedFault: injected fault: client {} fails")
        rows = [{"round": 1, "node": 100 + n, "bytes_up": 0, "bytes_down": 500, "status": "error",
                 "error": trace.format(n)} for n in (0, 1)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "summary.json").write_text(json.dumps({
            "num_server_rounds": 2, "rounds_completed": 0, "client_failures": 2,
            "stopped_early": "round 1: 0 of 2 client(s) answered (2 failed, 0 timed out)"}))
        for i in range(60):
            echo(f"\x1b[32mINFO \x1b[0m:      log line {i}")
        echo("ERROR :     pfl-app: round 1: 0 of 2 client(s) answered [min-answers=1]")
        if self.quietly:
            return {"status": "finished:completed"}, folder
        raise LaunchError(f"run 7 ended as 'finished:failed' (); see the log above")


def test_a_failed_run_shows_its_log_and_its_clients_errors_and_keeps_them(tmp_path):
    from rich.console import Console

    grid = _grid(tmp_path)
    console = Console(record=True, width=200)
    with pytest.raises(LaunchError, match="see the log above"):
        run_grid(grid, tmp_path, runner=StoppingLaunch(), console=console)
    shown = console.export_text()
    # the log's last lines come first (markup such as [min-answers=1] is shown as it is) ...
    assert "log line 59" in shown and "log line 19" not in shown and "[min-answers=1]" in shown
    # ... then each client's last error lines, then the launch's error
    assert "node 100 failed in round 1" in shown  # it failed before naming its client
    assert "InjectedFault: injected fault: client 1 fails" in shown
    assert shown.index("log line 59") < shown.index("injected fault") < shown.index("see the log above")
    folder = grid.results_dir / grid.runs[0].name
    failure = json.loads((folder / "failure.json").read_text())
    assert failure["error"].startswith("run 7 ended as 'finished:failed'")
    assert failure["stopped_early"].startswith("round 1: 0 of 2") and failure["client_failures"] == 2
    assert [(e["client"], e["node"]) for e in failure["client_errors"]] == [(None, 100), (None, 101)]
    assert failure["client_errors"][1]["error"][-1] == "InjectedFault: injected fault: client 1 fails"
    assert len(failure["log_tail"]) == 40 and failure["log_tail"][-1].endswith("[min-answers=1]")
    assert failure["log_tail"][0] == "INFO :      log line 21"  # without its colour codes
    assert run_state(grid, grid.runs[0]) == "failed"


def test_client_errors_keeps_each_clients_last_error_and_knows_a_node_by_its_client(tmp_path):
    from pfl_app.experiments import client_errors

    rows = [{"round": 1, "node": 100, "client": 0, "status": "ok"},
            {"round": 1, "node": 101, "client": 1, "status": "error", "error": "old"},
            {"round": 2, "node": 101, "client": 1, "status": "error", "error": "a\n\nb\nc\nd\ne\nf"},
            {"round": 2, "node": 100, "status": "error", "error": "Node Unavailable"},  # the SuperLink's reply
            {"round": 2, "node": 7, "status": "error", "error": "never named its client"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"round": 3, "no')
    assert client_errors(tmp_path) == [
        {"client": 1, "node": 101, "round": 2, "error": ["b", "c", "d", "e", "f"]},
        {"client": 0, "node": 100, "round": 2, "error": ["Node Unavailable"]},
        {"client": None, "node": 7, "round": 2, "error": ["never named its client"]},
    ]
    assert client_errors(tmp_path / "nothing") == []


def test_a_run_that_returns_without_finishing_is_failed_too(tmp_path):
    from rich.console import Console

    grid = _grid(tmp_path)
    outcomes = run_grid(grid, tmp_path, runner=StoppingLaunch(quietly=True), keep_going=True,
                        console=Console(file=io.StringIO()))
    assert all(o.startswith("failed: the run ended, but stopped early: round 1") for _, o in outcomes)
    folder = grid.results_dir / grid.runs[0].name
    assert json.loads((folder / "failure.json").read_text())["error"].startswith("the run ended, but")


def test_the_report_lists_failed_runs_and_leaves_them_out_of_the_means(tmp_path):
    _write_stopped_run(tmp_path / "pftt__iid__ideal__seed0", 0, acc=0.9)
    (tmp_path / "pftt__iid__ideal__seed1").mkdir()
    _write_run(tmp_path / "pftt__iid__ideal__seed1", 1, 0.6)
    _write_stopped_run(tmp_path / "fedit__iid__ideal__seed0", 0, stopped="")
    broke = tmp_path / "fedit__iid__ideal__seed1"
    broke.mkdir()  # the launch failed before any summary
    (broke / "failure.json").write_text(json.dumps({"error": "flwr run failed: boom\nmore"}))
    _write_stopped_run(tmp_path / "pftt__iid__ideal__seed2.failed-1", 2)  # superseded: not listed
    (tmp_path / "pftt__iid__ideal__seed3").mkdir()  # under way: not listed
    assert set(collect(tmp_path)) == {("pftt", "iid", "ideal")}
    text = write_report(tmp_path).read_text()
    assert "| pftt | iid | ideal | 1 | 0.600 |" in text  # the stopped run's 0.9 is not averaged in
    assert "- `pftt__iid__ideal__seed0`: failed: stopped early: round 2: 0 of 2 client(s) answered" in text
    assert "- `fedit__iid__ideal__seed0`: failed: it completed 1 of 2 rounds" in text
    assert "- `fedit__iid__ideal__seed1`: failed: flwr run failed: boom\n" in text
    assert "seed2" not in text and "seed3" not in text and "| fedit |" not in text


def test_a_report_of_only_failed_runs_says_so(tmp_path):
    _write_stopped_run(tmp_path / "pftt__iid__ideal__seed0", 0)
    text = write_report(tmp_path).read_text()
    assert "No finished runs yet." in text and "`pftt__iid__ideal__seed0`: failed: stopped early" in text


# -- grid files are checked like scenarios ------------------------------------------------

@pytest.mark.parametrize("federation, match", [
    ("num-supernodes = 0", "num-supernodes must be a whole number >= 1, got 0"),
    ('num-supernodes = "3"', "num-supernodes must be a whole number >= 1, got '3'"),
    ("client-resources-num-gpus = -1", "client-resources-num-gpus must be a whole number >= 0"),
    ("num-nodes = 3", "unknown \\[federation\\] key"),
])
def test_a_bad_federation_value_in_a_grid_is_a_config_error(tmp_path, federation, match):
    with pytest.raises(ConfigError, match=f"grid.toml: .*{match}"):
        _grid(tmp_path, GRID.replace("num-supernodes = 3", federation))


@pytest.mark.parametrize("label", ["a/b", "a\\\\b", "..", ".hidden", "", "two words", "x__y", "é"])
def test_an_unsafe_split_label_is_a_config_error(tmp_path, label):
    with pytest.raises(ConfigError, match="splits\\[0\\]\\.label .*folder name|splits\\[0\\]\\.label .*'__'"):
        _grid(tmp_path, GRID.replace('label = "iid"', f'label = "{label}"'))


def test_an_unsafe_grid_name_or_made_up_label_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="\\[grid\\] name = '../up' cannot be part of a folder name: it may "
                                          "hold letters, digits and"):
        _grid(tmp_path, GRID.replace('name = "g"', 'name = "../up"'))
    # a split without a label is named after its keys, which can hold a path
    with pytest.raises(ConfigError, match="splits\\[0\\]\\.label = .*give the split a label"):
        _grid(tmp_path, GRID.replace('label = "iid", partitioner = "iid"', 'tasks = "data/my.csv"'))
    # the file's name stands in for a missing name: it must be safe too
    path = tmp_path / "my grid.toml"
    path.write_text(GRID.replace('name = "g"\n', ""))
    with pytest.raises(ConfigError, match="set \\[grid\\] name"):
        load_grid(path, tmp_path)


def test_a_grid_file_that_is_no_toml_or_a_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="grid.toml is not valid TOML: .*at line 3, column"):
        _grid(tmp_path, GRID.replace('name = "g"', 'name = "g'))
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(ConfigError, match="folder.toml is not a file"):
        load_grid(tmp_path / "folder.toml", tmp_path)


def test_main_prints_a_config_error_with_its_brackets(tmp_path, capsys):
    from pfl_app.experiments import main

    path = tmp_path / "grid.toml"
    path.write_text(GRID.replace("num-supernodes = 3", "num-supernodes = 0"))
    assert main([str(path), "--dry-run"]) == 2
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "[federation] num-supernodes must be a whole number >= 1" in out


@pytest.mark.simulation
def test_a_real_run_whose_every_client_fails_is_reported_failed_with_its_clients_errors(tmp_path, project_dir):
    from rich.console import Console

    from .helpers import TINY

    run_config = "\n".join(f"{k!s} = {json.dumps(v)}" for k, v in {
        **TINY, "num-server-rounds": 2, "data.partitioner": "iid", "faults.fail-fraction": 1.0}.items())
    grid = _grid(tmp_path, f"""
[grid]
name = "broken"
methods = ["pftt"]
results-dir = "{tmp_path / 'out'}"

[federation]
num-supernodes = 2
client-resources-num-cpus = 1

[run-config]
{run_config}
""")
    console = Console(record=True, width=200)
    (run, outcome), = run_grid(grid, project_dir, keep_going=True, console=console)
    assert outcome.startswith("failed: ") and run_state(grid, run) == "failed"
    folder = grid.results_dir / run.name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["client_failures"] == 2 and summary["rounds_completed"] == 0 and summary["stopped_early"]
    failure = json.loads((folder / "failure.json").read_text())
    assert len(failure["client_errors"]) == 2
    assert all("injected fault" in "\n".join(e["error"]) for e in failure["client_errors"])
    assert any("0 of 2 client(s) answered" in line for line in failure["log_tail"])
    shown = console.export_text()
    assert "injected fault" in shown and shown.index("injected fault") < shown.index("see the log above")
    assert "`pftt__default__ideal__seed0`: failed: " in write_report(grid.results_dir).read_text()


def test_an_interrupted_run_stops_the_sweep_even_with_keep_going(tmp_path):
    import signal

    from pfl_app.launch import Interrupted

    grid = _grid(tmp_path)
    stopped = grid.runs[1].name

    class Stopped(FakeLaunch):
        def __call__(self, project_dir, scenario, overrides, echo=print):
            if overrides["run-name"] == stopped:
                self.calls.append(stopped)
                raise Interrupted(signal.SIGINT)
            return super().__call__(project_dir, scenario, overrides, echo)

    runner = Stopped()
    with pytest.raises(Interrupted):
        run_grid(grid, tmp_path, runner=runner, keep_going=True)
    assert runner.calls == [grid.runs[0].name, stopped]  # nothing after the Ctrl-C ran
