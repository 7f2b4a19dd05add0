"""A simulation on an existing multi-node Ray cluster: ``launch(..., ray_address=...)``.

The cluster is real (:class:`pfl_app.ray_cluster.LocalRayCluster`, whose docstring says how it
is kept apart from other Ray instances on this machine): a head and a worker node, one CPU each,
so that the two clients' actors can only fit one on each node.
"""

import json

import pytest

from pfl_app import cli
from pfl_app.launch import LaunchError, Scenario, free_port, launch
from pfl_app.ray_cluster import LocalRayCluster

from .helpers import TINY

pytestmark = pytest.mark.simulation


@pytest.fixture
def ray_cluster():
    cluster = LocalRayCluster()
    try:
        cluster.start(workers=1)
        yield cluster
    finally:
        cluster.stop()


def test_the_clients_run_as_actors_on_both_nodes_of_an_existing_ray_cluster(tmp_path, project_dir, ray_cluster):
    scenario = Scenario(
        federation={"num-supernodes": 2, "client-resources-num-cpus": 1},
        run_config={**TINY, "num-server-rounds": 1, "results-dir": str(tmp_path), "run-name": "ray"},
    )
    lines = []
    status, run_dir = launch(project_dir, scenario, {}, echo=lines.append, ray_address=ray_cluster.address)
    assert status["status"] == "finished:completed"
    assert f"clients run on the Ray cluster at {ray_cluster.address}" in lines
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 1 and summary["clients"] == 2

    seen = ray_cluster.query()
    assert len(seen["nodes"]) == 2
    clients = [a for a in seen["actors"] if a["class"] == "ClientAppActor"]
    # One CPU per node and one per client: one actor on each node, both in this cluster.
    assert len(clients) == 2, seen["actors"]
    assert {a["node"] for a in clients} == set(seen["nodes"])


def test_an_unreachable_ray_address_fails_before_anything_starts(tmp_path, project_dir):
    # Ray would retry it without end and the run would hang; no cluster is needed here.
    scenario = Scenario(run_config={**TINY, "results-dir": str(tmp_path), "run-name": "nowhere"})
    with pytest.raises(LaunchError, match="cannot reach the Ray cluster"):
        launch(project_dir, scenario, {}, echo=lambda _line: None, ray_address=f"127.0.0.1:{free_port()}")
    assert not any(tmp_path.iterdir())


def test_the_cli_passes_ray_address_to_launch(monkeypatch, project_dir):
    seen = {}

    def fake_launch(*_args, ray_address=None, **_kwargs):
        seen["ray_address"] = ray_address
        raise LaunchError("stop here")

    monkeypatch.setattr(cli, "launch", fake_launch)
    assert cli.main(["run", "--app-dir", str(project_dir), "--ray-address", "10.0.0.5:6379"]) == 1
    assert seen == {"ray_address": "10.0.0.5:6379"}
    assert cli.main(["run", "--app-dir", str(project_dir)]) == 1
    assert seen == {"ray_address": None}
