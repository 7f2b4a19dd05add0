"""End to end: a real `flwr run` with quantized messages over the wireless channel."""

import json
import math

import numpy as np
import pytest
from flwr.app import RecordDict

from pfl_app.compression import encode_into
from pfl_app.config import parse_run_config
from pfl_app.launch import Scenario, launch
from pfl_app.models.personalized import shared_model_bundle
from pfl_app.records import message_bytes, to_arrayrecord

from .helpers import TINY

pytestmark = pytest.mark.simulation

# Adapters wide enough that the tensors, not the names and headers of their Arrays, make the bytes.
RUN = {**TINY, "adapter.bottleneck-dim": 32, "num-server-rounds": 2, "wireless.profile": "wifi",
       "compression.uplink": "int8", "compression.downlink": "fp16"}


def _record_bytes(tensors, codec):
    content = RecordDict()
    encode_into(content, {k: np.zeros(v.shape, np.float32) for k, v in tensors.items()}, codec, 64)
    return sum(r.count_bytes() for r in content.values())


def test_an_int8_uplink_run_sends_about_a_quarter_of_the_bytes_and_completes(tmp_path, project_dir):
    scenario = Scenario(federation={"num-supernodes": 2, "client-resources-num-cpus": 1},
                        run_config={**RUN, "results-dir": str(tmp_path), "run-name": "int8"})
    status, run_dir = launch(project_dir, scenario, {}, echo=lambda _line: None)
    assert status["status"] == "finished:completed"

    adapters = shared_model_bundle(parse_run_config(RUN)).initial_tensors(["adapter"])
    fp32, int8, fp16 = (_record_bytes(adapters, c) for c in ("none", "int8", "fp16"))
    assert fp32 == to_arrayrecord(adapters).count_bytes()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sorted((r["round"], r["client"]) for r in rows) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for r in rows:
        assert r["status"] == "ok"
        # The uplink is the int8 codes and their scales, and the reply's few metrics.
        others = r["bytes_up"] - int8
        assert 0 < others < 1_000
        assert r["bytes_up"] / (fp32 + others) < 0.33  # what the float32 update would have been
        # Two downlinks (train, evaluate) of fp16 tensors and their configs.
        assert 2 * fp16 < r["bytes_down"] < 2 * fp16 + 2_000
        assert r["air_time_s_up"] > 0
        for key in ("personalized_accuracy", "global_accuracy", "train_loss"):
            assert math.isfinite(r[key]), key
    for c in range(2):  # each client kept the error of its last update
        assert (run_dir / "clients" / f"client-{c:03d}" / "compression_residual.safetensors").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and math.isfinite(summary["personalized_accuracy_mean"])


def test_an_adaptive_uplink_run_sends_each_client_the_codec_its_channel_fits(tmp_path, project_dir, flower_identity):
    from collections import Counter

    from flwr.app import ConfigRecord, Message, MetricRecord

    from pfl_app.compression.codec import CODECS
    from pfl_app.strategies import STRATEGIES
    from pfl_app.strategies.server_optimizers import build_strategy
    from pfl_app.wireless.csi import BaseStationCSI

    from .helpers import FakeGrid

    cell = {**TINY, "adapter.bottleneck-dim": 32, "num-server-rounds": 2, "wireless.profile": "lte-cell-edge",
            "wireless.distance-min": 100.0, "wireless.distance-max": 900.0, "compression.uplink": "adaptive",
            "eval.every": 2}
    # What the server will estimate in round 2, worked out here with the run's own tensors and
    # channels: a deadline between two clients' float32 round times splits the cell.
    probe_cfg = parse_run_config({**cell, "wireless.deadline-s": 1e9})
    probe = build_strategy("pftt", STRATEGIES, run_config=probe_cfg, min_available_nodes=4, min_train_nodes=4)
    glob = shared_model_bundle(probe_cfg).initial_tensors(["adapter"])
    nodes = [1, 2, 3, 4]

    def train(rnd):
        return list(probe.configure_train(rnd, to_arrayrecord(glob), ConfigRecord({"run-dir": str(tmp_path)}),
                                          FakeGrid(nodes)))

    replies = []
    for i, m in enumerate(train(1)):
        content = RecordDict({"metrics": MetricRecord({"num-examples": 1}),
                              "client": ConfigRecord({"client-id": i, "task": "t"})})
        encode_into(content, {k: np.zeros_like(v) for k, v in glob.items()}, "int4", 64)
        replies.append(Message(content=content, reply_to=m))
    probe.aggregate_train(1, replies)
    second = train(2)
    csi = BaseStationCSI(probe_cfg.link_population)
    times = {}
    for m in second:
        node = m.metadata.dst_node_id
        client = probe._known_client(node)
        times[client] = {c: csi.round_time_s(client, 4, 2, message_bytes(m), probe.reply_bytes_estimate(m, c), 0.0,
                                             "dedicated", 1 / 4) for c in CODECS}
    fp32 = sorted(t["none"] for t in times.values())
    gaps = [(fp32[i + 1] / fp32[i], i) for i in range(len(fp32) - 1)]
    _, i = max(gaps)
    deadline = math.sqrt(fp32[i] * fp32[i + 1])

    scenario = Scenario(federation={"num-supernodes": 4, "client-resources-num-cpus": 1},
                        run_config={**cell, "wireless.deadline-s": deadline, "results-dir": str(tmp_path),
                                    "run-name": "adaptive"})
    status, run_dir = launch(project_dir, scenario, {}, echo=lambda _line: None)
    assert status["status"] == "finished:completed"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = [r for r in rows if r["round"] == 1]
    assert {r["uplink_codec"] for r in first} == {"int4"}  # no channel known yet: the narrowest
    chosen = {r["client"]: r["uplink_codec"] for r in rows if r["round"] == 2}
    for client, codec in chosen.items():
        near = any(0.9 * deadline < t < 1.1 * deadline for t in times[client].values())
        if not near:  # the real messages differ from the probe's by a few bytes of config
            fits = [c for c in CODECS if times[client][c] <= deadline]
            assert codec == (fits[0] if fits else "int4"), (client, times[client], deadline)
    assert "none" in chosen.values() and len(set(chosen.values())) >= 2
    # Each reply travelled in its own codec: a float32 upload is the largest.
    size = {r["uplink_codec"]: r["bytes_up"] for r in rows if r["round"] == 2 and r.get("status") != "lost"}
    if "none" in size and "int4" in size:
        assert size["int4"] < size["none"] / 4
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["uplink_codecs"] == dict(Counter(r["uplink_codec"] for r in rows if r.get("uplink_codec")))
    assert math.isfinite(summary["personalized_accuracy_mean"])
