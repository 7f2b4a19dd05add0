"""Fast fading (wireless.coherence = "packet") against its closed forms, and block fading's
all-or-nothing messages."""

import dataclasses
import math

import numpy as np
import pytest

from pfl_app.wireless import (
    PROFILES,
    LinkChannel,
    client_rng,
    mean_snr_db,
    packet_error_probability,
    rayleigh_outage_probability,
    transmit,
    with_overrides,
)

TRIALS = 2500
PACKET = 1500


def _profile(margin_db, retransmissions=0, **fields):
    """Rayleigh uplink whose outage threshold sits ``margin_db`` below the mean SNR."""
    base = with_overrides("lte-cell-edge", fading="rayleigh", error_model="outage", outage_snr_db=0.0,
                          overhead_bytes=0, overhead_s=0.0, packet_bytes=PACKET, **fields)
    return with_overrides(base, outage_snr_db=mean_snr_db(base, "up") - margin_db,
                          max_retransmissions=retransmissions)


def _delivered(profile, packets, coherence, seed):
    rng = np.random.default_rng(seed)
    return np.mean([transmit(rng, profile, packets * PACKET, "up", coherence=coherence).delivered
                    for _ in range(TRIALS)])


def _tolerance(p):
    return 4.5 * math.sqrt(p * (1 - p) / TRIALS) + 1e-3


@pytest.mark.parametrize("packets", [1, 16, 128])
def test_fast_fading_delivers_n_packets_with_the_nth_power_of_one(packets):
    # Outage under Rayleigh fading: each attempt fails with p = 1 - exp(-g_th / g), so a
    # message of n packets without ARQ gets through with (1 - p)^n.
    profile = _profile(20.0)
    p = float(rayleigh_outage_probability(profile.outage_snr_db, mean_snr_db(profile, "up")))
    assert p == pytest.approx(1 - math.exp(-0.01))
    expected = (1 - p) ** packets
    assert _delivered(profile, packets, "packet", seed=packets) == pytest.approx(expected, abs=_tolerance(expected))


@pytest.mark.parametrize("packets", [4, 32])
def test_fast_fading_with_arq_loses_a_packet_only_when_every_attempt_fails(packets):
    profile = _profile(7.0, retransmissions=1)
    p = float(rayleigh_outage_probability(profile.outage_snr_db, mean_snr_db(profile, "up")))
    expected = (1 - p**2) ** packets
    assert _delivered(profile, packets, "packet", seed=100 + packets) == pytest.approx(expected,
                                                                                      abs=_tolerance(expected))


def test_fast_fading_averages_the_bler_curve_over_the_fade():
    # (1 - p_bar)^n with p_bar = E_h[BLER(snr + 10 log10 h)], h ~ Exp(1), by quadrature.
    profile = with_overrides("lte-cell-edge", overhead_bytes=0, overhead_s=0.0, max_retransmissions=0,
                             bler_snr50_db=mean_snr_db(PROFILES["lte-cell-edge"], "up") - 12.0)
    h = np.linspace(1e-9, 40.0, 400_001)
    per = packet_error_probability(profile, mean_snr_db(profile, "up") + 10 * np.log10(h))
    p_bar = float(np.trapezoid(per * np.exp(-h), h))
    assert 0.01 < p_bar < 0.2
    for packets in (2, 24):
        expected = (1 - p_bar) ** packets
        got = _delivered(profile, packets, "packet", seed=7 + packets)
        assert got == pytest.approx(expected, abs=_tolerance(expected))


def test_block_fading_delivers_short_and_long_messages_alike():
    # One fade for the whole message: outage hits all packets or none, whatever their number.
    profile = _profile(20.0)
    p = float(rayleigh_outage_probability(profile.outage_snr_db, mean_snr_db(profile, "up")))
    for packets in (1, 128):
        got = _delivered(profile, packets, "message", seed=packets)
        assert got == pytest.approx(1 - p, abs=_tolerance(1 - p))
    # whereas fast fading loses the long one far more often
    assert _delivered(profile, 128, "packet", seed=1) < 1 - 50 * p


