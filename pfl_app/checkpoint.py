"""Server checkpoints: what a run needs to continue after a crash.

After every round the server writes ``checkpoints/round-<r>/`` (the global shared tensors,
the server optimizer's state, the round's counters and Python's RNG state), appends the
round's rows to ``metrics.jsonl``, and only then points ``checkpoint.json`` at the new
folder. ``checkpoint.json`` is the commit: a crash before it leaves the previous round as
the one to resume from, and rows of the unfinished round are dropped on resume, so no
round is counted twice or lost. The two newest checkpoint folders are kept.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

POINTER = "checkpoint.json"
FOLDER = "checkpoints"
KEEP = 2
# Array-valued state of Flower's server optimizers (FedOpt family: m_t, v_t; FedAvgM: momentum).
STRATEGY_STATE_ATTRS = ("m_t", "v_t", "momentum_vector")


@dataclass
class Checkpoint:
    """A finished round, as saved."""

    round: int
    shared: dict[str, np.ndarray]
    strategy_state: dict[str, np.ndarray]
    counters: dict[str, Any]


def strategy_state(strategy: Any) -> dict[str, np.ndarray]:
    """The server optimizer's arrays, as ``"<attr>/<tensor name>"``."""
    out = {}
    for attr in STRATEGY_STATE_ATTRS:
        value = getattr(strategy, attr, None)
        if isinstance(value, dict):
            out.update({f"{attr}/{k}": np.asarray(v) for k, v in value.items()})
    return out


def restore_strategy_state(strategy: Any, tensors: dict[str, np.ndarray]) -> None:
    """Put arrays saved by :func:`strategy_state` back on ``strategy``."""
    for attr in STRATEGY_STATE_ATTRS:
        found = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.split("/", 1)[0] == attr}
        if found:
            setattr(strategy, attr, found)


def _random_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _random_state_from_json(data: list) -> tuple:
    return (data[0], tuple(data[1]), data[2])


def write(run_dir: Path, server_round: int, shared: dict[str, np.ndarray], state: dict[str, np.ndarray],
          counters: dict[str, Any]) -> Path:
    """Write round ``server_round``'s checkpoint folder (not yet committed: see :func:`commit`)."""
    root = Path(run_dir) / FOLDER
    target = root / f"round-{server_round:04d}"
    staging = root / f".round-{server_round:04d}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in shared.items()}, str(staging / "shared.safetensors"))
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(staging / "strategy.safetensors"))
    (staging / "state.json").write_text(json.dumps({
        "round": server_round, "counters": counters,
        "python_random": _random_state_to_json(random.getstate()),
    }))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def commit(run_dir: Path, server_round: int) -> None:
    """Make round ``server_round`` the one to resume from, and prune older folders."""
    run_dir = Path(run_dir)
    tmp = run_dir / (POINTER + ".tmp")
    tmp.write_text(json.dumps({"round": server_round, "folder": f"{FOLDER}/round-{server_round:04d}"}))
    tmp.replace(run_dir / POINTER)
    folders = sorted(p for p in (run_dir / FOLDER).glob("round-*") if p.is_dir())
    for old in folders[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)


class CheckpointError(ValueError):
    """A run's checkpoints cannot be trusted to continue it."""


def read(run_dir: Path, num_rounds: int | None = None, warn=None) -> Checkpoint | None:
    """The committed checkpoint of a run, or ``None`` if no round was committed.

    Before a run continues from it, the checkpoint is checked: a missing pointer beside
    round folders, a round beyond ``num_rounds``, or a pointer that cannot be read is
    refused; a round folder whose files cannot be read is named, and the previous kept
    round is used instead if it is intact (``warn(message)`` is told so).

    Raises
    ------
    CheckpointError
        Naming the file at fault and what to do.
    """
    run_dir = Path(run_dir)
    pointer = run_dir / POINTER
    folders = sorted((p for p in (run_dir / FOLDER).glob("round-*") if p.is_dir()), reverse=True)
    if not pointer.exists():
        if folders:
            # Starting over would silently throw the finished rounds away.
            raise CheckpointError(
                f"{pointer} is missing, but {run_dir / FOLDER} holds {', '.join(p.name for p in folders)}: "
                f"refusing to start over. Restore {POINTER}, e.g. "
                f'{{"round": {_round_of(folders[0])}, "folder": "{FOLDER}/{folders[0].name}"}}, or start a new run'
            )
        return None
    try:
        info = json.loads(pointer.read_text())
        committed, folder = int(info["round"]), run_dir / str(info["folder"])
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise CheckpointError(f"{pointer} is damaged ({err}); it should read "
                              '{"round": N, "folder": "checkpoints/round-000N"}') from None
    if num_rounds is not None and committed > num_rounds:
        raise CheckpointError(
            f"{pointer} says round {committed} is finished, beyond num-server-rounds = {num_rounds}: "
            "this run is complete, or its config is not the one it ran with"
        )
    candidates = [folder] + [p for p in folders if _round_of(p) < committed]
    problems = []
    for candidate in candidates:
        try:
            checkpoint = _load(candidate)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        if problems and warn is not None:
            warn(f"{problems[-1]}; continuing from the kept checkpoint of round {checkpoint.round} instead")
        return checkpoint
    raise CheckpointError("no intact checkpoint to continue from: " + "; ".join(problems))


def _round_of(folder: Path) -> int:
    return int(folder.name.removeprefix("round-"))


def _load(folder: Path) -> Checkpoint:
    """Load one round folder, naming the file that cannot be read."""
    def attempt(name, loader):
        path = folder / name
        try:
            return loader(path)
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error type
            raise CheckpointError(f"{path} cannot be read ({type(err).__name__}: {err})") from None

    def read_state(path: Path) -> dict[str, Any]:
        state = json.loads(path.read_text())
        return {"round": int(state["round"]), "counters": dict(state["counters"]),
                "python_random": list(state["python_random"])}

    state = attempt("state.json", read_state)
    return Checkpoint(
        round=state["round"],
        shared=attempt("shared.safetensors", lambda p: load_file(str(p))),
        strategy_state=attempt("strategy.safetensors", lambda p: load_file(str(p))),
        counters={**state["counters"], "python_random": state["python_random"]},
    )


def restore_random(checkpoint: Checkpoint) -> None:
    """Restore Python's RNG (Flower samples clients with it) as it was after the round."""
    random.setstate(_random_state_from_json(checkpoint.counters["python_random"]))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``. A last line cut short (a crash during the append, before
    its round was committed) is dropped; a damaged line before it is refused.

    Raises
    ------
    CheckpointError
        Naming the file and the line.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
    rows = []
    for i, (number, line) in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("round"), int):
                raise ValueError("a row must be an object with an integer 'round'")
        except ValueError as err:
            if i == len(lines) - 1:
                break
            raise CheckpointError(f"{path}, line {number} is damaged ({err}); the finished rounds cannot be "
                                  "trusted: repair or remove that line, or start a new run") from None
        rows.append(row)
    return rows


def truncate_metrics(run_dir: Path, last_round: int) -> list[dict[str, Any]]:
    """Drop rows of rounds after ``last_round`` from ``metrics.jsonl``; return the rest."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    kept = [r for r in read_metrics(run_dir) if r["round"] <= last_round]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    tmp.replace(path)
    return kept
