"""The aggregation hook (PersonalizedFedAvg.aggregate) and the two rules built on it: the
coordinate-wise median of pftt-median and FlexLoRA's re-factorised average of B·A."""

import re

import numpy as np
import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from pfl_app.protocol import OUTCOME_KEY, REASON_KEY, WIRELESS_MASK_KEY, WIRELESS_STATUS_KEY
from pfl_app.records import from_arrayrecord, to_arrayrecord
from pfl_app.strategies import PFTT, STRATEGIES, FedIT
from pfl_app.strategies.base import AcceptedUpdate
from pfl_app.strategies.flexlora import FlexLoRA, lora_pairs, refactorise, svd_of_weighted_sum
from pfl_app.strategies.pftt_median import PFTTMedian, coordinate_median, filled
from pfl_app.wireless.partial import masked_weighted_average

from .helpers import ADAPTER, FakeGrid, client_reply


Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
Q_B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"
V_A = "base_model.model.model.layers.0.self_attn.v_proj.lora_A.default.weight"
V_B = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.default.weight"


def _update(node, tensors, mask=None, n=1):
    tensors = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    return AcceptedUpdate(node, tensors, mask, MetricRecord({"num-examples": n}), to_arrayrecord(tensors))


def _start(strategy, nodes, glob):
    rows = []
    strategy.on_round_end = lambda r, got, shared: rows.extend(got)
    msgs = strategy.configure_train(1, to_arrayrecord(glob), ConfigRecord({"run-dir": "/x"}), FakeGrid(nodes))
    return {m.metadata.dst_node_id: m for m in msgs}, rows


def _with_outcome(reply, outcome, mask=None):
    reply.content[WIRELESS_STATUS_KEY] = ConfigRecord({OUTCOME_KEY: outcome, REASON_KEY: "uplink lost 1 of 2 packets"})
    if outcome == "lost":
        del reply.content["arrays"]
    if mask is not None:
        reply.content[WIRELESS_MASK_KEY] = to_arrayrecord(mask)
    return reply


# -- the default rule ---------------------------------------------------------------------
def test_default_aggregate_is_flowers_weighted_average_bit_for_bit():
    rng = np.random.default_rng(0)
    updates = [_update(n, {ADAPTER: rng.normal(size=(3, 5)), Q_A: rng.normal(size=7)}) for n in range(3)]
    weights = [3.0, 1.0, 5.0]
    current = {ADAPTER: np.zeros((3, 5), np.float32), Q_A: np.zeros(7, np.float32)}
    got = PFTT().aggregate(updates, weights, current)
    # What aggregate_train handed Flower's helper before the hook existed.
    before = aggregate_arrayrecords(
        [RecordDict({"arrays": u.arrays, "metrics": MetricRecord({"aggregation-weight": w})})
         for u, w in zip(updates, weights)], "aggregation-weight")
    assert list(got) == list(before)
    assert to_arrayrecord(got).object_id == before.object_id  # same bytes, same names, same order


def test_default_aggregate_of_partial_updates_is_the_masked_average():
    current = {ADAPTER: np.full(3, 9.0, np.float32)}
    updates = [_update(1, {ADAPTER: [1.0, 1.0, 1.0]}),
               _update(2, {ADAPTER: [3.0, 0.0, 0.0]}, mask={ADAPTER: np.array([1, 0, 0], np.uint8)}, n=3)]
    got = PFTT().aggregate(updates, [1.0, 3.0], current)
    np.testing.assert_allclose(got[ADAPTER], [2.5, 1.0, 1.0])
    expected = masked_weighted_average([u.tensors for u in updates], [u.mask for u in updates], [1.0, 3.0], current)
    np.testing.assert_array_equal(got[ADAPTER], expected[ADAPTER])


