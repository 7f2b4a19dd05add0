"""The device model: FLOPs of training, device profiles, and the compute time and energy the
wireless mod derives from them."""

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from pfl_app.config import ConfigError, parse_run_config
from pfl_app.records import from_arrayrecord, message_bytes, to_arrayrecord
from pfl_app.rlhf.grpo import grpo_workload
from pfl_app.wireless import device as wdevice
from pfl_app.wireless.device import (
    DEVICES,
    DeviceProfile,
    device_names,
    device_profile,
    forward_flops,
    register_device,
    training_flops,
)
from pfl_app.wireless.mod import STATUS_KEY, WIRELESS_KEY, wireless_mod
from pfl_app.wireless.profiles import PROFILES

from ..helpers import TINY

W = "model.layers.0.mlp.bottleneck_adapter.default.up.weight"

# A profile of one's own, for the package.module:NAME form (this module is importable).
OWN_DEVICE = DeviceProfile("own-board", peak_flops=2e12, utilization=0.5, power_w=10.0, source="test")


# -- FLOPs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n,tokens", [(135_000_000, 3072), (1_000, 1), (7, 0)])
def test_full_training_is_kaplans_six_n_per_token(n, tokens):
    assert training_flops(n, n, tokens) == 6 * n * tokens


@pytest.mark.parametrize("n,t,tokens", [(135_000_000, 1_200_000, 3072), (100, 1, 10), (100, 99, 3)])
def test_peft_training_is_forward_activation_gradients_and_trainable_weight_gradients(n, t, tokens):
    # forward 2N + backward (2N through every weight + 2N_trainable for their gradients)
    assert training_flops(n, t, tokens) == (2 * n + 2 * n + 2 * t) * tokens
    assert 4 * n * tokens < training_flops(n, t, tokens) < 6 * n * tokens


def test_nothing_trainable_costs_a_forward_pass_only():
    assert training_flops(1000, 0, 5) == forward_flops(1000, 5) == 2 * 1000 * 5


@pytest.mark.parametrize("args", [(10, 11, 1), (-1, 0, 1), (10, 1, -3), (10, 1, 2.5), (True, 0, 1)])
def test_training_flops_refuses_impossible_counts(args):
    with pytest.raises(ValueError):
        training_flops(*args)


def test_grpo_counts_sampling_training_reference_and_reward_passes():
    n, t, tokens = 1000, 10, 50
    plain = grpo_workload(n, t, tokens, beta=0.0)
    assert plain.flops == 2 * n * tokens + (4 * n + 2 * t) * tokens
    with_ref = grpo_workload(n, t, tokens, beta=0.2, reward_passes=[(300, 40), (200, 45)])
    assert with_ref.flops == plain.flops + 2 * n * tokens + 2 * 300 * 40 + 2 * 200 * 45
    assert (with_ref.tokens, with_ref.params, with_ref.trainable) == (tokens, n, t)


# -- Profiles and the registry -------------------------------------------------------------


def test_a_profile_turns_flops_into_time_and_energy():
    d = DeviceProfile("d", peak_flops=1e12, utilization=0.25, power_w=8.0)
    assert d.sustained_flops == 2.5e11
    assert d.compute_seconds(5e11) == pytest.approx(2.0)
    assert d.compute_energy_j(5e11) == pytest.approx(16.0)


@pytest.mark.parametrize("fields", [dict(peak_flops=0.0), dict(power_w=-1.0), dict(utilization=0.0),
                                    dict(utilization=1.5), dict(peak_flops=math.inf)])
def test_a_profile_refuses_impossible_numbers(fields):
    with pytest.raises(ValueError, match="DeviceProfile"):
        DeviceProfile("bad", **{"peak_flops": 1e12, "utilization": 0.3, "power_w": 5.0, **fields})


def test_the_builtin_profiles_are_a_phone_a_jetson_and_a_laptop_with_sources():
    assert {"phone-sd8gen3", "jetson-orin-nano", "laptop-ryzen7-7840u"} <= set(DEVICES)
    # peak FP32 = cores x clock x FLOP/cycle, as the comments beside them derive it
    assert DEVICES["phone-sd8gen3"].peak_flops == pytest.approx(355.2e9)
    assert DEVICES["jetson-orin-nano"].peak_flops == pytest.approx(1.28e12)
    assert DEVICES["laptop-ryzen7-7840u"].peak_flops == pytest.approx(844.8e9)
    for d in DEVICES.values():
        assert d.source and 0 < d.utilization <= 1 and d.power_w > 0


def test_register_device_adds_a_name_once(monkeypatch):
    monkeypatch.setattr(wdevice, "DEVICES", dict(DEVICES))
    mine = DeviceProfile("my-watch", peak_flops=1e10, utilization=0.5, power_w=0.5)
    assert wdevice.register_device(mine) is mine
    assert "my-watch" in wdevice.device_names() and wdevice.device_profile("my-watch") is mine
    wdevice.register_device(DeviceProfile("my-watch", peak_flops=1e10, utilization=0.5, power_w=0.5))  # equal: fine
    with pytest.raises(ValueError, match="already registered"):
        wdevice.register_device(DeviceProfile("my-watch", peak_flops=2e10, utilization=0.5, power_w=0.5))
    with pytest.raises(ValueError, match="without ':'"):
        wdevice.register_device(DeviceProfile("a:b", peak_flops=1e10, utilization=0.5, power_w=0.5))
    assert "my-watch" not in DEVICES  # the module's registry was the patched copy


def test_a_device_is_a_registered_name_or_a_path_to_a_profile():
    assert device_names()[0] == "" and set(DEVICES) <= set(device_names())
    assert device_profile("tests.wireless.test_device:OWN_DEVICE") is OWN_DEVICE
    with pytest.raises(ValueError, match="phone-sd8gen3"):
        device_profile("toaster")
    with pytest.raises(ValueError, match="not a DeviceProfile"):
        device_profile("tests.wireless.test_device:W")


