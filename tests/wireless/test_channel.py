"""Statistical and exact checks of the channel model (fixed seeds, fast)."""

import json
import math

import numpy as np
import pytest

from pfl_app.wireless import (
    PROFILES,
    REASON_NO_LINK,
    REASON_OUTAGE,
    Transmission,
    client_rng,
    compute_energy_j,
    db_to_linear,
    dbm_to_watts,
    draw_fading_power,
    mean_snr_db,
    packet_error_probability,
    path_loss_db,
    rayleigh_outage_probability,
    round_air_time,
    shannon_rate_bps,
    straggler,
    transmit,
    with_overrides,
)

N_DRAWS = 200_000


def rng(seed=0):
    return np.random.default_rng(seed)


# --- fading ---------------------------------------------------------------------------------


def test_rayleigh_power_has_mean_one_and_unit_variance():
    h = draw_fading_power(rng(1), "rayleigh", size=N_DRAWS)
    assert h.mean() == pytest.approx(1.0, rel=0.01)
    assert h.var() == pytest.approx(1.0, rel=0.03)  # exponential(1)
    assert h.min() >= 0.0


@pytest.mark.parametrize("k", [0.0, 3.0, 10.0])
def test_rician_power_has_mean_one(k):
    h = draw_fading_power(rng(2), "rician", rician_k=k, size=N_DRAWS)
    assert h.mean() == pytest.approx(1.0, rel=0.01)
    # Var |h|^2 = (2K + 1) / (K + 1)^2 for unit mean.
    assert h.var() == pytest.approx((2 * k + 1) / (k + 1) ** 2, rel=0.05)


def test_rician_large_k_varies_much_less_than_rayleigh():
    rician = draw_fading_power(rng(3), "rician", rician_k=50.0, size=N_DRAWS)
    rayleigh = draw_fading_power(rng(3), "rayleigh", size=N_DRAWS)
    assert rician.var() < 0.05 * rayleigh.var()


def test_no_fading_is_exactly_one():
    assert draw_fading_power(rng(), "none") == 1.0
    assert np.all(draw_fading_power(rng(), "none", size=7) == 1.0)


def test_unknown_fading_kind_is_named():
    with pytest.raises(ValueError, match="rayleigh, rician, none"):
        draw_fading_power(rng(), "nakagami")


@pytest.mark.parametrize(
    "threshold_db, mean_db", [(0.0, 10.0), (5.0, 5.0), (-3.0, 2.0), (10.0, 7.0)]
)
def test_empirical_rayleigh_outage_matches_closed_form(threshold_db, mean_db):
    h = draw_fading_power(rng(4), "rayleigh", size=N_DRAWS)
    empirical = np.mean(db_to_linear(mean_db) * h < db_to_linear(threshold_db))
    expected = rayleigh_outage_probability(threshold_db, mean_db)
    sigma = math.sqrt(expected * (1 - expected) / N_DRAWS)
    assert abs(empirical - expected) < max(5 * sigma, 1e-3)


def test_closed_form_outage_values():
    assert rayleigh_outage_probability(0.0, 0.0) == pytest.approx(1 - math.exp(-1))
    assert rayleigh_outage_probability(-10.0, 0.0) == pytest.approx(1 - math.exp(-0.1))


def test_transmit_outage_rate_matches_closed_form():
    # One packet, no ARQ: delivered iff the faded SNR clears the threshold.
    base = with_overrides("lte-cell-edge", error_model="outage", outage_snr_db=0.0,
                          max_retransmissions=0, overhead_bytes=0, packet_bytes=1500)
    mean = mean_snr_db(base, "up")
    expected = rayleigh_outage_probability(0.0, mean)
    assert 0.2 < expected < 0.8  # a regime where a wrong model would show
    n = 20_000
    lost = [not transmit(client_rng(7, c, 1, "up"), base, 1000, "up").delivered for c in range(n)]
    sigma = math.sqrt(expected * (1 - expected) / n)
    assert abs(np.mean(lost) - expected) < 4 * sigma


# --- path loss, SNR, rate -------------------------------------------------------------------


@pytest.mark.parametrize("n", [2.0, 3.0, 3.76])
def test_path_loss_grows_10n_db_per_decade(n):
    near = path_loss_db(10.0, n, 40.0)
    far = path_loss_db(100.0, n, 40.0)
    assert far - near == pytest.approx(10 * n)
    assert path_loss_db(1.0, n, 40.0) == pytest.approx(40.0)
    assert path_loss_db(50.0, n, 40.0, reference_distance_m=50.0) == pytest.approx(40.0)