def test_a_rule_that_overrides_only_aggregate_never_sees_a_lost_rejected_or_outlying_update(flower_identity):
    class Largest(PFTT):
        """Keep, per element, the largest value sent: a rule no outlier must reach."""

        def aggregate(self, updates, weights, current):
            self.seen = [(u.node, w) for u, w in zip(updates, weights)]
            return {k: np.max([u.tensors[k] for u in updates], axis=0) for k in current}

    strategy = Largest(method="largest", min_available_nodes=1, min_train_nodes=6)
    msgs, _ = _start(strategy, [1, 2, 3, 4, 5, 6], {ADAPTER: np.zeros(4, np.float32)})
    replies = [client_reply(msgs[n], {ADAPTER: np.full(4, v, np.float32)}, n=n) for n, v in ((1, 1.0), (2, 1.2), (3, 0.9))]
    replies += [
        client_reply(msgs[4], {ADAPTER: np.full(4, 500.0, np.float32)}),  # moved 400 x the median: an outlier
        _with_outcome(client_reply(msgs[5], {ADAPTER: np.full(4, 70.0, np.float32)}), "lost"),
        client_reply(msgs[6], {ADAPTER: np.array([np.nan, 80.0, 80.0, 80.0], np.float32)}),
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert strategy.seen == [(1, 1.0), (2, 2.0), (3, 3.0)]  # the base's weights: numbers of examples
    np.testing.assert_array_equal(from_arrayrecord(arrays)[ADAPTER], np.full(4, 1.2, np.float32))
    assert sorted(n for _, n, _ in strategy.rejected) == [4, 6]
    rows = {r["node"]: r for r in strategy._ledger.rows()}
    assert rows[5]["status"] == "lost" and rows[6]["status"] == "rejected" and rows[4]["status"] == "rejected"
    assert rows[3]["aggregation_weight"] == pytest.approx(0.5)
    assert metrics["train-loss"] == pytest.approx(0.5)


def test_with_no_accepted_update_the_rule_is_not_called(flower_identity):
    class Refuses(PFTT):
        def aggregate(self, updates, weights, current):
            raise AssertionError("called with nothing to aggregate")

    strategy = Refuses(min_available_nodes=1, min_train_nodes=1)
    msgs, _ = _start(strategy, [1], {ADAPTER: np.zeros(2, np.float32)})
    lost = _with_outcome(client_reply(msgs[1], {ADAPTER: np.ones(2, np.float32)}), "lost")
    assert strategy.aggregate_train(1, [lost]) == (None, None)


# -- pftt-median -------------------------------------------------------------------------
def test_the_median_resists_an_outlier_and_is_numpys_median():
    values = [[1.0, -2.0], [1.5, -1.0], [0.5, 3.0], [1.2, 0.0], [900.0, -700.0]]
    tensors = [{"w": np.array(v, np.float32)} for v in values]
    got = coordinate_median(tensors, ["w"])["w"]
    np.testing.assert_array_equal(got, np.median(np.array(values, np.float32), axis=0))
    np.testing.assert_allclose(got, [1.2, -1.0])
    assert abs(np.mean(values, axis=0)[0] - got[0]) > 100  # the mean is dragged, the median not


def test_a_lost_element_counts_as_the_value_the_server_sent():
    current = {"w": np.array([[7.0, 7.0], [7.0, 7.0]], np.float32)}
    partial = _update(1, {"w": [[1.0, 0.0], [0.0, 4.0]]}, mask={"w": np.array([[1, 0], [0, 1]], np.uint8)})
    np.testing.assert_array_equal(filled(partial, current)["w"], [[1.0, 7.0], [7.0, 4.0]])
    whole = _update(2, {"w": [[1.0, 2.0], [3.0, 4.0]]})
    np.testing.assert_array_equal(filled(whole, current)["w"], whole.tensors["w"])


def test_pftt_median_counts_every_update_once_and_fills_lost_elements(flower_identity):
    strategy = PFTTMedian(method="pftt-median", min_available_nodes=1, min_train_nodes=3)
    assert strategy.shared_groups == ("adapter",)
    msgs, _ = _start(strategy, [1, 2, 3], {ADAPTER: np.full(3, 2.0, np.float32)})
    replies = [
        client_reply(msgs[1], {ADAPTER: np.array([1.0, 1.0, 1.0], np.float32)}, n=1),
        client_reply(msgs[2], {ADAPTER: np.array([3.0, 3.0, 3.0], np.float32)}, n=100),
        _with_outcome(client_reply(msgs[3], {ADAPTER: np.array([4.0, 0.0, 0.0], np.float32)}, n=1), "partial",
                      mask={ADAPTER: np.array([1, 0, 0], np.uint8)}),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    # element 0: median(1, 3, 4); elements 1, 2: median(1, 3, 2 sent by the server); no weights
    np.testing.assert_array_equal(from_arrayrecord(arrays)[ADAPTER], [3.0, 2.0, 2.0])
    rows = {r["node"]: r for r in strategy._ledger.rows()}
    assert [rows[n]["aggregation_weight"] for n in (1, 2, 3)] == pytest.approx([1 / 3] * 3)


# -- flexlora ----------------------------------------------------------------------------
def test_lora_pairs_match_each_A_with_its_own_B():
    local_a = Q_A.replace(".default.", ".local.")
    names = [V_B, Q_A, ADAPTER, V_A, Q_B, local_a, local_a.replace("lora_A", "lora_B")]
    assert lora_pairs(names) == [(Q_A, Q_B), (V_A, V_B)]
    assert lora_pairs([Q_A]) == []  # an A without its B has no product


def _factors(rng, clients, out, rank, inp):
    return [(rng.normal(size=(out, rank)), rng.normal(size=(rank, inp))) for _ in range(clients)]


def test_refactorised_lora_is_the_weighted_average_of_the_products_when_its_rank_allows():
    rng = np.random.default_rng(1)
    factors, weights = _factors(rng, 2, 9, 2, 6), [1.0, 3.0]
    average = sum(w * b @ a for (b, a), w in zip(factors, weights)) / 4.0
    b, a = refactorise(*svd_of_weighted_sum(factors, weights), 4, rng.normal(size=(4, 6)))
    assert b.shape == (9, 4) and a.shape == (4, 6)
    np.testing.assert_allclose(b @ a, average, atol=1e-12)
    # The product of the averaged factors (FedIT) is another matrix.
    fedit = (sum(w * b_ for (b_, _), w in zip(factors, weights)) / 4) @ (sum(w * a_ for (_, a_), w in zip(factors, weights)) / 4)
    assert np.abs(fedit - average).max() > 0.1


def test_refactorised_lora_is_the_best_rank_r_approximation_when_the_sum_has_a_higher_rank():
    rng = np.random.default_rng(2)
    factors, weights = _factors(rng, 3, 8, 2, 7), [2.0, 1.0, 1.0]
    average = sum(w * b @ a for (b, a), w in zip(factors, weights)) / 4.0
    assert np.linalg.matrix_rank(average) == 6
    u, s, vt = np.linalg.svd(average)
    best = (u[:, :2] * s[:2]) @ vt[:2]
    b, a = refactorise(*svd_of_weighted_sum(factors, weights), 2, np.zeros((2, 7)))
    np.testing.assert_allclose(b @ a, best, atol=1e-12)
    # Balanced: B = U sqrt(S), A = sqrt(S) Vᵀ, so BᵀB = AAᵀ = diag(S).
    np.testing.assert_allclose(b.T @ b, np.diag(s[:2]), atol=1e-12)
    np.testing.assert_allclose(a @ a.T, np.diag(s[:2]), atol=1e-12)


def test_a_direction_of_zero_singular_value_keeps_a_zero_B_and_the_sent_A():
    rng = np.random.default_rng(3)
    spare = rng.normal(size=(3, 5))
    b, a = refactorise(*svd_of_weighted_sum([(np.zeros((4, 3)), spare)], [1.0]), 3, spare)
    np.testing.assert_array_equal(b, 0.0)
    np.testing.assert_array_equal(a, spare)  # so the next round's gradient on B is not zero
    one = _factors(rng, 1, 4, 1, 5)  # a rank-1 product in a rank-3 LoRA
    b, a = refactorise(*svd_of_weighted_sum(one, [1.0]), 3, spare)
    np.testing.assert_allclose(b @ a, one[0][0] @ one[0][1], atol=1e-12)
    np.testing.assert_array_equal(b[:, 1:], 0.0)
    np.testing.assert_array_equal(a[1:], spare[1:])


def test_flexlora_shares_lora_and_aggregates_products_leaving_out_modules_that_lost_elements(flower_identity):
    strategy = FlexLoRA(method="flexlora", min_available_nodes=1, min_train_nodes=3)
    assert set(strategy.shared_groups) == {"lora_A", "lora_B"} == set(strategy.trained_groups)
    rng = np.random.default_rng(4)
    glob = {Q_A: rng.normal(size=(2, 6)), Q_B: np.zeros((5, 2)), V_A: rng.normal(size=(2, 6)), V_B: np.zeros((3, 2))}
    glob = {k: v.astype(np.float32) for k, v in glob.items()}
    msgs, _ = _start(strategy, [1, 2, 3], glob)
    sent = {n: {k: rng.normal(size=v.shape).astype(np.float32) for k, v in glob.items()} for n in (1, 2, 3)}
    # Node 3 lost one element of its q_proj B: its q_proj is left out, its v_proj counts.
    mask = {k: np.ones(v.shape, np.uint8) for k, v in glob.items()}
    mask[Q_B][0, 0] = 0
    replies = [client_reply(msgs[1], sent[1], n=1), client_reply(msgs[2], sent[2], n=3),
               _with_outcome(client_reply(msgs[3], sent[3], n=4), "partial", mask=mask)]
    got = from_arrayrecord(strategy.aggregate_train(1, replies)[0])

    def product(nodes, weights, a, b):
        return sum(w * sent[n][b].astype(np.float64) @ sent[n][a] for n, w in zip(nodes, weights)) / sum(weights)

    # q_proj: nodes 1 and 2, rank 2 each, so rank-2 truncation of a rank-4 sum; v_proj: all three.
    for (a, b), nodes, weights in (((Q_A, Q_B), (1, 2), (1, 3)), ((V_A, V_B), (1, 2, 3), (1, 3, 4))):
        u, s, vt = np.linalg.svd(product(nodes, weights, a, b))
        np.testing.assert_allclose(got[b].astype(np.float64) @ got[a], (u[:, :2] * s[:2]) @ vt[:2], atol=1e-5)
        assert got[a].shape == glob[a].shape and got[b].shape == glob[b].shape


def test_flexlora_keeps_a_module_no_update_brought_whole(flower_identity):
    strategy = FlexLoRA(min_available_nodes=1, min_train_nodes=1)
    glob = {Q_A: np.ones((2, 3), np.float32), Q_B: np.zeros((4, 2), np.float32)}
    msgs, _ = _start(strategy, [1], glob)
    mask = {Q_A: np.array([[1, 1, 0], [1, 1, 1]], np.uint8), Q_B: np.ones((4, 2), np.uint8)}
    reply = _with_outcome(client_reply(msgs[1], {Q_A: np.full((2, 3), 5.0, np.float32), Q_B: np.ones((4, 2), np.float32)}),
                          "partial", mask=mask)
    got = from_arrayrecord(strategy.aggregate_train(1, [reply])[0])
    np.testing.assert_array_equal(got[Q_A], glob[Q_A])
    np.testing.assert_array_equal(got[Q_B], glob[Q_B])


def test_flexlora_and_fedit_differ_only_in_how_they_aggregate():
    assert FlexLoRA.shared_groups == FedIT.shared_groups and FlexLoRA.trained_groups == FedIT.trained_groups
    assert STRATEGIES["flexlora"] is FlexLoRA and STRATEGIES["pftt-median"] is PFTTMedian


# -- docs/extending.md -------------------------------------------------------------------
def test_the_aggregation_rule_example_in_the_docs_runs_and_is_what_aggregate_train_uses(flower_identity, project_dir):
    text = (project_dir / "docs" / "extending.md").read_text()
    (code,) = re.findall(r"```python3\n(.*?)```", text, flags=re.S)
    namespace: dict = {}
    exec(compile(code, "docs/extending.md", "exec"), namespace)
    strategy = namespace["TrimmedPFTT"](min_available_nodes=1, min_train_nodes=4)
    msgs, _ = _start(strategy, [1, 2, 3, 4], {ADAPTER: np.zeros(2, np.float32)})
    replies = [client_reply(msgs[n], {ADAPTER: np.full(2, v, np.float32)}, n=n) for n, v in ((1, 1.0), (2, 2.0), (3, 3.0), (4, 9.0))]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(from_arrayrecord(arrays)[ADAPTER], [2.5, 2.5])  # 1 and 9 trimmed
