"""A Flower app of a user's own, outside pfl-app, that uses pfl_app as a library and brings a
method of its own (the one docs/extending.md shows), run through a real ``flwr run``."""

import json
import re
import tomllib

import pytest
from safetensors.numpy import load_file

from pfl_app.launch import Scenario, launch
from pfl_app.models.personalized import tensor_group

from .helpers import TINY

METHOD = "my_methods:AdaptersAndA"


def write_external_app(folder, project_dir):
    """The user's app: its pyproject.toml (pfl-app's config keys, its own app name), a
    one-line server_app.py, and the method file from docs/extending.md."""
    folder.mkdir()
    text = (project_dir / "docs" / "extending.md").read_text()
    (method_file,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (folder / "my_methods.py").write_text(method_file)
    # Flower checks `server_app:app` by reading the file: a re-export names it in __all__.
    (folder / "server_app.py").write_text('from pfl_app.server.app import app\n\n__all__ = ["app"]\n')
    ours = (project_dir / "pyproject.toml").read_text()
    config = ours[ours.index("[tool.flwr.app.config]"):ours.index("[tool.pytest")]
    config = re.sub(r'(?m)^method = "pftt"$', f'method = "{METHOD}"', config)
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "my-pfl-study"\nversion = "0.1.0"\ndependencies = ["pfl-app"]\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["."]\n\n'
        '[tool.flwr.app]\npublisher = "someone-else"\n\n'
        '[tool.flwr.app.components]\nserverapp = "server_app:app"\nclientapp = "pfl_app.client.app:app"\n\n'
        + config
    )
    assert tomllib.loads((folder / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]["method"] == METHOD
    return len(method_file.splitlines())


@pytest.mark.simulation
def test_a_method_of_the_users_own_app_runs_through_flwr_run(tmp_path, project_dir):
    app = tmp_path / "my-app"
    assert write_external_app(app, project_dir) <= 40
    config = {**TINY, "num-server-rounds": 1, "results-dir": str(tmp_path / "results"), "run-name": "own-method"}
    scenario = Scenario({"num-supernodes": 2, "client-resources-num-cpus": 1}, config)
    status, run_dir = launch(app, scenario, {}, echo=lambda _line: None)
    assert status["status"] == "finished:completed"

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == METHOD and summary["client_kind"] == "task" and summary["rounds_completed"] == 1
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["status"] == "ok" and r["method"] == METHOD for r in rows)
    # The method's groups, not PFTT's: the adapters and LoRA A travelled, LoRA B stayed home.
    assert {tensor_group(k) for k in load_file(str(run_dir / "global_shared.safetensors"))} == {"adapter", "lora_A"}
    for client in (0, 1):
        kept = load_file(str(run_dir / "clients" / f"client-{client:03d}" / "local_tensors.safetensors"))
        assert {tensor_group(k) for k in kept} == {"lora_B"}
