"""Multiple access in a cell (wireless.access): TDMA and OFDMA against their closed forms, and the
proportional-fair shares (wireless.access-shares)."""

import math

import pytest
from flwr.app import Context, RecordDict

from pfl_app.config import ConfigError, parse_run_config
from pfl_app.results import round_air_time
from pfl_app.wireless import (
    ACCESS_SCHEMES,
    MIN_RATE_BPS,
    PROFILES,
    CellChannel,
    Cohort,
    LinkChannel,
    db_to_linear,
    dbm_to_watts,
    mean_snr_db,
    ofdma_profile,
    proportional_fair_shares,
    tdma_wait_s,
    with_overrides,
)
from pfl_app.wireless import mod as wmod
from pfl_app.wireless.mod import WIRELESS_KEY, client_channel, wireless_mod

from ..helpers import TINY, mod_train_message, reply_of_ones

# No fading, no loss, no per-message latency: every client's air time is bits / rate exactly.
FLAT = with_overrides("lte-cell-edge", fading="none", error_model="outage", outage_snr_db=-math.inf,
                      overhead_s=0.0)
DOWN, UP = 200_000, 900_000


def _cohort(k, me=0, shares=None):
    return Cohort.of(range(k), me, shares)


def _channel(access, profile=FLAT, client=0, cohort=None, coherence="message"):
    channel = CellChannel(profile, seed=4, client_id=client, num_clients=8, access=access, coherence=coherence)
    channel.begin_round(1, cohort)
    return channel


def _alone(profile=FLAT, client=0, coherence="message"):
    return LinkChannel(profile, seed=4, client_id=client, num_clients=8, coherence=coherence)


# --- K = 1 is the dedicated link, bit for bit -------------------------------------------------


@pytest.mark.parametrize("coherence", ["message", "packet"])
@pytest.mark.parametrize("access", ACCESS_SCHEMES)
@pytest.mark.parametrize("name", ["wifi", "lte-cell-edge", "5g-urban"])
def test_one_client_alone_in_the_cell_has_the_dedicated_link(name, access, coherence):
    for client, rnd in [(0, 1), (3, 2), (5, 9)]:
        alone = _alone(PROFILES[name], client, coherence)
        cell = CellChannel(PROFILES[name], seed=4, client_id=client, num_clients=8, access=access,
                           coherence=coherence)
        cell.begin_round(rnd, Cohort((20 + client,), 20 + client))
        down, up = cell.downlink(rnd, 70_000), cell.uplink(rnd, 50_000)
        assert down == alone.downlink(rnd, 70_000) and up == alone.uplink(rnd, 50_000)
        assert cell.wait_s(down) == 0.0 and cell.wait_s(up) == 0.0


def test_dedicated_access_ignores_the_cohort():
    cell = _channel("dedicated", PROFILES["5g-urban"], cohort=_cohort(6))
    alone = _alone(PROFILES["5g-urban"])
    assert cell.downlink(1, DOWN) == alone.downlink(1, DOWN) and cell.uplink(1, UP) == alone.uplink(1, UP)
    assert cell.metrics() == {"access-share": 1.0, "wait-s-down": 0.0, "wait-s-up": 0.0}


# --- TDMA: the whole band for 1/K of the time -------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 8])
def test_tdma_round_lasts_k_times_one_clients_air_time(k):
    single = _alone()
    d1, u1 = single.downlink(1, DOWN), single.uplink(1, UP)
    times = []
    for me in range(k):
        ch = _channel("tdma", cohort=_cohort(k, me))
        down, up = ch.downlink(1, DOWN), ch.uplink(1, UP)
        # its own transmissions are the whole band's: same rate, air time and energy
        assert (down.rate_bps, down.air_time_s, up.air_time_s, up.energy_j) == \
            (d1.rate_bps, d1.air_time_s, u1.air_time_s, u1.energy_j)
        assert ch.wait_s(up) == pytest.approx((k - 1) * u1.air_time_s, rel=1e-12)
        times.append(down.air_time_s + ch.wait_s(down) + up.air_time_s + ch.wait_s(up))
    # the round: K slots of one client's time each, the sum over the K clients
    rows = [{"client_time_s": t} for t in times]
    assert round_air_time(rows, 0.0) == pytest.approx(k * (d1.air_time_s + u1.air_time_s), rel=1e-12)
    assert round_air_time(rows, 0.0) == pytest.approx(sum(d1.air_time_s + u1.air_time_s for _ in range(k)))


