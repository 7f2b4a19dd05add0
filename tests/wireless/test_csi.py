"""The server's channel state is the client's channel: the same SNR, rate and (first-attempt) air time."""

import dataclasses

import pytest

from pfl_app.config import parse_run_config
from pfl_app.wireless import LinkChannel, PROFILES, transmit
from pfl_app.wireless.channel import client_rng
from pfl_app.wireless.csi import BaseStationCSI, air_time_s, channel_state
from pfl_app.wireless.mod import client_channel, link_profile

from ..helpers import TINY

CONFIGS = [
    {"wireless.profile": "5g-urban"},
    {"wireless.profile": "wifi", "seed": 3},  # Rician
    {"wireless.profile": "lte-cell-edge", "wireless.fading": "nakagami-m", "wireless.nakagami-m": 2.0},
    {"wireless.profile": "5g-urban", "wireless.poor-fraction": 0.5, "wireless.distance-min": 20.0,
     "wireless.distance-max": 400.0, "seed": 11},
]


@pytest.mark.parametrize("overrides", CONFIGS)
def test_the_servers_snr_is_the_clients_uplink_snr(overrides):
    cfg = parse_run_config({**TINY, **overrides})
    csi = BaseStationCSI(cfg.link_population)
    n = 5
    for client in range(n):
        assert csi.profile(client, n) == link_profile(cfg, client, n)
        for server_round in (1, 2, 7):
            channel = client_channel(cfg, client, n)
            channel.begin_round(server_round, None)
            down = channel.downlink(server_round, 40_000)
            up = channel.uplink(server_round, 40_000)
            state = csi.state(client, n, server_round)
            assert state.snr_db_up == up.snr_db and state.rate_bps_up == up.rate_bps
            assert state.snr_db_down == down.snr_db and state.rate_bps_down == down.rate_bps
            assert state.fading_power == up.fading_power


def test_the_snr_changes_with_the_round_and_the_client():
    cfg = parse_run_config({**TINY, "wireless.profile": "5g-urban"})
    csi = BaseStationCSI(cfg.link_population)
    snrs = {csi.state(c, 4, r).snr_db_up for c in range(4) for r in range(1, 4)}
    assert len(snrs) == 12  # Rayleigh fades: every client and round its own


def test_a_linkchannel_built_by_hand_agrees_too():
    profile = PROFILES["lte-cell-edge"]
    channel = LinkChannel(profile, seed=4, client_id=2, num_clients=3)
    assert channel_state(profile, 4, 2, 5).snr_db_up == channel.uplink(5, 1000).snr_db


@pytest.mark.parametrize("nbytes", [0, 1, 1499, 1500, 123_457])
def test_the_air_time_is_that_of_a_first_attempt_delivery(nbytes):
    # No packet errors (outage threshold -inf): the channel's air time is exactly the estimate.
    profile = dataclasses.replace(PROFILES["wifi"], outage_snr_db=float("-inf"))
    state = channel_state(profile, 0, 1, 2)
    sent = transmit(client_rng(0, 1, 2, "up"), profile, nbytes, "up", fading_power=state.fading_power)
    assert sent.retransmissions == 0
    assert air_time_s(profile, nbytes, state.rate_bps_up) == pytest.approx(sent.air_time_s, rel=1e-12)


def test_the_estimated_round_time_is_a_lower_bound():
    # With retransmissions (BLER, HARQ), the real round time is never below the estimate.
    cfg = parse_run_config({**TINY, "wireless.profile": "lte-cell-edge", "wireless.compute-s": 0.5})
    csi = BaseStationCSI(cfg.link_population)
    for client in range(4):
        for server_round in range(1, 6):
            channel = client_channel(cfg, client, 4)
            down = channel.downlink(server_round, 200_000)
            up = channel.uplink(server_round, 200_000)
            estimate = csi.round_time_s(client, 4, server_round, 200_000, 200_000, 0.5)
            if down.delivered and up.rate_bps >= 1e3:
                assert estimate <= down.air_time_s + 0.5 + up.air_time_s + 1e-12


@pytest.mark.parametrize("access", ["tdma", "ofdma"])
def test_the_estimated_round_time_is_the_cells_under_its_access_scheme(access):
    # No packet errors: the client's round in a cell of 4 (air time + its TDMA waits) is the estimate.
    from pfl_app.wireless.interface import Cohort

    cfg = parse_run_config({**TINY, "wireless.profile": "5g-urban", "wireless.access": access,
                            "wireless.max-retransmissions": 0, "wireless.compute-s": 0.5, "seed": 2})
    csi = BaseStationCSI(cfg.link_population)
    for client in range(4):
        for server_round in (1, 3):
            channel = client_channel(cfg, client, 4)
            channel.begin_round(server_round, Cohort.of([10, 11, 12, 13], 10 + client))
            down = channel.downlink(server_round, 300_000)
            up = channel.uplink(server_round, 300_000)
            if not (down.delivered and up.delivered) or down.retransmissions or up.retransmissions:
                continue  # a packet failed: the estimate is then a lower bound only
            real = down.air_time_s + channel.wait_s(down) + 0.5 + up.air_time_s + channel.wait_s(up)
            estimate = csi.round_time_s(client, 4, server_round, 300_000, 300_000, 0.5, access, 0.25)
            assert estimate == pytest.approx(real, rel=1e-9)
            # and its time on the air well above the whole band's, which the estimate used to give
            whole = csi.round_time_s(client, 4, server_round, 300_000, 300_000, 0.5)
            fixed = 0.5 + 2 * csi.profile(client, 4).overhead_s  # compute and each message's latency
            assert estimate - fixed > (whole - fixed) * 1.2
