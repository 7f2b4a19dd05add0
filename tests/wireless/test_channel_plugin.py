"""A channel of one's own: named by wireless.channel, checked before a run, told the round's cohort."""

import dataclasses
import math
import sys
import textwrap

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.common import serde

from pfl_app.config import ConfigError, parse_run_config
from pfl_app.preflight import check_wireless
from pfl_app.protocol import COHORT_NODE_IDS_KEY, WIRELESS_COHORT_KEY
from pfl_app.records import message_bytes, to_arrayrecord
from pfl_app.strategies import PFTT
from pfl_app.wireless import (
    PROFILES,
    Channel,
    Cohort,
    LinkChannel,
    db_to_linear,
    load_channel_class,
    shannon_rate_bps,
)
from pfl_app.wireless.mod import WirelessMod, client_channel, wireless_mod

from ..helpers import TINY, FakeGrid, mod_context, mod_train_message, reply_of_ones

W = "model.layers.0.mlp.bottleneck_adapter.default.up.weight"

# Scheduled clients share the uplink band equally; it records what the mod asked of it.
USER_CHANNEL = """
    from pfl_app.wireless.interface import Channel
    from pfl_app.wireless.link import LinkChannel
    from pfl_app.wireless.profiles import with_overrides

    CALLS = []


    class SharedUplink(LinkChannel):
        def begin_round(self, server_round, cohort):
            CALLS.append(("begin_round", self.client_id, server_round, cohort))
            share = cohort.size if cohort is not None else 1
            self.profile = with_overrides(self.profile, bandwidth_up_hz=self.profile.bandwidth_up_hz / share)

        def downlink(self, server_round, nbytes):
            CALLS.append(("downlink", self.client_id, server_round, nbytes))
            return super().downlink(server_round, nbytes)

        def uplink(self, server_round, nbytes):
            CALLS.append(("uplink", self.client_id, server_round, nbytes))
            return super().uplink(server_round, nbytes)


    class NotAChannel:
        pass


    class Unfinished(Channel):  # without downlink and uplink
        pass


    class OwnConstructor(LinkChannel):
        def __init__(self, profile):
            super().__init__(profile, seed=0, client_id=0, num_clients=1)


    def needs_gamma(rng, size=None, *, gamma):
        return 1.0
"""


@pytest.fixture
def user_channel(tmp_path, monkeypatch):
    (tmp_path / "user_channel.py").write_text(textwrap.dedent(USER_CHANNEL))
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_channel

    yield user_channel
    sys.modules.pop("user_channel", None)


# --- a channel of one's own, by path ------------------------------------------------------


def test_the_mod_uses_the_channel_wireless_channel_names(flower_identity, user_channel):
    cfg = {"wireless.profile": "lte-cell-edge", "wireless.channel": "user_channel:SharedUplink"}
    msg = mod_train_message(rnd=2, node=11, cohort=[13, 11, 12, 10])
    reply = wireless_mod(msg, mod_context(client=1, **cfg), reply_of_ones)
    assert [c[0] for c in user_channel.CALLS] == ["begin_round", "downlink", "uplink"]
    _, client, rnd, cohort = user_channel.CALLS[0]
    assert (client, rnd) == (1, 2)
    assert cohort == Cohort((10, 11, 12, 13), 11) and cohort.size == 4 and cohort.position == 1
    assert user_channel.CALLS[1][3] == message_bytes(msg)
    # The shared band shows in the reply: a quarter of the uplink band holds a quarter of the
    # noise (SNR + 6 dB) and carries less; the downlink is as it was alone.
    alone_cfg = {"wireless.profile": "lte-cell-edge"}
    alone = wireless_mod(mod_train_message(rnd=2, node=11), mod_context(client=1, **alone_cfg), reply_of_ones)
    shared, single = reply.content["wireless"], alone.content["wireless"]
    assert shared["snr-db-up"] == pytest.approx(single["snr-db-up"] + 10 * math.log10(4))
    lte = PROFILES["lte-cell-edge"]
    assert shared["rate-bps-up"] == pytest.approx(
        shannon_rate_bps(lte.bandwidth_up_hz / 4, db_to_linear(shared["snr-db-up"]), lte.efficiency))
    assert shared["rate-bps-down"] == single["rate-bps-down"]


def test_a_factory_of_ones_own_builds_the_channel(flower_identity, user_channel):
    built = []

    def factory(cfg, client_id, num_clients):
        built.append((client_id, num_clients))
        return user_channel.SharedUplink(client_channel(cfg, client_id, num_clients).profile, seed=cfg.seed,
                                         client_id=client_id, num_clients=num_clients)

    WirelessMod(factory)(mod_train_message(node=12, cohort=[12]), mod_context(client=2), reply_of_ones)
    assert built == [(2, 4)] and user_channel.CALLS[0][3] == Cohort((12,), 12)


