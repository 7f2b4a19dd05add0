"""Differential privacy (pfl_app.privacy, pfl_app.strategies.privacy, pfl_app.client.privacy):
clipping, the fixed-cohort mean, the wrapper's noise and books, the client's clipping and local
DP, the accountant, and the refusals before a run starts."""

import math
import random

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from pfl_app.client.privacy import local_dp_mod
from pfl_app.config import ConfigError, parse_run_config
from pfl_app.privacy import (
    SAMPLING_NONE,
    SAMPLING_UNIFORM,
    central_epsilon,
    central_events,
    clip_update,
    fixed_cohort_mean,
    local_epsilon,
    privacy_summary,
    update_norm,
)
from pfl_app.records import from_arrayrecord, to_arrayrecord
from pfl_app.strategies import PFTT, STRATEGIES
from pfl_app.strategies.privacy import CentralPrivacy, with_privacy
from pfl_app.strategies.server_optimizers import build_strategy

from .helpers import ADAPTER, TINY, FakeGrid, client_reply

OTHER = "base_model.model.model.layers.1.mlp.bottleneck_adapter.default.up.weight"


# -- pure helpers --------------------------------------------------------------------------
def test_clip_update_scales_the_whole_update_to_the_norm_and_leaves_a_small_one_alone():
    current = {ADAPTER: np.ones(3, np.float32), OTHER: np.zeros(4, np.float32)}
    big = {ADAPTER: np.array([4.0, 1.0, 1.0], np.float32), OTHER: np.array([0, 4.0, 0, 0], np.float32)}
    clipped, norm = clip_update(big, current, 1.0)
    assert norm == pytest.approx(5.0)  # sqrt(3^2 + 4^2): one norm over every tensor together
    assert update_norm(clipped, current) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(clipped[ADAPTER], [1.6, 1.0, 1.0], rtol=1e-6)  # direction kept
    np.testing.assert_allclose(clipped[OTHER], [0, 0.8, 0, 0], rtol=1e-6)
    small = {ADAPTER: np.array([1.1, 1.0, 1.0], np.float32), OTHER: np.zeros(4, np.float32)}
    same, norm = clip_update(small, current, 1.0)
    assert norm == pytest.approx(0.1, rel=1e-5)
    np.testing.assert_array_equal(same[ADAPTER], small[ADAPTER])


def test_clip_update_counts_only_the_elements_that_arrived():
    current = {ADAPTER: np.zeros(3, np.float32)}
    partial = {ADAPTER: np.array([3.0, 0.0, 4.0], np.float32)}  # the middle one was lost (zeroed)
    mask = {ADAPTER: np.array([1, 0, 1], np.uint8)}
    clipped, norm = clip_update(partial, current, 2.5, mask)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(clipped[ADAPTER], [1.5, 0.0, 2.0])


def test_a_nan_update_stays_nan_for_the_checks_to_reject():
    clipped, norm = clip_update({ADAPTER: np.array([np.nan, 1.0], np.float32)}, {ADAPTER: np.zeros(2, np.float32)}, 1.0)
    assert math.isnan(norm) and np.isnan(clipped[ADAPTER][0])


def test_fixed_cohort_mean_divides_by_the_cohort_not_by_the_updates_that_came():
    current = {ADAPTER: np.full(2, 10.0, np.float32)}
    updates = [{ADAPTER: np.array([12.0, 10.0], np.float32)}, {ADAPTER: np.array([10.0, 14.0], np.float32)}]
    got = fixed_cohort_mean(updates, [None, None], current, cohort=4)
    np.testing.assert_allclose(got[ADAPTER], [10.5, 11.0])  # two of four came: (2 + 0) / 4, (0 + 4) / 4
    masked = fixed_cohort_mean(updates, [None, {ADAPTER: np.array([0, 1], np.uint8)}], current, cohort=2)
    np.testing.assert_allclose(masked[ADAPTER], [11.0, 12.0])
    with pytest.raises(ValueError, match="cohort"):
        fixed_cohort_mean(updates, [None, None], current, cohort=0)


# -- accounting ----------------------------------------------------------------------------
def _rows(rounds, sample, population, sampling):
    return [{"round": r, "node": n, "dp_sample_size": sample, "dp_population": population, "dp_sampling": sampling}
            for r in range(1, rounds + 1) for n in range(2)]


