"""Launch a simulation through Flower's own tools, and check that it really succeeded.

``pfl-app run`` is a thin driver around ``flower-superlink`` and ``flwr``:

1. merge the scenario file and command-line overrides with the defaults, and validate
   them (a bad value fails here, before anything starts);
2. convert the embedded model once, so that Ray workers do not race to do it;
3. start a private SuperLink (``--simulation``) on a free loopback port with its own
   ``FLWR_HOME``, from a neutral working directory (with ``ray_address``, its Ray backend
   joins that existing cluster instead of starting a local one);
4. ``flwr run`` the app, stream its log (the per-round progress lines), and read the
   run's final status with ``flwr ls``: ``flwr run --stream`` exits 0 even when the
   ServerApp crashes, so the status is the only honest answer;
5. stop the SuperLink and print the summary.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import tomli_w

from .config import ConfigError, parse_run_config, resume_differences, validate_flat
from .methods import method_label
from .process_guard import TOKEN_VAR, Guard, new_token, stop_token_processes
from .runlock import LAUNCHER_LOCK, SERVERAPP_LOCK, RunFolderLocked, RunLock, check_unlocked

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    # Without this the SuperLink `uv sync`s every dependency (torch included) per run.
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}
FEDERATION_FILE = "federation.json"
FEDERATION_KEYS = ("num-supernodes", "client-resources-num-cpus", "client-resources-num-gpus")
CONNECTION = "pfl-sim"
# Library chatter that a Ray worker prints once per actor; hidden unless --verbose.
_NOISE = ("Warning", "warnings.warn", "super().__init__(loader)")


class LaunchError(RuntimeError):
    """The simulation could not be started, or did not finish successfully."""


@dataclass
class Scenario:
    """A simulation: how many clients and with what resources, and the run config."""

    federation: dict[str, int] = field(default_factory=lambda: {"num-supernodes": 2})
    run_config: dict[str, Any] = field(default_factory=dict)


def load_scenario(path: str | Path | None) -> Scenario:
    """Read a scenario TOML: a ``[federation]`` table and a ``[run-config]`` table.

    Raises ``ConfigError`` naming the table or key at fault.
    """
    if path is None:
        return Scenario()
    path = Path(path)
    raw = read_toml(path, "scenario file")
    unknown = sorted(set(raw) - {"federation", "run-config"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {unknown}; allowed: [federation], [run-config]")
    fed = check_federation(raw.get("federation", {}), str(path))
    return Scenario(fed, _flatten(_table(raw, "run-config", path)))


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Read a TOML file, or raise ``ConfigError`` naming it (and the line of a syntax error)."""
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a file (a TOML file is expected)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{what} {path} is not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read: {err.strerror}") from None


def _table(raw: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{name}] must be a table of keys, got {type(value).__name__} {value!r}")
    return value


def check_federation(table: Any, where: str) -> dict[str, int]:
    """Check a ``[federation]`` table (of a scenario or a grid file) and return it with its
    defaults filled in.

    Raises ``ConfigError`` naming ``where``, the key and what it allows.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [federation] must be a table of {', '.join(FEDERATION_KEYS)}")
    bad = sorted(set(table) - set(FEDERATION_KEYS))
    if bad:
        raise ConfigError(f"{where}: unknown [federation] key(s) {bad}; allowed: {', '.join(FEDERATION_KEYS)}")
    for key, value in table.items():
        least = 1 if key == "num-supernodes" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}: [federation] {key} must be a whole number >= {least}, got {value!r}")
    return {"num-supernodes": 2, **table}


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables to Flower's dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse ``["k=v k2=v2", ...]`` where each value is TOML (``'text'``, ``3``, ``true``)."""
    out: dict[str, Any] = {}
    for item in items:
        for pair in _split_pairs(item):
            key, sep, value = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"override {pair!r} is not of the form key=value")
            try:
                parsed = tomllib.loads(f"v = {value.strip()}")["v"]
            except tomllib.TOMLDecodeError:
                parsed = value.strip()  # a bare word: take it as a string
            if key in out:
                # Which one wins would be a guess about the user's intent.
                raise ConfigError(f"run-config key '{key}' is given twice in the overrides "
                                  f"({out[key]!r} and {parsed!r}); give it once")
            out[key] = parsed
    return out