def test_register_device_is_exported_with_the_other_registries():
    from pfl_app import wireless

    assert wireless.register_device is register_device and wireless.training_flops is training_flops


# -- The run config ------------------------------------------------------------------------


def test_device_and_compute_s_together_are_refused_naming_both():
    with pytest.raises(ConfigError, match=r"'wireless.device'.*'wireless.compute-s'"):
        parse_run_config({"wireless.device": "phone-sd8gen3", "wireless.compute-s": 2.0})
    assert parse_run_config({"wireless.device": "phone-sd8gen3"}).wireless.device == "phone-sd8gen3"
    assert parse_run_config({"wireless.device": "tests.wireless.test_device:OWN_DEVICE"}).wireless.device


def test_an_unknown_device_is_refused_with_the_allowed_values():
    with pytest.raises(ConfigError, match=r"'wireless.device' = 'toaster'.*allowed values: '', phone-sd8gen3"):
        parse_run_config({"wireless.device": "toaster"})


# -- The mod -------------------------------------------------------------------------------

FLOPS = 3.0e12


def _context(**cfg):
    return Context(run_id=1, node_id=10, node_config={"partition-id": 0, "num-partitions": 4},
                   state=RecordDict(), run_config={**TINY, **cfg})


def _train_message(size=1000):
    content = RecordDict({
        "arrays": to_arrayrecord({W: np.zeros(size, np.float32)}),
        "config": ConfigRecord({"server-round": 1, "shared-groups": "adapter", "run-dir": "/x"}),
    })
    return Message(content=content, dst_node_id=10, message_type="train")


def _app(measured_s, workload=True):
    """A stand-in ClientApp whose training took ``measured_s`` on the host and FLOPS of work."""

    def app(msg, ctx):
        content = RecordDict({
            "arrays": to_arrayrecord({W: np.ones(1000, np.float32)}),
            "metrics": MetricRecord({"num-examples": 4, "train-loss": 1.0, "train-seconds": measured_s}),
            "client": ConfigRecord({"client-id": 0, "task": "t"}),
        })
        if workload:
            content["wireless-workload"] = MetricRecord({"train-tokens": 3000, "train-flops": FLOPS,
                                                         "model-params": 100, "trainable-params": 10})
        return Message(content, reply_to=msg)

    return app


def test_under_a_device_compute_energy_depends_on_the_work_not_the_host(flower_identity):
    ctx = _context(**{"wireless.device": "jetson-orin-nano"})
    fast, slow = (wireless_mod(_train_message(), ctx, _app(s)).content[WIRELESS_KEY] for s in (1.0, 30.0))
    jetson = DEVICES["jetson-orin-nano"]
    assert fast["compute-energy-j"] == slow["compute-energy-j"] == pytest.approx(FLOPS / jetson.sustained_flops * 15.0)
    assert fast["compute-s"] == slow["compute-s"] == pytest.approx(FLOPS / jetson.sustained_flops)
    # without a device the energy follows the measured time, as before
    fast, slow = (wireless_mod(_train_message(), _context(), _app(s)).content[WIRELESS_KEY] for s in (1.0, 30.0))
    assert fast["compute-energy-j"] != slow["compute-energy-j"]
    assert slow["compute-energy-j"] == pytest.approx(30.0 * PROFILES["ideal"].device_power_w)


def test_the_device_time_counts_in_the_round_time_and_the_deadline(flower_identity):
    phone = DEVICES["phone-sd8gen3"]
    seconds = FLOPS / phone.sustained_flops  # about 28 s
    reply = wireless_mod(_train_message(), _context(**{"wireless.device": "phone-sd8gen3"}), _app(1.0))
    stats = reply.content[WIRELESS_KEY]
    assert stats["client-time-s"] == pytest.approx(stats["air-time-s-down"] + seconds + stats["air-time-s-up"])
    assert reply.content[STATUS_KEY]["outcome"] == "delivered"
    late = wireless_mod(_train_message(), _context(**{"wireless.device": "phone-sd8gen3",
                                                      "wireless.deadline-s": seconds / 2}), _app(1.0))
    assert late.content[STATUS_KEY]["outcome"] == "lost" and "straggler" in late.content[STATUS_KEY]["reason"]
    # the Jetson is faster than the phone: the same work meets the same deadline
    on_time = wireless_mod(_train_message(), _context(**{"wireless.device": "jetson-orin-nano",
                                                         "wireless.deadline-s": seconds / 2}), _app(1.0))
    assert on_time.content[STATUS_KEY]["outcome"] == "delivered"


def test_the_workload_is_recorded_and_not_counted_as_payload(flower_identity):
    reply = wireless_mod(_train_message(), _context(), _app(2.0))
    stats = reply.content[WIRELESS_KEY]
    assert (stats["train-tokens"], stats["train-flops"], stats["model-params"], stats["trainable-params"]) == (
        3000.0, FLOPS, 100.0, 10.0)
    without = wireless_mod(_train_message(), _context(), _app(2.0, workload=False))
    # the same bytes on the air with and without the record: default runs keep their figures
    assert stats["bytes-up"] == without.content[WIRELESS_KEY]["bytes-up"] == message_bytes(without)
    assert np.all(from_arrayrecord(reply.content["arrays"])[W] == 1.0)


def test_a_device_without_a_flop_count_is_refused_naming_the_key(flower_identity):
    with pytest.raises(ValueError, match=r"'wireless.device'.*'train-flops'"):
        wireless_mod(_train_message(), _context(**{"wireless.device": "phone-sd8gen3"}), _app(1.0, workload=False))