def test_central_events_are_one_per_noised_round():
    rows = _rows(3, 5, 20, SAMPLING_UNIFORM) + [{"round": 4, "node": 0}]  # round 4: nothing released
    assert [e["round"] for e in central_events(rows)] == [1, 2, 3]


def test_central_epsilon_is_flowers_rdp_accountant_at_half_the_noise_multiplier():
    rows = _rows(8, 5, 20, SAMPLING_UNIFORM)
    got = central_epsilon(central_events(rows), 1.2, 1e-5)
    acct = RdpAccountant(PrivacyConfig(target_delta=1e-5, population_size=20,
                                       neighboring_relation=NeighboringRelation.REPLACE_ONE,
                                       sampling_method=SamplingMethod.WITHOUT_REPLACEMENT))
    for _ in range(8):
        acct.compose(GaussianPrivacyEvent(noise_multiplier=0.6, sample_size=5, population_size=20))
    assert got == pytest.approx(acct.get_privacy_spent().epsilon)
    # More rounds spend more; more noise spends less; sampling everyone gains no amplification.
    assert central_epsilon(central_events(_rows(16, 5, 20, SAMPLING_UNIFORM)), 1.2, 1e-5) > got
    assert central_epsilon(central_events(rows), 2.4, 1e-5) < got
    assert central_epsilon(central_events(_rows(8, 5, 20, SAMPLING_NONE)), 1.2, 1e-5) > got


def test_local_epsilon_is_the_busiest_clients_sum():
    rows = [{"round": r, "client": c, "dp_epsilon": 0.5} for r, c in ((1, 0), (1, 1), (2, 0), (3, 0), (3, 1))]
    assert local_epsilon(rows) == (1.5, 3)
    summary = privacy_summary("local", rows, noise_multiplier=1, clipping_norm=0.1, delta=1e-5, clipping="client",
                              epsilon_per_round=0.5)
    assert summary["epsilon"] == 1.5 and summary["delta"] == pytest.approx(3e-5)
    assert privacy_summary("none", rows, noise_multiplier=1, clipping_norm=0.1, delta=1e-5, clipping="client",
                           epsilon_per_round=0.5) is None


# -- the strategy and the wrapper ----------------------------------------------------------
def _central(nodes, z=1.0, c=1.0, clip_on_client=True, uniform=True, strategy_cls=PFTT, **kw):
    # min-train-nodes = the cohort: Flower samples exactly that many of any larger federation.
    inner = strategy_cls(method="m", min_available_nodes=1, min_train_nodes=len(nodes), fraction_train=1e-9,
                         dp_clipping_norm=c, **kw)
    return inner, CentralPrivacy(inner, z, c, clip_on_client=clip_on_client, uniform_sampling=uniform, seed=3)


def _round(dp, nodes, glob, population=None, rnd=1):
    grid = FakeGrid(population or nodes)
    msgs = list(dp.configure_train(rnd, to_arrayrecord(glob), ConfigRecord({"run-dir": "/x"}), grid))
    return {m.metadata.dst_node_id: m for m in msgs}


def _rows_of(dp):
    return dp.inner._ledger.rows()


