"""train.precision: the key, the hardware check behind auto and the refusal of bf16, and bf16
training and evaluation of the tiny model (float32 weights, float32 tensors sent)."""

import numpy as np
import pytest
import torch

from pfl_app import precision
from pfl_app.client import handlers
from pfl_app.client.task_tuning import handle_evaluate, handle_train
from pfl_app.config import ConfigError, parse_run_config
from pfl_app.models.personalized import shared_model_bundle
from pfl_app.preflight import check_precision, preflight
from pfl_app.records import from_arrayrecord
from pfl_app.training import local_run_args

from .helpers import TINY, client_context, server_message


@pytest.fixture
def native(monkeypatch):
    """Set whether the device has native bfloat16 (``native(True)``), whatever this machine has."""
    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision, "bf16_native", lambda device: value)
    return set_native


# -- the key ------------------------------------------------------------------------------------

def test_the_key_parses_and_defaults_to_fp32():
    assert parse_run_config(TINY).train.precision == "fp32"
    for name in ("fp32", "bf16", "auto"):
        assert parse_run_config({**TINY, "train.precision": name}).train.precision == name


@pytest.mark.parametrize("value", ["fp16", "BF16", "float32", ""])
def test_a_bad_value_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"'train.precision'.*allowed values: fp32, bf16, auto"):
        parse_run_config({**TINY, "train.precision": value})


# -- the hardware check -------------------------------------------------------------------------

def test_auto_is_bf16_where_the_device_runs_it_natively_and_fp32_elsewhere(native):
    native(True)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    native(False)
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    # an explicit choice is returned as asked: the pre-flight refuses bf16 where it cannot run
    assert precision.resolve_precision("bf16", "cpu") == "bf16"
    assert precision.resolve_precision("fp32", "cpu") == "fp32"


def test_a_cpu_is_native_with_avx512_bf16_or_amx_bf16_and_not_with_avx512_alone(monkeypatch):
    def capabilities(**flags):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"cpu_name": "test", **flags})
        precision.cpu_bf16_features.cache_clear()

    try:
        capabilities(avx2=True, avx512_f=True, avx512_bw=True)  # Skylake-X, Ice Lake: AVX-512, no bf16
        assert not precision.bf16_native("cpu")
        assert precision.resolve_precision("auto", "cpu") == "fp32"
        capabilities(avx512_f=True, avx512_bf16=True)  # Zen 4, Cooper Lake
        assert precision.bf16_native("cpu") and precision.resolve_precision("auto", "cpu") == "bf16"
        capabilities(amx_tile=True, amx_bf16=True)
        assert precision.bf16_native("cpu")
        capabilities(bf16=True)  # ARM
        assert precision.bf16_native("cpu")
    finally:
        precision.cpu_bf16_features.cache_clear()


def test_this_machine_gets_what_its_cpu_flags_say():
    precision.cpu_bf16_features.cache_clear()
    flags = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = {f for line in fh if line.startswith(("flags", "Features")) for f in line.split(":", 1)[1].split()}
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if not flags:
        pytest.skip("/proc/cpuinfo lists no flags")
    # torch's cpuinfo and the kernel agree on whether this CPU has bf16 instructions
    assert precision.bf16_native("cpu") == bool(flags & {"avx512_bf16", "amx_bf16", "bf16", "sve_bf16"})


def test_bf16_without_native_support_is_a_problem_naming_the_key_fp32_and_auto_never_are(native):
    native(False)
    problem = precision.precision_problem("bf16", "cpu")
    assert "'train.precision' = 'bf16'" in problem and "allowed here: fp32, or auto" in problem
    assert precision.precision_problem("fp32", "cpu") is None
    assert precision.precision_problem("auto", "cpu") is None
    native(True)
    assert precision.precision_problem("bf16", "cpu") is None


# -- refused before the start -------------------------------------------------------------------

def test_the_preflight_refuses_bf16_the_training_device_cannot_run(native):
    native(False)
    cfg = parse_run_config({**TINY, "train.precision": "bf16"})
    with pytest.raises(ConfigError, match=r"'train.precision' = 'bf16'.*no native bfloat16.*fp32, or auto"):
        check_precision(cfg, "cpu")
    with pytest.raises(ConfigError, match="'train.precision'"):
        preflight(cfg, 2, training_device="cpu")
    check_precision(parse_run_config({**TINY, "train.precision": "auto"}), "cpu")
    native(True)
    check_precision(cfg, "cpu")


def test_the_launcher_checks_the_device_of_a_simulations_clients(native, monkeypatch):
    from pfl_app.launch import Scenario, check_run, simulation_device

    native(False)
    seen = []
    monkeypatch.setattr("pfl_app.preflight.check_data", lambda *args: None)  # the data is not the point here
    monkeypatch.setattr(precision, "bf16_native", lambda device: seen.append(device) or False)
    flat = {**TINY, "train.precision": "bf16"}
    with pytest.raises(ConfigError, match="'train.precision' = 'bf16'"):
        check_run(Scenario(federation={"num-supernodes": 2}), flat)
    assert seen == ["cpu"]  # clients given no GPU train on the CPU
    assert simulation_device(Scenario(federation={"num-supernodes": 2, "client-resources-num-gpus": 0})) == "cpu"
    # clients on a Ray cluster elsewhere check their own hardware
    check_run(Scenario(federation={"num-supernodes": 2}), flat, clients_here=False)


