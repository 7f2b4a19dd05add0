"""A client's own tensors: kept on disk, under the run folder, and nowhere else.

Each message reads the client's tensors from its folder and the train handler writes them
back. Nothing is kept in Flower's ``context.state``: in simulation the SuperLink holds every
node's Context for the whole run (and ships it to the Ray actor and back with each message),
so tensors kept there would grow the simulation's memory with the number of clients, sampled
or not. On disk, a client that is not sampled costs no memory; the copy survives a SuperNode
restart; and the LoRA saved there with peft's ``save_pretrained`` is what a user loads
afterwards with ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

LOCAL_TENSORS = "local_tensors"
STATE_FILE = "local_tensors.safetensors"
#: In the node's context: the round of a client's last save (per kept set), for the check in load.
SAVED_ROUND_KEY = "pfl.saved-round"
LORA_DIR = "lora"


def client_dir(run_dir: str | Path, client_id: int, state_dir: str | None = None) -> Path:
    """The per-client folder of a run: under the run folder the server names, or, when the
    node sets ``state-dir`` in its node config (a device whose disk is not the server's),
    under ``<state-dir>/<run name>/``."""
    base = Path(state_dir) / Path(run_dir).name if state_dir else Path(run_dir)
    return base / "clients" / f"client-{client_id:03d}"


def saved_round(path: str | Path) -> int:
    """The round a state file written by :meth:`ClientState.save` ends (0 if unrecorded)."""
    with safe_open(str(path), framework="numpy") as fh:
        return int((fh.metadata() or {}).get("round", 0))


def saved_tensors(
    directory: str | Path, name: str = LOCAL_TENSORS, up_to_round: int = 1 << 30
) -> tuple[int, dict[str, np.ndarray]] | None:
    """The newest tensors :meth:`ClientState.save` wrote to ``directory`` at or before
    ``up_to_round``, read from disk alone.

    Parameters
    ----------
    directory : str or Path
        A client's folder (see :func:`client_dir`).
    name : str
        What was kept (the client's own model tensors by default).
    up_to_round : int
        The last round whose state may be returned.

    Returns
    -------
    tuple or None
        ``(the round the state ends, its tensors)``, or ``None`` when no such state was saved.
    """
    directory = Path(directory)
    for file in (f"{name}.safetensors", f"{name}.previous.safetensors"):
        path = directory / file
        if path.exists() and (found := saved_round(path)) <= up_to_round:
            return found, load_file(str(path))
    return None


def saved_client_ids(run_dir: str | Path, state_dir: str | None = None) -> list[int]:
    """The ids of the clients that saved their own tensors for the run in ``run_dir``
    (under ``state_dir``, if their nodes kept their state there)."""
    folders = client_dir(run_dir, 0, state_dir).parent
    if not folders.is_dir():
        return []
    ids = []
    for folder in folders.glob("client-*"):
        suffix = folder.name.removeprefix("client-")
        if suffix.isdigit() and (folder / f"{LOCAL_TENSORS}.safetensors").exists():
            ids.append(int(suffix))
    return sorted(ids)


class ClientState:
    """Load and save the tensors a client keeps to itself, by round, on disk alone.

    Each save records the round it ends. The disk keeps the newest version and the one
    before it, so a client asked for "its state as of round r" (see :meth:`load`) finds it
    even when a crash came after it had already trained round r + 1: that is what lets a
    resumed run redo round r + 1 from the same starting point. Every file is written under
    a temporary name and renamed, so a crash mid-save leaves the previous copy intact.

    Parameters
    ----------
    directory : Path
        The client's folder on disk (see :func:`client_dir`).
    name : str
        What is kept: the client's own model tensors (the default), or another set of
        tensors versioned by round alike (an RLHF client's optimizer state); it names the
        files.
    context : flwr.app.Context, optional
        The node's context. Only the round of the last save is noted in it (a few bytes, not
        the tensors), so that a node whose last save cannot be read back fails loudly
        instead of starting over from the initial values: on a Ray cluster of several
        machines a client may run on another machine than in its last round, and finds its
        state only if the results folder is on a filesystem they share.
    """

    def __init__(self, directory: Path, name: str = LOCAL_TENSORS, context: Context | None = None) -> None:
        self.directory = Path(directory)
        self.name = name
        self.file, self.previous_file = f"{name}.safetensors", f"{name}.previous.safetensors"
        self.context = context
        self._key = f"{SAVED_ROUND_KEY}.{name}"

    def load(self, up_to_round: int = 1 << 30) -> dict[str, np.ndarray] | None:
        """The newest kept tensors saved at or before ``up_to_round``, read from disk;
        ``None`` if there are none (before the client's first round).

        Raises
        ------
        FileNotFoundError
            When the node's context says this client saved a newer state (at or before
            ``up_to_round``) than the disk holds here.
        """
        found = saved_tensors(self.directory, self.name, up_to_round)
        noted = self.context.state.config_records.get(self._key) if self.context is not None else None
        if noted is not None and int(noted["round"]) <= up_to_round and (found is None or found[0] < int(noted["round"])):
            raise FileNotFoundError(
                f"this client saved its {self.name} of round {int(noted['round'])} to {noted['directory']}, but "
                f"{self.directory} on this machine does not hold it: on a Ray cluster of several machines, put "
                "the run-config 'results-dir' on a filesystem every node shares (see docs/deployment.md)")
        return None if found is None else found[1]

    def save(self, tensors: dict[str, np.ndarray], server_round: int, peft_model=None) -> None:
        """Keep ``tensors`` as the state at the end of ``server_round``, on disk; with
        ``peft_model``, also save its LoRA in peft's format. Every file is written under a
        temporary name and renamed, so a crash leaves the previous copy intact."""
        self.directory.mkdir(parents=True, exist_ok=True)
        current = self.directory / self.file
        tmp = self.directory / (self.file + ".tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                  metadata={"round": str(server_round)})
        # Redoing a round must not lose the one before.
        if current.exists() and saved_round(current) < server_round:
            current.replace(self.directory / self.previous_file)
        tmp.replace(current)
        if self.context is not None:
            self.context.state[self._key] = ConfigRecord({"round": int(server_round), "directory": str(self.directory)})
        if peft_model is not None:
            staging = self.directory / (LORA_DIR + ".tmp")
            if staging.exists():
                shutil.rmtree(staging)
            peft_model.save_pretrained(str(staging))
            final, old = self.directory / LORA_DIR, self.directory / (LORA_DIR + ".old")
            if final.exists():
                final.rename(old)
            staging.rename(final)
            shutil.rmtree(old, ignore_errors=True)