def test_central_dp_clips_averages_over_the_cohort_and_adds_seeded_noise(flower_identity):
    glob = {ADAPTER: np.zeros(20_000, np.float32)}
    inner, dp = _central([1, 2, 3, 4], z=2.0, c=1.0)
    random.seed(7)  # Flower samples with Python's random
    msgs = _round(dp, [1, 2, 3, 4], glob, population=[1, 2, 3, 4, 5, 6, 7, 8])
    assert len(msgs) == 4 and inner.dp_cohort == 4 and dp.num_sampled_clients == 4
    assert all(float(m.content["config"][KEY_CLIPPING_NORM]) == 1.0 for m in msgs.values())
    n1, n2, n3, _ = sorted(msgs)  # 4 of the 8, drawn by Flower
    far = np.zeros(20_000, np.float32)
    far[0] = 50.0  # norm 50: clipped to 1
    replies = [client_reply(msgs[n1], {ADAPTER: far}, n=100), client_reply(msgs[n2], {ADAPTER: far * 0.01}, n=1)]
    # one failed, one never answered: each counts as no change, and the round still aggregates
    failed = Message(Error(code=0, reason="boom"), reply_to=msgs[n3])
    arrays, _ = dp.aggregate_train(1, replies + [failed])
    got = from_arrayrecord(arrays)[ADAPTER]
    std = 2.0 * 1.0 / 4
    # element 0: (1 + 0.5) / 4 (equal weights, over the cohort of 4, whatever num-examples says) plus noise
    noise = got - np.concatenate([[1.5 / 4], np.zeros(19_999)])
    assert np.std(noise[1:]) == pytest.approx(std, rel=0.03)
    assert abs(noise[0]) < 5 * std
    rows = _rows_of(dp)
    booked = {r["node"]: r for r in rows}
    assert booked[n1]["clipped"] and booked[n1]["update_norm"] == pytest.approx(50.0)
    assert not booked[n2]["clipped"]
    assert booked[n3]["status"] == "error"
    assert {r["dp_sample_size"] for r in rows} == {4} and {r["dp_sampling"] for r in rows} == {SAMPLING_UNIFORM}
    assert booked[n1]["aggregation_weight"] == pytest.approx(0.25)
    # The same round again draws the same noise: a rerun (or a resume) releases the same tensors.
    inner2, dp2 = _central([1, 2, 3, 4], z=2.0, c=1.0)
    random.seed(7)
    msgs2 = _round(dp2, [1, 2, 3, 4], glob, population=[1, 2, 3, 4, 5, 6, 7, 8])
    arrays2, _ = dp2.aggregate_train(1, [client_reply(msgs2[n1], {ADAPTER: far}, n=100),
                                         client_reply(msgs2[n2], {ADAPTER: far * 0.01}, n=1)])
    np.testing.assert_array_equal(from_arrayrecord(arrays2)[ADAPTER], got)


def test_server_clipping_sends_no_clipping_norm_and_still_clips(flower_identity):
    glob = {ADAPTER: np.zeros(4, np.float32)}
    inner, dp = _central([1, 2], z=1e-6, c=0.5, clip_on_client=False)
    msgs = _round(dp, [1, 2], glob)
    assert all(KEY_CLIPPING_NORM not in m.content["config"] for m in msgs.values())
    arrays, _ = dp.aggregate_train(1, [client_reply(msgs[1], {ADAPTER: np.full(4, 3.0, np.float32)}),
                                       client_reply(msgs[2], {ADAPTER: np.zeros(4, np.float32)})])
    np.testing.assert_allclose(from_arrayrecord(arrays)[ADAPTER], np.full(4, 0.25 / 2), atol=1e-4)


def test_everyone_sampled_or_a_scheduler_gains_no_amplification(flower_identity):
    glob = {ADAPTER: np.zeros(4, np.float32)}
    for population, uniform, expected in (([1, 2], True, SAMPLING_NONE), ([1, 2, 3], False, SAMPLING_NONE),
                                          ([1, 2, 3], True, SAMPLING_UNIFORM)):
        inner, dp = _central([1, 2], uniform=uniform)
        msgs = _round(dp, [1, 2], glob, population=population)
        dp.aggregate_train(1, [client_reply(m, {ADAPTER: np.ones(4, np.float32)}) for m in msgs.values()])
        assert {r["dp_sampling"] for r in _rows_of(dp)} == {expected}


def test_a_round_with_no_update_releases_nothing(flower_identity):
    inner, dp = _central([1, 2])
    msgs = _round(dp, [1, 2], {ADAPTER: np.zeros(4, np.float32)})
    assert dp.aggregate_train(1, [client_reply(m) for m in msgs.values()]) == (None, None)
    assert not central_events(_rows_of(dp))


def _adaptive_rounds(norm, rounds, c0=0.1, sigma=1.0):
    """``rounds`` rounds of 4 clients whose updates all have L2 norm ``norm``; the norms used."""
    glob = {ADAPTER: np.zeros(16, np.float32)}
    inner = PFTT(method="m", min_available_nodes=1, min_train_nodes=4, dp_clipping_norm=c0)
    dp = CentralPrivacy(inner, 0.5, c0, adaptive=True, clipped_count_stddev=sigma, seed=1)
    used = []
    for rnd in range(1, rounds + 1):
        msgs = _round(dp, [1, 2, 3, 4], glob, rnd=rnd)
        used.append(float(next(iter(msgs.values())).content["config"][KEY_CLIPPING_NORM]))
        assert inner.dp_clipping_norm == used[-1]  # the server clips by the same norm
        dp.aggregate_train(rnd, [client_reply(m, {ADAPTER: np.full(16, norm / 4, np.float32)})
                                 for m in msgs.values()])
    return used, dp


