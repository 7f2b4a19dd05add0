"""Channel-adaptive precision against fixed float32 and int8 uploads on a cell-edge LTE cell.

The default scenario's clients are spread over ``--distances`` (metres) of an `lte-cell-edge`
cell, each a phone (`wireless.device = phone-sd8gen3`, whose compute time counts in its round)
with a round deadline of ``--deadline`` simulated seconds: an update that arrives later is dropped
as a straggler. Three uplinks on the same seeds: float32, int8, and `adaptive`, where the server
picks each client's codec every round from its channel (the widest that fits the deadline;
int4 in the first round, before any channel is known). Each is a real Flower simulation.

Reported per uplink: updates kept (delivered in time, of those sent), mean personalized and
global accuracy after the last round, uplink bytes, uplink air time, and for `adaptive` how often
each codec was picked.

    python bench/adaptive_precision.py                       # 200-900 m, 30 s deadline, seed 0
    python bench/adaptive_precision.py --seeds 0 1 --deadline 25 --json /tmp/adaptive.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import fmean

# bench/ is on the path of a script run from it: runs.py is its neighbour.
from runs import ROOT, run_or_reuse  # noqa: E402

UPLINKS = ("none", "int8", "adaptive")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--distances", type=float, nargs=2, default=[200.0, 900.0], metavar=("MIN", "MAX"))
    p.add_argument("--deadline", type=float, default=30.0, help="wireless.deadline-s")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int)
    p.add_argument("--method", default="pftt")
    p.add_argument("--uplinks", nargs="+", default=list(UPLINKS))
    p.add_argument("--results-dir", default=str(ROOT / "results" / "adaptive-precision"))
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()

    common = {"method": args.method, "num-server-rounds": args.rounds, "wireless.profile": "lte-cell-edge",
              "wireless.distance-min": args.distances[0], "wireless.distance-max": args.distances[1],
              "wireless.device": "phone-sd8gen3", "wireless.deadline-s": args.deadline}
    rows = []
    for uplink in args.uplinks:
        for seed in args.seeds:
            name = (f"{args.method}-{uplink}-{args.distances[0]:g}-{args.distances[1]:g}m-d{args.deadline:g}"
                    f"-r{args.rounds}-s{seed}")
            summary, run_rows = run_or_reuse(Path(args.results_dir), name,
                                             {**common, "compression.uplink": uplink, "seed": seed},
                                             clients=args.clients)
            sent = summary["updates_delivered"] + summary["updates_lost"]
            rows.append({"uplink": uplink, "seed": seed, "updates_kept": summary["updates_delivered"],
                         "updates_sent": sent, "personalized_accuracy": summary["personalized_accuracy_mean"],
                         "global_accuracy": summary["global_accuracy_mean"],
                         "uplink_bytes": summary["uplink_bytes_total"],
                         "uplink_air_time_s": sum(r.get("air_time_s_up", 0.0) for r in run_rows),
                         "codecs": summary.get("uplink_codecs", {}),
                         # client -> the codec its update was sent with, round by round ("-": not sent)
                         "codec_by_round": codec_grid(run_rows, args.rounds)})

    print()
    print(f"| uplink | updates kept | pers. acc | global acc | uplink MB | uplink air time (s) | codecs picked |"
          f"  (lte-cell-edge {args.distances[0]:g}-{args.distances[1]:g} m, deadline {args.deadline:g} s, "
          f"{args.rounds} rounds, seeds {args.seeds})")
    print("|---|---|---|---|---|---|---|")
    for uplink in args.uplinks:
        mine = [r for r in rows if r["uplink"] == uplink]
        codecs: dict[str, int] = {}
        for r in mine:
            for c, n in r["codecs"].items():
                codecs[c] = codecs.get(c, 0) + n
        print(f"| {uplink} | {sum(r['updates_kept'] for r in mine)}/{sum(r['updates_sent'] for r in mine)} | "
              f"{fmean(r['personalized_accuracy'] for r in mine):.4f} | {fmean(r['global_accuracy'] for r in mine):.4f} | "
              f"{fmean(r['uplink_bytes'] for r in mine) / 1e6:.2f} | {fmean(r['uplink_air_time_s'] for r in mine):.1f} | "
              f"{', '.join(f'{c} {n}' for c, n in sorted(codecs.items())) or '-'} |")
    for r in rows:
        if r["uplink"] == "adaptive":
            print(f"\nadaptive, seed {r['seed']}: the codec of each client's update, round by round")
            print("| client | " + " | ".join(f"round {k}" for k in range(1, args.rounds + 1)) + " |")
            print("|---|" + "---|" * args.rounds)
            for client, codecs in sorted(r["codec_by_round"].items(), key=lambda kv: int(kv[0])):
                print(f"| {client} | " + " | ".join(codecs) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def codec_grid(rows: list[dict], rounds: int) -> dict[str, list[str]]:
    """Each client's uplink codec in each round, from the run's rows (``-`` where it sent no update)."""
    grid: dict[str, list[str]] = {}
    for r in rows:
        if "client" in r and "uplink_codec" in r:
            grid.setdefault(str(r["client"]), ["-"] * rounds)[r["round"] - 1] = str(r["uplink_codec"])
    return grid


if __name__ == "__main__":
    sys.exit(main())
