import pytest

from pfl_app.config import ConfigError
from pfl_app.launch import Scenario, _unflatten, load_scenario, parse_overrides, resolve_run_config


def test_overrides_take_toml_values_and_quoted_spaces():
    got = parse_overrides(["num-server-rounds=5 model.name='tiny-llama'", "data.tasks='a b,c' seed=2"])
    assert got == {"num-server-rounds": 5, "model.name": "tiny-llama", "data.tasks": "a b,c", "seed": 2}


def test_malformed_override_is_named():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["seed"])


def test_scenario_tables_are_checked(tmp_path):
    good = tmp_path / "s.toml"
    good.write_text('[federation]\nnum-supernodes = 3\n[run-config]\nlora.r = 4\nmethod = "send-all"\n')
    s = load_scenario(good)
    assert s.federation == {"num-supernodes": 3}
    assert s.run_config == {"lora.r": 4, "method": "send-all"}
    bad = tmp_path / "b.toml"
    bad.write_text("[federation]\nnum-clients = 3\n")
    with pytest.raises(ConfigError, match="num-clients.*num-supernodes"):
        load_scenario(bad)
    bad.write_text("[federation]\nnum-supernodes = 0\n")
    with pytest.raises(ConfigError, match="num-supernodes"):
        load_scenario(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_scenario(tmp_path / "missing.toml")


def test_shipped_scenarios_are_valid(project_dir):
    for path in [project_dir / "simulation.toml", *sorted((project_dir / "scenarios").glob("*.toml"))]:
        resolve_run_config(load_scenario(path), {}, project_dir)


def test_run_name_and_results_dir_are_pinned(tmp_path):
    flat = resolve_run_config(Scenario(run_config={"results-dir": "out"}), {"method": "send-all"}, tmp_path)
    assert flat["results-dir"] == str(tmp_path / "out")
    assert flat["run-name"].startswith("send-all-")


def test_unflatten_round_trips():
    assert _unflatten({"a.b": 1, "a.c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}


def test_waiting_for_a_port_fails_at_once_when_its_process_has_exited():
    import subprocess
    import sys
    import time

    from pfl_app.launch import LaunchError, free_port, wait_for_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    start = time.time()
    with pytest.raises(LaunchError, match="exited with code 3"):
        wait_for_port(port, timeout=30, process=proc)
    assert time.time() - start < 5