def test_adaptive_clipping_moves_the_norm_toward_the_update_norms_from_either_side(flower_identity):
    grown, dp = _adaptive_rounds(1.0, 12, c0=0.1)  # every update clipped: the norm must grow
    assert grown[-1] > 2 * grown[0] and grown[-1] < 1.0 * math.exp(0.2 * 0.5 + 0.2)
    shrunk, _ = _adaptive_rounds(0.01, 12, c0=1.0)  # none clipped: the norm must shrink
    assert shrunk[-1] < shrunk[0] / 2
    # Flower's split of z: the model's share of the noise is above the requested z.
    assert dp.noise_multiplier > 0.5 and dp.requested_noise_multiplier == 0.5


def test_adaptive_clipping_refuses_a_count_noise_too_small_for_z(flower_identity):
    with pytest.raises(ConfigError, match="dp.clipped-count-stddev"):
        parse_run_config({**TINY, "dp.mode": "central", "dp.clipping": "adaptive", "dp.noise-multiplier": 1.0,
                          "dp.clipped-count-stddev": 0.4})
    inner = PFTT(method="m", min_available_nodes=1, min_train_nodes=4, dp_clipping_norm=0.1)
    dp = CentralPrivacy(inner, 1.0, 0.1, adaptive=True)  # Flower's default sigma: 4 / 20, far too small
    with pytest.raises(ValueError, match="dp.noise-multiplier.*cohort of 4"):
        _round(dp, [1, 2, 3, 4], {ADAPTER: np.zeros(4, np.float32)})


def test_the_wrapper_refuses_a_strategy_that_clips_to_another_norm():
    with pytest.raises(ValueError, match="dp_clipping_norm"):
        CentralPrivacy(PFTT(dp_clipping_norm=0.2), 1.0, 0.1)
    with pytest.raises(ValueError, match="noise_multiplier"):
        CentralPrivacy(PFTT(dp_clipping_norm=0.1), 0.0, 0.1)


