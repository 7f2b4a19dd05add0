"""End to end: a real `flwr run` simulation whose clients share the cell (TDMA, fast fading)."""

import json

import pytest

from pfl_app.launch import Scenario, launch

from .helpers import TINY

pytestmark = pytest.mark.simulation


def test_a_round_in_a_shared_cell_completes_and_records_the_tdma_wait(tmp_path, project_dir):
    config = {**TINY, "num-server-rounds": 1, "data.partitioner": "iid", "wireless.profile": "wifi",
              "wireless.access": "tdma", "wireless.coherence": "packet", "results-dir": str(tmp_path / "results"),
              "run-name": "cell"}
    scenario = Scenario({"num-supernodes": 3, "client-resources-num-cpus": 1}, config)
    status, run_dir = launch(project_dir, scenario, {}, echo=lambda _line: None)
    assert status["status"] == "finished:completed"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "access_share" in r]
    assert sorted(r["client"] for r in train) == [0, 1, 2]
    overhead = 0.005  # the wifi profile's per-message latency, not spent in slots
    for r in train:
        assert r["access_share"] == pytest.approx(1 / 3)
        # each waits for the two other clients' slots: 2 x its own time on the air
        assert r["wait_s_up"] == pytest.approx(2 * (r["air_time_s_up"] - overhead), rel=1e-9)
        assert r["wait_s_down"] == pytest.approx(2 * (r["air_time_s_down"] - overhead), rel=1e-9)
        assert r["client_time_s"] == pytest.approx(
            r["air_time_s_down"] + r["wait_s_down"] + r["air_time_s_up"] + r["wait_s_up"], rel=1e-9)
    assert {r["round_air_time_s"] for r in train} == {max(r["client_time_s"] for r in train)}