def test_a_deployed_client_refuses_at_its_first_message_with_the_same_message(native):
    native(False)
    ctx = client_context(5, 0, **{"train.precision": "bf16"})
    with pytest.raises(ValueError, match=r"'train.precision' = 'bf16'.*no native bfloat16"):
        handlers(ctx)
    assert handlers(client_context(5, 0, **{"train.precision": "auto"}))[0] is handle_train
    native(True)
    assert handlers(ctx)[0] is handle_train


# -- bf16 training and evaluation of the tiny model ---------------------------------------------

def test_bf16_training_arguments_are_accepted_on_a_cpu(native, tmp_path):
    from trl import SFTConfig

    native(True)
    cfg = parse_run_config({**TINY, "train.precision": "bf16"})
    args = SFTConfig(**local_run_args(cfg.train, 0, str(tmp_path)))
    assert args.bf16 and not args.fp16
    assert args.mixed_precision == "bf16"
    fp32 = SFTConfig(**local_run_args(parse_run_config(TINY).train, 0, str(tmp_path)))
    assert not fp32.bf16 and fp32.mixed_precision == "no"


def _train(tmp_path, **run_config):
    bundle = shared_model_bundle(parse_run_config({**TINY, **run_config}))
    glob = bundle.initial_tensors(["adapter"])
    reply = handle_train(server_message("train", "adapter", glob, tmp_path), client_context(5, 0, **run_config))
    return bundle, glob, from_arrayrecord(reply.content["arrays"]), reply.content["metrics"]


def test_bf16_training_sends_float32_tensors_close_to_fp32s(native, flower_identity, tmp_path):
    native(True)
    bundle, glob, bf16, metrics = _train(tmp_path / "bf16", **{"train.precision": "bf16"})
    # the weights stay float32 (autocast computes in bf16, the master copy is not cast)...
    assert all(p.dtype == torch.float32 for p in bundle.model.parameters())
    # ... and accelerate's autocast wrapper does not outlive the round
    for obj in (bundle.model, bundle.model.get_base_model()):
        assert not {"forward", "_original_forward", "_is_accelerate_prepared"} & set(vars(obj))
    assert set(bf16) == set(glob)
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in bf16.values())
    assert np.isfinite(metrics["train-loss"])
    _, _, fp32, fp32_metrics = _train(tmp_path / "fp32", **{"train.precision": "fp32"})
    update_bf16 = np.concatenate([(bf16[k] - glob[k]).ravel() for k in sorted(glob)])
    update_fp32 = np.concatenate([(fp32[k] - glob[k]).ravel() for k in sorted(glob)])
    assert np.linalg.norm(update_fp32) > 0 and np.linalg.norm(update_bf16) > 0
    # the same direction, nearly the same size: bf16 rounding, not another training
    cosine = update_bf16 @ update_fp32 / (np.linalg.norm(update_bf16) * np.linalg.norm(update_fp32))
    # (measured on the tiny model: cosine 0.999, the difference 5% of the update, losses equal to 1e-4)
    assert cosine > 0.98, cosine
    assert np.linalg.norm(update_bf16 - update_fp32) < 0.25 * np.linalg.norm(update_fp32)
    assert metrics["train-loss"] == pytest.approx(fp32_metrics["train-loss"], rel=0.01)
    assert not np.array_equal(update_bf16, update_fp32)  # bf16 did compute in bf16


def test_bf16_evaluation_reports_the_same_metrics_close_to_fp32s(native, flower_identity, tmp_path):
    native(True)
    glob = shared_model_bundle(parse_run_config(TINY)).initial_tensors(["adapter"])
    scores = {}
    for name in ("fp32", "bf16"):
        ctx = client_context(5, 0, **{"train.precision": name})
        reply = handle_evaluate(server_message("evaluate", "adapter", glob, tmp_path / name), ctx)
        scores[name] = dict(reply.content["metrics"])
    assert set(scores["bf16"]) == set(scores["fp32"])
    for key, value in scores["bf16"].items():
        assert np.isfinite(value), key
    for prefix in ("personalized", "global"):
        assert scores["bf16"][f"{prefix}-loss"] == pytest.approx(scores["fp32"][f"{prefix}-loss"], rel=0.05)
        assert 0.0 <= scores["bf16"][f"{prefix}-accuracy"] <= 1.0


def test_autocast_is_bf16_only_for_bf16():
    with precision.autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with precision.autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


def test_grpo_trains_in_bf16_with_float32_weights_and_leaves_no_autocast_behind(native):
    from pfl_app.models.personalized import get_tensors
    from pfl_app.rlhf.client_setup import Preference
    from pfl_app.rlhf.grpo import train_policy

    from .test_grpo import ConstantReward, LengthReward, _setup

    native(True)
    # one step: emulated bf16 (a machine without native bf16 runs this test so) is slow
    cfg, model, tok, ds = _setup(**{"train.precision": "bf16", "train.local-steps": 1})
    before = get_tensors(model, ("lora_A", "lora_B"))
    result = train_policy(model, tok, ds, [LengthReward(), ConstantReward("safety", 0.0)], Preference(1.0, 0.0),
                          cfg.train, cfg.rlhf, seed=0)
    assert result.steps == 1 and np.isfinite(result.loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    after = get_tensors(model, ("lora_A", "lora_B"))
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert all(np.isfinite(v).all() for v in after.values())
    for obj in (model, model.get_base_model()):
        assert not {"forward", "_original_forward", "_is_accelerate_prepared"} & set(vars(obj))
