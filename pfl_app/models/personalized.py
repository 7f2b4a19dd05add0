"""The personalized model: a frozen base LM + bottleneck adapters + LoRA, and its tensors.

Trainable tensors fall into groups, named after what a method may share or keep:

- ``adapter``: the bottleneck adapters;
- ``lora_A`` and ``lora_B``: the two factors of every LoRA update;
- ``local_lora_A`` and ``local_lora_B``: a second LoRA (peft adapter ``local``) that
  only dual-adapter methods such as FedDPA build.

A method (see :mod:`pfl_app.strategies`) says which groups travel to the server; the
rest stay on the client. Every group is float32, so it can go into a Flower
``ArrayRecord`` as is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedTokenizerBase

from ..adapters import BottleneckConfig, inject_bottleneck_adapters, is_adapter_key
from ..config import RunConfig
from .loading import load_causal_lm, load_tokenizer
from .sparse_attention import register_window_sink

TENSOR_GROUPS = ("adapter", "lora_A", "lora_B", "local_lora_A", "local_lora_B")
LOCAL_LORA = "local"  # peft adapter name of the second LoRA
# How "no group" is written in a ConfigRecord: Flower's ConfigRecord.count_bytes() raises
# on an empty string (flwr 1.41), so an empty list is spelled out.
NO_GROUPS = "none"


def tensor_group(name: str) -> str | None:
    """The group a parameter name belongs to, or ``None`` for frozen base weights."""
    if is_adapter_key(name):
        return "adapter"
    if f".{LOCAL_LORA}." in name and (".lora_A." in name or ".lora_B." in name):
        return "local_lora_A" if ".lora_A." in name else "local_lora_B"
    if ".lora_A." in name:
        return "lora_A"
    if ".lora_B." in name:
        return "lora_B"
    return None


def format_groups(groups: Iterable[str]) -> str:
    """``("adapter", "lora_B")`` -> ``"adapter,lora_B"``; no group -> ``"none"``."""
    return ",".join(groups) or NO_GROUPS


def parse_groups(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Parse ``"adapter,lora_B"`` (or an iterable; ``"none"`` for no group) into group names."""
    groups = tuple(s.strip() for s in spec.split(",")) if isinstance(spec, str) else tuple(spec)
    groups = tuple(g for g in groups if g and g != NO_GROUPS)
    unknown = [g for g in groups if g not in TENSOR_GROUPS]
    if unknown:
        raise ValueError(f"unknown tensor group(s) {unknown}; allowed: {', '.join(TENSOR_GROUPS)}")
    return groups


def sparse_layers(kind: str, k: int, num_layers: int) -> tuple[int, ...] | None:
    """The decoder layers that carry LoRA under a sparse attention update.

    ``"dense"``: every layer (``None``); ``"last-k"``: the last ``k``; ``"every-k"``: layers
    ``k-1, 2k-1, ...`` (every k-th, counting from 1).
    """
    if kind == "dense":
        return None
    if kind == "last-k":
        return tuple(range(max(0, num_layers - k), num_layers))
    if kind == "every-k":
        layers = tuple(i for i in range(num_layers) if (i + 1) % k == 0)
        if not layers:
            raise ValueError(f"run-config key 'rlhf.sparse-k' = {k} selects no layer of {num_layers}; "
                             f"allowed: 1 to {num_layers}")
        return layers
    raise ValueError(f"sparse update {kind!r} is not one of dense, last-k, every-k")


def lora_layers(cfg: RunConfig, num_layers: int) -> tuple[int, ...] | None:
    """The layers LoRA goes into: all of them, except for RLHF methods under a sparse update."""
    if not cfg.method_spec.uses_reward_models:
        return None
    return sparse_layers(cfg.rlhf.sparse_update, cfg.rlhf.sparse_k, num_layers)


def base_policy(cfg: RunConfig) -> str:
    """What the model is built on: ``model.name``, or for RLHF methods the policy after the
    supervised warm-up (``rlhf.warmup-steps``; trained once and cached)."""
    if not cfg.method_spec.uses_reward_models:
        return cfg.model.name
    from ..rlhf.warmup import warmed_policy, warmup_spec  # RLHF runs only

    spec = warmup_spec(cfg)
    return str(warmed_policy(spec, cfg.model.cache_dir)) if spec is not None else cfg.model.name