def test_tdma_wait_leaves_the_fixed_latency_out():
    profile = with_overrides(FLAT, overhead_s=0.05)
    t = _alone(profile).uplink(1, UP)
    assert tdma_wait_s(t, 0.25, profile.overhead_s) == pytest.approx(3 * (t.air_time_s - 0.05), rel=1e-12)
    assert tdma_wait_s(t, 1.0, profile.overhead_s) == 0.0
    with pytest.raises(ValueError, match="share"):
        tdma_wait_s(t, 0.0, 0.0)


def test_explicit_shares_replace_the_equal_share():
    # Given in any order, aligned with the node ids as given.
    cohort = Cohort.of([12, 10, 11], 11, [0.2, 0.5, 0.3])
    assert cohort.node_ids == (10, 11, 12) and cohort.shares == (0.5, 0.3, 0.2) and cohort.share == 0.3
    assert Cohort.of([12, 10, 11], 11).share == pytest.approx(1 / 3)
    tdma = _channel("tdma", cohort=cohort)
    up = tdma.uplink(1, UP)
    assert tdma.wait_s(up) == pytest.approx(up.air_time_s * (1 / 0.3 - 1), rel=1e-12)
    ofdma = _channel("ofdma", cohort=cohort)
    assert ofdma.uplink(1, UP).rate_bps == pytest.approx(
        FLAT.efficiency * 0.3 * FLAT.bandwidth_up_hz * math.log2(1 + db_to_linear(mean_snr_db(FLAT, "up")) / 0.3))
    assert ofdma.metrics()["access-share"] == 0.3


def test_tdma_shares_proportional_to_air_time_end_every_client_at_the_sum():
    # Clients at different distances: a fixed equal frame wastes the slots of those done
    # early; shares proportional to each client's air time are the work-conserving schedule.
    profiles = [with_overrides(FLAT, distance_m=d) for d in (300.0, 600.0, 900.0)]
    air = [_alone(p, c).uplink(1, UP).air_time_s for c, p in enumerate(profiles)]
    assert len(set(air)) == 3
    shares = [a / sum(air) for a in air]
    for c, p in enumerate(profiles):
        ch = _channel("tdma", p, c, Cohort.of(range(3), c, shares))
        up = ch.uplink(1, UP)
        assert up.air_time_s + ch.wait_s(up) == pytest.approx(sum(air), rel=1e-9)
    # equal shares: each completes after 3 times its own time, so the round after 3 x the longest
    equal = [3 * a for a in air]
    for c, p in enumerate(profiles):
        ch = _channel("tdma", p, c, Cohort.of(range(3), c))
        up = ch.uplink(1, UP)
        assert up.air_time_s + ch.wait_s(up) == pytest.approx(equal[c], rel=1e-12)


@pytest.mark.parametrize("shares", [[0.5, 0.6], [0.5, 0.5, 0.0], [1.5, -0.5], [0.5], [math.nan, 0.5]])
def test_shares_that_break_the_contract_are_refused(shares):
    with pytest.raises(ValueError, match="shares"):
        Cohort.of([1, 2] if len(shares) != 3 else [1, 2, 3], 1, shares)


@pytest.mark.parametrize("access", ["tdma", "ofdma"])
def test_sharing_the_cell_needs_the_cohort(access):
    with pytest.raises(ValueError, match=f"wireless.access = '{access}'.*wireless-cohort"):
        _channel(access, cohort=None)
    with pytest.raises(ValueError, match="access must be one of dedicated, tdma, ofdma"):
        CellChannel(FLAT, seed=0, client_id=0, num_clients=1, access="fdma")


# --- proportional-fair shares: s_k proportional to R_k / T_k ------------------------------------


def _valid(shares, k):
    assert len(shares) == k and all(isinstance(x, float) and 0 < x <= 1 for x in shares)
    assert math.fsum(shares) == pytest.approx(1.0, abs=1e-12)


