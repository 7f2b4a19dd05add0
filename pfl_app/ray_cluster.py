"""A multi-node Ray cluster on one machine: to try ``pfl-app run --ray-address`` and to measure
clients in parallel actors without other machines (tests/test_ray_cluster.py, bench/actors.py).

A head (``ray start --head``) and worker nodes (``ray start --address``) are started with the
venv's ``ray`` CLI. Ray registers every node under the machine's own IP even when asked for
``127.0.0.1`` (``--node-ip-address`` is of no use), but its GCS listens on every interface, so the
cluster is addressed as ``127.0.0.1:<port>``.

Isolation from other Ray instances on this machine (concurrent simulations):
- a dedicated ``--temp-dir``: ``ray start`` records the cluster's address in
  ``<temp-dir>/ray_current_cluster``, and a plain ``ray.init()`` joins the cluster named in
  the default ``/tmp/ray/ray_current_cluster``; with the default, every other simulation on
  this machine would silently run on this cluster;
- free ports for everything that has a fixed default (dashboard, agents, Ray client);
- no ``ray stop``: it kills every Ray process on the machine. Each ``ray start`` runs in its
  own session and the processes it leaves behind keep its process group, so :meth:`stop` kills
  those groups, then anything else whose command line names the temp dir.

Ray's state API (``ray.util.state.list_actors``, ``ray list actors``) needs the full dashboard,
which needs ``aiohttp_cors`` (not installed): :meth:`LocalRayCluster.query` reads the actors from
the cluster's GCS by a short driver in a subprocess instead (``ray._private.state.actors``, a
developer API: it may move in a later Ray).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from .launch import free_port

RAY = str(Path(sys.executable).parent / "ray")


def _ray_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # `ray start` must not join another cluster
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class LocalRayCluster:
    """A head and ``workers`` worker nodes started with ``ray start`` on this machine, each
    with ``cpus_per_node`` CPUs (what Ray counts, whatever the machine has). Use it as a
    context manager, or call :meth:`start` and, always, :meth:`stop`."""

    def __init__(self, cpus_per_node: int = 1):
        self.cpus_per_node = cpus_per_node
        # Short and under /tmp: Ray puts Unix sockets in it (a path limit of ~107 characters).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="pfl-ray-"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.groups: list[int] = []

    def start(self, workers: int = 1) -> None:
        self._start("head", "--head", "--port", str(self.port), "--include-dashboard=false",
                    "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port()),
                    "--temp-dir", str(self.temp_dir))
        for i in range(workers):
            # The worker takes the head's temp dir from the cluster.
            self._start(f"worker-{i}", "--address", self.address)
        self._wait_for_nodes(1 + workers)

    def _start(self, name: str, *args: str) -> None:
        cmd = [RAY, "start", *args, "--num-cpus", str(self.cpus_per_node), "--object-store-memory", str(100 * 2**20),
               "--dashboard-agent-listen-port", str(free_port()), "--disable-usage-stats"]
        with open(self.temp_dir / f"{name}.out", "wb") as log:
            proc = subprocess.Popen(cmd, env=_ray_env(), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            self.groups.append(proc.pid)  # its daemons keep this process group after it exits
            if proc.wait(timeout=90) != 0:
                raise RuntimeError(f"`ray start` ({name}) failed:\n{(self.temp_dir / f'{name}.out').read_text()}")

    def query(self) -> dict:
        """The cluster's alive node ids and every actor it has hosted (dead ones too)."""
        code = (
            "import json, ray\n"
            "from ray._private import state\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            "nodes = [n['NodeID'] for n in ray.nodes() if n['Alive']]\n"
            "actors = [{'class': a['ActorClassName'], 'node': a['Address']['NodeID'], 'state': a['State']}\n"
            "          for a in state.actors().values()]\n"
            "print(json.dumps({'nodes': nodes, 'actors': actors}))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], env=_ray_env(), capture_output=True, text=True,
                             timeout=60, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def _wait_for_nodes(self, n: int) -> None:
        deadline = time.time() + 30
        while len(nodes := self.query()["nodes"]) < n:
            if time.time() > deadline:
                raise RuntimeError(f"only {len(nodes)} of {n} Ray nodes joined")
            time.sleep(0.5)

    def stop(self) -> None:
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:  # gone already (or the id since reused by another user's group)
                pass
        # Anything that left the groups still names the temp dir on its command line.
        strays = []
        for proc in psutil.process_iter(["cmdline"]):
            if str(self.temp_dir) in " ".join(proc.info["cmdline"] or []):
                strays.append(proc)
                try:
                    proc.kill()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        psutil.wait_procs(strays, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "LocalRayCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
