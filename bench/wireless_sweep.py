"""Sweep the client-to-base-station distance of a lossy link for PFTT and send-all.

Each point is a real Flower simulation over the simulated channel (whole-message loss: an
update with a packet that still fails after ARQ is lost). Prints, per method and distance,
the final personalized accuracy, the updates lost, the uplink air time and the simulated
time on the air, and writes the plots of the last sweep point.

    python bench/wireless_sweep.py                                   # lte-cell-edge at 300, 500, 700 m
    python bench/wireless_sweep.py --profile 5g-urban --distances 50 100 200 --rounds 3
    python bench/wireless_sweep.py --distances 500 700 --set wireless.coherence=packet
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# bench/ is on the path of a script run from it: runs.py is its neighbour.
from runs import run_or_reuse  # noqa: E402

from pfl_app.launch import parse_overrides  # noqa: E402
from pfl_app.plots import plot_runs  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=str(ROOT / "simulation.toml"))
    p.add_argument("--profile", default="lte-cell-edge")
    p.add_argument("--distances", type=float, nargs="+", default=[300.0, 500.0, 700.0])
    p.add_argument("--methods", nargs="+", default=["pftt", "send-all"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clients", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deadline", type=float, default=0.0, help="wireless.deadline-s (0: none)")
    p.add_argument("--results-dir", default=str(ROOT / "results" / "wireless-sweep"))
    p.add_argument("--json", help="also write the table to this file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="another run-config override for every run, e.g. wireless.coherence=packet (repeatable)")
    args = p.parse_args()
    extra = parse_overrides(args.set)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    table, last_dirs = [], []
    for distance in args.distances:
        last_dirs = []
        for method in args.methods:
            overrides = {
                "method": method, "seed": args.seed, "num-server-rounds": args.rounds,
                "wireless.profile": args.profile, "wireless.distance-min": distance,
                "wireless.distance-max": distance, "wireless.deadline-s": args.deadline, **extra,
            }
            # Named by what it runs, so that a rerun reuses a finished point (bench/runs.py).
            tag = "".join(f"__{k}={v}" for k, v in sorted(extra.items()))
            name = f"{method}-{args.profile}-{distance:g}m-r{args.rounds}-s{args.seed}{tag}"
            s, rows = run_or_reuse(Path(args.results_dir), name, overrides, clients=args.clients,
                                   scenario=Path(args.scenario))
            run_dir = Path(args.results_dir) / name
            table.append({
                "method": method, "distance_m": distance,
                "personalized_accuracy": s["personalized_accuracy_mean"],
                "global_accuracy": s["global_accuracy_mean"],
                "updates_lost": s["updates_lost"], "updates": s["updates_lost"] + s["updates_delivered"],
                "uplink_air_time_s": sum(r.get("air_time_s_up", 0.0) for r in rows),
                "simulated_time_s": s["simulated_time_s_total"],
                "uplink_bytes": s["uplink_bytes_total"], "energy_j": s["energy_j_total"],
                "run_dir": str(run_dir),
            })
            last_dirs.append(run_dir)

    print()
    print("| method | distance (m) | personalized acc | global acc | updates lost | uplink air time (s) | simulated time (s) | energy (J) |")
    print("|---|---|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['method']} | {t['distance_m']:g} | {t['personalized_accuracy']:.3f} | {t['global_accuracy']:.3f} "
              f"| {t['updates_lost']}/{t['updates']} | {t['uplink_air_time_s']:.1f} | {t['simulated_time_s']:.1f} "
              f"| {t['energy_j']:.1f} |")
    plots = plot_runs(last_dirs, Path(args.results_dir) / "plots")
    print("plots of the last distance:", ", ".join(str(p) for p in plots))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