def test_equal_metrics_get_equal_shares():
    # Rates far apart, but each at its own average: the metric is 1 for all.
    shares = proportional_fair_shares([1e5, 4e6, 3e7], [1e5, 4e6, 3e7])
    _valid(shares, 3)
    assert shares == pytest.approx((1 / 3,) * 3, rel=1e-12)
    assert proportional_fair_shares([2e6], [5e6]) == (1.0,)  # alone: the whole cell


def test_twice_the_metric_gets_twice_the_share():
    # R/T = 1, 2, 1: a client at twice its average rate gets twice the others' share.
    shares = proportional_fair_shares([1e6, 4e6, 3e6], [1e6, 2e6, 3e6])
    _valid(shares, 3)
    assert shares == pytest.approx((0.25, 0.5, 0.25), rel=1e-12)
    # only the ratio matters: scaling every R (or every T) changes nothing
    assert proportional_fair_shares([7e6, 28e6, 21e6], [1e6, 2e6, 3e6]) == pytest.approx(shares, rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_shares_sum_to_one_and_follow_the_metric(seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 12))
    rates, averages = rng.uniform(1e4, 1e8, k), rng.uniform(1e4, 1e8, k)
    shares = proportional_fair_shares(list(rates), list(averages))
    _valid(shares, k)
    metric = rates / averages
    assert np.allclose(np.array(shares), metric / metric.sum(), rtol=1e-12)


def test_clients_without_a_finite_metric_get_the_equal_share_and_the_rest_is_split():
    # node 0: channel unknown; node 1: never served (T = 0); nodes 2, 3: R/T = 1 and 3.
    shares = proportional_fair_shares([None, 5e6, 1e6, 3e6], [0.0, 0.0, 1e6, 1e6])
    _valid(shares, 4)
    assert shares[:2] == (0.25, 0.25)
    assert shares[2:] == pytest.approx((0.5 * 1 / 4, 0.5 * 3 / 4), rel=1e-12)
    # an unknown channel with a past (a node seen, then restarted) has no metric either
    assert proportional_fair_shares([None, 2e6], [3e6, 1e6])[0] == 0.5
    # nobody with a metric: the equal shares
    assert proportional_fair_shares([None, None, 4e6], [0.0, 1e6, 0.0]) == (1 / 3, 1 / 3, 1 / 3)


def test_a_client_without_a_link_keeps_a_share_above_zero():
    shares = proportional_fair_shares([0.0, 1e7], [1e6, 1e6])  # R = 0: counted at MIN_RATE_BPS
    _valid(shares, 2)
    assert shares[0] == pytest.approx(MIN_RATE_BPS / (MIN_RATE_BPS + 1e7), rel=1e-12)
    # metrics 1e600 apart neither overflow nor round a share to 0
    shares = proportional_fair_shares([1e8, 1e3], [1e-300, 1e300])
    _valid(shares, 2)
    assert shares[0] == 1.0 and shares[1] > 0


@pytest.mark.parametrize("rates, averages, needle", [
    ([], [], "at least one"), ([1e6, 2e6], [1e6], "as many"), ([-1.0], [1e6], "rate must be"),
    ([math.nan], [1e6], "rate must be"), ([1e6], [-2.0], "average rate must be"),
    ([1e6], [math.inf], "average rate must be"),
])
def test_bad_rates_are_refused(rates, averages, needle):
    with pytest.raises(ValueError, match=needle):
        proportional_fair_shares(rates, averages)


def test_under_tdma_a_proportional_fair_share_waits_its_closed_form():
    # The shares reach the channel through the cohort: a client with share s completes its own
    # time on the air a after a / s, having waited a (1/s - 1) for the other slots.
    shares = proportional_fair_shares([1e6, 4e6, 3e6, None], [1e6, 2e6, 3e6, 0.0])
    assert shares == pytest.approx((3 / 16, 3 / 8, 3 / 16, 1 / 4), rel=1e-12)
    for client, s in enumerate(shares):
        ch = _channel("tdma", client=client, cohort=Cohort.of(range(4), client, shares))
        for t in (ch.downlink(1, DOWN), ch.uplink(1, UP)):
            assert ch.wait_s(t) == pytest.approx(t.air_time_s * (1 / s - 1), rel=1e-12)
        assert ch.metrics()["access-share"] == s
    assert math.fsum(_channel("tdma", client=c, cohort=Cohort.of(range(4), c, shares)).share
                     for c in range(4)) == pytest.approx(1.0, abs=1e-12)


