"""One real ``flwr run`` with the shared tensors aggregated over the air (wireless.aggregation = aircomp)."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from pfl_app.launch import Scenario, launch
from pfl_app.wireless.profiles import get_profile

from .helpers import TINY


@pytest.mark.simulation
def test_a_pftt_run_aggregates_over_the_air(tmp_path, project_dir):
    config = {**TINY, "method": "pftt", "num-server-rounds": 2, "results-dir": str(tmp_path / "results"),
              "run-name": "aircomp", "wireless.profile": "5g-urban", "wireless.aggregation": "aircomp",
              "wireless.aircomp-threshold": 0.1}
    scenario = Scenario({"num-supernodes": 3, "client-resources-num-cpus": 1}, config)
    status, run_dir = launch(project_dir, scenario, {}, echo=lambda _line: None)
    assert status["status"] == "finished:completed"
    assert json.loads((run_dir / "summary.json").read_text())["wireless_aggregation"] == "aircomp"

    shared = load_file(str(run_dir / "global_shared.safetensors"))
    n = sum(v.size for v in shared.values())
    assert all(np.all(np.isfinite(v)) for v in shared.values())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
    band = get_profile("5g-urban").bandwidth_up_hz
    for r in rows:
        # One analog uplink of n symbols, the same for every client, or none for a truncated one.
        assert r["aircomp_truncated"] in (0.0, 1.0) and r["retransmissions_up"] == 0
        sent = r["aircomp_truncated"] == 0.0
        assert r["air_time_s_up"] == pytest.approx(n / band if sent else 0.0)
        assert r["energy_j_up"] == pytest.approx(r["aircomp_power_w"] * n / band)
        assert (r["aircomp_power_w"] > 0) == sent and r["aircomp_power_w"] <= 0.2 + 1e-12
        assert r["bytes_up"] > 4 * n  # the Flower message's bytes, float32 tensors
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["updates_truncated"] == sum(r["aircomp_truncated"] == 1.0 for r in rows)
