"""The wireless mod on real Flower messages, with a stand-in ClientApp (no model needed)."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from pfl_app.records import from_arrayrecord, message_bytes, to_arrayrecord
from pfl_app.strategies import PFTT
from pfl_app.wireless import mod as wmod
from pfl_app.wireless.mod import MASK_KEY, STATUS_KEY, WIRELESS_KEY, link_profile, wireless_mod
from pfl_app.wireless.partial import arrival_masks, masked_weighted_average
from pfl_app.wireless.profiles import PROFILES, with_overrides

from ..helpers import TINY, mod_context, mod_train_message, reply_of_ones

W = "model.layers.0.mlp.bottleneck_adapter.default.up.weight"


class App:
    """Stands in for the ClientApp: replies with an update of ones."""

    def __init__(self):
        self.calls = 0

    def __call__(self, msg, ctx):
        self.calls += 1
        return reply_of_ones(msg, ctx)


def _force_profile(monkeypatch, **fields):
    profile = with_overrides(PROFILES["wifi"], fading="none", **fields)
    monkeypatch.setattr(wmod, "link_profile", lambda cfg, cid, n: profile)
    return profile


def test_ideal_link_delivers_and_reports_what_it_cost(flower_identity):
    app = App()
    reply = wireless_mod(mod_train_message(), mod_context(), app)
    stats, status = reply.content[WIRELESS_KEY], reply.content[STATUS_KEY]
    assert status["outcome"] == "delivered" and stats["delivered"] == 1.0
    assert np.all(from_arrayrecord(reply.content["arrays"])[W] == 1.0)
    assert stats["bytes-up"] == message_bytes(reply) and stats["bytes-down"] > 4000
    assert stats["compute-s"] == 2.0 and stats["compute-energy-j"] == pytest.approx(2.0 * PROFILES["ideal"].device_power_w)
    # the round time counts the simulated compute time (0 by default), not the measured one
    assert stats["client-time-s"] == pytest.approx(stats["air-time-s-down"] + stats["air-time-s-up"])
    assert app.calls == 1


def test_simulation_records_are_not_counted_as_payload(flower_identity):
    reply = wireless_mod(mod_train_message(), mod_context(), App())
    plain = sum(r.count_bytes() for k, r in reply.content.items() if not k.startswith("wireless"))
    assert message_bytes(reply) == plain


def test_evaluate_messages_do_not_go_on_the_air(flower_identity):
    msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=10, message_type="evaluate")
    sentinel = object()
    assert wireless_mod(msg, mod_context(), lambda m, c: sentinel) is sentinel


def test_lost_uplink_strips_the_update(flower_identity, monkeypatch):
    # The downlink has 3 dB more SNR margin than needed, the uplink is below the threshold.
    profile = _force_profile(monkeypatch, max_retransmissions=0, error_model="outage")
    from pfl_app.wireless.channel import mean_snr_db

    threshold = (mean_snr_db(profile, "up") + mean_snr_db(profile, "down")) / 2
    profile = _force_profile(monkeypatch, max_retransmissions=0, error_model="outage", outage_snr_db=threshold)
    app = App()
    reply = wireless_mod(mod_train_message(), mod_context(), app)
    assert app.calls == 1
    assert reply.content[STATUS_KEY]["outcome"] == "lost"
    assert reply.content[STATUS_KEY]["reason"].startswith("uplink")
    assert "arrays" not in reply.content.array_records
    assert reply.content[WIRELESS_KEY]["bytes-up"] > 4000  # what was spent on the air


def test_lost_downlink_means_no_training(flower_identity, monkeypatch):
    _force_profile(monkeypatch, error_model="outage", outage_snr_db=500.0, max_retransmissions=0)
    app = App()
    reply = wireless_mod(mod_train_message(), mod_context(), app)
    assert app.calls == 0
    assert reply.content[STATUS_KEY]["reason"].startswith("downlink")


def test_straggler_is_dropped_at_the_deadline(flower_identity):
    ctx = mod_context(**{"wireless.deadline-s": 1.0, "wireless.compute-s": 2.0})
    reply = wireless_mod(mod_train_message(), ctx, App())
    assert reply.content[WIRELESS_KEY]["client-time-s"] > 2.0
    assert reply.content[STATUS_KEY]["outcome"] == "lost"
    assert "straggler" in reply.content[STATUS_KEY]["reason"]
    on_time = wireless_mod(mod_train_message(), mod_context(**{"wireless.deadline-s": 1.0}), App())
    assert on_time.content[STATUS_KEY]["outcome"] == "delivered"


def test_partial_mode_zeroes_lost_chunks_and_says_which(flower_identity, monkeypatch):
    from pfl_app.wireless.channel import mean_snr_db

    base = with_overrides(PROFILES["wifi"], fading="none", error_model="bler", max_retransmissions=0,
                          packet_bytes=400)
    snr = mean_snr_db(base, "up")
    # about half the uplink packets fail; the downlink (more power) gets through
    _force_profile(monkeypatch, error_model="bler", max_retransmissions=0, packet_bytes=400,
                   bler_snr50_db=snr, bler_slope_db=0.5)
    ctx = mod_context(**{"wireless.loss-mode": "partial"})
    outcomes = []
    for rnd in range(1, 12):
        reply = wireless_mod(mod_train_message(rnd=rnd, size=2000), ctx, App())
        outcomes.append(reply.content[STATUS_KEY]["outcome"])
        if outcomes[-1] == "partial":
            values = from_arrayrecord(reply.content["arrays"])[W]
            mask = from_arrayrecord(reply.content[MASK_KEY])[W].astype(bool)
            assert 0 < mask.sum() < mask.size
            assert np.all(values[mask] == 1.0) and np.all(values[~mask] == 0.0)
    assert "partial" in outcomes


def test_same_seed_same_channel(flower_identity):
    a = wireless_mod(mod_train_message(rnd=3), mod_context(**{"wireless.profile": "lte-cell-edge"}), App())
    b = wireless_mod(mod_train_message(rnd=3), mod_context(**{"wireless.profile": "lte-cell-edge"}), App())
    c = wireless_mod(mod_train_message(rnd=4), mod_context(**{"wireless.profile": "lte-cell-edge"}), App())
    assert dict(a.content[WIRELESS_KEY]) == dict(b.content[WIRELESS_KEY])
    assert a.content[WIRELESS_KEY]["snr-db-up"] != c.content[WIRELESS_KEY]["snr-db-up"]


def test_poor_fraction_moves_clients_to_the_poor_profile(tiny_cfg):
    from pfl_app.config import parse_run_config

    cfg = parse_run_config({**TINY, "wireless.profile": "wifi", "wireless.poor-fraction": 0.5})
    names = [link_profile(cfg, c, 4).name for c in range(4)]
    assert sorted(names).count("lte-cell-edge") == 2


def test_arrival_masks_follow_the_packet_layout():
    # overhead 4 bytes, packets of 8 bytes: packet 1 holds bytes 8..15 = elements 1..2 of "a"
    masks = arrival_masks({"a": 4, "b": 3}, [1], packet_bytes=8, overhead_bytes=4)
    assert masks["a"].tolist() == [True, False, False, True]
    assert masks["b"].all()
    masks = arrival_masks({"a": 4, "b": 3}, [2], packet_bytes=8, overhead_bytes=4)
    assert masks["a"].tolist() == [True, True, True, False] and masks["b"].tolist() == [False, True, True]


def test_masked_average_uses_only_what_arrived():
    prev = {"a": np.array([9.0, 9.0, 9.0], np.float32)}
    ups = [{"a": np.array([1.0, 1.0, 1.0])}, {"a": np.array([3.0, 3.0, 3.0])}]
    masks = [None, {"a": np.array([1, 0, 0])}]
    out = masked_weighted_average(ups, masks, [1.0, 3.0], prev)
    np.testing.assert_allclose(out["a"], [2.5, 1.0, 1.0])  # (1*1+3*3)/4, then only the whole one
    out = masked_weighted_average([ups[1]], [{"a": np.array([1, 0, 0])}], [1.0], prev)
    np.testing.assert_allclose(out["a"], [3.0, 9.0, 9.0])  # nothing arrived: keep the old value


def test_strategy_drops_lost_updates_and_averages_partial_ones_per_element(flower_identity):
    from tests.test_strategies import FakeGrid

    strategy = PFTT(method="pftt", min_available_nodes=3, min_train_nodes=3)
    glob = {W: np.zeros(3, np.float32)}
    msgs = {m.metadata.dst_node_id: m for m in strategy.configure_train(
        1, to_arrayrecord(glob), ConfigRecord({"run-dir": "/x"}), FakeGrid([1, 2, 3]))}

    def reply(node, values, outcome, mask=None):
        content = RecordDict({
            "metrics": MetricRecord({"num-examples": 1, "train-loss": 0.1}),
            "client": ConfigRecord({"client-id": node}),
            WIRELESS_KEY: MetricRecord({"bytes-up": 123.0, "snr-db-up": 5.0}),
            STATUS_KEY: ConfigRecord({"outcome": outcome, "reason": "x"}),
        })
        if values is not None:
            content["arrays"] = to_arrayrecord({W: np.array(values, np.float32)})
        if mask is not None:
            content[MASK_KEY] = to_arrayrecord({W: np.array(mask, np.float32)})
        return Message(content, reply_to=msgs[node])

    arrays, _ = strategy.aggregate_train(1, [
        reply(1, [2.0, 2.0, 2.0], "delivered"),
        reply(2, [4.0, 0.0, 0.0], "partial", mask=[1, 0, 0]),
        reply(3, None, "lost"),
    ])
    np.testing.assert_allclose(from_arrayrecord(arrays)[W], [3.0, 2.0, 2.0])
    rows = {r["node"]: r for r in strategy._ledger.rows()}
    assert rows[3]["status"] == "lost" and rows[2]["status"] == "partial" and rows[1]["status"] == "ok"
    assert rows[3]["bytes_up"] == 123 and rows[1]["snr_db_up"] == 5.0


def test_the_downlink_packets_continue_the_fades_random_stream(flower_identity, monkeypatch):
    # The built-in channel (pfl_app.wireless.link) draws the fade and sends, for the mod.
    from pfl_app.wireless import link as wlink

    used = {}
    real_draw, real_transmit = wlink.profile_fading_power, wlink.transmit

    def draw(rng, *args):
        used["fade"] = rng
        return real_draw(rng, *args)

    def transmit(rng, profile, nbytes, direction, **kwargs):
        used[direction] = rng
        return real_transmit(rng, profile, nbytes, direction, **kwargs)

    monkeypatch.setattr(wlink, "profile_fading_power", draw)
    monkeypatch.setattr(wlink, "transmit", transmit)
    wireless_mod(mod_train_message(), mod_context(**{"wireless.profile": "wifi"}), App())
    assert used["down"] is used["fade"]  # one stream: no packet draw repeats the fade's
    assert used["up"] is not used["fade"]


def test_under_aircomp_the_uplink_is_one_analog_transmission_not_packets(flower_identity):
    app = App()
    profile = PROFILES["ideal"]
    reply = wireless_mod(mod_train_message(size=1000), mod_context(**{"wireless.aggregation": "aircomp",
                                                                "wireless.aircomp-power-w": 0.5}), app)
    stats, status = reply.content[WIRELESS_KEY], reply.content[STATUS_KEY]
    assert status["outcome"] == "delivered" and stats["delivered"] == 1.0
    # One symbol per element at the band's symbol rate, the budget's energy, no ARQ; the
    # bytes are the Flower message's.
    assert stats["air-time-s-up"] == pytest.approx(1000 / profile.bandwidth_up_hz)
    assert stats["energy-j-up"] == pytest.approx(0.5 * 1000 / profile.bandwidth_up_hz)
    assert stats["retransmissions-up"] == 0.0 and stats["bytes-up"] == message_bytes(reply)
    digital = wireless_mod(mod_train_message(size=1000), mod_context(), App()).content[WIRELESS_KEY]
    assert digital["air-time-s-up"] != pytest.approx(stats["air-time-s-up"])
