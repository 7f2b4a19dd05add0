"""A client's own tensors: kept in Flower's ``context.state`` and on disk.

``context.state`` survives between rounds for as long as the node's process lives (in
simulation, and in a running SuperNode). The disk copy under the run folder survives a
SuperNode restart, and the LoRA saved there with peft's ``save_pretrained`` is what a
user loads afterwards with ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import Context
from safetensors.numpy import load_file, save_file

from ..records import from_arrayrecord, to_arrayrecord

STATE_KEY = "pfl.local-tensors"
STATE_FILE = "local_tensors.safetensors"
LORA_DIR = "lora"


def client_dir(run_dir: str | Path, client_id: int) -> Path:
    """The per-client folder of a run."""
    return Path(run_dir) / "clients" / f"client-{client_id:03d}"


class ClientState:
    """Load and save the tensors a client keeps to itself.

    Parameters
    ----------
    context : flwr.app.Context
        The node's context; its ``state`` RecordDict persists across rounds.
    directory : Path
        The client's folder on disk.
    """

    def __init__(self, context: Context, directory: Path) -> None:
        self.context = context
        self.directory = Path(directory)

    def load(self) -> dict[str, np.ndarray] | None:
        """The kept tensors, from memory, else from disk; ``None`` before the first round."""
        if STATE_KEY in self.context.state.array_records:
            return from_arrayrecord(self.context.state.array_records[STATE_KEY])
        path = self.directory / STATE_FILE
        if path.exists():
            tensors = load_file(str(path))
            # Put it back in memory so later rounds need not read the disk.
            self.context.state[STATE_KEY] = to_arrayrecord(tensors)
            return tensors
        return None

    def save(self, tensors: dict[str, np.ndarray], peft_model=None) -> None:
        """Keep ``tensors`` in memory and on disk; with ``peft_model``, also save its LoRA
        in peft's format (written to a temporary name, then renamed, so a crash leaves the
        previous copy intact)."""
        self.context.state[STATE_KEY] = to_arrayrecord(tensors)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / (STATE_FILE + ".tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp))
        tmp.replace(self.directory / STATE_FILE)
        if peft_model is not None:
            staging = self.directory / (LORA_DIR + ".tmp")
            peft_model.save_pretrained(str(staging))
            final = self.directory / LORA_DIR
            if final.exists():
                old = self.directory / (LORA_DIR + ".old")
                final.rename(old)
                staging.rename(final)
                for f in old.iterdir():
                    f.unlink()
                old.rmdir()
            else:
                staging.rename(final)