def build_personalized_model(cfg: RunConfig) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """Load the base model, insert adapters and LoRA, and freeze everything else.

    Seeded from ``cfg.seed``, so every process builds the same initial adapters and LoRA.
    Methods whose model has a ``local-lora`` part (FedDPA) get a second LoRA named ``local``.

    This is the one place a client's model is built: clients build theirs with it (once per
    process, :func:`shared_model_bundle`), and so does
    :func:`pfl_app.inference.load_personalized_model` from a finished run's config, so the
    loaded model cannot drift from the trained one.
    """
    dual_lora = cfg.method_spec.second_lora
    tokenizer = load_tokenizer(cfg.model.name, cfg.model.cache_dir)
    base = load_causal_lm(base_policy(cfg), cfg.model.cache_dir, seed=cfg.seed)
    base.config.pad_token_id = tokenizer.pad_token_id
    if cfg.method_spec.uses_reward_models and cfg.rlhf.attention == "local-window":
        base.set_attn_implementation(register_window_sink(cfg.rlhf.attention_window, cfg.rlhf.sink_tokens))
    torch.manual_seed(cfg.seed)
    inject_bottleneck_adapters(
        base,
        BottleneckConfig(
            bottleneck_dim=cfg.adapter.bottleneck_dim,
            non_linearity=cfg.adapter.non_linearity,
            dropout=cfg.adapter.dropout,
        ),
    )
    layers = lora_layers(cfg, base.config.num_hidden_layers)
    lora = LoraConfig(
        layers_to_transform=list(layers) if layers is not None else None,
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(base, lora)
    except ValueError as err:  # peft names the missing modules; add the config key
        raise ValueError(f"run-config key 'lora.target-modules': {err}") from err
    if dual_lora:
        # A second LoRA of the same shape, active together with the first: their updates add.
        model.add_adapter(LOCAL_LORA, lora)
        model.base_model.set_adapter(["default", LOCAL_LORA])
    # get_peft_model freezes every non-LoRA parameter, our adapters included.
    set_trainable(model, TENSOR_GROUPS)
    return model, tokenizer


def kept_groups(cfg: RunConfig, shared: Iterable[str], trained: Iterable[str]) -> tuple[str, ...]:
    """The groups a client keeps as its own, saves each round and is personalized by.

    Parameters
    ----------
    cfg : RunConfig
        The run's configuration; its method says which family the client belongs to.
    shared, trained : iterable of str
        The method's shared and trained groups (see :mod:`pfl_app.strategies`).

    Returns
    -------
    tuple of str
        For task tuning, every group that is not shared; for RLHF, every group the client
        trains, shared ones included: its whole policy.
    """
    if cfg.method_spec.uses_reward_models:
        return tuple(trained)
    shared = set(shared)
    return tuple(g for g in TENSOR_GROUPS if g not in shared)


def personalized_tensors(
    cfg: RunConfig,
    initial: Mapping[str, np.ndarray],
    shared: Mapping[str, np.ndarray],
    kept: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Every trainable tensor of a client's personalized model, as its evaluation scores it.

    Parameters
    ----------
    cfg : RunConfig
        The run's configuration.
    initial : mapping
        The initial value of every trainable tensor (:attr:`ModelBundle.initial`).
    shared : mapping
        The global value of the shared tensors.
    kept : mapping
        The client's own tensors (of :func:`kept_groups`).

    Returns
    -------
    dict
        For task tuning, the global shared tensors with the client's own on top; for RLHF,
        the client's own policy alone (it holds the shared tensors as the client trained
        them). Initial values everywhere else.
    """
    if cfg.method_spec.uses_reward_models:
        return {**initial, **kept}
    return {**initial, **shared, **kept}


def set_trainable(model: torch.nn.Module, groups: Iterable[str]) -> None:
    """Let local training update the tensors of ``groups`` and freeze every other one."""
    wanted = set(groups)
    for name, param in model.named_parameters():
        param.requires_grad = tensor_group(name) in wanted


def trainable_names(model: torch.nn.Module, groups: Iterable[str] = TENSOR_GROUPS) -> list[str]:
    """Names of the parameters in ``groups``, in model order."""
    wanted = set(groups)
    return [n for n, _ in model.named_parameters() if tensor_group(n) in wanted]


def get_tensors(model: torch.nn.Module, groups: Iterable[str]) -> dict[str, np.ndarray]:
    """Copies of the tensors in ``groups`` as float32 numpy arrays."""
    wanted = set(groups)
    return {
        n: p.detach().to(torch.float32).cpu().numpy().copy()
        for n, p in model.named_parameters()
        if tensor_group(n) in wanted
    }


def set_tensors(model: torch.nn.Module, tensors: Mapping[str, np.ndarray]) -> None:
    """Copy ``tensors`` into the model's parameters of the same names.

    Raises ``KeyError`` for a name the model lacks or that is a frozen base weight, and
    ``ValueError`` for a shape mismatch, before anything is written.
    """
    params = dict(model.named_parameters())
    for name, value in tensors.items():
        if name not in params or tensor_group(name) is None:
            raise KeyError(f"tensor {name!r} is not a trainable tensor of this model")
        if tuple(params[name].shape) != tuple(np.shape(value)):
            raise ValueError(
                f"tensor {name!r} has shape {tuple(np.shape(value))}, the model expects "
                f"{tuple(params[name].shape)}"
            )
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(torch.as_tensor(np.asarray(value), dtype=params[name].dtype))


@dataclass
class ModelBundle:
    """A built model, its tokenizer, and the initial value of every trainable tensor."""

    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    initial: dict[str, np.ndarray]

    def initial_tensors(self, groups: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = set(groups)
        return {k: v for k, v in self.initial.items() if tensor_group(k) in wanted}


_BUNDLES: dict[tuple, ModelBundle] = {}


def model_key(cfg: RunConfig) -> tuple:
    """What determines the structure and initial values of the model."""
    return (cfg.model, cfg.adapter, cfg.lora, cfg.seed, cfg.method_spec.second_lora,
            cfg.method_spec.uses_reward_models and (cfg.rlhf.sparse_update, cfg.rlhf.sparse_k, cfg.rlhf.attention,
                                            cfg.rlhf.attention_window, cfg.rlhf.sink_tokens))


def shared_model_bundle(cfg: RunConfig) -> ModelBundle:
    """One model per process and configuration.

    A Ray worker serves many virtual clients in turn; building one model per client call
    would reload the base weights every time and, with many clients, hold one copy each.
    Instead every call borrows this one model and loads *all* its trainable tensors from
    the client's state first (see :func:`pfl_app.client.task_tuning`), so nothing
    leaks from one client to the next.
    """
    key = model_key(cfg)
    if key not in _BUNDLES:
        model, tokenizer = build_personalized_model(cfg)
        _BUNDLES.clear()  # keep one model per process
        _BUNDLES[key] = ModelBundle(model, tokenizer, get_tensors(model, TENSOR_GROUPS))
    return _BUNDLES[key]
