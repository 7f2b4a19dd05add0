"""Flower's deployment engine on loopback: a SuperLink and SuperNodes as real processes."""

import json
import signal
import time

import pytest

from pfl_app.deploy import (
    Processes,
    flwr_run,
    supernode_command,
    superlink_command,
    write_connection,
)
from pfl_app.launch import flower_env, free_port, run_log, wait_for_port

from .helpers import (
    TINY,
    assert_registered_trained_and_stranger_refused,
    assert_run_completed,
    make_certs_and_keys,
    register_nodes,
)

pytestmark = pytest.mark.simulation


@pytest.fixture
def deployment(tmp_path, project_dir):
    home = tmp_path / "flwr-home"
    env = flower_env(home, project_dir)
    procs = Processes(env, tmp_path / "logs")
    port = free_port()
    wait_for_port(port, process=procs.start("superlink", superlink_command(port)))
    write_connection(home, "loopback", f"127.0.0.1:{port}")
    nodes = {}
    for i in range(2):
        nodes[i] = supernode_command(f"127.0.0.1:{port}", free_port(), i, 2, state_dir=tmp_path / f"device-{i}")
        procs.start(f"supernode-{i}", nodes[i])
    yield procs, env, nodes, tmp_path
    procs.stop_all()


def test_a_supernode_killed_and_restarted_keeps_its_lora(deployment, project_dir):
    procs, env, nodes, tmp = deployment
    # The killed node's round-2 reply never comes. The restarted one registers under a new
    # node id, and the SuperLink answers the old id's message with a "node unavailable" error
    # once its heartbeat is 2 x 30 s late: round 2 goes on without that answer, and its
    # evaluation reaches the restarted node. The timeout is a backstop above that wait.
    config = {**TINY, "num-server-rounds": 2, "data.partitioner": "iid", "results-dir": str(tmp / "results"),
              "run-name": "restarted", "min-clients": 2, "min-answers": 1, "round-timeout-s": 120.0}
    run_id = flwr_run(project_dir, "loopback", config, env)
    pointer = tmp / "results" / "restarted" / "checkpoint.json"
    state = tmp / "device-0" / "restarted" / "clients" / "client-000" / "local_tensors.safetensors"
    deadline = time.time() + 300
    while not (pointer.exists() and json.loads(pointer.read_text())["round"] >= 1):
        assert time.time() < deadline, "round 1 never finished"
        time.sleep(0.2)
    procs.stop("supernode-0", signal.SIGKILL)  # its Context dies with it; the client's tensors are on disk
    from safetensors.numpy import load_file

    before = load_file(str(state))
    procs.start("supernode-0", nodes[0])
    assert_run_completed(run_id, "loopback", env)
    rows = [json.loads(line) for line in (tmp / "results" / "restarted" / "metrics.jsonl").read_text().splitlines()]
    after_restart = [r for r in rows if r.get("client") == 0 and r["round"] >= 2 and "personalized_loss" in r]
    assert after_restart, "the restarted node never evaluated"
    first = min(after_restart, key=lambda r: r["round"])
    # A LoRA lost with the process would be back at its initial value (B = 0): the
    # personalized model would then equal the global one exactly.
    assert first["personalized_loss"] != pytest.approx(first["global_loss"], rel=1e-7, abs=0)
    assert any(abs(v).sum() > 0 for k, v in before.items() if ".lora_B." in k)
    summary = json.loads((tmp / "results" / "restarted" / "summary.json").read_text())
    assert summary["clients"] == 2  # the old node's error reply is client 0's, not a third client
    assert summary["client_failures"] >= 1


def test_tls_with_node_auth_refuses_an_unregistered_node_and_trains_with_registered_ones(tmp_path, project_dir):
    tls, keys = make_certs_and_keys(project_dir, tmp_path, ["127.0.0.1"], ("node-0", "node-1", "stranger"))
    home = tmp_path / "flwr-home"
    env = flower_env(home, project_dir)
    procs = Processes(env, tmp_path / "logs")
    port = free_port()
    try:
        superlink = procs.start("superlink", superlink_command(
            port, tls=tls, database=tmp_path / "state.db", node_auth=True))
        wait_for_port(port, process=superlink)
        write_connection(home, "secure", f"127.0.0.1:{port}", root_cert=tls.ca_cert)
        register_nodes(keys, ("node-0", "node-1"), "secure", env)
        for i, name in enumerate(("node-0", "node-1")):
            procs.start(name, supernode_command(f"127.0.0.1:{port}", free_port(), i, 2,
                                                state_dir=tmp_path / name, root_cert=tls.ca_cert,
                                                auth_key=keys / name))
        stranger = procs.start("stranger", supernode_command(f"127.0.0.1:{port}", free_port(), 1, 2,
                                                             state_dir=tmp_path / "stranger",
                                                             root_cert=tls.ca_cert, auth_key=keys / "stranger"))
        config = {**TINY, "num-server-rounds": 1, "data.partitioner": "iid",
                  "results-dir": str(tmp_path / "results"), "run-name": "secure"}
        run_id = flwr_run(project_dir, "secure", config, env)
        assert_run_completed(run_id, "secure", env)
        # the app's progress line reaches the ServerApp log that `flwr log` shows
        assert "round 1/1 | up" in run_log(run_id, env, "secure")
        assert_registered_trained_and_stranger_refused(tmp_path, "secure", stranger, tmp_path / "logs")
    finally:
        procs.stop_all()
