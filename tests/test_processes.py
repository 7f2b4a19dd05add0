"""`pfl-app run` owns every process it starts: whatever kills it, or one of its processes,
nothing of the run is left behind, and its run folder is locked while it writes."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from pfl_app.process_guard import TOKEN_VAR, Guard, new_token, processes_with_token
from pfl_app.runlock import LAUNCHER_LOCK, RunFolderLocked, RunLock, check_unlocked

from .helpers import TINY

# --- the mechanisms, without Flower ------------------------------------------------

_FAKE_LAUNCHER = """
import os, subprocess, sys, time
from pfl_app.process_guard import Guard
token = sys.argv[1]
guard = Guard(token)
# A grandchild in a session of its own, as Ray's processes are: no process group holds it.
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                 env={**os.environ, "PFL_APP_RUN_TOKEN": token}, start_new_session=True)
print("ready", flush=True)
time.sleep(600)
"""


def _wait_gone(token, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not processes_with_token(token):
            return True
        time.sleep(0.2)
    return False


def _wait_unlocked(run_dir, timeout=10.0):
    """The guard lets the folder go once it has stopped the run's processes and exited."""
    deadline = time.time() + timeout
    while True:
        try:
            return check_unlocked(run_dir)
        except RunFolderLocked:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_the_guard_stops_the_processes_of_a_launcher_killed_with_sigkill():
    token = new_token()
    launcher = subprocess.Popen([sys.executable, "-c", _FAKE_LAUNCHER, token], stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout.readline().strip() == "ready"
        assert len(processes_with_token(token)) == 1  # the grandchild, not the guard
        launcher.kill()
        launcher.wait()
        assert _wait_gone(token), [p.cmdline() for p in processes_with_token(token)]
    finally:
        for proc in processes_with_token(token):
            proc.kill()


# A process of the run that, stopped, leaves a helper behind which starts another process of
# the run a moment later (as a Ray process stopped while it starts its agents can).
_LATE_STARTER = """
import os, signal, subprocess, sys, time
token = sys.argv[1]
def stopped(*_):
    env = {k: v for k, v in os.environ.items() if k != "PFL_APP_RUN_TOKEN"}
    later = "import os, subprocess, sys, time; time.sleep(0.4); subprocess.Popen([sys.executable, '-c', " \\
            "'import time; time.sleep(600)'], env={**os.environ, 'PFL_APP_RUN_TOKEN': sys.argv[1]}, " \\
            "start_new_session=True)"
    subprocess.Popen([sys.executable, "-c", later, token], env=env, start_new_session=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stopped)
print("ready", flush=True)
time.sleep(600)
"""


def test_stopping_a_run_also_stops_what_its_processes_start_as_they_stop():
    from pfl_app.process_guard import stop_token_processes

    token = new_token()
    starter = subprocess.Popen([sys.executable, "-c", _LATE_STARTER, token], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, TOKEN_VAR: token}, start_new_session=True)
    try:
        assert starter.stdout.readline().strip() == "ready"
        stop_token_processes(token, grace_s=5.0)
        starter.wait(timeout=10)
        time.sleep(1.5)  # past the late start
        assert processes_with_token(token) == [], [p.cmdline() for p in processes_with_token(token)]
    finally:
        for proc in processes_with_token(token):
            proc.kill()


