"""A run folder is written by one run at a time.

Two locks, both ``fcntl.flock`` on a file in the run folder, so the kernel releases them when
their holder dies, however it dies:

- ``run.lock``: held by ``pfl-app run`` (and, after it, by its guard process, until the
  orphans of a killed launcher are gone: see :mod:`pfl_app.process_guard`);
- ``serverapp.lock``: held by the ServerApp while it writes the folder, also when the run was
  submitted with plain ``flwr run``.

A run or a resume that finds either held is refused, naming the pid that holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LAUNCHER_LOCK = "run.lock"
SERVERAPP_LOCK = "serverapp.lock"


class RunFolderLocked(RuntimeError):
    """Another process is writing this run folder."""


class RunLock:
    """An exclusive lock on ``run_dir / name``, taken at construction.

    Raises
    ------
    RunFolderLocked
        Naming the folder and the pid (and host) that holds the lock.
    """

    def __init__(self, run_dir: Path, name: str, what: str = "") -> None:
        self.path = Path(run_dir) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunFolderLocked(
                f"{self.path.parent} is being written by another run ({holder}); wait for it to end, "
                "or stop that process, before running or resuming in this folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing every descriptor of the open file drops the lock
            self.fd = -1


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, {info.get('what') or 'a run'} since {info['since']}"
    except (ValueError, KeyError, OSError):
        return "a process whose pid could not be read"


def check_unlocked(run_dir: Path, names: tuple[str, ...] = (LAUNCHER_LOCK, SERVERAPP_LOCK)) -> None:
    """Raise :class:`RunFolderLocked` if one of the locks ``names`` on ``run_dir`` is held."""
    for name in names:
        if (Path(run_dir) / name).exists():
            RunLock(run_dir, name).release()
