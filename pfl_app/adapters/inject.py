"""Insertion of bottleneck adapters into a model's decoder blocks."""

from __future__ import annotations

import torch
from torch import nn

from .config import BottleneckConfig
from .layer import BottleneckAdapter

ADAPTER_MODULE_NAME = "bottleneck_adapter"


def is_adapter_key(name: str) -> bool:
    """Whether a parameter name belongs to a bottleneck adapter."""
    return f".{ADAPTER_MODULE_NAME}." in name


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    """Find the list of decoder blocks of a Hugging Face causal LM."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        # GPT-2 style models keep their blocks in transformer.h
        layers = getattr(getattr(model, "transformer", None), "h", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"cannot find the decoder blocks of {type(model).__name__}: expected "
            "model.layers (LLaMA, Mistral, Qwen, ...) or transformer.h (GPT-2)"
        )
    return layers


def _apply_adapters(module: nn.Module, _inputs: tuple, output):
    # Forward hook on the target sub-layer: pass its output through every adapter it holds.
    adapters = module._modules[ADAPTER_MODULE_NAME]
    if isinstance(output, tuple):
        hidden = output[0]
        for adapter in adapters.values():
            hidden = adapter(hidden)
        return (hidden, *output[1:])
    for adapter in adapters.values():
        output = adapter(output)
    return output


def inject_bottleneck_adapters(model: nn.Module, config: BottleneckConfig) -> list[str]:
    """Insert one adapter named ``config.adapter_name`` after ``config.target_module`` of
    every decoder block, in place.

    The adapter is registered as a child of the target module (so its parameters are named
    ``...layers.<i>.<target>.bottleneck_adapter.<adapter_name>.{down,up}.{weight,bias}``
    and travel with ``state_dict``), and a forward hook applies it, which leaves the
    names of the base model's own weights untouched for LoRA and checkpoint loading.

    Returns
    -------
    list[str]
        The names of the adapter parameters that were added.
    """
    layers = _decoder_layers(model)
    hidden_size = model.config.hidden_size
    for index, block in enumerate(layers):
        target = getattr(block, config.target_module, None)
        if target is None:
            raise ValueError(
                f"decoder block {index} has no sub-module {config.target_module!r}; "
                f"its children are {[n for n, _ in block.named_children()]}"
            )
        holder = target._modules.get(ADAPTER_MODULE_NAME)
        if holder is None:
            holder = nn.ModuleDict()
            target.add_module(ADAPTER_MODULE_NAME, holder)
            target.register_forward_hook(_apply_adapters)
        if config.adapter_name in holder:
            raise ValueError(f"an adapter named {config.adapter_name!r} is already inserted")
        weight = next(target.parameters())
        adapter = BottleneckAdapter(
            hidden_size, config.bottleneck_dim, config.non_linearity, config.dropout
        ).to(device=weight.device, dtype=torch.float32)
        holder[config.adapter_name] = adapter
    return [n for n in adapter_state_dict(model) if f".{config.adapter_name}." in n]


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of ``model``, keyed by their full parameter names."""
    return {n: p.detach() for n, p in model.named_parameters() if is_adapter_key(n)}
