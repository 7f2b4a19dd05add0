"""Helpers shared by the tests: the tiny configs, messages and contexts built by hand, a fake
Flower Grid, and the steps the deployment tests share. Fixtures live in conftest.py."""

import json
import subprocess

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from pfl_app.client.state import client_dir, saved_tensors
from pfl_app.deploy import Tls, wait_for_run
from pfl_app.launch import _bin, run_log
from pfl_app.protocol import COHORT_NODE_IDS_KEY, COHORT_SHARES_KEY, WIRELESS_COHORT_KEY
from pfl_app.records import from_arrayrecord, to_arrayrecord

# A config small enough for unit tests: the tiny random model, few examples, 2 steps.
TINY = {
    "model.name": "tiny-llama",
    "model.max-length": 64,
    "adapter.bottleneck-dim": 4,
    "lora.r": 2,
    "lora.alpha": 4,
    "lora.target-modules": "q_proj,v_proj",
    "data.max-train-examples": 8,
    "data.max-test-examples": 6,
    "train.local-steps": 2,
    "train.batch-size": 2,
    "train.learning-rate": 0.01,
    "eval.batch-size": 4,
}

# RLHF on the tiny policy: short completions, small groups, few prompts.
TINY_RLHF = {
    **TINY,
    "method": "pfit",
    "rlhf.sparse-update": "last-k",
    "rlhf.sparse-k": 1,
    "rlhf.max-completion-length": 4,
    "rlhf.prompts-per-step": 2,
    "rlhf.num-generations": 2,
    "rlhf.train-prompts": 4,
    "rlhf.eval-prompts": 4,
    # the supervised warm-up has tests of its own (test_warmup.py)
    "rlhf.warmup-steps": 0,
}

# -- the client side: a node's context and a server's message, by hand ---------------------

def client_context(node_id, client_id, num=2, state=None, **run_config):
    return Context(
        run_id=1, node_id=node_id,
        node_config={"partition-id": client_id, "num-partitions": num},
        state=state if state is not None else RecordDict(),
        run_config={**TINY, **run_config},
    )


def kept_on_disk(run_dir, client_id, up_to_round=1 << 30):
    """The tensors client ``client_id`` keeps, read from its folder (the only place they are
    kept); ``{}`` when it saved none."""
    found = saved_tensors(client_dir(run_dir, client_id), up_to_round=up_to_round)
    return {} if found is None else found[1]


def server_message(kind, groups, tensors, run_dir, rnd=1, node=0):
    content = RecordDict({
        "arrays": to_arrayrecord(tensors),
        "config": ConfigRecord({"server-round": rnd, "shared-groups": groups, "run-dir": str(run_dir)}),
    })
    return Message(content=content, dst_node_id=node, message_type=kind)


# -- the wireless mod: a client's context, a train message of one tensor, a stand-in ClientApp ----

SHARED = "model.layers.0.mlp.bottleneck_adapter.default.up.weight"


def mod_context(client=0, node_id=None, **run_config):
    """Client ``client`` of 4 (node ``10 + client`` unless given) under the tiny config."""
    return Context(run_id=1, node_id=10 + client if node_id is None else node_id,
                   node_config={"partition-id": client, "num-partitions": 4},
                   state=RecordDict(), run_config={**TINY, **run_config})


def mod_train_message(rnd=1, node=10, size=1000, cohort=None, shares=None, name=SHARED):
    """A train message of ``size`` zeros, with the round's cohort (and shares) when given."""
    content = RecordDict({
        "arrays": to_arrayrecord({name: np.zeros(size, np.float32)}),
        "config": ConfigRecord({"server-round": rnd, "shared-groups": "adapter", "run-dir": "/x"}),
    })
    if cohort is not None:
        record = {COHORT_NODE_IDS_KEY: list(cohort)}
        if shares is not None:
            record[COHORT_SHARES_KEY] = list(shares)
        content[WIRELESS_COHORT_KEY] = ConfigRecord(record)
    return Message(content=content, dst_node_id=node, message_type="train")


