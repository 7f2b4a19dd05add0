"""Client scheduling as a strategy option: every method and server optimizer, the server's CSI
learned from replies, the rows and summary's fairness report, and a real run in which each
policy schedules a round."""

import json

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from pfl_app.config import parse_run_config
from pfl_app.protocol import COHORT_NODE_IDS_KEY, COHORT_SHARES_KEY, WIRELESS_COHORT_KEY
from pfl_app.records import to_arrayrecord
from pfl_app.results import RunRecorder, times_scheduled
from pfl_app.strategies import PFTT, STRATEGIES
from pfl_app.strategies.scheduling import ChannelScheduled, with_scheduling
from pfl_app.strategies.server_optimizers import SERVER_OPTIMIZERS, build_strategy
from pfl_app.wireless.access import proportional_fair_shares
from pfl_app.wireless.csi import BaseStationCSI
from pfl_app.wireless.profiles import PROFILES

from .helpers import ADAPTER, TINY, FakeGrid

NODES = [703, 101, 502, 304]  # node id -> client id: 703 -> 0, 101 -> 1, 502 -> 2, 304 -> 3
CLIENT = {node: i for i, node in enumerate(NODES)}
FADING = {**TINY, "wireless.profile": "5g-urban", "seed": 5}


def _build(overrides, method="pftt", optimizer="fedavg", **kwargs):
    cfg = parse_run_config({**FADING, "method": method, **overrides})
    n = len(NODES)
    strategy = build_strategy(method, STRATEGIES, optimizer=optimizer, run_config=cfg, min_available_nodes=n,
                              min_train_nodes=n, min_evaluate_nodes=n, **kwargs)
    return cfg, strategy


def _train(strategy, server_round):
    glob = to_arrayrecord({ADAPTER: np.zeros(3, np.float32)})
    return list(strategy.configure_train(server_round, glob, ConfigRecord({"run-dir": "/x"}), FakeGrid(NODES)))


def _answer(strategy, server_round, msgs):
    """Every scheduled node answers as its client (so the server learns who it is)."""
    replies = [Message(RecordDict({
        "metrics": MetricRecord({"num-examples": 2, "train-loss": 0.5}),
        "client": ConfigRecord({"client-id": CLIENT[m.metadata.dst_node_id], "task": "t"}),
        "arrays": to_arrayrecord({ADAPTER: np.ones(3, np.float32)}),
    }), reply_to=m) for m in msgs]
    strategy.aggregate_train(server_round, replies)


def _best_by_snr(cfg, server_round, k):
    csi = BaseStationCSI(cfg.link_population)
    snr = {node: csi.state(CLIENT[node], len(NODES), server_round).snr_db_up for node in NODES}
    return sorted(sorted(NODES, key=snr.get, reverse=True)[:k])


@pytest.mark.parametrize("optimizer", list(SERVER_OPTIMIZERS))
@pytest.mark.parametrize("method", [m for m in STRATEGIES if STRATEGIES[m].client_kind == "task"])
def test_every_method_and_optimizer_schedules_by_the_channel(flower_identity, method, optimizer):
    cfg, strategy = _build({"schedule.policy": "best-snr", "schedule.clients-per-round": 2}, method, optimizer)
    assert isinstance(strategy, ChannelScheduled) and isinstance(strategy, STRATEGIES[method])
    assert (strategy.schedule_policy, strategy.clients_per_round) == ("best-snr", 2)
    first = _train(strategy, 1)
    if method == "centralized":  # it samples one node, which the policy keeps
        assert len(first) == 1
        return
    assert len(first) == 2  # nobody known yet: two explored
    _answer(strategy, 1, first)
    # Round 2: the two explored are known, the other two are not, and go first.
    second = _train(strategy, 2)
    assert sorted(m.metadata.dst_node_id for m in second) == sorted(set(NODES) - {m.metadata.dst_node_id
                                                                                   for m in first})
    _answer(strategy, 2, second)
    # Round 3: every client known, the two best channels of the round transmit.
    third = _train(strategy, 3)
    assert sorted(m.metadata.dst_node_id for m in third) == _best_by_snr(cfg, 3, 2)
    assert all(list(m.content[WIRELESS_COHORT_KEY][COHORT_NODE_IDS_KEY]) == _best_by_snr(cfg, 3, 2) for m in third)


