"""Start Flower's deployment processes (SuperLink, SuperNodes) for this app.

Used by ``scripts/deploy/`` and the deployment tests. On one machine everything listens on
loopback; across devices, run :func:`superlink_command` on the server, with a ``host`` the
devices can reach, and :func:`supernode_command` on each device (see docs/deployment.md). Give
:class:`Processes` the environment of :func:`pfl_app.launch.flower_env`, as ``flwr run`` gets it here.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .launch import LaunchError, _bin, run_status, stop_process_group, submit_run


@dataclass(frozen=True)
class Tls:
    """Certificate files made by ``scripts/deploy/make-certs.sh``."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def superlink_command(port: int, *, host: str = "127.0.0.1", tls: Tls | None = None,
                      database: Path | None = None, node_auth: bool = False) -> list[str]:
    """``flower-superlink`` for deployment (no ``--simulation``): insecure only without TLS.

    Parameters
    ----------
    port
        The one port of its HTTP API: Fleet API (SuperNodes), Control API (``flwr``) and the
        ServerApp's runtime API.
    host
        The address it listens on (``--host``). The default keeps it to this machine; devices
        on other hosts need ``0.0.0.0`` (every interface) or the server's own address, and
        with ``tls`` a certificate whose subjectAltName holds the address they dial.
    tls
        Certificates from ``scripts/deploy/make-certs.sh``; ``None`` runs ``--insecure``.
    database
        SQLite file for its state (registered SuperNodes, runs); ``None`` keeps it in memory.
    node_auth
        Accept only SuperNodes registered with ``flwr supernode register``.
    """
    cmd = [_bin("flower-superlink"), "--host", host, "--port", str(port)]
    if tls is None:
        cmd.append("--insecure")
    else:
        cmd += ["--ssl-ca-certfile", str(tls.ca_cert), "--ssl-certfile", str(tls.server_cert),
                "--ssl-keyfile", str(tls.server_key)]
    if database is not None:
        cmd += ["--database", str(database)]
    if node_auth:
        cmd.append("--enable-supernode-auth")
    return cmd


def supernode_command(superlink: str, port: int, partition_id: int, num_partitions: int, *,
                      state_dir: Path | None = None, root_cert: Path | None = None,
                      auth_key: Path | None = None) -> list[str]:
    """``flower-supernode`` for client ``partition_id`` of ``num_partitions``."""
    node_config = f"partition-id={partition_id} num-partitions={num_partitions}"
    if state_dir is not None:
        node_config += f' state-dir="{state_dir}"'
    cmd = [_bin("flower-supernode"), "--superlink", superlink, "--port", str(port), "--node-config", node_config]
    cmd += ["--insecure"] if root_cert is None else ["--root-certificates", str(root_cert)]
    if auth_key is not None:
        cmd += ["--auth-supernode-private-key", str(auth_key)]
    return cmd


def write_connection(flwr_home: Path, name: str, address: str, root_cert: Path | None = None) -> None:
    """Add a ``[superlink.<name>]`` connection to ``$FLWR_HOME/config.toml``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = [f'[superlink]\ndefault = "{name}"\n', f"[superlink.{name}]", f'address = "{address}"']
    lines.append("insecure = true" if root_cert is None else f'root-certificates = "{root_cert}"')
    (flwr_home / "config.toml").write_text("\n".join(lines) + "\n")


@dataclass
class Processes:
    """Deployment processes started here, stopped together."""

    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.logs, start_new_session=True)
        self.procs[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        stop_process_group(self.procs.pop(name), sig)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def flwr_run(project_dir: Path, connection: str, run_config: dict, env: dict[str, str]) -> str:
    """Submit the app to a deployment; return the run id."""
    return submit_run(project_dir, connection, run_config, env)


def wait_for_run(run_id: str, connection: str, env: dict[str, str], timeout: float = 600.0,
                 poll_s: float = 5.0) -> str:
    """Poll until the run is finished; return its status (``finished:completed`` on success).

    Each poll is a ``flwr ls`` process, which costs seconds of CPU to start: ``poll_s`` is
    kept well above that so that waiting does not slow the run down on a small machine.
    """
    deadline = time.time() + timeout
    status = "unknown"
    while time.time() < deadline:
        try:
            status = str(run_status(run_id, env, connection).get("status", "unknown"))
        except LaunchError:
            status = "unknown"
        if status.startswith("finished"):
            return status
        time.sleep(poll_s)
    return status
