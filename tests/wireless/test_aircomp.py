"""Over-the-air aggregation: the power control and the received estimate
(pfl_app.wireless.aircomp), and the strategy that uses them (pfl_app.strategies.aircomp)."""

import math

import numpy as np
import pytest
from flwr.app import MetricRecord

from pfl_app.config import parse_run_config
from pfl_app.records import to_arrayrecord
from pfl_app.strategies import STRATEGIES
from pfl_app.strategies.aircomp import OverTheAir
from pfl_app.strategies.base import AcceptedUpdate, PersonalizedFedAvg
from pfl_app.strategies.server_optimizers import build_strategy
from pfl_app.wireless.aircomp import (
    aircomp_aggregate,
    analog_air_time_s,
    estimate_noise_variance,
    large_scale_gain,
    truncated_inversion,
    uplink_noise_power_w,
)
from pfl_app.wireless.csi import BaseStationCSI
from pfl_app.wireless.profiles import get_profile


def _tensors(rng, k):
    return [{"a": rng.normal(size=(4, 6)).astype(np.float32), "b": rng.normal(size=9).astype(np.float32)}
            for _ in range(k)]


def _fedavg(updates, weights):
    w = np.asarray(weights, float) / sum(weights)
    return {name: sum(wi * u[name].astype(np.float64) for wi, u in zip(w, updates)) for name in updates[0]}


# -- the power control --------------------------------------------------------------------
def test_truncation_leaves_out_deep_fades_and_inverts_the_others_within_the_budget():
    gains, fades = [1e-9, 4e-9, 2e-9], [0.05, 1.3, 0.4]
    plan = truncated_inversion(gains, fades, power_w=0.2, threshold=0.1, noise_power_w=1e-13)
    assert plan.transmitting == (False, True, True)
    assert plan.power_w[0] == 0.0 and plan.amplitude[0] == 0.0
    assert plan.eta == pytest.approx(0.2 * 0.1 * 2e-9)  # P f_th min G over those above the threshold
    for g, f, p, a in zip(gains[1:], fades[1:], plan.power_w[1:], plan.amplitude[1:]):
        assert p <= 0.2 and p * g * f == pytest.approx(plan.eta) and a == pytest.approx(1.0)


def test_a_client_capped_by_the_budget_arrives_misaligned():
    # A receive level above what the weak client reaches with its whole budget.
    plan = truncated_inversion([1e-9, 1e-9], [1.0, 0.2], power_w=0.2, threshold=0.1, noise_power_w=0.0, eta=1e-10)
    assert plan.power_w[1] == 0.2 and plan.amplitude[1] == pytest.approx(math.sqrt(0.2 * 0.2e-9 / 1e-10))
    assert plan.amplitude[0] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    updates, current = _tensors(rng, 2), {"a": np.zeros((4, 6), np.float32), "b": np.zeros(9, np.float32)}
    got = aircomp_aggregate(updates, [1, 1], current, plan, np.random.default_rng(1))
    want = {k: 0.5 * updates[0][k] + 0.5 * plan.amplitude[1] * updates[1][k] for k in current}
    for k in current:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)


def test_the_budget_must_be_positive():
    with pytest.raises(ValueError, match="power_w"):
        truncated_inversion([1.0], [1.0], power_w=0.0, threshold=0.1, noise_power_w=0.0)


# -- the estimate -------------------------------------------------------------------------
@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 5.0, 2.0]])
def test_without_noise_and_with_exact_inversion_aircomp_is_fedavg_with_the_same_weights(weights):
    rng = np.random.default_rng(3)
    current = {"a": rng.normal(size=(4, 6)).astype(np.float32), "b": rng.normal(size=9).astype(np.float32)}
    updates = _tensors(rng, 4)
    plan = truncated_inversion([1e-9, 3e-10, 2e-9, 5e-9], [0.5, 2.0, 1.0, 0.3], power_w=math.inf, threshold=0.1,
                               noise_power_w=0.0)
    got = aircomp_aggregate(updates, weights, current, plan, np.random.default_rng(0))
    want = _fedavg(updates, weights)
    for k in current:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)


def test_the_noise_of_the_estimate_has_the_closed_form_variance():
    rng = np.random.default_rng(5)
    current = {"a": np.zeros(20000, np.float32)}
    updates = [{"a": rng.normal(scale=s, size=20000).astype(np.float32)} for s in (0.5, 1.0, 2.0)]
    weights = [2.0, 1.0, 1.0]
    gains, fades = [1e-10, 1e-10, 1e-10], [1.0, 0.5, 2.0]
    noisy = truncated_inversion(gains, fades, power_w=0.2, threshold=0.1, noise_power_w=1e-12)
    clean = truncated_inversion(gains, fades, power_w=0.2, threshold=0.1, noise_power_w=0.0)
    assert noisy.eta == clean.eta
    error = (aircomp_aggregate(updates, weights, current, noisy, np.random.default_rng(9))["a"]
             - aircomp_aggregate(updates, weights, current, clean, np.random.default_rng(9))["a"]).astype(np.float64)
    scale = max(float(np.sqrt(np.mean(u["a"].astype(np.float64) ** 2))) for u in updates)
    variance = estimate_noise_variance(scale, weights, noisy)
    assert variance == pytest.approx(scale ** 2 * 0.5 ** 2 * 1e-12 / noisy.eta)
    assert abs(np.mean(error)) < 5 * math.sqrt(variance / error.size)
    # The sample variance of 20,000 Gaussian draws is within ~2% (2 sigma) of the truth.
    assert np.var(error) == pytest.approx(variance, rel=0.04)