def test_a_channel_that_returns_no_transmission_is_named(flower_identity):
    class Broken(LinkChannel):
        def downlink(self, server_round, nbytes):
            return {"delivered": True}

    mod = WirelessMod(lambda cfg, c, n: Broken(client_channel(cfg, c, n).profile, seed=0, client_id=c, num_clients=n))
    with pytest.raises(TypeError, match="Broken.downlink returned dict, not a Transmission"):
        mod(mod_train_message(), mod_context(), reply_of_ones)


def test_the_default_mod_uses_the_built_in_link(flower_identity):
    assert isinstance(client_channel(parse_run_config(TINY), 0, 4), LinkChannel)
    assert wireless_mod.channel_factory is client_channel


# --- bad values of wireless.channel are refused, naming the key -------------------------


def test_a_channel_value_without_a_colon_is_refused_by_the_config():
    with pytest.raises(ConfigError, match="'wireless.channel'.*package.module:Class"):
        parse_run_config({**TINY, "wireless.channel": "user_channel.SharedUplink"})


@pytest.mark.parametrize("path, why", [
    ("no_such_module:Channel", "annot import 'no_such_module'"),
    ("user_channel:Missing", "has no .*'Missing'"),
    ("user_channel:NotAChannel", "not a subclass of pfl_app.wireless.interface.Channel"),
    ("user_channel:CALLS", "not a subclass"),
    ("user_channel:Unfinished", "does not implement downlink, uplink"),
])
def test_a_channel_that_is_not_a_channel_class_is_refused_by_the_config(user_channel, path, why):
    with pytest.raises(ConfigError, match=f"run-config key 'wireless.channel' = '{path}'") as err:
        parse_run_config({**TINY, "wireless.channel": path})
    assert err.match(why)
    # A client handed it anyway says the same.
    cfg = parse_run_config(TINY)
    cfg = dataclasses.replace(cfg, wireless=dataclasses.replace(cfg.wireless, channel=path))
    with pytest.raises(ValueError, match=f"'wireless.channel' = '{path}'.*{why}"):
        client_channel(cfg, 0, 4)


def test_a_channel_class_the_mod_cannot_build_is_refused_before_the_run(user_channel):
    path = "user_channel:OwnConstructor"
    cfg = parse_run_config({**TINY, "wireless.channel": path})  # it imports, and is a Channel
    why = "OwnConstructor cannot be built as the wireless mod builds a channel"
    with pytest.raises(ConfigError, match=f"run-config key 'wireless.channel' = '{path}': {why}"):
        check_wireless(cfg)
    with pytest.raises(ValueError, match=f"'wireless.channel' = '{path}': {why}"):
        client_channel(cfg, 0, 4)


def test_a_good_channel_and_fading_pass_the_checks(user_channel):
    check_wireless(parse_run_config({**TINY, "wireless.channel": "user_channel:SharedUplink",
                                     "wireless.fading": "nakagami-m", "wireless.nakagami-m": 2.0}))
    assert load_channel_class("user_channel:SharedUplink") is user_channel.SharedUplink
    assert issubclass(user_channel.SharedUplink, Channel)


def test_a_bad_fading_is_refused_before_the_run_naming_the_key(user_channel):
    with pytest.raises(ConfigError, match="'wireless.fading'.*rayleigh, rician, none, nakagami-m"):
        parse_run_config({**TINY, "wireless.fading": "weibull"})
    with pytest.raises(ConfigError, match="run-config key 'wireless.fading' = 'no_such_module:fade'.*annot import"):
        parse_run_config({**TINY, "wireless.fading": "no_such_module:fade"})
    # It imports, but asks for a parameter no link profile has: the pre-flight check finds it.
    cfg = parse_run_config({**TINY, "wireless.fading": "user_channel:needs_gamma"})
    with pytest.raises(ConfigError, match="'wireless.fading' = 'user_channel:needs_gamma'.*requires parameter.*gamma"):
        check_wireless(cfg)
    with pytest.raises(ConfigError, match="'wireless.nakagami-m'"):
        parse_run_config({**TINY, "wireless.nakagami-m": 0.4})


def test_nakagami_m_of_the_run_config_reaches_the_link(flower_identity):
    cfg = parse_run_config({**TINY, "wireless.profile": "lte-cell-edge", "wireless.fading": "nakagami-m",
                            "wireless.nakagami-m": 4.0})
    profile = client_channel(cfg, 1, 4).profile
    assert (profile.fading, profile.nakagami_m) == ("nakagami-m", 4.0)
    assert client_channel(parse_run_config(TINY), 1, 4).profile.nakagami_m == 1.0  # 0: the profile's


