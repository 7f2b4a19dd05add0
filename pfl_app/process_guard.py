"""The launcher owns every process it starts, and they all end when it does.

The SuperLink starts ``flower-superexec`` and ``flwr-simulation``, which starts Ray, whose
processes put themselves in sessions of their own: no single process group holds them all.
What they do all share is their environment, inherited down the tree. So the launcher
marks its environment with a token (:data:`TOKEN_VAR`), and ending the run means ending
every process that carries the token.

A launcher killed with SIGKILL can clean up nothing itself. A small guard process
(``python -m pfl_app.process_guard``), started in its own session, waits on a pipe from the
launcher: when the pipe closes without the word ``done`` (the launcher died), the guard ends
the token's processes. The guard also holds the run folder's lock (it inherits the lock's
file descriptor), so the folder stays locked until the orphans are gone.

Nothing here is Flower-specific, and no library we use offers it: Flower's own
``flwr run`` leaves its SuperLink running by design, and Ray's cleanup covers Ray alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psutil

TOKEN_VAR = "PFL_APP_RUN_TOKEN"
_DONE = b"done\n"


def new_token() -> str:
    return uuid.uuid4().hex


def processes_with_token(token: str) -> list[psutil.Process]:
    """Every process of this user whose environment carries ``token``, except this one."""
    mine = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == mine:
            continue
        try:
            if proc.environ().get(TOKEN_VAR) == token:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def stop_token_processes(token: str, grace_s: float = 5.0, settle_s: float = 1.0) -> int:
    """SIGTERM every process carrying ``token``, SIGKILL those left after ``grace_s``
    seconds; return how many there were.

    Processes may start others while we stop them (Ray restarts workers), so the scan is
    repeated until none is left or a few passes are spent. A scan that finds none is taken
    as the end only after ``settle_s`` seconds and one more empty scan: a process stopped
    while it was starting others can leave them to appear a moment later (a run stopped
    while Ray was starting left its dashboard and runtime-env agents behind).
    """
    total = 0
    empty = 0
    for sig_pass in range(6):
        procs = processes_with_token(token)
        if not procs:
            empty += 1
            if empty == 2 or settle_s <= 0:
                break
            time.sleep(settle_s)
            continue
        empty = 0
        total += len(procs)
        for proc in procs:
            try:
                proc.terminate() if sig_pass == 0 else proc.kill()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace_s if sig_pass == 0 else 2.0)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
    return total


class Guard:
    """The guard process of one launch.

    Parameters
    ----------
    token
        The token the launch's processes carry.
    keep_fds
        File descriptors the guard inherits and holds until it exits (the run lock).
    """

    def __init__(self, token: str, keep_fds: tuple[int, ...] = ()) -> None:
        env = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}  # the guard must not stop itself
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pfl_app.process_guard", token],
            stdin=subprocess.PIPE, env=env, start_new_session=True, pass_fds=keep_fds,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def release(self) -> None:
        """The launch ended in order: tell the guard, which then exits without acting."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(_DONE)
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _guard(token: str) -> int:
    # Blocks until the launcher writes "done" or dies (the pipe's last writer closes).
    message = sys.stdin.buffer.read()
    if message == _DONE:
        return 0
    time.sleep(0.2)  # let the launcher's own half-finished cleanup, if any, go first
    stop_token_processes(token)
    return 0


if __name__ == "__main__":
    sys.exit(_guard(sys.argv[1]))