@pytest.mark.parametrize("method", [m for m in STRATEGIES if STRATEGIES[m].client_kind == "rlhf"])
def test_rlhf_methods_are_composed_the_same_way(method):
    _, strategy = _build({"schedule.policy": "age-aware", "schedule.clients-per-round": 1,
                          **({"rlhf.final-eval-prompts": 0})}, method, "fedadam")
    assert isinstance(strategy, ChannelScheduled) and isinstance(strategy, STRATEGIES[method])
    assert strategy.schedule(1, sorted(NODES)) in ([n] for n in NODES)


def test_the_default_keeps_flowers_sampling_and_marks_every_node_scheduled(flower_identity):
    _, strategy = _build({})
    assert not strategy.active
    msgs = _train(strategy, 1)
    assert sorted(m.metadata.dst_node_id for m in msgs) == sorted(NODES)
    assert all(r["scheduled"] is True for r in strategy._ledger.rows())
    assert strategy._last_scheduled == {} and strategy._average_rate == {}  # nothing drawn, nothing kept


def test_only_the_scheduled_get_a_row_marked_scheduled(flower_identity):
    _, strategy = _build({"schedule.policy": "random", "schedule.clients-per-round": 3})
    msgs = _train(strategy, 1)
    rows = strategy._ledger.rows()
    assert {r["node"] for r in rows} == {m.metadata.dst_node_id for m in msgs} and len(rows) == 3
    assert all(r["scheduled"] is True and r["bytes_down"] > 0 for r in rows)


def test_age_aware_gives_everyone_a_turn(flower_identity):
    _, strategy = _build({"schedule.policy": "age-aware", "schedule.clients-per-round": 1})
    turns = []
    for r in range(1, 9):
        msgs = _train(strategy, r)
        _answer(strategy, r, msgs)
        turns += [m.metadata.dst_node_id for m in msgs]
    assert sorted(turns[:4]) == sorted(NODES) and turns[4:] == turns[:4]  # round robin, once all are known


def test_proportional_fair_averages_the_rate_it_served(flower_identity):
    cfg, strategy = _build({"schedule.policy": "proportional-fair", "schedule.clients-per-round": 2,
                            "schedule.pf-window": 4.0})
    csi = BaseStationCSI(cfg.link_population)
    first = _train(strategy, 1)
    _answer(strategy, 1, first)
    _train(strategy, 2)  # folds round 1 in, now that the explored nodes have said who they are
    for node in NODES:
        served = csi.state(CLIENT[node], 4, 1).rate_bps_up if node in {m.metadata.dst_node_id for m in first} else 0
        assert strategy._average_rate.get(node, 0.0) == pytest.approx(served / 4.0)


def test_deadline_leaves_out_who_cannot_make_it(flower_identity):
    from pfl_app.records import message_bytes

    base = {"wireless.profile": "lte-cell-edge", "schedule.policy": "deadline"}
    cfg, probe = _build({**base, "wireless.deadline-s": 100.0})
    size = message_bytes(_train(probe, 1)[0])  # the estimate takes the instruction's size both ways
    csi = BaseStationCSI(cfg.link_population)
    times = {node: csi.round_time_s(CLIENT[node], 4, 2, size, size) for node in NODES}
    fastest = sorted(times.values())
    deadline = (fastest[1] + fastest[2]) / 2  # between the second and third fastest
    _, strategy = _build({**base, "wireless.deadline-s": deadline})
    _answer(strategy, 1, _train(strategy, 1))  # K = 0: everyone explored in round 1
    chosen = sorted(m.metadata.dst_node_id for m in _train(strategy, 2))
    assert chosen == sorted(n for n in NODES if times[n] <= deadline) and len(chosen) == 2


def test_the_deadline_estimate_counts_the_cell_share_and_the_devices_compute_time(flower_identity):
    from pfl_app.records import message_bytes

    base = {"wireless.profile": "lte-cell-edge", "wireless.access": "tdma", "wireless.device": "phone-sd8gen3",
            "schedule.policy": "deadline", "schedule.clients-per-round": 2, "wireless.deadline-s": 1e6}
    cfg, strategy = _build(base)
    first = _train(strategy, 1)
    compute = {node: 3.0 + CLIENT[node] for node in NODES}  # what each client's device took in round 1
    replies = [Message(RecordDict({
        "metrics": MetricRecord({"num-examples": 2, "train-loss": 0.5}),
        "client": ConfigRecord({"client-id": CLIENT[m.metadata.dst_node_id], "task": "t"}),
        "arrays": to_arrayrecord({ADAPTER: np.ones(3, np.float32)}),
        "wireless": MetricRecord({"compute-s": compute[m.metadata.dst_node_id]}),
    }), reply_to=m) for m in first]
    strategy.aggregate_train(1, replies)
    size = message_bytes(first[0])
    seen = {}
    original = strategy._candidate

    def spy(csi, server_round, node, share=1.0):
        candidate = original(csi, server_round, node, share)
        seen[node] = candidate.round_time_s
        return candidate

    strategy._candidate = spy
    _train(strategy, 2)
    csi = BaseStationCSI(cfg.link_population)
    for m in first:  # the clients heard from: their own compute time, and a half share of the frame
        node = m.metadata.dst_node_id
        expected = csi.round_time_s(CLIENT[node], 4, 2, size, size, compute[node], "tdma", 0.5)
        assert seen[node] == pytest.approx(expected)
        assert seen[node] > csi.round_time_s(CLIENT[node], 4, 2, size, size, compute[node])