def reply_of_ones(msg, ctx):
    """Stands in for the ClientApp behind the mod: replies with an update of ones."""
    name, value = next(iter(from_arrayrecord(msg.content["arrays"]).items()))
    return Message(RecordDict({
        "arrays": to_arrayrecord({name: np.ones(value.size, np.float32)}),
        "metrics": MetricRecord({"num-examples": 4, "train-loss": 1.0, "train-seconds": 2.0}),
        "client": ConfigRecord({"client-id": 0, "task": "t"}),
    }), reply_to=msg)


# -- the server side: tensors, a fake Grid, client replies, a configured round -------------

ADAPTER = "base_model.model.model.layers.0.mlp.bottleneck_adapter.default.up.weight"
LORA_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"


class FakeGrid:
    """Only what FedAvg's sampling asks of a Grid."""

    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return list(self.nodes)


def client_reply(msg, arrays=None, n=1, loss=0.5, client=0):
    content = RecordDict({
        "metrics": MetricRecord({"num-examples": n, "train-loss": loss, "train-seconds": 1.5}),
        "client": ConfigRecord({"client-id": client, "task": "t"}),
    })
    if arrays is not None:
        content["arrays"] = to_arrayrecord(arrays)
    return Message(content=content, reply_to=msg)


def configured_round(strategy, nodes, global_arrays):
    rows = []
    strategy.on_round_end = lambda r, got, shared: rows.extend(got)
    msgs = list(strategy.configure_train(1, to_arrayrecord(global_arrays), ConfigRecord({"run-dir": "/x"}), FakeGrid(nodes)))
    return {m.metadata.dst_node_id: m for m in msgs}, rows


# -- deployment: a run's status, its rows, certificates and node keys ---------------------

def assert_run_completed(run_id, connection, env, timeout=600.0):
    status = wait_for_run(run_id, connection, env, timeout=timeout)
    # The ServerApp runs in a process the test does not own: show its log on failure.
    assert status == "finished:completed", f"run {run_id} ended {status}:\n{run_log(run_id, env, connection)}"


def metrics_by_round_and_client(run_dir):
    return {(r["round"], r["client"]): r for r in
            (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())}


def make_certs_and_keys(project_dir, tmp_path, hosts, names):
    """Certificates for ``hosts`` and a SuperNode key pair per name, made by the deploy scripts."""
    scripts = project_dir / "scripts" / "deploy"
    certs, keys = tmp_path / "certs", tmp_path / "keys"
    subprocess.run(["bash", str(scripts / "make-certs.sh"), *hosts, str(certs)], check=True, capture_output=True)
    for name in names:
        subprocess.run(["bash", str(scripts / "make-node-key.sh"), str(keys / name)], check=True, capture_output=True)
    return Tls(certs / "ca.crt", certs / "server.pem", certs / "server.key"), keys


def register_nodes(keys, names, connection, env):
    """``flwr supernode register`` each node's public key with the SuperLink."""
    for name in names:
        out = subprocess.run([_bin("flwr"), "supernode", "register", str(keys / f"{name}.pub"), connection],
                             env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def assert_registered_trained_and_stranger_refused(tmp_path, run_name, stranger, logs):
    """After a one-round run of two registered nodes (state in ``tmp_path/node-<i>``) and an
    unregistered one (``stranger``, state in ``tmp_path/stranger``): both trained, it did not."""
    rows = metrics_by_round_and_client(tmp_path / "results" / run_name)
    assert sorted(rows) == [(1, 0), (1, 1)]
    assert all(r["status"] == "ok" and r["bytes_up"] > 0 for r in rows.values())
    # every device kept its own state on its own disk (node config state-dir)
    assert (tmp_path / "node-0" / run_name / "clients" / "client-000" / "lora" / "adapter_model.safetensors").exists()
    assert (tmp_path / "node-1" / run_name / "clients" / "client-001" / "local_tensors.safetensors").exists()
    assert not (tmp_path / "stranger").exists()  # the unregistered node never trained
    log = (logs / "stranger.log").read_text().lower()
    assert "failed to activate supernode" in log, log[-2000:]  # the SuperLink refused it
    stranger.wait(timeout=60)
    assert stranger.returncode != 0
