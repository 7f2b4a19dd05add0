import json

import pytest

from pfl_app.config import parse_run_config
from pfl_app.plots import plot_runs, round_curve
from pfl_app.results import RunRecorder, resolve_run_dir, round_air_time


def _row(rnd, client, up, acc, status="ok", client_time=1.0, **extra):
    return {"round": rnd, "node": 100 + client, "client": client, "bytes_up": up, "bytes_down": 2 * up,
            "status": status, "personalized_accuracy": acc, "global_accuracy": acc / 2,
            "client_time_s": client_time, "air_time_s_up": 0.5, "air_time_s_down": 0.25,
            "energy_j_up": 0.1, "compute_energy_j": 1.0, **extra}


def test_round_air_time_is_the_slowest_client_cut_at_the_deadline():
    rows = [_row(1, 0, 1, 0.5, client_time=2.0), _row(1, 1, 1, 0.5, status="lost", client_time=9.0)]
    assert round_air_time(rows, 0.0) == 9.0
    assert round_air_time(rows, 5.0) == 5.0
    assert round_air_time([{"round": 1}], 0.0) == 0.0


def test_recorder_writes_rows_and_a_summary(tmp_path):
    cfg = parse_run_config({"num-server-rounds": 2, "wireless.deadline-s": 5.0})
    rec = RunRecorder(tmp_path / "run", cfg)
    import numpy as np
    from safetensors.numpy import load_file

    key = "base_model.model.x.bottleneck_adapter.default.up.weight"
    rec.round_done(1, [_row(1, 0, 100, 0.5, client_time=2.0), _row(1, 1, 300, 0.7, client_time=3.0)],
                   {key: np.ones(2)})
    # a crash now would leave round 1's global tensors behind, without peft's prefix
    assert load_file(str(tmp_path / "run" / "global_shared.safetensors"))["x.bottleneck_adapter.default.up.weight"].tolist() == [1, 1]
    rec.round_done(2, [_row(2, 0, 100, 0.6, client_time=7.0), _row(2, 1, 300, 0.0, status="lost")])
    summary = rec.finish({"base_model.model.x.bottleneck_adapter.default.up.weight": __import__("numpy").zeros(2)})
    assert summary["rounds_completed"] == 2 and summary["clients"] == 2
    assert summary["uplink_bytes_total"] == 800 and summary["downlink_bytes_total"] == 1600
    assert summary["updates_delivered"] == 3 and summary["updates_lost"] == 1
    assert summary["simulated_time_s_total"] == pytest.approx(3.0 + 5.0)  # round 2 cut at the deadline
    assert summary["air_time_s_total"] == pytest.approx(4 * 0.75)
    assert summary["energy_j_total"] == pytest.approx(4 * 1.1)
    assert summary["personalized_accuracy_mean"] == pytest.approx(0.3)  # last round: (0.6 + 0.0) / 2
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["simulated_time_s"] for l in lines] == [3.0, 3.0, 8.0, 8.0]
    assert (tmp_path / "run" / "global_shared.safetensors").exists()
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_a_silent_nodes_error_reply_counts_as_the_client_it_served(tmp_path):
    # A SuperNode killed after round 1 comes back under a new node id; the SuperLink answers
    # its old node's round-2 message with an error that names only the node.
    cfg = parse_run_config({"num-server-rounds": 2})
    rec = RunRecorder(tmp_path / "run", cfg)
    rec.round_done(1, [_row(1, 0, 100, 0.5), _row(1, 1, 100, 0.7)])
    unavailable = {"round": 2, "node": 100, "bytes_up": 0, "bytes_down": 0, "status": "error",
                   "error": "Node Unavailable"}
    rec.round_done(2, [unavailable, {**_row(2, 0, 100, 0.6), "node": 555}, _row(2, 1, 100, 0.8)])
    summary = rec.finish({})
    assert summary["clients"] == 2 and summary["client_failures"] == 1
    assert set(summary["per_client"]) == {"0", "1"}
    assert summary["per_client"]["0"]["personalized_accuracy"] == 0.6  # the error reply hides nothing


def test_a_node_that_never_named_its_client_is_still_counted(tmp_path):
    rec = RunRecorder(tmp_path / "run", parse_run_config({"num-server-rounds": 1}))
    rec.round_done(1, [_row(1, 0, 100, 0.5), {"round": 1, "node": 7, "bytes_up": 0, "bytes_down": 0,
                                              "status": "error"}])
    summary = rec.finish({})
    assert summary["clients"] == 2 and set(summary["per_client"]) == {"0", "7"}


def test_a_run_folder_is_never_overwritten(tmp_path):
    cfg = parse_run_config({})
    rec = RunRecorder(tmp_path / "run", cfg)
    rec.round_done(1, [_row(1, 0, 1, 0.5)])
    with pytest.raises(FileExistsError, match="run-name"):
        RunRecorder(tmp_path / "run", cfg)


def test_run_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("PFL_APP_HOME", str(tmp_path))
    cfg = parse_run_config({"run-name": "abc"})
    assert resolve_run_dir(cfg) == tmp_path / "results" / "abc"
    with pytest.raises(ValueError, match="run-name"):
        resolve_run_dir(parse_run_config({"run-name": "../x"}))