def test_under_block_fading_a_4x_longer_message_at_the_same_draw_fails_together():
    profile = _profile(3.0)
    outcomes = set()
    for fade in np.random.default_rng(5).exponential(1.0, 400):
        short = transmit(np.random.default_rng(0), profile, 10 * PACKET, "up", fading_power=float(fade))
        long = transmit(np.random.default_rng(0), profile, 40 * PACKET, "up", fading_power=float(fade))
        assert short.delivered == long.delivered
        assert long.packets == 4 * short.packets
        outcomes.add(short.delivered)
    assert outcomes == {True, False}
    # The link channel keeps one fade per client and round: the same holds on its draws.
    for rnd in range(1, 200):
        short = LinkChannel(profile, seed=2, client_id=1, num_clients=3).uplink(rnd, 10 * PACKET)
        long = LinkChannel(profile, seed=2, client_id=1, num_clients=3).uplink(rnd, 40 * PACKET)
        assert short.delivered == long.delivered and short.fading_power == long.fading_power


def test_fast_fading_without_fading_is_the_block_models_link():
    # No fade to draw and no loss: the per-attempt rates are the block model's rate.
    profile = with_overrides("5g-urban", fading="none", error_model="outage", outage_snr_db=-math.inf)
    block = transmit(np.random.default_rng(0), profile, 1_000_000, "up")
    fast = transmit(np.random.default_rng(0), profile, 1_000_000, "up", coherence="packet")
    # the same up to rounding: the effective rate is bits over a sum of per-packet times
    assert (fast.rate_bps, fast.air_time_s) == pytest.approx((block.rate_bps, block.air_time_s), rel=1e-12)
    assert dataclasses.replace(fast, rate_bps=block.rate_bps, air_time_s=block.air_time_s) == block


def test_fast_fading_reports_its_attempts():
    profile = _profile(5.0, retransmissions=3)
    t = transmit(np.random.default_rng(3), profile, 300 * PACKET, "up", coherence="packet")
    assert t.packets == 300 and t.transmissions > 300 and t.retransmissions == t.transmissions - 300
    # the air time is the sum over the attempts made, each at the rate of its own fade
    assert t.air_time_s == pytest.approx(t.transmissions * 8 * PACKET / t.rate_bps, rel=1e-9)
    assert all(0 <= i < 300 for i in t.lost_packets)


def test_the_link_channel_draws_fast_fading_from_its_seeded_generators():
    profile = PROFILES["lte-cell-edge"]
    a = LinkChannel(profile, seed=9, client_id=2, num_clients=4, coherence="packet")
    b = LinkChannel(profile, seed=9, client_id=2, num_clients=4, coherence="packet")
    assert a.uplink(3, 200_000) == b.uplink(3, 200_000)
    assert a.uplink(3, 200_000) == transmit(client_rng(9, 2, 3, "up"), profile, 200_000, "up", coherence="packet")
    assert a.downlink(3, 200_000) == transmit(client_rng(9, 2, 3, "down"), profile, 200_000, "down",
                                              coherence="packet")
    with pytest.raises(ValueError, match="no block fade"):
        a.fading_power(3)


def test_bad_coherence_is_refused():
    with pytest.raises(ValueError, match="coherence must be one of message, packet"):
        transmit(np.random.default_rng(), PROFILES["wifi"], 10, "up", coherence="symbol")
    with pytest.raises(ValueError, match="fading_power"):
        transmit(np.random.default_rng(), PROFILES["wifi"], 10, "up", fading_power=1.0, coherence="packet")
    with pytest.raises(ValueError, match="coherence"):
        LinkChannel(PROFILES["wifi"], seed=0, client_id=0, num_clients=1, coherence="slow")