def _split_pairs(text: str) -> list[str]:
    # Split on spaces that are outside quotes.
    pairs, current, quote = [], "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if current:
                pairs.append(current)
            current = ""
            continue
        current += ch
    if current:
        pairs.append(current)
    return pairs


def resume_scenario(run_dir: str | Path) -> tuple[Scenario, dict[str, Any]]:
    """The scenario and overrides that continue the run in ``run_dir`` after a crash: its
    own federation and run config, plus ``resume-from``."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise ConfigError(f"--resume-from {run_dir}: no such folder")
    config = run_dir / "config.json"
    if not config.exists():
        raise ConfigError(f"--resume-from {run_dir}: no config.json there; is it a run folder?")
    saved = read_json(config, "--resume-from")
    flat = saved.get("run_config") if isinstance(saved, dict) else None
    if not isinstance(flat, dict):
        raise ConfigError(f"--resume-from: {config} holds no 'run_config' table; it is not a run's config.json")
    fed_file = run_dir / FEDERATION_FILE
    federation = {"num-supernodes": 2}
    if fed_file.exists():
        federation = check_federation(read_json(fed_file, "--resume-from"), str(fed_file))
    return Scenario(federation, {}), {**flat, "resume-from": str(run_dir)}


def read_json(path: Path, what: str) -> Any:
    """Read a JSON file a run wrote, or raise ``ConfigError`` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what}: {path} is damaged (not valid JSON: {err}); restore it from a backup, "
                          "or start a new run") from None
    except OSError as err:
        raise ConfigError(f"{what}: {path} cannot be read: {err.strerror}") from None


def app_on_path(project_dir: Path) -> None:
    """Let the app's own modules import here, as Flower lets them in the ServerApp and the
    ClientApps: a method of the user's (``method = "my_methods:MyMethod"``) is checked and
    its pre-flight checks run in this process, before anything starts."""
    folder = str(Path(project_dir).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)


def app_run_config(project_dir: Path) -> dict[str, Any]:
    """The run config the app's ``pyproject.toml`` declares (``[tool.flwr.app.config]``, flat):
    what ``flwr run`` runs with before overrides. A user's app may set other values there
    than pfl-app's defaults (its own ``method``); no ``pyproject.toml``: nothing."""
    path = Path(project_dir) / "pyproject.toml"
    if not path.is_file():
        return {}
    table = read_toml(path, "the app's")
    return _flatten(table.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {}))


def resolve_run_config(scenario: Scenario, overrides: dict[str, Any], project_dir: Path) -> dict[str, Any]:
    """Merge the app's own config, the scenario and the overrides, validate, and pin
    ``run-name`` and an absolute ``results-dir`` so that the launcher knows where the
    results will be."""
    app_on_path(project_dir)
    flat = validate_flat({**app_run_config(project_dir), **scenario.run_config, **overrides})
    results = Path(flat["results-dir"]).expanduser()
    results = results if results.is_absolute() else (project_dir / results).resolve()
    if results.exists() and not results.is_dir():
        raise ConfigError(f"run-config key 'results-dir' = {str(results)!r} is a file; a folder is expected")
    flat["results-dir"] = str(results)
    if not flat["run-name"]:
        flat["run-name"] = f"{method_label(flat['method'])}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    parse_run_config(flat)  # the typed checks too
    return flat


def simulation_device(scenario: Scenario) -> str:
    """The device type a simulation's clients train on when they run on this machine: a GPU
    only when the scenario gives each client a share of one (``client-resources-num-gpus``;
    Ray hides the GPUs from an actor that asked for none), else the CPU."""
    from .precision import training_device

    return training_device() if scenario.federation.get("client-resources-num-gpus", 0) > 0 else "cpu"


