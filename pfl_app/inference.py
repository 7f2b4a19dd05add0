"""Load a client's personalized model from a finished run's results folder."""

from __future__ import annotations

import json
from pathlib import Path

from peft import PeftModel
from safetensors.torch import load_file

from .adapters import BottleneckConfig, inject_bottleneck_adapters
from .client.state import LORA_DIR, client_dir
from .models.loading import load_causal_lm, load_tokenizer


def load_personalized_model(run_dir: str | Path, client_id: int):
    """The base model + the run's final global adapters + client ``client_id``'s LoRA.

    Returns
    -------
    tuple
        ``(peft_model, tokenizer)``, in eval mode.
    """
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())["run_config"]
    base = load_causal_lm(cfg["model.name"], cfg["model.cache-dir"], seed=cfg["seed"])
    inject_bottleneck_adapters(
        base,
        BottleneckConfig(
            bottleneck_dim=cfg["adapter.bottleneck-dim"],
            non_linearity=cfg["adapter.non-linearity"],
            dropout=cfg["adapter.dropout"],
        ),
    )
    shared = run_dir / "global_shared.safetensors"
    if shared.exists():
        tensors = {k: v for k, v in load_file(str(shared)).items() if ".bottleneck_adapter." in k}
        missing, unexpected = base.load_state_dict(tensors, strict=False)
        if unexpected:
            raise ValueError(f"{shared} holds tensors this model lacks: {unexpected[:3]}")
    model = PeftModel.from_pretrained(base, str(client_dir(run_dir, client_id) / LORA_DIR))
    return model.eval(), load_tokenizer(cfg["model.name"], cfg["model.cache-dir"])
