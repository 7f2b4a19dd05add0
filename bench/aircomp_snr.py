"""Personalized accuracy against SNR: PFTT's adapters aggregated over the air (AirComp) or digitally.

Every client sits at the same distance from the base station of an `lte-cell-edge` cell (the
distance sets the mean uplink SNR, printed beside it), with Rayleigh block fading. Digital PFTT
sends each update as packets (BLER curve, ARQ) and loses an update whose packet still fails;
AirComp PFTT sums the updates on the air with truncated channel inversion, so no update is lost
but the received average carries the receiver's noise and the misalignment of the clients that
the power budget caps. Each (mode, distance, seed) is a real Flower simulation; only the last
round evaluates (`eval.every`).

    python bench/aircomp_snr.py                           # 500 and 700 m, seeds 0 1, 2 rounds
    python bench/aircomp_snr.py --distances 300 500 700 900 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import fmean

# bench/ is on the path of a script run from it: runs.py is its neighbour.
from runs import ROOT, run_or_reuse  # noqa: E402

from pfl_app.wireless.channel import mean_snr_db  # noqa: E402
from pfl_app.wireless.profiles import get_profile, with_overrides  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--distances", type=float, nargs="+", default=[500.0, 700.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clients", type=int)
    p.add_argument("--method", default="pftt")
    p.add_argument("--results-dir", default=str(ROOT / "results" / "aircomp-snr"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "img" / "aircomp_snr.png"))
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()

    base = get_profile("lte-cell-edge")
    table = []
    for distance in args.distances:
        snr = mean_snr_db(with_overrides(base, distance_m=distance), "up")
        for mode in ("digital", "aircomp"):
            for seed in args.seeds:
                overrides = {
                    "method": args.method, "seed": seed, "num-server-rounds": args.rounds,
                    "eval.every": args.rounds, "wireless.profile": "lte-cell-edge",
                    "wireless.distance-min": distance, "wireless.distance-max": distance,
                    "wireless.aggregation": mode,
                }
                name = f"{mode}__{args.method}__{distance:g}m__r{args.rounds}__seed{seed}"
                s, rows = run_or_reuse(Path(args.results_dir), name, overrides, clients=args.clients)
                # A truncated AirComp client's reply arrived (status ok) but its update is not in the sum.
                truncated = sum(r.get("aircomp_truncated") == 1.0 for r in rows)
                sent = s["updates_delivered"] + s["updates_lost"]
                table.append({
                    "mode": mode, "distance_m": distance, "snr_db": snr, "seed": seed,
                    "personalized_accuracy": s["personalized_accuracy_mean"],
                    "global_accuracy": s["global_accuracy_mean"],
                    "delivered": f"{s['updates_delivered'] - truncated}/{sent}", "truncated": truncated,
                    "air_time_s": s["air_time_s_total"], "simulated_time_s": s["simulated_time_s_total"],
                    "energy_j_up": s["energy_j_total"],
                })

    print()
    print("| aggregation | distance (m) | mean uplink SNR (dB) | seed | personalized acc | global acc "
          "| updates in the aggregate | time on air (s) | simulated time (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['mode']} | {t['distance_m']:g} | {t['snr_db']:.1f} | {t['seed']} "
              f"| {t['personalized_accuracy']:.3f} | {t['global_accuracy']:.3f} | {t['delivered']} "
              f"| {t['air_time_s']:.1f} | {t['simulated_time_s']:.1f} |")
    means: dict[str, list[tuple[float, float, float]]] = {}
    for mode in ("digital", "aircomp"):
        for distance in args.distances:
            these = [t for t in table if t["mode"] == mode and t["distance_m"] == distance]
            means.setdefault(mode, []).append((these[0]["snr_db"], fmean(t["personalized_accuracy"] for t in these),
                                               fmean(t["global_accuracy"] for t in these)))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for mode, points in means.items():
            ax.plot([x for x, _, _ in points], [y for _, y, _ in points], marker="o", label=f"{mode}: personalized")
            ax.plot([x for x, _, _ in points], [g for _, _, g in points], marker="x", linestyle="--",
                    label=f"{mode}: global")
        ax.set_xlabel("mean uplink SNR (dB)")
        ax.set_ylabel(f"accuracy (mean of {len(args.seeds)} seeds)")
        ax.set_title(f"{args.method}: AirComp against digital aggregation")
        ax.legend(fontsize=8)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print("plot:", args.plot)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