def test_a_policy_that_misbehaves_is_named(flower_identity, tmp_path, monkeypatch):
    (tmp_path / "bad_policy.py").write_text("def everyone_twice(situation):\n"
                                           "    return [c.node_id for c in situation.candidates] * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _, strategy = _build({"schedule.policy": "bad_policy:everyone_twice", "schedule.clients-per-round": 2})
    with pytest.raises(ValueError, match="scheduling policy 'bad_policy:everyone_twice' chose"):
        _train(strategy, 1)


def test_a_classs_own_schedule_runs_first():
    class OddRounds(PFTT):
        def schedule(self, server_round, node_ids):
            return node_ids[:2]

    strategy = with_scheduling(OddRounds)(schedule_policy="age-aware", clients_per_round=1)
    assert strategy.schedule(1, [1, 2, 3]) in ([1], [2])


def test_the_constructor_refuses_a_deadline_policy_without_a_deadline():
    with pytest.raises(ValueError, match="deadline_s > 0"):
        with_scheduling(PFTT)(schedule_policy="deadline")
    with pytest.raises(ValueError, match=r"clients_per_round = -1 is not allowed"):
        with_scheduling(PFTT)(clients_per_round=-1)
    with pytest.raises(ValueError, match="schedule_policy = 'nope' is not allowed"):
        build_strategy("pftt", STRATEGIES, optimizer="fedyogi", schedule_policy="nope")


# --- proportional-fair shares of the cell (wireless.access-shares) ---------------------------

PF_SHARES = {"wireless.access": "tdma", "wireless.access-shares": "proportional-fair"}


def _shares(msgs):
    """The cohort's shares, by node, as the round's messages carry them (the same on every one)."""
    records = [m.content[WIRELESS_COHORT_KEY] for m in msgs]
    assert all(list(r[COHORT_NODE_IDS_KEY]) == list(records[0][COHORT_NODE_IDS_KEY]) for r in records)
    assert all(list(r[COHORT_SHARES_KEY]) == list(records[0][COHORT_SHARES_KEY]) for r in records)
    shares = dict(zip(records[0][COHORT_NODE_IDS_KEY], records[0][COHORT_SHARES_KEY]))
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12) and all(0 < x <= 1 for x in shares.values())
    return shares


def test_equal_shares_send_none(flower_identity):
    _, strategy = _build({"wireless.access": "tdma"})
    assert strategy.access_shares == "equal" and not strategy.tracking
    assert all(COHORT_SHARES_KEY not in m.content[WIRELESS_COHORT_KEY] for m in _train(strategy, 1))


def test_the_cohort_carries_proportional_fair_shares_under_flowers_sampling(flower_identity):
    # The default policy (random, K = 0) keeps Flower's sample; the shares still follow R / T.
    cfg, strategy = _build({**PF_SHARES, "schedule.pf-window": 4.0})
    assert not strategy.active and strategy.tracking
    first = _train(strategy, 1)
    assert sorted(m.metadata.dst_node_id for m in first) == sorted(NODES)
    assert _shares(first) == {n: 0.25 for n in NODES}  # nobody known yet: the equal share
    _answer(strategy, 1, first)
    second = _train(strategy, 2)
    csi = BaseStationCSI(cfg.link_population)
    rate = {(n, r): csi.state(CLIENT[n], len(NODES), r).rate_bps_up for n in NODES for r in (1, 2)}
    # T = R(1) / t_c after round 1, so the shares are R(2) / R(1), normalised.
    metric = {n: rate[n, 2] / rate[n, 1] for n in NODES}
    got = _shares(second)
    assert got == pytest.approx({n: metric[n] / sum(metric.values()) for n in NODES}, rel=1e-9)
    assert len({round(x, 9) for x in got.values()}) == len(NODES)  # the fading makes them differ
    assert strategy._last_scheduled == {n: 2 for n in NODES}


