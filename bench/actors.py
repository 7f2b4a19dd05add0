"""Clients in parallel Ray actors: the same rounds with one actor and with one per node.

Three ways to run the default scenario's clients (the embedded model, PFTT, an ideal link) on this
machine, each a real `flwr run` simulation through `pfl_app.launch.launch`:

- `local, 1 actor x N CPUs`: the default: a local Ray instance, `client-resources-num-cpus` = all
  the CPUs, so one actor trains the clients one after another with N torch threads;
- `cluster, 1 node`: a Ray cluster of one node with `--cpus-per-node` CPUs, one client per actor
  of that many CPUs: the clients in turn, as the default, but through the cluster;
- `cluster, K nodes`: `--nodes` nodes of `--cpus-per-node` CPUs each
  (:class:`pfl_app.ray_cluster.LocalRayCluster`, the cluster of tests/test_ray_cluster.py): one
  actor per node, so K clients train at once.

Printed for each: the wall time of every round (`round_wall_s`) and the last round's speed-up over
the 1-node cluster. The first round includes starting the actors and loading the model in each, so
read the last. On this project's 2-core machine, 2 nodes of 1 CPU are the two cores; on a larger
machine raise both flags. Run it on a quiet machine: these are wall times.

    RAY_worker_niceness=0 python bench/actors.py                       # 2 nodes x 1 CPU, 4 clients, 2 rounds
    RAY_worker_niceness=0 python bench/actors.py --nodes 4 --cpus-per-node 4 --clients 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pfl_app.launch import Scenario, launch, load_scenario, signals_raise  # noqa: E402
from pfl_app.plots import load_run  # noqa: E402
from pfl_app.ray_cluster import LocalRayCluster  # noqa: E402

# bench/ is on the path of a script run from it: runs.py is its neighbour.
from runs import complete_or_set_aside  # noqa: E402


def round_walls(run_dir: Path) -> list[float]:
    """The wall time of each round, as the server booked it in the rows."""
    _, rows = load_run(run_dir)
    walls: dict[int, float] = {}
    for r in rows:
        if "round_wall_s" in r:
            walls[r["round"]] = r["round_wall_s"]
    return [walls[k] for k in sorted(walls)]


def run_once(name: str, scenario: Scenario, cpus: int, results: Path, rounds: int,
             ray_address: str | None) -> list[float]:
    """Round wall times of the run ``results / name``, run unless a complete one is there
    (``ray_address`` None: a local Ray instance of this process's own)."""
    if complete_or_set_aside(results / name):
        return round_walls(results / name)
    print(f"== {name} ==", flush=True)
    sc = Scenario(federation={**scenario.federation, "client-resources-num-cpus": cpus},
                  run_config=dict(scenario.run_config))
    overrides = {"wireless.profile": "ideal", "num-server-rounds": rounds, "eval.every": rounds,
                 "results-dir": str(results), "run-name": name}
    status, run_dir = launch(ROOT, sc, overrides, echo=lambda line: print(line, flush=True)
                             if line.startswith("round") else None, ray_address=ray_address)
    if status.get("status") != "finished:completed":
        raise SystemExit(f"{name}: the run did not complete: {status}")
    return round_walls(run_dir)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=str(ROOT / "simulation.toml"))
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cpus-per-node", type=int, default=1)
    p.add_argument("--results-dir", default=str(ROOT / "results" / "actors"))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    if args.nodes < 2:
        p.error("--nodes must be at least 2 (the 1-node cluster is always run as the reference)")
    scenario = load_scenario(args.scenario)
    scenario.federation["num-supernodes"] = args.clients
    results = Path(args.results_dir)
    total = os.cpu_count() or 1

    # The local run must not join a cluster named in the environment.
    os.environ.pop("RAY_ADDRESS", None)
    size = f"c{args.clients}r{args.rounds}"  # in the run names, so other sizes get folders of their own
    figures = {}
    figures[f"local, 1 actor x {total} CPUs"] = run_once(
        f"local-{size}x{total}", scenario, total, results, args.rounds, None)
    for nodes in (1, args.nodes):
        with LocalRayCluster(cpus_per_node=args.cpus_per_node) as cluster:
            cluster.start(workers=nodes - 1)
            figures[f"cluster, {nodes} node(s) x {args.cpus_per_node} CPU(s)"] = run_once(
                f"cluster-{size}-{nodes}x{args.cpus_per_node}", scenario, args.cpus_per_node, results, args.rounds, cluster.address)

    reference = list(figures.values())[1][-1]
    print()
    print(f"{args.clients} clients, {args.rounds} rounds, {total} CPUs on this machine")
    print("| how | round wall times (s) | last round, speed-up over the 1-node cluster |")
    print("|---|---|---|")
    for how, walls in figures.items():
        print(f"| {how} | {', '.join(f'{w:.1f}' for w in walls)} | {reference / walls[-1]:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"clients": args.clients, "rounds": args.rounds, "cpus": total,
                                               "nodes": args.nodes, "cpus_per_node": args.cpus_per_node,
                                               "round_wall_s": figures}, indent=2))
    return 0


if __name__ == "__main__":
    # A SIGTERM between runs must still stop the cluster (its daemons run in sessions of their own).
    with signals_raise():
        sys.exit(main())
