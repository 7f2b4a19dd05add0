"""A resume checks what it finds before it continues: checkpoints, config and federation."""

import json

import numpy as np
import pytest

from pfl_app import checkpoint
from pfl_app.checkpoint import CheckpointError
from pfl_app.cli import main as cli_main
from pfl_app.config import ConfigError
from pfl_app.launch import Scenario, check_resume, resolve_run_config

from .helpers import TINY


def _rounds(run_dir, rounds):
    """Commit ``rounds`` rounds whose shared tensor holds the round number."""
    for r in range(1, rounds + 1):
        checkpoint.write(run_dir, r, {"w": np.full(3, float(r), np.float32)}, {}, {"simulated_time_s": float(r)})
        checkpoint.commit(run_dir, r)


def test_the_last_committed_round_is_read(tmp_path):
    _rounds(tmp_path, 3)
    found = checkpoint.read(tmp_path, num_rounds=5)
    assert found.round == 3 and found.shared["w"].tolist() == [3.0, 3.0, 3.0]
    assert checkpoint.read(tmp_path / "empty") is None  # nothing committed: start over


def test_a_missing_pointer_beside_round_folders_is_refused_not_started_over(tmp_path):
    _rounds(tmp_path, 2)
    (tmp_path / "checkpoint.json").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint.json is missing, but .* holds round-0002, round-0001"):
        checkpoint.read(tmp_path)


def test_a_round_beyond_num_server_rounds_is_refused(tmp_path):
    _rounds(tmp_path, 3)
    with pytest.raises(CheckpointError, match="round 3 is finished, beyond num-server-rounds = 2"):
        checkpoint.read(tmp_path, num_rounds=2)


def test_a_damaged_pointer_is_named(tmp_path):
    _rounds(tmp_path, 1)
    (tmp_path / "checkpoint.json").write_text("{round: 1")
    with pytest.raises(CheckpointError, match=r"checkpoint.json is damaged"):
        checkpoint.read(tmp_path)


def test_an_unreadable_tensor_file_is_named_and_the_kept_round_before_it_used(tmp_path):
    _rounds(tmp_path, 3)
    broken = tmp_path / "checkpoints" / "round-0003" / "shared.safetensors"
    broken.write_bytes(broken.read_bytes()[:20])
    told = []
    found = checkpoint.read(tmp_path, num_rounds=3, warn=told.append)
    assert found.round == 2 and found.shared["w"].tolist() == [2.0, 2.0, 2.0]
    assert len(told) == 1 and str(broken) in told[0] and "round 2 instead" in told[0]
    # Both kept rounds broken: nothing to fall back to, and both files are named.
    older = tmp_path / "checkpoints" / "round-0002" / "state.json"
    older.write_text("{")
    with pytest.raises(CheckpointError, match="no intact checkpoint") as err:
        checkpoint.read(tmp_path)
    assert str(broken) in str(err.value) and str(older) in str(err.value)


def _run_folder(tmp_path, project_dir, federation=None):
    flat = resolve_run_config(Scenario(run_config={**TINY, "results-dir": str(tmp_path), "run-name": "r"}), {},
                              project_dir)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"method": "pftt", "run_dir": str(run_dir), "run_config": flat}))
    (run_dir / "federation.json").write_text(json.dumps(federation or {"num-supernodes": 3}))
    _rounds(run_dir, 1)
    return run_dir, flat


def test_a_resume_with_another_config_names_the_keys(tmp_path, project_dir):
    run_dir, flat = _run_folder(tmp_path, project_dir)
    check_resume(run_dir, {**flat, "resume-from": str(run_dir), "round-timeout-s": 10.0})  # free keys may differ
    with pytest.raises(ConfigError, match=r"differs from the run's in \['lora.r', 'seed'\]"):
        check_resume(run_dir, {**flat, "seed": 7, "lora.r": 8})


def test_a_run_from_before_a_key_existed_resumes_at_that_keys_default(tmp_path, project_dir):
    run_dir, flat = _run_folder(tmp_path, project_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    del saved["run_config"]["eval.every"]  # the run was started before eval.every existed
    (run_dir / "config.json").write_text(json.dumps(saved))
    check_resume(run_dir, {**flat, "resume-from": str(run_dir)})  # at its default: the old behaviour
    with pytest.raises(ConfigError, match=r"differs from the run's in \['eval.every'\]"):
        check_resume(run_dir, {**flat, "eval.every": 2})


def test_a_resume_on_another_federation_is_refused(tmp_path, project_dir, capsys):
    run_dir, _ = _run_folder(tmp_path, project_dir)
    rc = cli_main(["run", "--app-dir", str(project_dir), "--resume-from", str(run_dir), "--num-clients", "5"])
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 2 and "num-supernodes = 3, not 5" in out


def test_a_broken_federation_file_is_a_message_not_a_traceback(tmp_path, project_dir, capsys):
    run_dir, _ = _run_folder(tmp_path, project_dir)
    (run_dir / "federation.json").write_text('{"num-supernodes": ')
    rc = cli_main(["run", "--app-dir", str(project_dir), "--resume-from", str(run_dir)])
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 2 and "federation.json is damaged" in out and "Traceback" not in out


def test_an_error_naming_a_long_path_prints_the_path_in_one_piece(tmp_path, project_dir, capsys):
    # A user copies the path out of the message: the console must not break it into lines.
    deep = tmp_path / ("a-folder-with-a-long-name-" * 4)
    deep.mkdir()
    run_dir, _ = _run_folder(deep, project_dir)
    (run_dir / "federation.json").write_text('{"num-supernodes": ')
    assert cli_main(["run", "--app-dir", str(project_dir), "--resume-from", str(run_dir)]) == 2
    assert f"{run_dir / 'federation.json'} is damaged" in capsys.readouterr().out


def test_a_last_metrics_row_cut_short_by_a_crash_is_dropped_and_one_before_it_refused(tmp_path):
    rows = [{"round": 1, "client": c, "status": "ok"} for c in (0, 1)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"round": 2, "cli')
    assert checkpoint.truncate_metrics(tmp_path, 1) == rows
    assert path.read_text().splitlines() == [json.dumps(r) for r in rows]
    path.write_text(json.dumps(rows[0]) + '\n{"round": 1, "cl\n' + json.dumps(rows[1]) + "\n")
    with pytest.raises(CheckpointError, match=r"metrics.jsonl, line 2 is damaged"):
        checkpoint.read_metrics(tmp_path)