def test_proportional_fair_shares_follow_a_policys_schedule(flower_identity):
    cfg, strategy = _build({**PF_SHARES, "schedule.policy": "proportional-fair", "schedule.clients-per-round": 2,
                            "schedule.pf-window": 4.0})
    csi = BaseStationCSI(cfg.link_population)
    rate = {(n, r): csi.state(CLIENT[n], len(NODES), r).rate_bps_up for n in NODES for r in (1, 2, 3)}
    first = _train(strategy, 1)
    _answer(strategy, 1, first)
    second = _train(strategy, 2)  # the two not yet heard from are explored: equal shares
    assert _shares(second) == {m.metadata.dst_node_id: 0.5 for m in second}
    _answer(strategy, 2, second)
    third = _train(strategy, 3)
    served = {m.metadata.dst_node_id: r for r, msgs in ((1, first), (2, second)) for m in msgs}
    # T after rounds 1 and 2: served in round 1, then decayed once; served in round 2.
    average = {n: rate[n, 1] / 4 * (1 - 1 / 4) if served[n] == 1 else rate[n, 2] / 4 for n in NODES}
    chosen = sorted(m.metadata.dst_node_id for m in third)
    expected = proportional_fair_shares([rate[n, 3] for n in chosen], [average[n] for n in chosen])
    assert _shares(third) == pytest.approx(dict(zip(chosen, expected)), rel=1e-9)


@pytest.mark.parametrize("method", [m for m in STRATEGIES if STRATEGIES[m].client_kind == "task"])
def test_every_method_sends_the_shares(flower_identity, method):
    _, strategy = _build(PF_SHARES, method, "fedadam")
    msgs = _train(strategy, 1)
    assert msgs and _shares(msgs) == {m.metadata.dst_node_id: 1 / len(msgs) for m in msgs}


def test_the_strategy_refuses_bad_shares(flower_identity):
    with pytest.raises(ValueError, match="access_shares = 'pf' is not allowed.*equal, proportional-fair"):
        with_scheduling(PFTT)(access_shares="pf")

    class Greedy(with_scheduling(PFTT)):
        def cohort_shares(self, server_round, node_ids):
            return [0.6] * len(node_ids)

    strategy = Greedy(min_available_nodes=4, min_train_nodes=4)
    with pytest.raises(ValueError, match="Greedy.cohort_shares of round 1: Cohort.shares must sum to 1"):
        _train(strategy, 1)


# --- the fairness report ----------------------------------------------------------------

def _row(rnd, client, scheduled):
    row = {"round": rnd, "node": 100 + client, "client": client, "bytes_up": 10, "bytes_down": 20,
           "status": "ok" if scheduled else None, "personalized_accuracy": 0.5}
    return {**row, "scheduled": True} if scheduled else row


def test_the_summary_counts_who_was_scheduled_and_how_fairly(tmp_path):
    cfg = parse_run_config({"num-server-rounds": 3, "schedule.policy": "best-snr", "schedule.clients-per-round": 1})
    rec = RunRecorder(tmp_path / "run", cfg)
    rec.round_done(1, [_row(1, 0, True), _row(1, 1, False), _row(1, 2, False)])
    rec.round_done(2, [_row(2, 0, True), _row(2, 1, False), _row(2, 2, False)])
    rec.round_done(3, [_row(3, 0, False), _row(3, 1, True), _row(3, 2, False)])
    summary = rec.finish({})
    assert summary["times_scheduled"] == {"0": 2, "1": 1, "2": 0}
    assert summary["scheduling_jain_index"] == pytest.approx(9 / (3 * 5))  # (2+1+0)^2 / (3 (4+1+0))
    assert (summary["schedule_policy"], summary["clients_per_round"]) == ("best-snr", 1)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["times_scheduled"] == {"0": 2, "1": 1, "2": 0}


def test_everyone_scheduled_every_round_is_perfectly_fair():
    rows = [_row(r, c, True) for r in (1, 2) for c in (0, 1, 10)]
    assert times_scheduled(rows) == {"0": 2, "1": 2, "10": 2}  # in client order, not string order


# --- one real run per policy ---------------------------------------------------------------