def test_curves_and_plots_from_fixture_runs(tmp_path):
    for name, up in (("a", 100), ("b", 400)):
        d = tmp_path / name
        d.mkdir()
        rows = [_row(r, c, up, 0.1 * r, simulated_time_s=2.0 * r) for r in (1, 2) for c in (0, 1)]
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        (d / "summary.json").write_text(json.dumps({"method": name, "wireless_profile": "wifi"}))
    curve = round_curve([json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()])
    assert [p["uplink_bytes"] for p in curve] == [800, 1600]
    assert [p["simulated_time_s"] for p in curve] == [2.0, 4.0]
    assert curve[1]["personalized_accuracy"] == pytest.approx(0.2)
    paths = plot_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "plots")
    assert [p.name for p in paths] == ["accuracy_vs_uplink.png", "accuracy_vs_time.png"]
    assert all(p.stat().st_size > 5000 for p in paths)


def test_a_round_every_client_fails_is_counted_in_the_summary(tmp_path, flower_identity):
    # Every client fails in round 1: the strategy stops the run before the round reaches
    # on_round_end, so its rows travel with the exception to the recorder.
    import numpy as np
    from flwr.app import ConfigRecord, Error, Message

    from pfl_app.records import to_arrayrecord
    from pfl_app.strategies import PFTT
    from pfl_app.strategies.base import TooFewClients

    class Nodes:
        def get_node_ids(self):
            return [11, 22]

    rec = RunRecorder(tmp_path / "run", parse_run_config({"num-server-rounds": 2}))
    strategy = PFTT(method="pftt", min_available_nodes=2, min_train_nodes=2,
                    on_round_end=lambda r, rows, shared: rec.round_done(r, rows, shared))
    adapter = "base_model.model.model.layers.0.mlp.bottleneck_adapter.default.up.weight"
    sent = strategy.configure_train(1, to_arrayrecord({adapter: np.zeros(3, np.float32)}), ConfigRecord({}), Nodes())
    trace = "Traceback (most recent call last):\n  ...\nInjectedFault: injected fault: node {} fails in round 1"
    # FedAvg samples the nodes in a random order: each error names the node it came from.
    replies = [Message(Error(code=0, reason=trace.format(m.metadata.dst_node_id)), reply_to=m) for m in sent]
    try:
        strategy.aggregate_train(1, replies)
    except TooFewClients as err:  # as the ServerApp does
        assert err.server_round == 1 and len(err.rows) == 2
        summary = rec.finish({}, stopped=str(err), failed_rows=err.rows)
    assert summary["client_failures"] == 2 and summary["rounds_completed"] == 0
    assert summary["stopped_early"].startswith("round 1: 0 of 2 client(s) answered")
    assert summary["downlink_bytes_total"] > 0  # the train messages did go out
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["round"], r["node"], r["status"]) for r in rows] == [(1, 11, "error"), (1, 22, "error")]
    assert rows[1]["error"].endswith("injected fault: node 22 fails in round 1") and rows[1]["method"] == "pftt"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["client_failures"] == 2


def test_a_stopped_runs_failed_rows_can_be_handed_over_and_a_finished_run_takes_none(tmp_path):
    rec = RunRecorder(tmp_path / "a", parse_run_config({"num-server-rounds": 2}))
    rec.round_done(1, [_row(1, 0, 100, 0.5), _row(1, 1, 100, 0.7)])
    failed = [{"round": 2, "node": 100, "client": 0, "bytes_up": 0, "bytes_down": 50, "status": "error",
               "error": "boom"}, {**_row(2, 1, 100, 0.8)}]
    summary = rec.finish({}, stopped="round 2: too few", failed_rows=failed)
    assert summary["client_failures"] == 1 and summary["rounds_completed"] == 1
    # the last completed round's scores stay the summary's
    assert summary["personalized_accuracy_mean"] == pytest.approx(0.6)
    try:
        raise ValueError("unrelated")
    except ValueError:
        rec = RunRecorder(tmp_path / "b", parse_run_config({"num-server-rounds": 1}))
        rec.round_done(1, [_row(1, 0, 100, 0.5)])
        assert rec.finish({})["client_failures"] == 0
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 1


def test_the_summary_says_which_device_the_compute_energy_comes_from(tmp_path):
    for device in ("", "jetson-orin-nano"):
        rec = RunRecorder(tmp_path / f"run{device}", parse_run_config({"num-server-rounds": 1,
                                                                       "wireless.device": device}))
        rec.round_done(1, [_row(1, 0, 100, 0.5, compute_energy_j=2.5)])
        summary = rec.finish({})
        assert summary["wireless_device"] == device
        assert summary["energy_j_total"] == pytest.approx(0.1 + 2.5)


def test_the_summary_counts_aircomp_truncated_updates_apart(tmp_path):
    from pfl_app.config import parse_run_config
    from pfl_app.results import RunRecorder

    from .helpers import TINY

    cfg = parse_run_config({**TINY, "results-dir": str(tmp_path), "run-name": "r"})
    recorder = RunRecorder(tmp_path / "r", cfg)
    rows = [{"node": n, "client": n, "status": "ok", "bytes_up": 1, "bytes_down": 1, "aircomp_truncated": t}
            for n, t in ((1, 0.0), (2, 1.0), (3, 1.0))]
    recorder.round_done(1, [{**r, "round": 1} for r in rows])
    summary = recorder.finish({})
    assert summary["updates_delivered"] == 3 and summary["updates_truncated"] == 2
