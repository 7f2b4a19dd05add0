"""Channel-adaptive precision: ``compression.uplink = adaptive`` picks each upload's codec from
the client's channel so that its round fits the deadline."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from pfl_app.compression import encode_into
from pfl_app.compression.codec import CODECS
from pfl_app.config import ConfigError, parse_run_config
from pfl_app.records import from_arrayrecord, message_bytes, to_arrayrecord
from pfl_app.strategies import STRATEGIES
from pfl_app.strategies.server_optimizers import build_strategy
from pfl_app.wireless.csi import BaseStationCSI

from .helpers import ADAPTER, TINY, FakeGrid

NODES = [40, 10, 30, 20, 50, 60]
CLIENT = {node: i for i, node in enumerate(NODES)}
CELL = {**TINY, "wireless.profile": "lte-cell-edge", "wireless.distance-min": 100.0,
        "wireless.distance-max": 700.0, "seed": 3}
GLOBAL = {ADAPTER: np.zeros(200_000, np.float32)}  # 800 kB: the codec decides the air time


def _build(deadline, **overrides):
    cfg = parse_run_config({**CELL, "compression.uplink": "adaptive", "wireless.deadline-s": deadline, **overrides})
    strategy = build_strategy("pftt", STRATEGIES, run_config=cfg, min_available_nodes=len(NODES),
                              min_train_nodes=len(NODES), min_evaluate_nodes=len(NODES))
    return cfg, strategy


def _train(strategy, server_round):
    return {m.metadata.dst_node_id: m for m in strategy.configure_train(
        server_round, to_arrayrecord(GLOBAL), ConfigRecord({"run-dir": "/x"}), FakeGrid(NODES))}


def _reply(msg, delta, codec):
    content = RecordDict({"metrics": MetricRecord({"num-examples": 1, "train-loss": 0.5}),
                          "client": ConfigRecord({"client-id": CLIENT[msg.metadata.dst_node_id], "task": "t"})})
    encode_into(content, delta, codec, 64)
    return Message(content=content, reply_to=msg)


def _round_times(cfg, strategy, msg, server_round):
    """The estimated round time of ``msg``'s node under each codec (its share: 1/6)."""
    csi = BaseStationCSI(cfg.link_population)
    client = CLIENT[msg.metadata.dst_node_id]
    return {codec: csi.round_time_s(client, len(NODES), server_round, message_bytes(msg),
                                    strategy.reply_bytes_estimate(msg, codec), 0.0, "dedicated", 1 / len(NODES))
            for codec in CODECS}


def test_each_client_gets_the_widest_codec_that_fits_the_deadline(flower_identity):
    cfg, probe = _build(1e9)
    first = _train(probe, 1)
    probe.aggregate_train(1, [_reply(m, GLOBAL, "int4") for m in first.values()])  # the nodes say who they are
    second = _train(probe, 2)
    times = {node: _round_times(cfg, probe, m, 2) for node, m in second.items()}
    deadline = float(np.median([t["none"] for t in times.values()]))  # some fit float32, some do not

    cfg, strategy = _build(deadline)
    first = _train(strategy, 1)
    # Unknown channels: the narrowest codec, the likeliest to fit.
    assert {m.content["config"]["compression-up"] for m in first.values()} == {"int4"}
    strategy.aggregate_train(1, [_reply(m, GLOBAL, "int4") for m in first.values()])
    second = _train(strategy, 2)
    chosen = {node: m.content["config"]["compression-up"] for node, m in second.items()}
    for node, codec in chosen.items():
        fits = [c for c in CODECS if times[node][c] <= deadline]
        assert codec == (fits[0] if fits else "int4"), (node, times[node])
    assert "none" in chosen.values() and len(set(chosen.values())) >= 2
    rows = {r["node"]: r for r in strategy._ledger_for(2).rows()}
    assert all(rows[n]["uplink_codec"] == c and rows[n]["uplink_bits"] == {"none": 32, "fp16": 16, "int8": 8,
                                                                           "int4": 4}[c] for n, c in chosen.items())


def test_updates_in_different_codecs_are_each_decoded_by_their_own(flower_identity):
    cfg, strategy = _build(1e9)
    first = _train(strategy, 1)
    strategy.aggregate_train(1, [_reply(m, GLOBAL, "int4") for m in first.values()])
    second = _train(strategy, 2)  # a huge deadline: every client may send float32
    assert {m.content["config"]["compression-up"] for m in second.values()} == {"none"}
    # one client was told int8 instead (as if its channel were worse)
    node = NODES[0]
    strategy._uplink_codecs[node] = "int8"
    rng = np.random.default_rng(0)
    deltas = {n: {ADAPTER: (rng.standard_normal(200_000) * 0.01).astype(np.float32)} for n in NODES}
    replies = []
    for n, m in second.items():
        if n == node:
            replies.append(_reply(m, deltas[n], "int8"))
        else:  # an uncompressed uplink sends the tensors themselves
            replies.append(_reply(m, {ADAPTER: GLOBAL[ADAPTER] + deltas[n][ADAPTER]}, "none"))
    arrays, _ = strategy.aggregate_train(2, replies)
    got = from_arrayrecord(arrays)[ADAPTER]
    expected = np.mean([deltas[n][ADAPTER] for n in NODES], axis=0)
    assert np.abs(got - expected).max() < 0.01 * 4 / 127 + 1e-6  # within the int8 client's step / 6 clients
    assert strategy.rejected == []


def test_the_message_codecs_are_per_client_and_the_shared_content_is_untouched(flower_identity):
    cfg, strategy = _build(1e9)
    first = _train(strategy, 1)
    contents = {id(m.content) for m in first.values()}
    assert len(contents) == len(NODES)  # each its own copy: one client's codec is not another's


def test_adaptive_needs_a_deadline_and_a_digital_uplink():
    with pytest.raises(ConfigError, match="wireless.deadline-s"):
        parse_run_config({**CELL, "compression.uplink": "adaptive"})
    with pytest.raises(ConfigError, match="aircomp"):
        parse_run_config({**CELL, "compression.uplink": "adaptive", "wireless.deadline-s": 10.0,
                          "wireless.aggregation": "aircomp"})


def test_a_message_never_asks_a_client_for_adaptive():
    from pfl_app.compression import Compression

    with pytest.raises(ValueError, match="codec 'adaptive'"):
        Compression.read({"compression-up": "adaptive"})


def test_an_evaluate_message_of_an_adaptive_run_names_a_codec_the_client_reads(flower_identity):
    from pfl_app.compression import Compression

    cfg, strategy = _build(1e9)
    first = _train(strategy, 1)
    strategy.aggregate_train(1, [_reply(m, GLOBAL, "int4") for m in first.values()])
    evaluate = list(strategy.configure_evaluate(1, to_arrayrecord(GLOBAL), ConfigRecord({"run-dir": "/x"}),
                                                FakeGrid(NODES)))
    assert evaluate
    for m in evaluate:  # read as the client reads it: "adaptive" would be refused there
        assert Compression.read(m.content["config"]).uplink in CODECS
