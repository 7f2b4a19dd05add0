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
from pfl_app.records import to_arrayrecord

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
