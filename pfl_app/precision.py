"""The arithmetic precision of local training and evaluation (``train.precision``).

- ``fp32``: everything in float32 (what the project always did).
- ``bf16``: bfloat16 autocast. The weights stay float32 (the optimizer's master copy, and
  what a client saves and sends: the shared tensors travel as float32); only the matrix
  products and other autocast-listed ops of the forward and backward passes run in
  bfloat16. Training sets ``bf16=True`` in the trl/transformers config, which makes
  accelerate wrap the model's forward in ``torch.autocast``; evaluation runs its forward
  passes under :func:`autocast`.
- ``auto``: ``bf16`` where the device that trains has native bfloat16 arithmetic, else
  ``fp32``.

"Native" is what decides, for ``auto`` and for the refusal of ``bf16``
(:func:`precision_problem`): on a CPU without bfloat16 instructions PyTorch still runs bf16,
by converting, but many times slower than fp32 (a 512x576 by 576x1536 matrix product took
25 times as long on the AVX2-only AMD EPYC of docs/benchmarks.md), which defeats the point;
a GPU before Ampere likewise only emulates it. So ``bf16`` on such a device is refused before
the start, naming the key.

How a CPU is checked: :func:`torch.cpu.get_capabilities`, torch's own cpuinfo probe (the
library its kernels dispatch by), for ``avx512_bf16`` or ``amx_bf16`` on x86 and ``bf16`` or
``sve_bf16`` on ARM. It works on every OS, unlike reading ``/proc/cpuinfo``, and it names the
bf16 instructions themselves, unlike ``torch.backends.cpu.get_cpu_capability()``, whose
``AVX512`` level also covers CPUs (Skylake-X, Ice Lake) that have AVX-512 but no bf16
instructions.
"""

from __future__ import annotations

import contextlib
import functools

# torch is imported inside the functions: pfl_app.config reads PRECISIONS from here, and the
# config (the launcher's, the CLI's) loads without torch.

FP32, BF16, AUTO = "fp32", "bf16", "auto"
PRECISIONS = (FP32, BF16, AUTO)
KEY = "train.precision"

# The CPU features (torch.cpu.get_capabilities() names) that mean native bfloat16 arithmetic.
_CPU_BF16_FEATURES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


def training_device() -> str:
    """The device type a client's training runs on in this process, as transformers'
    Trainer picks it: ``cuda`` when a GPU is visible, else ``mps`` (Apple), else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


@functools.cache
def cpu_bf16_features() -> tuple[str, ...]:
    """The native-bfloat16 features this CPU has (empty: none), per torch's cpuinfo."""
    import torch

    caps = torch.cpu.get_capabilities()
    return tuple(f for f in _CPU_BF16_FEATURES if caps.get(f, False))


def bf16_native(device: str) -> bool:
    """Whether ``device`` (``cpu``, ``cuda``, ``mps``) runs bfloat16 natively."""
    import torch

    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device == "mps":
        return bool(torch.backends.mps.is_available() and torch.backends.mps.is_macos_or_newer(14, 0))
    return bool(cpu_bf16_features())


def _device_text(device: str) -> str:
    import torch

    if device == "cuda":
        return f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "GPU (none visible)"
    if device == "cpu":
        name = torch.cpu.get_capabilities().get("cpu_name") or "CPU"
        return f"CPU ({name}; no bfloat16 instructions: avx512_bf16, amx_bf16, or bf16 on ARM)"
    return device


def precision_problem(name: str, device: str | None = None) -> str | None:
    """What is wrong with running ``train.precision`` = ``name`` on ``device`` (default:
    :func:`training_device`), or ``None`` when it can run.

    An unknown name, and ``bf16`` on a device without native bfloat16 arithmetic, are
    problems; ``fp32`` and ``auto`` always run."""
    if name not in PRECISIONS:
        return f"run-config key '{KEY}' = {name!r} is not allowed; allowed values: {', '.join(PRECISIONS)}"
    if name != BF16:
        return None
    device = device or training_device()  # asked only for bf16: every client message runs this check
    if not bf16_native(device):
        return (f"run-config key '{KEY}' = 'bf16' cannot run on this machine's {_device_text(device)}: it has no "
                "native bfloat16 arithmetic, and emulated bf16 is many times slower than fp32; allowed here: "
                f"fp32, or auto (which picks fp32 on this {device})")
    return None


def resolve_precision(name: str, device: str | None = None) -> str:
    """``fp32`` or ``bf16``: what ``train.precision`` = ``name`` computes in on ``device``
    (default: :func:`training_device`). ``auto`` is ``bf16`` where the device runs it
    natively; ``bf16`` itself is returned as asked (:func:`precision_problem` refuses it
    beforehand where it cannot run)."""
    if name not in PRECISIONS:
        raise ValueError(precision_problem(name))
    if name == AUTO:
        return BF16 if bf16_native(device or training_device()) else FP32
    return name


def trainer_precision_args(precision: str) -> dict:
    """The transformers/trl training arguments of a resolved ``precision``: ``bf16=True``
    (accelerate's autocast around the model's forward; the weights stay float32) and, on a
    CPU, ``use_cpu=True``, without which transformers refuses bf16 where no GPU supports it."""
    if precision == BF16:
        return {"bf16": True, "fp16": False, "use_cpu": training_device() == "cpu"}
    return {"bf16": False, "fp16": False}


def autocast(precision: str, device=None):
    """A context that computes under bfloat16 autocast for a resolved ``precision`` of
    ``bf16`` on ``device`` (a model's device; default :func:`training_device`), and does
    nothing for ``fp32``."""
    import torch

    if precision != BF16:
        return contextlib.nullcontext()
    kind = torch.device(device).type if device is not None else training_device()
    return torch.autocast(device_type=kind, dtype=torch.bfloat16)