# --- OFDMA: 1/K of the band, and of the noise ---------------------------------------------------


@pytest.mark.parametrize("k", [2, 4, 10])
def test_ofdma_rates_follow_the_closed_forms(k):
    alone = _alone()
    d1, u1 = alone.downlink(1, DOWN), alone.uplink(1, UP)
    ch = _channel("ofdma", cohort=_cohort(k, 1))
    down, up = ch.downlink(1, DOWN), ch.uplink(1, UP)
    # Downlink: the base station's power split as the band is: the same SNR, 1/K of the rate.
    assert down.snr_db == pytest.approx(d1.snr_db, abs=1e-9)
    assert down.rate_bps == pytest.approx(d1.rate_bps / k, rel=1e-9)
    assert down.air_time_s == pytest.approx(k * d1.air_time_s, rel=1e-9)
    # Uplink: the device keeps its power over 1/K of the noise: K times the SNR, and the rate
    # (B/K) log2(1 + K snr), which at that SNR is 1/K of the whole band's rate at the same SNR.
    snr1 = db_to_linear(u1.snr_db)
    assert up.snr_db == pytest.approx(u1.snr_db + 10 * math.log10(k), abs=1e-9)
    assert up.rate_bps == pytest.approx(FLAT.efficiency * FLAT.bandwidth_up_hz / k * math.log2(1 + k * snr1), rel=1e-9)
    full_band_same_snr = FLAT.efficiency * FLAT.bandwidth_up_hz * math.log2(1 + db_to_linear(up.snr_db))
    assert up.rate_bps == pytest.approx(full_band_same_snr / k, rel=1e-9)
    assert u1.rate_bps / k < up.rate_bps < u1.rate_bps
    assert up.energy_j == pytest.approx(dbm_to_watts(FLAT.tx_power_dbm) * up.air_time_s)
    assert ch.wait_s(up) == 0.0 and ch.wait_s(down) == 0.0
    # Round time: every client sends at once, so the slowest one's (the max), not a sum.
    rows = [{"client_time_s": down.air_time_s + up.air_time_s}] * k
    assert round_air_time(rows, 0.0) == down.air_time_s + up.air_time_s


def test_ofdma_profile_scales_band_and_base_station_power():
    p = ofdma_profile(PROFILES["5g-urban"], 0.25)
    q = PROFILES["5g-urban"]
    assert (p.bandwidth_up_hz, p.bandwidth_down_hz) == (q.bandwidth_up_hz / 4, q.bandwidth_down_hz / 4)
    assert p.tx_power_dbm == q.tx_power_dbm and p.bs_tx_power_dbm == pytest.approx(q.bs_tx_power_dbm - 6.0206, abs=1e-4)
    assert ofdma_profile(q, 1.0) is q


# --- through the mod and the run config -----------------------------------------------------------

W = "w"


def _run(access, k=4, shares=None, **cfg):
    rows = []
    for client in range(k):
        ctx = Context(run_id=1, node_id=10 + client, node_config={"partition-id": client, "num-partitions": k},
                      state=RecordDict(),
                      run_config={**TINY, "wireless.access": access, "wireless.profile": "5g-urban",
                                  "wireless.fading": "none", **cfg})
        reply = wireless_mod(mod_train_message(node=10 + client, size=20_000, cohort=range(10, 10 + k), shares=shares, name=W),
                             ctx, reply_of_ones)
        rows.append({**dict(reply.content[WIRELESS_KEY]), **dict(reply.content["wireless-status"])})
    return rows