def check_run(scenario: Scenario, flat: dict[str, Any], clients_here: bool = True) -> None:
    """The pre-flight checks (:mod:`pfl_app.preflight`) for this scenario's federation:
    the model, every client's data, the minimums against the number of clients, and, when
    the clients train on this machine (``clients_here``: not on a Ray cluster elsewhere),
    that they can run ``train.precision``."""
    from .preflight import preflight  # loads datasets and tokenizers: only when asked

    preflight(parse_run_config(flat), scenario.federation["num-supernodes"],
              training_device=simulation_device(scenario) if clients_here else None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Wait until something listens on 127.0.0.1:``port``.

    Raises :class:`LaunchError` as soon as ``process`` (the one that should open the port)
    has exited, and ``TimeoutError`` after ``timeout`` seconds.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process is not None and process.poll() is not None:
            raise LaunchError(f"{process.args[0]} exited with code {process.returncode} before listening on "
                              f"port {port}; see its log")
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:g} s")


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Raise ``LaunchError`` if nothing listens at a ``HOST:PORT`` Ray address: Ray retries an
    unreachable cluster without end, and the run would hang. Other forms (``auto``,
    ``ray://...``) are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or "/" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise LaunchError(f"cannot reach the Ray cluster at {address} ({err}); "
                          "is `ray start --head` running there?") from err


def _bin(name: str) -> str:
    # Prefer the tool next to this interpreter (the project's venv), then PATH.
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise LaunchError(f"cannot find the `{name}` command; is flwr[simulation] installed?")
    return found