POLICY_ORDER = ("random", "best-snr", "proportional-fair", "age-aware", "deadline")
# A policy of the user's own, by path: round r is scheduled by the r-th built-in policy, so one
# real run exercises every policy (one run per policy would cost ~100 s each on 2 cores).
ROTATING = f"""
from pfl_app.wireless.scheduling import requires_deadline, scheduling_policy

ORDER = {POLICY_ORDER!r}


@requires_deadline
def rotating(situation):
    return scheduling_policy(ORDER[(situation.server_round - 1) % len(ORDER)])(situation)
"""


@pytest.mark.simulation
def test_a_run_trains_exactly_the_clients_each_policy_schedules_and_they_share_the_cell(tmp_path, project_dir, monkeypatch):
    from pfl_app.launch import Scenario, launch

    (tmp_path / "rotating_policy.py").write_text(ROTATING)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the SuperLink, flwr-simulation and Ray's workers import it
    rounds = len(POLICY_ORDER)
    config = {**TINY, "num-server-rounds": rounds, "results-dir": str(tmp_path / "results"), "run-name": "rotating",
              "wireless.profile": "5g-urban", "schedule.policy": "rotating_policy:rotating",
              "schedule.clients-per-round": 2, "wireless.deadline-s": 60.0,
              # The same run shares the cell: the two scheduled clients split it by TDMA, under fast
              # fading, in proportional-fair shares.
              "wireless.access": "tdma", "wireless.access-shares": "proportional-fair",
              "wireless.coherence": "packet"}
    scenario = Scenario({"num-supernodes": 3, "client-resources-num-cpus": 1}, config)
    status, run_dir = launch(project_dir, scenario, {}, echo=lambda _line: None)
    assert status["status"] == "finished:completed"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for rnd in range(1, rounds + 1):
        got = [r for r in rows if r["round"] == rnd]
        assert len(got) == 3  # every client evaluates
        scheduled = {r["client"] for r in got if r.get("scheduled") is True}
        trained = {r["client"] for r in got if "num_train_examples" in r or r.get("status") == "lost"}
        assert len(scheduled) == 2 and trained == scheduled, (POLICY_ORDER[rnd - 1], got)
        assert all("snr_db_up" in r for r in got if r["client"] in scheduled)
        assert not any("snr_db_up" in r or "train_loss" in r for r in got if r["client"] not in scheduled)
    age_round = POLICY_ORDER.index("age-aware") + 1  # the one left out the round before is the oldest
    left_out = {0, 1, 2} - {r["client"] for r in rows if r["round"] == age_round - 1 and r.get("scheduled")}
    assert left_out <= {r["client"] for r in rows if r["round"] == age_round and r.get("scheduled")}
    overhead = PROFILES["5g-urban"].overhead_s  # the per-message latency, not spent in slots
    in_cell = [r for r in rows if "access_share" in r]
    assert len(in_cell) == 2 * rounds  # every scheduled client, every round, went through the cell
    for rnd in range(1, rounds + 1):  # the round's two shares make up the cell
        assert sum(r["access_share"] for r in in_cell if r["round"] == rnd) == pytest.approx(1.0, abs=1e-9)
    # Round 1 knows no client's channel (equal shares); once two clients with a past share a round,
    # the shares follow R / T, which the fading makes differ.
    assert {r["access_share"] for r in in_cell if r["round"] == 1} == {0.5}
    assert any(abs(r["access_share"] - 0.5) > 1e-3 for r in in_cell)
    for r in (r for r in in_cell if r.get("delivered")):
        s = r["access_share"]
        # each waits for the other scheduled client's slot: a (1/s - 1), a its own time on the air
        assert r["wait_s_up"] == pytest.approx((r["air_time_s_up"] - overhead) * (1 / s - 1), rel=1e-9)
        assert r["wait_s_down"] == pytest.approx((r["air_time_s_down"] - overhead) * (1 / s - 1), rel=1e-9)
        assert r["client_time_s"] == pytest.approx(
            r["air_time_s_down"] + r["wait_s_down"] + r["air_time_s_up"] + r["wait_s_up"], rel=1e-9)
    for rnd in range(1, rounds + 1):
        train = [r for r in rows if r["round"] == rnd and "client_time_s" in r]
        assert {r["round_air_time_s"] for r in train} == {max(r["client_time_s"] for r in train)}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["schedule_policy"] == "rotating_policy:rotating" and summary["clients_per_round"] == 2
    assert sum(summary["times_scheduled"].values()) == 2 * rounds and set(summary["times_scheduled"]) == {"0", "1", "2"}
    assert summary["scheduling_jain_index"] == pytest.approx(
        sum(summary["times_scheduled"].values()) ** 2 / (3 * sum(v * v for v in summary["times_scheduled"].values())))