# --- the round's cohort: from the strategy, through the message, to the channel ----------


class _Recording(LinkChannel):
    cohorts: list = []

    def begin_round(self, server_round, cohort):
        self.cohorts.append((self.client_id, server_round, cohort))


def test_the_cohort_reaches_the_channel_through_the_train_messages(flower_identity):
    strategy = PFTT(method="pftt", min_available_nodes=3, min_train_nodes=3)
    glob = {W: np.zeros(3, np.float32)}
    msgs = list(strategy.configure_train(4, to_arrayrecord(glob), ConfigRecord({"run-dir": "/x"}), FakeGrid([9, 5, 7])))
    assert sorted(m.metadata.dst_node_id for m in msgs) == [5, 7, 9]
    assert all(list(m.content[WIRELESS_COHORT_KEY][COHORT_NODE_IDS_KEY]) == [5, 7, 9] for m in msgs)
    _Recording.cohorts = []
    mod = WirelessMod(lambda cfg, c, n: _Recording(client_channel(cfg, c, n).profile, seed=cfg.seed,
                                                   client_id=c, num_clients=n))
    for client, msg in enumerate(sorted(msgs, key=lambda m: m.metadata.dst_node_id)):
        mod(msg, mod_context(client=client, node_id=msg.metadata.dst_node_id), reply_of_ones)
    assert _Recording.cohorts == [(0, 4, Cohort((5, 7, 9), 5)), (1, 4, Cohort((5, 7, 9), 7)),
                                  (2, 4, Cohort((5, 7, 9), 9))]
    assert [c.position for _, _, c in _Recording.cohorts] == [0, 1, 2]


def test_a_message_without_a_cohort_gives_the_channel_none(flower_identity):
    _Recording.cohorts = []
    mod = WirelessMod(lambda cfg, c, n: _Recording(client_channel(cfg, c, n).profile, seed=0, client_id=c,
                                                   num_clients=n))
    mod(mod_train_message(), mod_context(), reply_of_ones)
    assert _Recording.cohorts == [(0, 1, None)]


def test_a_strategy_schedules_who_transmits(flower_identity):
    class EveryOther(PFTT):
        def schedule(self, server_round, node_ids):
            return node_ids[server_round % 2::2]

    strategy = EveryOther(method="pftt", min_available_nodes=4, min_train_nodes=4)
    glob = to_arrayrecord({W: np.zeros(3, np.float32)})
    msgs = list(strategy.configure_train(1, glob, ConfigRecord({"run-dir": "/x"}), FakeGrid([40, 10, 30, 20])))
    assert sorted(m.metadata.dst_node_id for m in msgs) == [20, 40]
    assert all(list(m.content[WIRELESS_COHORT_KEY][COHORT_NODE_IDS_KEY]) == [20, 40] for m in msgs)
    assert strategy._sent == 2  # min-answers counts the scheduled clients only
    assert {r["node"] for r in strategy._ledger.rows()} == {20, 40}  # bytes went to those alone

    class Stranger(PFTT):
        def schedule(self, server_round, node_ids):
            return [99]

    with pytest.raises(ValueError, match=r"Stranger.schedule chose nodes \[99\] that were not sampled"):
        Stranger(method="pftt", min_available_nodes=2, min_train_nodes=2).configure_train(
            1, glob, ConfigRecord({"run-dir": "/x"}), FakeGrid([1, 2]))


def test_the_cohort_is_not_counted_as_payload(flower_identity):
    strategy = PFTT(method="pftt", min_available_nodes=2, min_train_nodes=2)
    glob = to_arrayrecord({W: np.zeros(300, np.float32)})
    (msg, _) = strategy.configure_train(1, glob, ConfigRecord({"run-dir": "/x"}), FakeGrid([3, 4]))
    assert WIRELESS_COHORT_KEY in msg.content
    payload = sum(r.count_bytes() for k, r in msg.content.items() if k != WIRELESS_COHORT_KEY)
    assert message_bytes(msg) == payload
    assert strategy._ledger.rows()[0]["bytes_down"] == payload


def test_a_cohort_of_flower_sized_node_ids_travels():
    # Flower's node ids are unsigned 64-bit: beyond int64, which Flower then sends as uint64.
    ids = [5, 2**64 - 5, 2**63 + 1]
    record = ConfigRecord({COHORT_NODE_IDS_KEY: sorted(ids)})
    back = serde.config_record_from_proto(serde.config_record_to_proto(record))
    assert Cohort.of(back[COHORT_NODE_IDS_KEY], 2**63 + 1).position == 1


def test_a_cohort_must_hold_its_own_node():
    with pytest.raises(ValueError, match="node 3 is not in the round's cohort"):
        Cohort.of([1, 2], 3)
