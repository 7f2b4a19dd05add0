"""Load a client's personalized model from a finished run's results folder.

The model is built by the function every client builds its own with,
:func:`pfl_app.models.personalized.build_personalized_model`, from the run's saved
``config.json``: the same base (for RLHF methods, the warmed-up policy), the same
bottleneck adapters and LoRA (FedDPA's second LoRA included, PFIT's only on its sparse
layers), initialised from the same seed. The run's final global shared tensors and the
client's own saved tensors then go on top, combined as the client's evaluation combines
them (:func:`pfl_app.models.personalized.personalized_tensors`), so the loaded model is the
one whose scores the run reported in its last round.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from peft import PeftModel
from safetensors.numpy import load_file
from transformers import PreTrainedTokenizerBase

from .client.state import LOCAL_TENSORS, client_dir, saved_client_ids, saved_tensors
from .config import RunConfig, parse_run_config
from .models.personalized import (
    TENSOR_GROUPS,
    build_personalized_model,
    get_tensors,
    kept_groups,
    personalized_tensors,
    set_tensors,
    trainable_names,
)
from .results import PEFT_PREFIX

GLOBAL_SHARED_FILE = "global_shared.safetensors"


def finished_run(run_dir: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """The configuration and summary of the finished run in ``run_dir``.

    Raises
    ------
    FileNotFoundError
        When ``run_dir`` is not a run folder (no ``config.json``), or holds a run that has
        not finished (no ``summary.json``) or finished no round.
    """
    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run's results folder: it has no config.json")
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"the run in {run_dir} has not finished: it has no summary.json (resume it with "
            f"`pfl-app run --resume-from {run_dir}`)"
        )
    summary = json.loads(summary_path.read_text())
    if not summary.get("rounds_completed"):
        raise FileNotFoundError(f"the run in {run_dir} finished no round: there is no model to load")
    return parse_run_config(json.loads(config.read_text())["run_config"]), summary


def _run_clients(run_dir: Path, summary: dict[str, Any], state_dir: str | None) -> list[int]:
    """Every client the run reported on or that saved its own tensors."""
    reported = {int(k) for k in summary.get("per_client", {}) if str(k).isdigit()}
    return sorted(reported | set(saved_client_ids(run_dir, state_dir)))


def _global_shared(run_dir: Path, expected: list[str]) -> dict[str, np.ndarray]:
    """The run's final global shared tensors, named as in the built model."""
    if not expected:  # a method that shares nothing (local-only) writes no file
        return {}
    path = run_dir / GLOBAL_SHARED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the run in {run_dir} has no {GLOBAL_SHARED_FILE}: its global tensors are missing")
    # The file drops peft's prefix (see RunRecorder.save_shared); the model's names carry it.
    tensors = {PEFT_PREFIX + k: v for k, v in load_file(str(path)).items()}
    _check_names(path, tensors, expected)
    return tensors


def _kept(folder: Path, client_id: int, up_to_round: int, expected: list[str]) -> dict[str, np.ndarray]:
    """The client's own tensors as of ``up_to_round``, as its last evaluation read them."""
    if not expected:  # nothing of its own: its personalized model is the global one
        return {}
    found = saved_tensors(folder, LOCAL_TENSORS, up_to_round)
    if found is None:
        raise FileNotFoundError(
            f"client {client_id} saved no tensors of round {up_to_round} or before in {folder} (no "
            f"{LOCAL_TENSORS}.safetensors): it never finished a training round, or its node kept its "
            "state elsewhere (pass state_dir, its node config's state-dir)"
        )
    _check_names(folder / f"{LOCAL_TENSORS}.safetensors", found[1], expected)
    return found[1]


def _check_names(path: Path, tensors: dict[str, np.ndarray], expected: list[str]) -> None:
    if set(tensors) != set(expected):
        extra, missing = sorted(set(tensors) - set(expected)), sorted(set(expected) - set(tensors))
        raise ValueError(
            f"{path} does not hold the tensors this run's config builds: unexpected {extra[:3]}, missing "
            f"{missing[:3]}; was the run folder reused with another config?"
        )


def load_personalized_model(
    run_dir: str | Path, client_id: int, state_dir: str | None = None
) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """Client ``client_id``'s personalized model at the end of the run in ``run_dir``.

    Works for every method: for PFTT, the global adapters and the client's LoRA; for
    FedDPA, the global LoRA and the client's local LoRA, both active; for FedSA-LoRA, the
    global LoRA A and the client's B; for PFIT and the other RLHF methods, the warmed-up
    base with the client's own policy LoRA (on the layers the sparse update trains). The
    model is the one the client scored in the run's last round.

    Parameters
    ----------
    run_dir : str or Path
        A finished run's results folder (``results/<run>``).
    client_id : int
        The client (its ``partition-id``).
    state_dir : str, optional
        Where the client's node kept its state, if its node config set ``state-dir``
        (a device whose disk is not the server's); by default, the run folder.

    Returns
    -------
    tuple
        ``(peft_model, tokenizer)``, the model in eval mode. For RLHF methods the base is
        the warmed-up policy cached under ``model.cache-dir``; if that cache is gone it is
        trained again first.

    Raises
    ------
    FileNotFoundError
        When ``run_dir`` is not a finished run, or a file the model needs is missing (both
        named).
    ValueError
        When the run has no client ``client_id`` (the message lists those it has), or a
        saved file does not match the run's config.
    """
    run_dir = Path(run_dir)
    cfg, summary = finished_run(run_dir)
    clients = _run_clients(run_dir, summary, state_dir)
    if client_id not in clients:
        raise ValueError(f"the run in {run_dir} has no client {client_id}; its clients are {clients}")
    strategy = cfg.method_spec.strategy  # the method's shared and trained groups
    model, tokenizer = build_personalized_model(cfg)
    shared = _global_shared(run_dir, trainable_names(model, strategy.shared_groups))
    own = kept_groups(cfg, strategy.shared_groups, strategy.trained_groups)
    folder = client_dir(run_dir, client_id, state_dir)
    kept = _kept(folder, client_id, int(summary["rounds_completed"]), trainable_names(model, own))
    set_tensors(model, personalized_tensors(cfg, get_tensors(model, TENSOR_GROUPS), shared, kept))
    return model.eval(), tokenizer