@pytest.mark.parametrize("method", ["pftt", "fedit", "fedsa-lora"])
def test_with_privacy_wraps_the_run_strategy_and_turns_outlier_rejection_off(method):
    cfg = parse_run_config({**TINY, "method": method, "dp.mode": "central", "dp.clipping-norm": 0.3})
    strategy = build_strategy(method, STRATEGIES, run_config=cfg)
    wrapped = with_privacy(strategy, cfg)
    assert isinstance(wrapped, CentralPrivacy) and wrapped.inner is strategy
    assert strategy.dp_clipping_norm == 0.3 and strategy.norm_factor == 0.0
    plain = parse_run_config({**TINY, "method": method})
    assert with_privacy(build_strategy(method, STRATEGIES, run_config=plain), plain).__class__.__name__ != "CentralPrivacy"


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, words", [
    ({"dp.mode": "central", "dp.noise-multiplier": 0.0}, "dp.noise-multiplier"),
    ({"dp.mode": "central", "dp.clipping-norm": -1.0}, "dp.clipping-norm"),
    ({"dp.mode": "central", "dp.delta": 1.0}, "dp.delta"),
    ({"dp.mode": "local", "dp.epsilon": 2.0}, "dp.epsilon"),
    ({"dp.mode": "centrall"}, "dp.mode"),
    ({"dp.mode": "central", "method": "flexlora"}, "aggregate"),
    ({"dp.mode": "central", "method": "pftt-median"}, "aggregate"),
    ({"dp.mode": "central", "method": "local-only"}, "shares none"),
    ({"dp.mode": "local", "method": "centralized"}, "pooled"),
    ({"dp.mode": "central", "method": "pfit"}, "RLHF"),
    ({"dp.mode": "central", "server-optimizer": "fedadam"}, "server-optimizer"),
    ({"dp.mode": "central", "wireless.aggregation": "aircomp"}, "aircomp"),
    ({"dp.mode": "local", "compression.uplink": "int8"}, "compression.uplink"),
    ({"dp.mode": "local", "compression.downlink": "fp16"}, "compression.downlink"),
])
def test_dp_settings_that_cannot_hold_are_refused_before_the_start(overrides, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        parse_run_config({**TINY, **overrides})


def test_central_dp_composes_with_compression_and_the_channel():
    cfg = parse_run_config({**TINY, "dp.mode": "central", "compression.uplink": "int8",
                            "wireless.profile": "lte-cell-edge", "wireless.loss-mode": "whole"})
    assert cfg.dp.mode == "central"


# -- the client ----------------------------------------------------------------------------
def _context(**run_config):
    return Context(run_id=1, node_id=5, node_config={"partition-id": 1, "num-partitions": 2},
                   state=RecordDict(), run_config={**TINY, **run_config})


def _train_message(tensors, rnd=1):
    content = RecordDict({"arrays": to_arrayrecord(tensors),
                          "config": ConfigRecord({"server-round": rnd, "shared-groups": "adapter"})})
    return Message(content=content, dst_node_id=5, message_type="train")


def _handler(sent):
    def handle(msg, context):
        content = RecordDict({"arrays": to_arrayrecord(sent),
                              "metrics": MetricRecord({"num-examples": 3})})
        return Message(content=content, reply_to=msg)
    return handle


def test_local_dp_clips_and_noises_the_update_reproducibly(flower_identity):
    received = {ADAPTER: np.zeros(50_000, np.float32)}
    sent = {ADAPTER: np.full(50_000, 1.0, np.float32)}  # norm ~224: clipped to 0.1
    ctx = _context(**{"dp.mode": "local", "dp.clipping-norm": 0.1, "dp.epsilon": 0.5, "dp.delta": 1e-5})
    reply = local_dp_mod(_train_message(received), ctx, _handler(sent))
    assert not reply.has_error(), reply.error
    got = from_arrayrecord(reply.content["arrays"])[ADAPTER]
    std = 2 * 0.1 * math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5
    assert np.std(got) == pytest.approx(std, rel=0.02)
    assert abs(np.mean(got) - 0.1 / math.sqrt(50_000)) < 5 * std / math.sqrt(50_000)
    assert float(reply.content["metrics"]["dp-epsilon"]) == 0.5
    again = local_dp_mod(_train_message(received), ctx, _handler(sent))
    np.testing.assert_array_equal(from_arrayrecord(again.content["arrays"])[ADAPTER], got)
    other_round = local_dp_mod(_train_message(received, rnd=2), ctx, _handler(sent))
    assert not np.array_equal(from_arrayrecord(other_round.content["arrays"])[ADAPTER], got)


def test_local_dp_mod_passes_through_without_local_dp(flower_identity):
    sent = {ADAPTER: np.full(4, 1.0, np.float32)}
    reply = local_dp_mod(_train_message({ADAPTER: np.zeros(4, np.float32)}), _context(), _handler(sent))
    np.testing.assert_array_equal(from_arrayrecord(reply.content["arrays"])[ADAPTER], sent[ADAPTER])
    assert "dp-epsilon" not in reply.content["metrics"]


@pytest.fixture(scope="module")
def bundle():
    from pfl_app.models.personalized import shared_model_bundle

    return shared_model_bundle(parse_run_config(TINY))


@pytest.mark.parametrize("uplink", ["none", "int8"])
def test_a_client_clips_its_update_before_encoding_and_reports_its_norm(flower_identity, bundle, tmp_path, uplink):
    from pfl_app.client.task_tuning import handle_train
    from pfl_app.compression import Compression, decode_content

    from .helpers import client_context

    glob = bundle.initial_tensors(["adapter"])

    def train(run_dir, clip):
        config = {"server-round": 1, "shared-groups": "adapter", "run-dir": str(run_dir)}
        if clip:
            config[KEY_CLIPPING_NORM] = clip
        content = RecordDict({"config": Compression(uplink=uplink).write(ConfigRecord(config)),
                              "arrays": to_arrayrecord(glob)})
        reply = handle_train(Message(content=content, dst_node_id=0, message_type="train"), client_context(5, 0))
        if uplink == "none":
            return from_arrayrecord(reply.content["arrays"]), reply.content["metrics"]
        delta = decode_content(reply.content, uplink, 64, {k: v.shape for k, v in glob.items()})
        return {k: glob[k] + delta[k] for k in glob}, reply.content["metrics"]

    free, free_metrics = train(tmp_path / "a", None)
    assert "update-norm" not in free_metrics
    norm = update_norm(free, glob)
    clipped, metrics = train(tmp_path / "b", norm / 4)
    assert metrics["update-norm"] == pytest.approx(norm, rel=0.02)  # the same training, measured before clipping
    assert update_norm(clipped, glob) == pytest.approx(norm / 4, rel=0.02)
    for k in glob:  # the same direction, a quarter of the length
        np.testing.assert_allclose(clipped[k] - glob[k], (free[k] - glob[k]) / 4, atol=2e-3 * norm)
