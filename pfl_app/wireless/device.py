"""The device model: how long a client's local training takes on a device, and its energy.

A client counts the tokens its local training processed and the FLOPs they cost (see
:func:`training_flops`); under a device profile (the run config's ``wireless.device``) the
simulated compute time is ``FLOPs / sustained throughput`` and the compute energy is that
time times the device's power. Both then depend on the workload alone, not on how fast or
busy the simulating host was.

FLOPs per token
---------------
Kaplan et al. 2020, "Scaling Laws for Neural Language Models" (arXiv:2001.08361, section 2.1
and Table 1), count a transformer's forward pass at ``C_fwd ≈ 2N`` FLOPs per token (one
multiply-add per parameter) and its backward pass at twice that, ``C ≈ 6N`` per token for
training. The backward pass does two things of about ``2N`` each: propagate the activation
gradients back through every weight matrix, and form every weight's gradient. With the base
weights frozen and only small adapters or LoRA trained (PEFT), the first is still needed
all the way down (the adapters sit in every layer and the gradient reaches them through the
frozen weights), but the second only for the trainable weights:

    C = tokens × (2N + 2N + 2N_trainable)          (= 6N per token when N_trainable = N)

with no backward pass at all when nothing is trained (``2N``). Kaplan's context-dependent
term ``2 n_layer n_ctx d_attn`` is left out: at the short sequences trained here (128
tokens, d = 576, 30 layers for SmolLM2-135M) it is under 2 % of ``2N``. ``N`` counts the
weights that do a multiply-add per token (:func:`pfl_app.training.flop_params`).

Device profiles
---------------
A :class:`DeviceProfile` gives a device's *peak* FP32 throughput, from its vendor's
specification, and the share of it that training sustains (``utilization``), an assumption
stated with each profile; and the power the device draws meanwhile. FP32 because the app
trains in float32. Profiles live in :data:`DEVICES`; :func:`register_device` adds one, and
``wireless.device`` may also name a profile of one's own by ``package.module:NAME``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

from ..plugins import is_plugin_path, load_object

__all__ = ["DEVICES", "DeviceProfile", "device_names", "device_problem", "device_profile", "forward_flops",
           "register_device", "training_flops"]


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def forward_flops(num_params: int, tokens: int) -> float:
    """FLOPs of forward passes over ``tokens`` tokens of a model with ``num_params``
    multiply-add weights: ``2 · N · tokens`` (Kaplan et al. 2020)."""
    return 2.0 * _count("num_params", num_params) * _count("tokens", tokens)


def training_flops(num_params: int, trainable_params: int, tokens: int) -> float:
    """FLOPs of training on ``tokens`` tokens: a forward and a backward pass per token.

    Parameters
    ----------
    num_params : int
        ``N``, the model's multiply-add weights, trainable or not.
    trainable_params : int
        ``N_trainable <= N``, the weights that get a gradient.
    tokens : int
        Non-padding tokens processed, over every sequence and step.

    Returns
    -------
    float
        ``tokens · (2N + 2N + 2N_trainable)``: forward ``2N``; backward ``2N`` for the
        activation gradients through every weight plus ``2N_trainable`` for the weight
        gradients. Full training (``N_trainable = N``) gives Kaplan et al.'s ``6N`` per
        token; ``N_trainable = 0`` needs no backward pass: ``2N``.
    """
    n, t = _count("num_params", num_params), _count("trainable_params", trainable_params)
    if t > n:
        raise ValueError(f"trainable_params ({t}) must be <= num_params ({n})")
    backward = 2.0 * n + 2.0 * t if t > 0 else 0.0
    return (2.0 * n + backward) * _count("tokens", tokens)


@dataclass(frozen=True)
class DeviceProfile:
    """A device that trains: its throughput and its power.

    Attributes
    ----------
    name : str
        The name ``wireless.device`` gives it.
    peak_flops : float
        Peak FP32 throughput, FLOP/s, from the vendor's specification.
    utilization : float
        Share of the peak that local training sustains, in (0, 1]: an assumption.
    power_w : float
        Power the device draws while training, W.
    source : str
        Where the numbers come from, and what is assumed.
    """

    name: str
    peak_flops: float
    utilization: float
    power_w: float
    source: str = ""

    def __post_init__(self) -> None:
        for field, value in (("peak_flops", self.peak_flops), ("power_w", self.power_w)):
            if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"DeviceProfile {self.name!r}: {field} must be a finite number > 0, got {value!r}")
        if isinstance(self.utilization, bool) or not isinstance(self.utilization, Real) \
                or not 0 < self.utilization <= 1:
            raise ValueError(f"DeviceProfile {self.name!r}: utilization must be in (0, 1], got {self.utilization!r}")

    @property
    def sustained_flops(self) -> float:
        """FLOP/s local training runs at: ``peak_flops · utilization``."""
        return self.peak_flops * self.utilization

    def compute_seconds(self, flops: float) -> float:
        """Seconds the device takes for ``flops``: ``flops / sustained_flops``."""
        if not (math.isfinite(flops) and flops >= 0):
            raise ValueError(f"flops must be a finite number >= 0, got {flops!r}")
        return float(flops) / self.sustained_flops

    def compute_energy_j(self, flops: float) -> float:
        """Joules the device spends on ``flops``: ``compute_seconds(flops) · power_w``."""
        return self.compute_seconds(flops) * self.power_w


#: Every registered device profile, by name, in the order they were registered.
DEVICES: dict[str, DeviceProfile] = {}


def register_device(profile: DeviceProfile) -> DeviceProfile:
    """Add ``profile`` to :data:`DEVICES` under its name, and return it.

    A name is registered once: another profile under a taken name raises ``ValueError`` (an
    equal one again, as when its module is imported twice, is accepted).
    """
    if not isinstance(profile, DeviceProfile):
        raise TypeError(f"register_device takes a DeviceProfile, got {type(profile).__name__}")
    if not profile.name or ":" in profile.name:
        # A colon would make the name read as a package.module:NAME path.
        raise ValueError(f"a device name must be a non-empty string without ':', got {profile.name!r}")
    old = DEVICES.get(profile.name)
    if old is not None and old != profile:
        raise ValueError(f"device {profile.name!r} is already registered, as {old!r}")
    DEVICES[profile.name] = profile
    return profile


def device_names() -> tuple[str, ...]:
    """The values ``wireless.device`` may take, read when asked: ``""`` (no device model:
    compute energy from the measured training time) and every registered device."""
    return ("", *DEVICES)


def device_profile(name: str) -> DeviceProfile:
    """The profile ``name`` stands for: a registered device, or a ``package.module:NAME``
    path to a :class:`DeviceProfile`.

    Raises
    ------
    ValueError
        Naming the registered devices when ``name`` is neither.
    """
    if isinstance(name, str) and name in DEVICES:
        return DEVICES[name]
    if isinstance(name, str) and is_plugin_path(name):
        profile = load_object(name, "device profile")
        if not isinstance(profile, DeviceProfile):
            raise ValueError(f"device profile {name!r} is {type(profile).__name__}, not a DeviceProfile")
        return profile
    raise ValueError(f"device must be one of {', '.join(DEVICES)}, or a DeviceProfile given as "
                     f"package.module:NAME; got {name!r}")


def device_problem(path: str) -> str | None:
    """Why a ``package.module:NAME`` path leads to no device profile, or ``None``."""
    try:
        device_profile(path)
    except ValueError as err:
        return str(err)
    return None


# -- The built-in profiles --------------------------------------------------------------
# Peak = cores x clock x FP32 FLOP per cycle (an FMA is 2 FLOP), from the vendor's figures.
# Sustained = peak x utilization. Every profile assumes the same utilization, 30 %: below the
# 46 % model-FLOPs utilization PaLM reached training on TPU v4 (Chowdhery et al. 2022,
# arXiv:2204.02311, Table 3), because small batches of short sequences on edge hardware use
# it less well. It is an assumption, not a measurement; a device of one's own may set its own.
UTILIZATION = 0.30

# A flagship phone's CPU. Qualcomm's Snapdragon 8 Gen 3 specification: 1x Cortex-X4 at
# 3.3 GHz, 3x Cortex-A720 at 3.2 GHz, 2x Cortex-A720 at 3.0 GHz, 2x Cortex-A520 at 2.3 GHz.
# Arm's core descriptions: the X4 has four 128-bit FP/SIMD pipes (4 x 4 FP32 lanes x FMA =
# 32 FLOP/cycle), the A720 two (16 FLOP/cycle). The two A520s, which share one vector unit
# between them, are left out. Peak 3.3e9*32 + (3*3.2e9 + 2*3.0e9)*16 = 355.2 GFLOP/s.
# Power: Qualcomm publishes no TDP; 5 W is an assumption, the continuous load a phone
# sustains before it throttles (the same figure as LinkProfile.device_power_w).
register_device(DeviceProfile(
    name="phone-sd8gen3",
    peak_flops=3.3e9 * 32 + (3 * 3.2e9 + 2 * 3.0e9) * 16,
    utilization=UTILIZATION,
    power_w=5.0,
    source="Qualcomm Snapdragon 8 Gen 3 specification (CPU clocks); Arm Cortex-X4/A720 FP pipes; "
           "peak FP32 of the X4 + A720 cores; 5 W assumed (no vendor TDP); 30 % utilization assumed",
))

# A Jetson-class board. NVIDIA Jetson Orin Nano 8GB module datasheet: 1024-core Ampere GPU at
# up to 625 MHz, module power modes 7 W to 15 W. FP32 peak on the CUDA cores: 1024 x 2 FLOP
# (FMA) x 625 MHz = 1.28 TFLOP/s (float32 training does not use the tensor cores unless TF32
# is allowed). Power: the 15 W mode, whose clocks the peak is taken at.
register_device(DeviceProfile(
    name="jetson-orin-nano",
    peak_flops=1024 * 2 * 625e6,
    utilization=UTILIZATION,
    power_w=15.0,
    source="NVIDIA Jetson Orin Nano 8GB datasheet: 1024 CUDA cores at 625 MHz, 15 W mode; "
           "peak FP32; 30 % utilization assumed",
))

# A laptop CPU. AMD's Ryzen 7 7840U product page: 8 Zen 4 cores, base clock 3.3 GHz, default
# TDP 28 W. AMD's Software Optimization Guide for the Zen 4 microarchitecture (pub. 57647):
# two 256-bit FMA pipes per core, 2 x 8 FP32 lanes x 2 = 32 FLOP/cycle. Peak at the base
# clock, which the 28 W TDP sustains on all cores: 8 x 3.3 GHz x 32 = 844.8 GFLOP/s.
register_device(DeviceProfile(
    name="laptop-ryzen7-7840u",
    peak_flops=8 * 3.3e9 * 32,
    utilization=UTILIZATION,
    power_w=28.0,
    source="AMD Ryzen 7 7840U product page (8 cores, 3.3 GHz base, 28 W TDP); AMD Zen 4 software "
           "optimization guide (2 x 256-bit FMA); peak FP32 at base clock; 30 % utilization assumed",
))
