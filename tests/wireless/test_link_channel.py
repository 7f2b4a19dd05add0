"""The built-in channel (LinkChannel) sends exactly what the mod sent before the channel was a plug-in.

``data/link_transmissions.json`` and ``data/mod_replies.json`` were written by the code of
commit 0979eee, before the refactor: the first by the mod's old sequence of calls (draw the
fade on the round's downlink generator, send the downlink on the same generator, send the
uplink on its own with the same fade); the second by the old ``wireless_mod`` function on
the scenarios below. Every count, flag, reason and draw must come out the same; a float may differ
in its last bits only (``same_values``): the CI machine's libm rounds log10 and log2 differently
from the machine that wrote the files, by one or two ulps.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from pfl_app.records import from_arrayrecord, to_arrayrecord
from pfl_app.wireless import PROFILES, LinkChannel, client_rng, draw_fading_power, transmit, with_overrides
from pfl_app.wireless.mod import wireless_mod

from ..helpers import TINY

DATA = Path(__file__).parent / "data"

PROFILES_USED = {
    **PROFILES,
    "wifi-bler": with_overrides("wifi", error_model="bler", bler_snr50_db=18.0, packet_bytes=600),
    "lte-no-fading": with_overrides("lte-cell-edge", fading="none"),
}
# A few ulps of float64: a changed draw, order of calls or formula moves a value by far more.
ULPS = 1e-13


def same_values(got, want):
    """True when ``got`` and ``want`` have the same keys and non-float values, and floats within ``ULPS``."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(same_values(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(same_values, got, want))
    if isinstance(want, float) and not isinstance(got, bool) and isinstance(got, (int, float)):
        return got == pytest.approx(want, rel=ULPS, abs=0.0)
    return got == want and isinstance(got, bool) == isinstance(want, bool)


def test_same_values_tells_a_last_bit_from_a_real_change():
    row = {"snr_db": -0.744700571848063, "packets": 4, "lost_packets": [1, 2], "delivered": True}
    assert same_values({**row, "snr_db": -0.7447005718480635}, row)
    assert not same_values({**row, "snr_db": -0.7447006}, row)
    assert not same_values({**row, "packets": 5}, row)
    assert not same_values({**row, "lost_packets": [1]}, row)
    assert not same_values({**row, "delivered": 1}, row)
    assert not same_values({k: v for k, v in row.items() if k != "packets"}, row)


SIZES = {4_000: 9_000, 60_000: 45_000}  # downlink bytes: uplink bytes, as in the file


def test_the_link_channel_repeats_the_old_transmissions():
    rows = json.loads((DATA / "link_transmissions.json").read_text())
    assert len(rows) == 144
    for row in rows:
        profile = PROFILES_USED[row["profile"]]
        channel = LinkChannel(profile, seed=row["seed"], client_id=row["client"], num_clients=4)
        channel.begin_round(row["round"], None)
        down = channel.downlink(row["round"], row["down"]["nbytes"])
        up = channel.uplink(row["round"], row["up"]["nbytes"])
        assert same_values(down.as_dict(), row["down"]), (down.as_dict(), row)
        assert same_values(up.as_dict(), row["up"]), (up.as_dict(), row)


def test_the_link_channel_is_the_old_sequence_of_calls_on_any_seed():
    # Beyond the stored cases: the same draws as the old calls, on seeds the file does not hold.
    for name in ("wifi", "lte-cell-edge", "5g-urban"):
        profile = PROFILES[name]
        for seed, client, rnd in [(3, 1, 1), (11, 2, 7), (123, 0, 40)]:
            rng = client_rng(seed, client, rnd, "down")
            fade = float(draw_fading_power(rng, profile.fading, profile.rician_k))
            old_down = transmit(rng, profile, 70_000, "down", fading_power=fade)
            old_up = transmit(client_rng(seed, client, rnd, "up"), profile, 50_000, "up", fading_power=fade)
            channel = LinkChannel(profile, seed=seed, client_id=client, num_clients=3)
            assert channel.downlink(rnd, 70_000) == old_down
            assert channel.uplink(rnd, 50_000) == old_up
            assert channel.fading_power(rnd) == fade


def test_the_uplink_alone_sees_the_rounds_fade():
    # A channel asked for the uplink first (a fresh one, say) still shares the downlink's fade.
    profile = PROFILES["lte-cell-edge"]
    both = LinkChannel(profile, seed=5, client_id=1, num_clients=2)
    down = both.downlink(2, 1000)
    alone = LinkChannel(profile, seed=5, client_id=1, num_clients=2).uplink(2, 1000)
    assert alone.fading_power == down.fading_power
    assert alone == both.uplink(2, 1000)


def test_the_link_channel_reads_energy_and_packets_from_the_profile():
    profile = PROFILES["wifi"]
    channel = LinkChannel(profile, seed=0, client_id=0, num_clients=1)
    assert channel.compute_energy_j(3.0) == pytest.approx(3.0 * profile.device_power_w)
    assert (channel.packet_bytes, channel.overhead_bytes) == (profile.packet_bytes, profile.overhead_bytes)


SCENARIOS = {
    "lte-partial": {"wireless.profile": "lte-cell-edge", "wireless.loss-mode": "partial"},
    "wifi-poor-spread": {"wireless.profile": "wifi", "wireless.poor-fraction": 0.5, "wireless.distance-min": 5.0,
                         "wireless.distance-max": 60.0, "wireless.deadline-s": 0.02},
    "5g-rician": {"wireless.profile": "5g-urban", "wireless.fading": "rician", "wireless.max-retransmissions": 0},
}


def _app(msg, ctx):
    size = next(iter(from_arrayrecord(msg.content["arrays"]).values())).size
    return Message(RecordDict({
        "arrays": to_arrayrecord({"w": np.ones(size, np.float32)}),
        "metrics": MetricRecord({"num-examples": 4, "train-loss": 1.0, "train-seconds": 2.0}),
        "client": ConfigRecord({"client-id": 0, "task": "t"}),
    }), reply_to=msg)


def test_the_mod_replies_as_the_old_mod_function_did(flower_identity):
    rows = json.loads((DATA / "mod_replies.json").read_text())
    assert {r["status"]["outcome"] for r in rows} == {"delivered", "partial", "lost"}
    for row in rows:
        client, rnd = row["client"], row["round"]
        ctx = Context(run_id=1, node_id=10 + client, node_config={"partition-id": client, "num-partitions": 4},
                      state=RecordDict(), run_config={**TINY, **SCENARIOS[row["scenario"]], "seed": 3})
        msg = Message(content=RecordDict({
            "arrays": to_arrayrecord({"w": np.zeros(30000, np.float32)}),
            "config": ConfigRecord({"server-round": rnd, "shared-groups": "adapter", "run-dir": "/x"}),
        }), dst_node_id=10 + client, message_type="train")
        reply = wireless_mod(msg, ctx, _app)
        arrays = reply.content.array_records.get("arrays")
        mask = reply.content.array_records.get("wireless-mask")
        assert same_values(dict(reply.content["wireless"]), row["wireless"]), (dict(reply.content["wireless"]), row)
        assert same_values(dict(reply.content["wireless-status"]), row["status"]), row
        assert (float(from_arrayrecord(arrays)["w"].sum()) if arrays is not None else None) == row["arrays_sum"]
        assert (int(from_arrayrecord(mask)["w"].sum()) if mask is not None else None) == row["mask_sum"]