def test_the_mod_counts_the_tdma_wait_in_the_round_and_against_the_deadline(flower_identity, monkeypatch):
    # 5g-urban without fading or loss: every client's link is the same, so each waits K - 1 slots.
    profile = with_overrides("5g-urban", fading="none", error_model="outage", outage_snr_db=-math.inf,
                             overhead_s=0.0)
    monkeypatch.setattr(wmod, "link_profile", lambda cfg, cid, n: profile)
    dedicated, tdma = _run("dedicated"), _run("tdma")
    one = dedicated[0]["client-time-s"]
    assert "access-share" not in dedicated[0]  # the default reply is unchanged
    for row in tdma:
        assert row["access-share"] == 0.25
        assert row["air-time-s-up"] == dedicated[0]["air-time-s-up"]
        assert row["wait-s-up"] == pytest.approx(3 * row["air-time-s-up"], rel=1e-12)
        assert row["wait-s-down"] == pytest.approx(3 * row["air-time-s-down"], rel=1e-12)
        assert row["client-time-s"] == pytest.approx(4 * one, rel=1e-12)
    assert round_air_time([{"client_time_s": r["client-time-s"]} for r in tdma], 0.0) == pytest.approx(4 * one)
    # a deadline the dedicated link meets and the 4-slot frame does not
    late = _run("tdma", **{"wireless.deadline-s": 2 * one})
    assert all(r["outcome"] == "lost" and r["reason"].startswith("straggler") for r in late)
    assert all(r["outcome"] == "delivered" for r in _run("dedicated", **{"wireless.deadline-s": 2 * one}))


def test_the_mod_reads_explicit_shares_from_the_cohort_record(flower_identity):
    rows = _run("ofdma", k=2, shares=[0.75, 0.25])
    assert [r["access-share"] for r in rows] == [0.75, 0.25]
    assert rows[1]["air-time-s-up"] > rows[0]["air-time-s-up"]
    assert all(r["wait-s-up"] == 0.0 for r in rows)


def test_the_default_factory_builds_the_scheme_the_key_names():
    for access, kind in [("dedicated", LinkChannel), ("tdma", CellChannel), ("ofdma", CellChannel)]:
        channel = client_channel(parse_run_config({**TINY, "wireless.access": access,
                                                   "wireless.coherence": "packet"}), 0, 2)
        assert type(channel) is kind and channel.coherence == "packet"
        assert getattr(channel, "access", "dedicated") == access


def test_access_and_coherence_are_refused_with_a_channel_of_ones_own():
    with pytest.raises(ConfigError, match="'wireless.access' = 'tdma'.*'wireless.channel'.*allowed with it: dedicated"):
        parse_run_config({"wireless.access": "tdma", "wireless.channel": "pfl_app.wireless.link:LinkChannel"})
    with pytest.raises(ConfigError, match="'wireless.access' = 'fdma' is not allowed; allowed values: dedicated, "
                                          "tdma, ofdma"):
        parse_run_config({"wireless.access": "fdma"})


def test_proportional_fair_shares_need_a_shared_digital_uplink():
    allowed = parse_run_config({**TINY, "wireless.access": "ofdma", "wireless.access-shares": "proportional-fair"})
    assert allowed.wireless.access_shares == "proportional-fair"
    assert parse_run_config({**TINY}).wireless.access_shares == "equal"
    with pytest.raises(ConfigError, match="'wireless.access-shares' = 'proportional-fair'.*'wireless.access' = "
                                          "'dedicated'.*allowed with it: equal "
                                          "\\(or set 'wireless.access' to tdma or ofdma\\)"):
        parse_run_config({**TINY, "wireless.access-shares": "proportional-fair"})
    with pytest.raises(ConfigError, match="'wireless.access-shares' = 'proportional-fair'.*'wireless.aggregation' "
                                          "= 'aircomp'.*allowed with it: equal"):
        parse_run_config({**TINY, "wireless.access": "tdma", "wireless.access-shares": "proportional-fair",
                          "wireless.aggregation": "aircomp"})
    with pytest.raises(ConfigError, match="'wireless.access-shares' = 'proportional-fair'.*'wireless.channel'"):
        parse_run_config({"wireless.access-shares": "proportional-fair",
                          "wireless.channel": "pfl_app.wireless.link:LinkChannel"})
    with pytest.raises(ConfigError, match="'wireless.access-shares' = 'pf' is not allowed; allowed values: equal, "
                                          "proportional-fair"):
        parse_run_config({"wireless.access": "tdma", "wireless.access-shares": "pf"})
