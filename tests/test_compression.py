"""Quantized messages: the codecs, error feedback, the server's decoding, bad settings."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from pfl_app.compression import Compression, CodecError, decode_content, encode_into, error_feedback_encode
from pfl_app.compression.codec import LEVELS, decode, encode, num_blocks, pack_int4, unpack_int4
from pfl_app.config import ConfigError, parse_run_config
from pfl_app.preflight import check_compression_blocks
from pfl_app.records import from_arrayrecord, message_bytes, to_arrayrecord
from pfl_app.strategies import PFTT

from .helpers import ADAPTER, TINY, configured_round

RNG = np.random.default_rng(0)


def _blocks(x, block):
    flat = x.reshape(-1)
    return [flat[i:i + block] for i in range(0, flat.size, block)]


# -- the codecs ---------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ["int8", "int4"])
@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_blockwise_round_trip_is_within_a_step_of_each_blocks_absmax(codec, stochastic, block):
    x = (RNG.standard_normal((37, 29)) * RNG.uniform(0.01, 10)).astype(np.float32)
    x[3, :] = 0.0  # a block of zeros keeps scale 0 and decodes to zeros
    rng = np.random.default_rng(1) if stochastic else None
    codes, scales = encode({"w": x}, codec, block, rng)
    y = decode(codes, scales, codec, block, {"w": x.shape})["w"]
    assert y.shape == x.shape and y.dtype == np.float32
    level = LEVELS[codec]
    for xb, yb in zip(_blocks(x, block), _blocks(y, block)):
        step = np.abs(xb).max() / level
        bound = step if stochastic else step / 2  # stochastic: below one step; nearest: half
        assert np.all(np.abs(xb - yb) <= bound * (1 + 1e-5) + 1e-12)
    assert scales["scales"].numpy().size == num_blocks(x.size, block)


def test_fp16_round_trip_and_none_is_exact():
    x = RNG.standard_normal(1000).astype(np.float32)
    codes, scales = encode({"w": x}, "fp16", 64)
    assert scales is None and codes["w"].numpy().dtype == np.float16
    y = decode(codes, None, "fp16", 64, {"w": x.shape})["w"]
    np.testing.assert_allclose(y, x, rtol=2.0 ** -11, atol=1e-7)
    codes, _ = encode({"w": x}, "none", 64)
    np.testing.assert_array_equal(decode(codes, None, "none", 64, {"w": x.shape})["w"], x)


def test_int4_packs_two_codes_a_byte_odd_sizes_too():
    q = RNG.integers(-7, 8, size=11).astype(np.int8)
    packed = pack_int4(q)
    assert packed.dtype == np.uint8 and packed.size == 6
    np.testing.assert_array_equal(unpack_int4(packed, 11), q)


def test_stochastic_rounding_is_unbiased_on_average():
    x = RNG.uniform(-1, 1, 256).astype(np.float32)
    x[0] = 1.0  # every block's absmax is known, so the steps are coarse: int4 steps of 1/7
    mean = np.zeros_like(x)
    draws = 2000
    rng = np.random.default_rng(7)
    for _ in range(draws):
        codes, scales = encode({"w": x}, "int4", 256, rng)
        mean += decode(codes, scales, "int4", 256, {"w": x.shape})["w"] / draws
    # Nearest rounding is off by up to half a step (1/14); the average of stochastic draws is not.
    assert np.abs(mean - x).max() < 0.02
    codes, scales = encode({"w": x}, "int4", 256)
    assert np.abs(decode(codes, scales, "int4", 256, {"w": x.shape})["w"] - x).max() > 0.05


@pytest.mark.parametrize("codec", ["int8", "int4"])
def test_error_feedback_carries_what_the_codec_dropped_into_the_next_update(codec):
    # One large element sets each block's scale; the small ones are below half a step and
    # nearest rounding sends them as 0, round after round.
    true = np.full(64, 0.001, np.float32)
    true[0] = 1.0
    sent_with, sent_without = np.zeros(64), np.zeros(64)
    residual = None
    rounds = 50
    for _ in range(rounds):
        records, residual = error_feedback_encode({"w": true}, residual, codec, 64)
        sent_with += decode_content(records, codec, 64, {"w": (64,)})["w"]
        records, _ = error_feedback_encode({"w": true}, None, codec, 64)
        sent_without += decode_content(records, codec, 64, {"w": (64,)})["w"]
    total = true * rounds
    # What was sent plus what is still kept is what was meant, to rounding.
    np.testing.assert_allclose(sent_with + residual["w"], total, atol=1e-5)
    # So the sum sent is off by at most the one residual (under a step), not by a growing amount.
    step = 1.0 / LEVELS[codec]
    assert np.abs(sent_with - total).max() <= step
    assert np.abs(sent_without[1:] - total[1:]).max() == pytest.approx(0.05, rel=1e-3)  # never sent at all


def test_int8_and_int4_updates_are_a_quarter_and_an_eighth_of_float32_plus_scales():
    # The adapters of a 12-layer, 768-wide model with a 64-wide bottleneck (PFTT's update).
    shapes = {}
    for layer in range(12):
        p = f"base_model.model.model.layers.{layer}.mlp.bottleneck_adapter.default."
        shapes.update({p + "down.weight": (64, 768), p + "down.bias": (64,), p + "up.weight": (768, 64),
                       p + "up.bias": (768,)})
    tensors = {k: RNG.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    full = to_arrayrecord(tensors).count_bytes()
    sizes = {}
    for codec in ("fp16", "int8", "int4"):
        content = RecordDict()
        encode_into(content, tensors, codec, 64)
        sizes[codec] = sum(r.count_bytes() for r in content.values())
    assert sizes["fp16"] / full == pytest.approx(0.5, abs=0.005)
    # The integer codes of every tensor travel in one Array and their scales in another: the bytes
    # are the codes and a float32 per block of 64, plus two Arrays' headers, whatever the tensors.
    n = sum(v.size for v in tensors.values())
    blocks = sum(-(-v.size // 64) for v in tensors.values())
    assert n + 4 * blocks <= sizes["int8"] <= n + 4 * blocks + 600
    assert -(-n // 2) + 4 * blocks <= sizes["int4"] <= -(-n // 2) + 4 * blocks + 600
    # The float32 record carries a header per tensor (48 of them): int8 is below a quarter plus scales.
    assert sizes["int8"] / full < 0.25 + 1 / 64


@pytest.mark.parametrize("tamper, why", [
    (lambda c, s: (ArrayRecord({"codes": Array(np.zeros(10, np.float32))}), s), "float32"),
    (lambda c, s: (c, None), "without their scales"),
    (lambda c, s: (c, ArrayRecord({"scales": Array(np.ones(2, np.float32))})), "scales"),
    (lambda c, s: (c, ArrayRecord({"scales": Array(np.ones(4, np.float32))})), "4 scales arrived for 3 blocks"),
    (lambda c, s: (ArrayRecord({"codes": Array(np.zeros(9, np.int8))}), s), "9 codes arrived"),
    (lambda c, s: (ArrayRecord({"w": Array(np.zeros(10, np.int8))}), s), "one Array 'codes'"),
])
def test_records_that_do_not_decode_are_refused(tamper, why):
    codes, scales = encode({"w": np.ones(10, np.float32)}, "int8", 4)
    with pytest.raises(CodecError, match=why):
        decode(*tamper(codes, scales), "int8", 4, {"w": (10,)})


@pytest.mark.parametrize("codec", ["int8", "int4"])
def test_integer_codes_travel_in_one_array_read_in_the_order_of_the_names(codec):
    tensors = {"b": RNG.standard_normal((3, 5)).astype(np.float32), "a": RNG.standard_normal(7).astype(np.float32)}
    codes, scales = encode(tensors, codec, 4)
    assert list(codes.keys()) == ["codes"]
    # The receiver lists the tensors in its own order: the names, not the order, decide.
    got = decode(codes, scales, codec, 4, {"a": (7,), "b": (3, 5)})
    again = decode(codes, scales, codec, 4, {"b": (3, 5), "a": (7,)})
    for k in tensors:
        np.testing.assert_array_equal(got[k], again[k])
        assert np.abs(got[k] - tensors[k]).max() <= np.abs(tensors[k]).max() / LEVELS[codec]
    with pytest.raises(CodecError, match="codes arrived"):  # a receiver that expects another tensor too
        decode(codes, scales, codec, 4, {"a": (7,), "b": (3, 5), "c": (2,)})


# -- the server ------------------------------------------------------------------------------

def _strategy(**compression):
    return PFTT(method="pftt", min_available_nodes=2, min_train_nodes=2, compression=Compression(**compression))


def _delta_reply(msg, delta, codec, n=1, block=64):
    content = RecordDict({
        "metrics": MetricRecord({"num-examples": n, "train-loss": 0.5, "train-seconds": 1.0}),
        "client": ConfigRecord({"client-id": 0, "task": "t"}),
    })
    encode_into(content, delta, codec, block)
    return Message(content=content, reply_to=msg), decode_content(content, codec, block,
                                                                   {k: v.shape for k, v in delta.items()})


def test_the_server_adds_the_decoded_deltas_to_its_global_tensors_and_averages_them(flower_identity):
    strategy = _strategy(uplink="int8")
    glob = {ADAPTER: RNG.standard_normal((16, 8)).astype(np.float32)}
    msgs, _ = configured_round(strategy, [11, 22], glob)
    assert msgs[11].content["config"]["compression-up"] == "int8"
    assert msgs[11].content["arrays"][ADAPTER].numpy().dtype == np.float32  # downlink: none
    d1, d2 = (RNG.standard_normal((16, 8)).astype(np.float32) * 0.01 for _ in range(2))
    r1, dec1 = _delta_reply(msgs[11], {ADAPTER: d1}, "int8", n=1)
    r2, dec2 = _delta_reply(msgs[22], {ADAPTER: d2}, "int8", n=3)
    arrays, _ = strategy.aggregate_train(1, [r1, r2])
    expected = glob[ADAPTER] + (1 * dec1[ADAPTER] + 3 * dec2[ADAPTER]) / 4  # FedAvg of the decoded deltas
    np.testing.assert_allclose(from_arrayrecord(arrays)[ADAPTER], expected, rtol=1e-6, atol=1e-6)
    assert strategy.rejected == []


def test_a_downlink_codec_encodes_every_message_and_the_server_keeps_float32(flower_identity):
    strategy = _strategy(downlink="int4", uplink="int8", block_size=16)
    glob = {ADAPTER: RNG.standard_normal((16, 8)).astype(np.float32)}
    msgs, _ = configured_round(strategy, [11, 22], glob)
    for m in msgs.values():
        assert m.content["arrays"]["codes"].numpy().dtype == np.uint8
        assert m.content["arrays"]["codes"].numpy().size == 64  # 128 codes, two a byte
        assert m.content["arrays-scales"]["scales"].numpy().size == 8
    decoded = decode_content(msgs[11].content, "int4", 16, {ADAPTER: (16, 8)})
    assert not np.array_equal(decoded[ADAPTER], glob[ADAPTER])
    # The delta is the client's change from what it decoded; the server adds it to its float32 global.
    zero = {ADAPTER: np.zeros((16, 8), np.float32)}
    arrays, _ = strategy.aggregate_train(1, [_delta_reply(msgs[11], zero, "int8", block=16)[0],
                                             _delta_reply(msgs[22], zero, "int8", block=16)[0]])
    assert strategy.rejected == []
    np.testing.assert_array_equal(from_arrayrecord(arrays)[ADAPTER], glob[ADAPTER])


def test_an_uncompressed_uplink_under_a_compressed_downlink_is_rebased_on_the_float32_global(flower_identity):
    strategy = _strategy(downlink="int8")
    glob = {ADAPTER: RNG.standard_normal((16, 8)).astype(np.float32)}
    msgs, _ = configured_round(strategy, [11, 22], glob)
    decoded = decode_content(msgs[11].content, "int8", 64, {ADAPTER: (16, 8)})[ADAPTER]
    from .helpers import client_reply

    replies = [client_reply(msgs[n], {ADAPTER: decoded + 0.5}) for n in (11, 22)]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(from_arrayrecord(arrays)[ADAPTER], glob[ADAPTER] + 0.5, atol=1e-6)


@pytest.mark.parametrize("scale", [np.nan, np.inf])
def test_an_update_that_decodes_to_non_finite_values_is_rejected(flower_identity, scale):
    strategy = _strategy(uplink="int8")
    glob = {ADAPTER: np.zeros((4, 4), np.float32)}
    msgs, _ = configured_round(strategy, [11, 22], glob)
    good, dec = _delta_reply(msgs[11], {ADAPTER: np.ones((4, 4), np.float32)}, "int8")
    bad, _ = _delta_reply(msgs[22], {ADAPTER: np.ones((4, 4), np.float32)}, "int8")
    bad.content["arrays-scales"] = ArrayRecord({"scales": Array(np.array([scale], np.float32))})
    arrays, _ = strategy.aggregate_train(1, [good, bad])
    np.testing.assert_allclose(from_arrayrecord(arrays)[ADAPTER], dec[ADAPTER])
    assert [(r, n) for r, n, _ in strategy.rejected] == [(1, 22)]
    assert "NaN or Inf" in strategy.rejected[0][2]


def test_an_update_in_another_codec_is_rejected_not_averaged(flower_identity):
    strategy = _strategy(uplink="int8")
    msgs, _ = configured_round(strategy, [11, 22], {ADAPTER: np.zeros(8, np.float32)})
    from .helpers import client_reply

    good, _ = _delta_reply(msgs[11], {ADAPTER: np.ones(8, np.float32)}, "int8")
    arrays, _ = strategy.aggregate_train(1, [good, client_reply(msgs[22], {ADAPTER: np.full(8, 100.0, np.float32)})])
    np.testing.assert_allclose(from_arrayrecord(arrays)[ADAPTER], np.ones(8))
    assert "does not decode" in strategy.rejected[0][2] and "one Array 'codes'" in strategy.rejected[0][2]


def test_compressed_messages_are_counted_as_they_travel(flower_identity):
    glob = {ADAPTER: RNG.standard_normal((64, 64)).astype(np.float32)}
    plain, _ = configured_round(_strategy(), [11, 22], glob)
    small, _ = configured_round(_strategy(downlink="int8"), [11, 22], glob)
    assert message_bytes(small[11]) < 0.3 * message_bytes(plain[11])
    assert "compression-down" not in plain[11].content["config"]  # off: the messages are as before


# -- bad settings ----------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, words", [
    ("compression.uplink", "int2", ["compression.uplink", "none, fp16, int8, int4"]),
    ("compression.downlink", "bf16", ["compression.downlink", "none, fp16, int8, int4"]),
    ("compression.block-size", 0, ["compression.block-size", ">= 1"]),
    ("compression.block-size", -3, ["compression.block-size", ">= 1"]),
])
def test_bad_compression_settings_are_refused_naming_the_key(key, value, words):
    with pytest.raises(ConfigError) as err:
        parse_run_config({**TINY, key: value})
    assert all(w in str(err.value) for w in words)


def test_compression_is_refused_where_the_channel_works_on_float_elements():
    with pytest.raises(ConfigError, match="wireless.loss-mode"):
        parse_run_config({**TINY, "compression.downlink": "int8", "wireless.loss-mode": "partial"})
    with pytest.raises(ConfigError, match="aircomp"):
        parse_run_config({**TINY, "compression.uplink": "int8", "wireless.aggregation": "aircomp"})


def test_a_block_larger_than_every_shared_tensor_is_refused():
    cfg = parse_run_config({**TINY, "compression.uplink": "int4", "compression.block-size": 300})
    shapes = {"a": (4,), "b": (64, 4)}
    with pytest.raises(ConfigError, match=r"'compression.block-size' = 300 .* allowed: 1 to 256"):
        check_compression_blocks(cfg, shapes)
    check_compression_blocks(parse_run_config({**TINY, "compression.uplink": "int4", "compression.block-size": 256}),
                             shapes)  # a bias smaller than a block is one short block
    check_compression_blocks(parse_run_config({**TINY, "compression.uplink": "fp16", "compression.block-size": 300}),
                             shapes)  # fp16 has no blocks


def test_the_strategy_takes_the_run_configs_compression():
    cfg = parse_run_config({**TINY, "compression.uplink": "int4", "compression.downlink": "fp16",
                            "compression.block-size": 32, "compression.stochastic-rounding": True, "seed": 3})
    strategy = PFTT.from_run_config(cfg)
    assert strategy.compression == Compression("int4", "fp16", 32, True, True) and strategy.seed == 3
    with pytest.raises(ValueError, match="compression"):
        PFTT(compression="int8")


# -- the wireless mod: fewer bytes, less air --------------------------------------------------

def test_a_quantized_reply_spends_less_air_time_on_the_same_link(flower_identity):
    from pfl_app.wireless.mod import WIRELESS_KEY, client_channel, wireless_mod

    from .helpers import SHARED, mod_context, mod_train_message

    def reply_as(codec):
        def app(msg, ctx):
            content = RecordDict({"metrics": MetricRecord({"num-examples": 4, "train-loss": 1.0,
                                                           "train-seconds": 2.0}),
                                  "client": ConfigRecord({"client-id": 0, "task": "t"})})
            encode_into(content, {SHARED: np.linspace(-1, 1, 20_000, dtype=np.float32)}, codec, 64)
            return Message(content, reply_to=msg)
        return app

    link = {}
    for codec in ("none", "int8", "int4"):
        reply = wireless_mod(mod_train_message(size=20_000), mod_context(0, **{"wireless.profile": "wifi"}),
                             reply_as(codec))
        link[codec] = reply.content[WIRELESS_KEY]
        assert link[codec]["bytes-up"] == message_bytes(reply)  # the air carries the message's real bytes
    assert link["int8"]["bytes-up"] < 0.3 * link["none"]["bytes-up"]
    assert link["int4"]["bytes-up"] < 0.6 * link["int8"]["bytes-up"]
    air = {c: link[c]["air-time-s-up"] for c in link}
    assert air["int4"] < air["int8"] < air["none"]
    # Past the link's fixed latency, air time is proportional to the bytes: it is the packets'.
    assert (air["none"] - air["int8"]) / (air["int8"] - air["int4"]) == pytest.approx(
        (link["none"]["bytes-up"] - link["int8"]["bytes-up"]) / (link["int8"]["bytes-up"] - link["int4"]["bytes-up"]),
        rel=0.02)
    channel = client_channel(parse_run_config({**TINY, "wireless.profile": "wifi"}), 0, 4)
    packets = {c: channel.uplink(1, int(link[c]["bytes-up"])).packets for c in link}
    assert packets["int4"] < packets["int8"] < packets["none"] / 3


# -- a client on the tiny model, and whole rounds of PFTT, FedIT and FedSA-LoRA ------------------

@pytest.fixture(scope="module")
def bundle():
    from pfl_app.models.personalized import shared_model_bundle

    return shared_model_bundle(parse_run_config(TINY))


def _train_message(tensors, run_dir, compression, groups="adapter"):
    content = RecordDict({"config": compression.write(ConfigRecord(
        {"server-round": 1, "shared-groups": groups, "run-dir": str(run_dir)}))})
    encode_into(content, tensors, compression.downlink, compression.block_size)
    return Message(content=content, dst_node_id=0, message_type="train")


def test_a_client_trains_from_what_it_decoded_and_sends_its_change_keeping_the_error(flower_identity, bundle,
                                                                                    tmp_path):
    from safetensors.numpy import load_file

    from pfl_app.client.state import client_dir
    from pfl_app.client.task_tuning import handle_train

    from .helpers import client_context

    c = Compression(uplink="int4", downlink="int8", block_size=32)
    glob = bundle.initial_tensors(["adapter"])
    msg = _train_message(glob, tmp_path / "a", c)
    decoded = decode_content(msg.content, "int8", 32, {k: v.shape for k, v in glob.items()})
    reply = handle_train(msg, client_context(5, 0))
    assert all(a.numpy().dtype == np.uint8 for a in reply.content["arrays"].values())
    delta = decode_content(reply.content, "int4", 32, {k: v.shape for k, v in glob.items()})
    residual = load_file(str(client_dir(tmp_path / "a", 0) / "compression_residual.safetensors"))
    # The same client, sent the decoded tensors as float32, trains to the same tensors: what it
    # sent plus what it kept is exactly its change from what it decoded.
    plain = _train_message(decoded, tmp_path / "b", Compression())
    trained = from_arrayrecord(handle_train(plain, client_context(5, 0)).content["arrays"])
    for k in glob:
        np.testing.assert_allclose(decoded[k] + delta[k] + residual[k], trained[k], atol=1e-6)
    assert any(np.abs(delta[k]).max() > 0 for k in glob)
    sent = sum(reply.content[k].count_bytes() for k in ("arrays", "arrays-scales"))
    assert sent < 0.5 * to_arrayrecord(trained).count_bytes()


@pytest.mark.parametrize("method", ["pftt", "fedit", "fedsa-lora"])
def test_a_compressed_round_over_the_wireless_mod_aggregates_finite_tensors(flower_identity, bundle, tmp_path,
                                                                            method):
    from pfl_app.client.task_tuning import handle_train
    from pfl_app.methods import method_spec
    from pfl_app.wireless.mod import WIRELESS_KEY, wireless_mod

    from .helpers import FakeGrid, client_context

    settings = {"method": method, "compression.uplink": "int8", "compression.downlink": "int4",
                "compression.block-size": 16, "wireless.profile": "wifi"}
    strategy = method_spec(method).strategy.from_run_config(parse_run_config({**TINY, **settings}),
                                                           min_available_nodes=2, min_train_nodes=2)
    glob = bundle.initial_tensors(strategy.shared_groups)
    msgs = list(strategy.configure_train(1, to_arrayrecord(glob), ConfigRecord({"run-dir": str(tmp_path)}),
                                         FakeGrid([11, 22])))
    replies = [wireless_mod(m, client_context(m.metadata.dst_node_id, i, **settings), handle_train)
               for i, m in enumerate(msgs)]
    for reply in replies:
        assert reply.content["wireless-status"]["outcome"] == "delivered"
        assert reply.content[WIRELESS_KEY]["bytes-up"] == message_bytes(reply)
        assert all(a.numpy().dtype == np.int8 for a in reply.content["arrays"].values())
    arrays, _ = strategy.aggregate_train(1, replies)
    assert strategy.rejected == []
    new = from_arrayrecord(arrays)
    assert set(new) == set(glob) and all(np.isfinite(v).all() for v in new.values())
    assert any(not np.allclose(new[k], glob[k]) for k in glob)  # it moved, from the float32 global


def test_the_server_app_refuses_a_block_larger_than_every_shared_tensor_before_round_1(tmp_path, bundle):
    from flwr.app import Context

    from pfl_app.server.run import run_server

    from .helpers import FakeGrid

    largest = max(v.size for v in bundle.initial_tensors(["adapter"]).values())
    ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                  run_config={**TINY, "compression.uplink": "int8", "compression.block-size": largest + 1,
                              "results-dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=rf"'compression.block-size' = {largest + 1} .* allowed: 1 to {largest}"):
        run_server(FakeGrid([1, 2]), ctx)
    assert not any(tmp_path.iterdir())  # no run folder: nothing started