def test_mean_snr_link_budget():
    p = PROFILES["lte-cell-edge"]
    loss = path_loss_db(p.distance_m, p.path_loss_exponent, p.reference_loss_db)
    noise_up = p.noise_psd_dbm_hz + 10 * math.log10(p.bandwidth_up_hz) + p.noise_figure_db
    noise_down = p.noise_psd_dbm_hz + 10 * math.log10(p.bandwidth_down_hz) + p.noise_figure_db
    assert mean_snr_db(p, "up") == pytest.approx(p.tx_power_dbm - loss - noise_up)
    assert mean_snr_db(p, "down") == pytest.approx(p.bs_tx_power_dbm - loss - noise_down)
    with pytest.raises(ValueError, match="direction"):
        mean_snr_db(p, "sideways")


def test_shannon_rate():
    assert shannon_rate_bps(10e6, 1.0, 0.7) == 0.7 * 10e6  # log2(2) = 1 exactly
    assert shannon_rate_bps(20e6, 5.0, 0.5) == pytest.approx(2 * shannon_rate_bps(10e6, 5.0, 0.5))
    rates = shannon_rate_bps(1e6, np.logspace(-3, 6, 50), 0.6)
    assert np.all(np.diff(rates) > 0)
    assert shannon_rate_bps(1e6, 0.0) == 0.0


def test_packet_error_models():
    outage = with_overrides("wifi", error_model="outage", outage_snr_db=4.0)
    assert packet_error_probability(outage, 3.9) == 1.0
    assert packet_error_probability(outage, 4.0) == 0.0
    bler = with_overrides("wifi", error_model="bler", bler_snr50_db=2.0, bler_slope_db=1.5)
    assert packet_error_probability(bler, 2.0) == pytest.approx(0.5)
    assert packet_error_probability(bler, 5.0) == pytest.approx(1 / (1 + math.exp(2.0)))
    assert packet_error_probability(bler, 1e6) == pytest.approx(0.0)
    assert packet_error_probability(bler, -1e6) == pytest.approx(1.0)
    curve = packet_error_probability(bler, np.linspace(-10, 10, 21))
    assert np.all(np.diff(curve) < 0)


# --- transmit ------------------------------------------------------------------------------


def test_same_seed_same_transmission_and_rounds_differ():
    p = PROFILES["5g-urban"]
    a = transmit(client_rng(3, 2, 5, "up"), p, 200_000, "up")
    b = transmit(client_rng(3, 2, 5, "up"), p, 200_000, "up")
    assert a == b
    other = transmit(client_rng(3, 2, 6, "up"), p, 200_000, "up")
    assert other.fading_power != a.fading_power
    down = transmit(client_rng(3, 2, 5, "down"), p, 200_000, "down")
    assert down.fading_power != a.fading_power


def test_client_rng_rejects_bad_arguments():
    with pytest.raises(ValueError, match="direction"):
        client_rng(0, 0, 1, "both")
    with pytest.raises(ValueError, match="client_id"):
        client_rng(0, -1, 1, "up")


def test_air_time_is_bits_over_rate_without_loss():
    p = with_overrides("wifi", fading="none", error_model="outage", outage_snr_db=-math.inf,
                       overhead_bytes=100, overhead_s=0.02, packet_bytes=1000)
    t = transmit(rng(), p, 12_345, "up")
    rate = shannon_rate_bps(p.bandwidth_up_hz, db_to_linear(mean_snr_db(p, "up")), p.efficiency)
    assert t.delivered and t.reason == "" and t.lost_packets == ()
    assert t.packets == 13 == t.transmissions and t.retransmissions == 0
    assert t.rate_bps == pytest.approx(rate)
    assert t.air_time_s == pytest.approx((12_345 + 100) * 8 / rate + 0.02, rel=1e-12)
    assert t.energy_j == pytest.approx(dbm_to_watts(p.tx_power_dbm) * t.air_time_s)


def test_downlink_costs_the_device_no_energy():
    t = transmit(rng(), PROFILES["wifi"], 50_000, "down", fading_power=1.0)
    assert t.energy_j == 0.0 and t.air_time_s > 0


def test_ideal_profile_never_loses_and_is_fast():
    p = PROFILES["ideal"]
    for c in range(50):
        t = transmit(client_rng(0, c, 1, "up"), p, 100_000_000, "up")
        assert t.delivered and t.retransmissions == 0
        assert t.air_time_s < 0.01  # 100 MB in under 10 ms