def test_the_analog_air_time_is_one_symbol_per_element_and_not_per_client():
    assert analog_air_time_s(5_000_000, 5e6) == pytest.approx(1.0)


# -- the strategy -------------------------------------------------------------------------
def _strategy(**keys):
    cfg = parse_run_config({"method": "pftt", "wireless.profile": "lte-cell-edge", "wireless.aggregation": "aircomp",
                            **keys})
    return build_strategy("pftt", STRATEGIES, run_config=cfg), cfg


def _accepted(updates, ns):
    return [AcceptedUpdate(node, u, None, MetricRecord({"num-examples": n}), to_arrayrecord(u))
            for node, (u, n) in enumerate(zip(updates, ns), start=100)]


def _round(strategy, updates, ns, current, server_round=3):
    strategy._client_of = {100 + i: i for i in range(len(updates))}
    strategy._num_clients = len(updates)
    strategy._round = server_round
    return strategy.aggregate(_accepted(updates, ns), [float(n) for n in ns], current)


def test_build_strategy_composes_aircomp_and_digital_keeps_the_class_rule():
    strategy, _ = _strategy()
    assert isinstance(strategy, OverTheAir) and strategy.aggregation == "aircomp"
    assert strategy.aircomp_threshold == 0.1 and strategy.aircomp_power_w == 0.2
    rng = np.random.default_rng(2)
    updates, current = _tensors(rng, 3), {"a": np.zeros((4, 6), np.float32), "b": np.zeros(9, np.float32)}
    digital = build_strategy("pftt", STRATEGIES, run_config=parse_run_config({"method": "pftt"}))
    got = digital.aggregate(_accepted(updates, [1, 2, 3]), [1.0, 2.0, 3.0], current)
    want = PersonalizedFedAvg.aggregate(digital, _accepted(updates, [1, 2, 3]), [1.0, 2.0, 3.0], current)
    for k in current:
        np.testing.assert_array_equal(got[k], want[k])


def test_the_strategy_uses_the_base_stations_fades_and_the_bands_noise():
    strategy, cfg = _strategy(**{"wireless.aircomp-threshold": 0.5})
    rng = np.random.default_rng(4)
    k = 6
    updates, current = _tensors(rng, k), {"a": np.zeros((4, 6), np.float32), "b": np.zeros(9, np.float32)}
    got = _round(strategy, updates, [1] * k, current)
    csi = BaseStationCSI(cfg.link_population)
    fades = [csi.state(c, k, 3).fading_power for c in range(k)]
    on = [f >= 0.5 for f in fades]
    assert 0 < sum(on) < k  # this seed leaves some out: the test means something
    plan = strategy.last_plan
    assert plan.transmitting == tuple(on)
    profile = get_profile("lte-cell-edge")
    assert plan.noise_power_w == pytest.approx(uplink_noise_power_w(profile))
    assert plan.eta == pytest.approx(0.2 * 0.5 * large_scale_gain(profile))
    # The truncated clients' updates are not in it: noiseless, it is the average of the others.
    strategy.noise_power_scale = 0.0
    clean = _round(strategy, updates, [1] * k, current)
    want = _fedavg([u for u, o in zip(updates, on) if o], [1] * sum(on))
    for name in current:
        np.testing.assert_allclose(clean[name], want[name], rtol=1e-5, atol=1e-6)
        assert not np.allclose(got[name], clean[name], atol=1e-9)  # the band's noise is there
    # Seeded by the run seed and round: the same round again, the same noise.
    strategy.noise_power_scale = 1.0
    again = _round(strategy, updates, [1] * k, current)
    for name in current:
        np.testing.assert_array_equal(again[name], got[name])
    rows = {r["node"]: r for r in strategy._ledger_for(3).rows()}
    for i, o in enumerate(on):
        assert rows[100 + i]["aircomp_truncated"] == (0.0 if o else 1.0)


def test_the_air_time_does_not_grow_with_the_number_of_clients():
    current = {"a": np.zeros((4, 6), np.float32), "b": np.zeros(9, np.float32)}
    times = {}
    for k in (2, 8):
        strategy, _ = _strategy(**{"wireless.aircomp-threshold": 0.0})
        _round(strategy, _tensors(np.random.default_rng(k), k), [1] * k, current)
        times[k] = {r["air_time_s_up"] for r in strategy._ledger_for(3).rows()}
    assert times[2] == times[8] == {33 / get_profile("lte-cell-edge").bandwidth_up_hz}