def flower_env(flwr_home: Path, project_dir: Path) -> dict[str, str]:
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(flwr_home), "PFL_APP_HOME": str(project_dir)}
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # The SuperLink starts flower-superexec (and Ray its workers) from PATH: put this
    # interpreter's folder first, so an un-activated venv works too.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal the process group ``proc`` leads (started with ``start_new_session``), then
    kill it if it has not exited within ``timeout`` seconds."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def private_superlink(project_dir: Path, ray_address: str | None = None,
                      token: str | None = None) -> Iterator[tuple[dict[str, str], Path]]:
    """Start a simulation SuperLink on a free port; yield ``(env, flwr_home)``.

    Parameters
    ----------
    project_dir
        The Flower app folder.
    ray_address
        ``HOST:PORT`` of an existing Ray cluster for the simulation's clients. ``None`` keeps
        the environment as it is: a local Ray instance, unless ``RAY_ADDRESS`` is set already.
    token
        Marks every process started from here (see :mod:`pfl_app.process_guard`), so that
        all of them can be found and stopped, in whatever session Ray puts them.
    """
    home = Path(tempfile.mkdtemp(prefix="pfl-flwr-home-"))
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = flower_env(home, project_dir)
    if token:
        env[TOKEN_VAR] = token
    if ray_address:
        # Flower's Ray backend calls ray.init() without an address, so Ray takes the
        # cluster from RAY_ADDRESS in flwr-simulation's environment, inherited from here.
        env["RAY_ADDRESS"] = ray_address
    log = open(home / "superlink.log", "wb")
    proc = subprocess.Popen(
        [_bin("flower-superlink"), "--insecure", "--simulation", "--port", str(port)],
        cwd=home,  # a neutral folder: Ray workers must import the app from the bundle
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        try:
            wait_for_port(port, 60.0, proc)
        except TimeoutError as err:
            raise LaunchError(f"the SuperLink did not open port {port} within 60 s") from err
        except LaunchError:
            # The folder is removed on the way out: put the log's end in the message.
            log.flush()
            tail = (home / "superlink.log").read_text(errors="replace").strip().splitlines()[-15:]
            raise LaunchError("the SuperLink exited at start:\n" + "\n".join(tail)) from None
        yield env, home
    finally:
        stop_process_group(proc)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def run_status(run_id: str, env: dict[str, str], connection: str = CONNECTION) -> dict[str, Any]:
    """The run's record from ``flwr ls --run-id`` (``status`` is e.g. ``finished:completed``)."""
    out = subprocess.run(
        [_bin("flwr"), "ls", connection, "--run-id", run_id, "--format", "json"],
        env=env, capture_output=True, text=True, check=False,
    )
    try:
        return json.loads(out.stdout)["runs"][0]
    except (json.JSONDecodeError, KeyError, IndexError) as err:
        raise LaunchError(f"cannot read the status of run {run_id}: {out.stdout}{out.stderr}") from err


def run_log(run_id: str, env: dict[str, str], connection: str = CONNECTION, tail: int = 6000) -> str:
    """The last ``tail`` characters of the run's ServerApp log (``flwr log --show``).

    Deployment tests print this when a run fails, since the ServerApp runs in a process
    the test does not own.
    """
    out = subprocess.run(
        [_bin("flwr"), "log", run_id, connection, "--show"],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )
    return (out.stdout + out.stderr)[-tail:]


def submit_run(project_dir: Path, connection: str, flat: dict[str, Any], env: dict[str, str],
               federation: dict[str, int] | None = None) -> str:
    """``flwr run`` the app on ``connection`` with ``flat`` as its run config; return the run id.

    The overrides go through a TOML file in ``$FLWR_HOME``, so values of any type survive.
    """
    overrides = Path(env["FLWR_HOME"]) / "run-config.toml"
    overrides.write_text(tomli_w.dumps(_unflatten(flat)))
    cmd = [_bin("flwr"), "run", str(project_dir), connection, "--run-config", str(overrides), "--format", "json"]
    if federation:
        cmd += ["--federation-config", " ".join(f"{k}={v}" for k, v in federation.items())]
    submitted = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    try:
        reply = json.loads(submitted.stdout)
    except json.JSONDecodeError as err:
        raise LaunchError(f"flwr run failed: {submitted.stdout}{submitted.stderr}") from err
    if not reply.get("success"):
        raise LaunchError(f"flwr run failed: {reply.get('error-message', reply)}")
    return str(reply["run-id"])


def submit_and_follow(
    project_dir: Path, flat: dict[str, Any], federation: dict[str, int], env: dict[str, str],
    echo=print, verbose: bool = False,
) -> dict[str, Any]:
    """``flwr run`` the app on the private SuperLink, stream its log, return its status record."""
    run_id = submit_run(project_dir, CONNECTION, flat, env, federation)
    fed = " ".join(f"{k}={v}" for k, v in federation.items())
    echo(f"run {run_id} submitted ({fed})")
    follower = subprocess.Popen(
        [_bin("flwr"), "log", run_id, CONNECTION, "--stream"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
    )
    try:
        assert follower.stdout is not None
        for line in follower.stdout:
            if verbose or not any(n in line for n in _NOISE):
                echo(line.rstrip("\n"))
    finally:
        # Not Popen's context manager: on an interrupt it would wait for a stream that
        # ends only when the SuperLink, stopped after this, is gone.
        if follower.poll() is None:
            follower.kill()
        follower.wait()
        follower.stdout.close()
    # The log stream ends when the run ends; the status may lag by a moment.
    for _ in range(50):
        status = run_status(run_id, env)
        if str(status.get("status", "")).startswith("finished"):
            return status
        time.sleep(0.2)
    return status


def prepare_model(flat: dict[str, Any]) -> None:
    """Convert the embedded model before the clients start (it takes ~20 s once)."""
    from .models.loading import EMBEDDED_MODELS, TINY_MODELS, TINY_TOKENIZER_FROM
    from .models.loading import embedded_model_dir, embedded_tokenizer_dir

    name, cache = flat["model.name"], flat["model.cache-dir"]
    if name in EMBEDDED_MODELS:
        embedded_model_dir(name, cache)
    elif name in TINY_MODELS:
        embedded_tokenizer_dir(TINY_TOKENIZER_FROM, cache)


def launch(
    project_dir: Path, scenario: Scenario, overrides: dict[str, Any], echo=print, verbose: bool = False,
    ray_address: str | None = None,
) -> tuple[dict[str, Any], Path]:
    """Run one simulation to completion.

    Parameters
    ----------
    ray_address
        ``HOST:PORT`` of an existing Ray cluster (``ray start --head``) to run the clients on;
        ``None`` starts a local Ray instance (or uses ``RAY_ADDRESS`` if it is set).

    Returns
    -------
    tuple
        The run's status record and its results folder.

    Raises
    ------
    ConfigError
        On a bad scenario or config value, before anything starts.
    LaunchError
        If the run could not start or did not finish as ``finished:completed``.
    """
    project_dir = project_dir.resolve()
    flat = resolve_run_config(scenario, overrides, project_dir)
    run_dir = Path(flat["results-dir"]) / flat["run-name"]
    if flat["resume-from"]:
        run_dir = Path(flat["resume-from"]).expanduser().resolve()
        check_resume(run_dir, flat)
    elif (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"{run_dir} already holds a run; pick another run-name, or resume it")
    echo("checking the model and the data ...")
    # Clients on a Ray cluster elsewhere check train.precision on their own hardware.
    check_run(scenario, flat, clients_here=not ray_address)
    if ray_address:
        check_ray_address(ray_address)
    made = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"run-config key 'results-dir': cannot make the run folder {run_dir}: "
                          f"{err.strerror}") from None
    try:
        lock = RunLock(run_dir, LAUNCHER_LOCK, "pfl-app run")
        check_unlocked(run_dir, (SERVERAPP_LOCK,))  # an orphaned ServerApp of an earlier launch
    except RunFolderLocked as err:
        if made:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise ConfigError(str(err)) from None
    token = new_token()
    guard = Guard(token, keep_fds=(lock.fd,))
    try:
        with signals_raise():
            if not flat["resume-from"]:
                # What a resumption needs besides the run config: the federation it ran on.
                (run_dir / FEDERATION_FILE).write_text(json.dumps(scenario.federation))
            echo(f"preparing model {flat['model.name']} ...")
            prepare_model(flat)
            if ray_address:
                echo(f"clients run on the Ray cluster at {ray_address}")
            with private_superlink(project_dir, ray_address, token) as (env, _home):
                status = submit_and_follow(project_dir, flat, scenario.federation, env, echo, verbose)
    finally:
        # Whatever ended the launch: no process of it outlives it.
        stop_token_processes(token)
        guard.release()
        lock.release()
    if status.get("status") != "finished:completed":
        raise LaunchError(
            f"run {status.get('run-id')} ended as {status.get('status')!r} "
            f"({status.get('status-details', '')}); see the log above. The run folder {run_dir} keeps "
            "every finished round"
        )
    return status, run_dir


class Interrupted(LaunchError):
    """The launcher was asked to stop (SIGINT, SIGTERM or SIGHUP) and stopped its run."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Interrupted`, so that the ``finally``
    blocks that stop the run's processes run for them as for any error."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def raise_interrupted(signum, _frame):
        raise Interrupted(signum)

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, raise_interrupted) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_resume(run_dir: Path, flat: dict[str, Any]) -> None:
    """Check, before anything starts, that ``run_dir`` can be continued with ``flat``: its
    config matches, and its checkpoints can be trusted (:func:`pfl_app.checkpoint.read`).

    Raises ``ConfigError`` naming the keys or the file at fault.
    """
    from .checkpoint import CheckpointError, read, read_metrics

    saved = read_json(run_dir / "config.json", "--resume-from")
    saved = saved.get("run_config") if isinstance(saved, dict) else None
    if not isinstance(saved, dict):
        raise ConfigError(f"--resume-from: {run_dir / 'config.json'} holds no run config")
    differ = resume_differences(saved, flat)
    if differ:
        raise ConfigError(f"--resume-from {run_dir}: the run config differs from the run's in {differ} "
                          f"({', '.join(f'{k}: {saved.get(k)!r} -> {flat.get(k)!r}' for k in differ)}); "
                          "a run continues with its own config")
    if (run_dir / "summary.json").exists() and not (run_dir / "checkpoint.json").exists():
        raise ConfigError(f"--resume-from {run_dir}: the run has a summary.json but no checkpoint.json; "
                          "nothing can be continued from it")
    try:
        read(run_dir, int(flat["num-server-rounds"]))
        read_metrics(run_dir)
    except CheckpointError as err:
        raise ConfigError(f"--resume-from: {err}") from None