def test_arq_trades_air_time_for_delivery():
    # Mid SNR on a BLER curve: each attempt fails with probability ~0.38.
    base = with_overrides("5g-urban", fading="none", error_model="bler",
                          bler_snr50_db=mean_snr_db(PROFILES["5g-urban"], "up") - 0.5,
                          bler_slope_db=1.0, overhead_bytes=0)
    stats = {}
    for retx in (0, 1, 3, 6):
        p = with_overrides(base, max_retransmissions=retx)
        ts = [transmit(client_rng(1, c, 1, "up"), p, 15_000, "up") for c in range(400)]
        for t in ts:
            assert t.retransmissions == t.transmissions - t.packets
            assert t.transmissions <= t.packets * (retx + 1)
            assert (len(t.lost_packets) > 0) == (not t.delivered)
            assert t.energy_j == pytest.approx(dbm_to_watts(p.tx_power_dbm) * t.air_time_s)
        stats[retx] = (np.mean([t.delivered for t in ts]), np.mean([t.air_time_s for t in ts]),
                       np.mean([t.retransmissions for t in ts]))
    delivery = [stats[r][0] for r in (0, 1, 3, 6)]
    air = [stats[r][1] for r in (0, 1, 3, 6)]
    assert stats[0][2] == 0
    assert all(x < y for x, y in zip(delivery, delivery[1:]))
    assert all(x < y for x, y in zip(air, air[1:]))
    # 10 packets, per-packet failure p: P(delivered) = (1 - p^(R+1))^10.
    pe = packet_error_probability(base, mean_snr_db(base, "up"))
    for retx in (0, 3):
        expected = (1 - pe ** (retx + 1)) ** 10
        assert stats[retx][0] == pytest.approx(expected, abs=0.08)


def test_outage_model_loses_every_packet_and_says_why():
    p = with_overrides("wifi", error_model="outage", outage_snr_db=100.0, max_retransmissions=2,
                       overhead_bytes=0, packet_bytes=1000)
    t = transmit(rng(), p, 3000, "up")
    assert not t.delivered and t.reason == REASON_OUTAGE
    assert t.lost_packets == (0, 1, 2)
    assert t.transmissions == 9 and t.retransmissions == 6


def test_deep_fade_gives_no_link_and_finite_json():
    t = transmit(rng(), PROFILES["lte-cell-edge"], 10_000, "up", fading_power=0.0)
    assert not t.delivered and t.reason == REASON_NO_LINK
    assert t.air_time_s == 0.0 and t.energy_j == 0.0 and t.transmissions == 0
    assert len(t.lost_packets) == t.packets
    text = json.dumps(t.as_dict(), allow_nan=False)  # raises on inf / NaN
    assert json.loads(text)["reason"] == REASON_NO_LINK


def test_fading_power_argument_is_used_and_checked():
    p = PROFILES["5g-urban"]
    t = transmit(rng(), p, 1000, "up", fading_power=2.0)
    assert t.snr_db == pytest.approx(mean_snr_db(p, "up") + 10 * math.log10(2.0))
    with pytest.raises(ValueError, match="fading_power"):
        transmit(rng(), p, 1000, "up", fading_power=-1.0)
    with pytest.raises(ValueError, match="nbytes"):
        transmit(rng(), p, -5, "up")


# --- energy and round time ------------------------------------------------------------------


def test_compute_energy():
    p = with_overrides("wifi", device_power_w=4.0)
    assert compute_energy_j(p, 2.5) == 10.0


def _tx(air, delivered=True):
    return Transmission("up", 1, 1.0, 10.0, 1e6, 1, 1, 0, air, 0.0, delivered,
                        () if delivered else (0,), "" if delivered else "packet-loss")


def test_round_air_time_and_stragglers():
    assert round_air_time([1.0, 3.0, 2.0]) == 3.0
    assert round_air_time([]) == 0.0
    assert round_air_time([1.0, 3.0], deadline_s=5.0) == 3.0
    assert round_air_time([1.0, 6.0], deadline_s=5.0) == 5.0
    # Undelivered messages do not set the pace, but do miss a deadline.
    assert round_air_time([_tx(1.0), _tx(9.0, delivered=False)]) == 1.0
    assert round_air_time([_tx(1.0), _tx(0.5, delivered=False)], deadline_s=4.0) == 4.0
    assert straggler(6.0, 5.0) and not straggler(5.0, 5.0) and not straggler(1e9, None)