def test_a_guard_told_done_leaves_everything_alone():
    token = new_token()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                               env={**os.environ, TOKEN_VAR: token}, start_new_session=True)
    try:
        guard = Guard(token)
        guard.release()
        assert guard.proc.returncode == 0
        time.sleep(0.5)
        assert [p.pid for p in processes_with_token(token)] == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_run_folder_lock_names_its_holder_and_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom pfl_app.runlock import RunLock\n"
        f"lock = RunLock({str(tmp_path)!r}, 'run.lock', 'a test holder')\nprint('held', flush=True)\ntime.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderLocked, match=rf"pid {holder.pid} on .*a test holder"):
            RunLock(tmp_path, LAUNCHER_LOCK)
        with pytest.raises(RunFolderLocked):
            check_unlocked(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    check_unlocked(tmp_path)  # the kernel dropped the lock with its holder
    RunLock(tmp_path, LAUNCHER_LOCK).release()


# --- real runs ------------------------------------------------------------------------

def _start_run(tmp_path, project_dir, rounds=3):
    scenario = tmp_path / "scenario.toml"
    config = {**TINY, "num-server-rounds": rounds, "data.partitioner": "iid", "results-dir": str(tmp_path / "results"),
              "run-name": "run"}
    scenario.write_text("[federation]\nnum-supernodes = 2\nclient-resources-num-cpus = 1\n[run-config]\n"
                        + "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in config.items()))
    log = open(tmp_path / "launcher.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pfl_app", "run", "--app-dir", str(project_dir), "--scenario",
                             str(scenario)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, tmp_path / "results" / "run"


def _token_of(launcher):
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            token = child.environ().get(TOKEN_VAR)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if token:
            return token
    return None


def _wait_for_clients(launcher, timeout=300.0):
    """The run's token once its Ray actors (the clients) are up: the run is mid-round."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert launcher.poll() is None, "the launcher ended before its clients started"
        token = _token_of(launcher)
        if token and _actors(token):
            return token
        time.sleep(0.5)
    pytest.fail("the clients never started")


def _actors(token):
    found = []
    for proc in processes_with_token(token):
        try:
            if "ClientAppActor" in proc.name() or "ClientAppActor" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def _cleanup(launcher, token):
    if launcher.poll() is None:
        os.killpg(launcher.pid, signal.SIGKILL)
    if token:
        for proc in processes_with_token(token):
            proc.kill()


@pytest.mark.simulation
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_no_process_outlives_a_launcher_stopped_by(sig, tmp_path, project_dir):
    launcher, run_dir = _start_run(tmp_path, project_dir)
    token = None
    try:
        token = _wait_for_clients(launcher)
        assert len(processes_with_token(token)) >= 4  # SuperLink, flwr-simulation, Ray, its actors
        os.kill(launcher.pid, sig)
        launcher.wait(timeout=60)
        # SIGKILL: nothing ran in the launcher; its guard noticed and stopped the rest.
        assert _wait_gone(token, timeout=30), [p.cmdline()[:2] for p in processes_with_token(token)]
        _wait_unlocked(run_dir)  # nobody holds the folder any more
        output = (tmp_path / "launcher.log").read_text()
        if sig == signal.SIGKILL:
            assert launcher.returncode == -signal.SIGKILL
        else:
            assert launcher.returncode == 128 + sig, output[-2000:]
            assert "interrupted: stopped by " + sig.name in " ".join(output.split())
            assert "Traceback" not in output
    finally:
        _cleanup(launcher, token)


@pytest.mark.simulation
def test_a_server_app_killed_hard_fails_the_run_and_leaves_nothing(tmp_path, project_dir):
    launcher, run_dir = _start_run(tmp_path, project_dir)
    token = None
    try:
        token = _wait_for_clients(launcher)
        server = [p for p in processes_with_token(token) if "flwr-simulation" in " ".join(p.cmdline())]
        assert len(server) == 1
        server[0].kill()
        assert launcher.wait(timeout=300) == 1
        assert _wait_gone(token, timeout=30)
        output = " ".join((tmp_path / "launcher.log").read_text().split())
        assert "run failed:" in output and "finished:failed" in output and str(run_dir) in output
        _wait_unlocked(run_dir)
    finally:
        _cleanup(launcher, token)


@pytest.mark.simulation
def test_a_client_killed_hard_mid_round_is_left_out_and_the_run_completes(tmp_path, project_dir):
    launcher, run_dir = _start_run(tmp_path, project_dir, rounds=2)
    token = None
    try:
        token = _wait_for_clients(launcher)
        victim = _actors(token)[0]
        victim.kill()
        assert launcher.wait(timeout=600) == 0, (tmp_path / "launcher.log").read_text()[-3000:]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["rounds_completed"] == 2 and "stopped_early" not in summary
        assert summary["client_failures"] >= 1  # the killed client's message came back as an error
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert any(r["status"] == "error" and "died" in r.get("error", "") for r in rows)
        assert any(r["status"] == "ok" for r in rows if r["round"] == 2)
        assert _wait_gone(token, timeout=30)
    finally:
        _cleanup(launcher, token)
