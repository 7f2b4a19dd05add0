"""A round's time on the air against the number of clients in the cell: FedIT, PFTT and AirComp
PFTT under TDMA and OFDMA (issue #25, point 6). The channel alone, no training.

For each K, a federation of K clients (the run's link population: ``wireless.profile``, distances
spread evenly over ``wireless.distance-min`` .. ``-max`` in a seeded order) all scheduled in every
round, so the K share the cell. Each round is driven through the app's own code
(bench/cell_rounds.py): the strategy ``build_strategy`` makes writes the train messages, the
wireless mod sends each over the client's ``CellChannel`` and the reply back (the analog uplink
under ``wireless.aggregation = "aircomp"``), the strategy aggregates (AirComp: truncated channel
inversion, each client's energy booked), and the round's time on the air is
``pfl_app.results.round_air_time`` of the rows, as in ``metrics.jsonl``: the slowest client's
downlink + compute (``wireless.compute-s`` = 0 here) + uplink, TDMA waits included. No deadline.

Message sizes are the real ones of the embedded default (SmolLM2-135M-Instruct, default adapter
and LoRA): the method's shared tensors on the built model, in the messages the strategy and a task
client write (PFTT: 2,306,960 bytes of tensors; FedIT: 7,420,480).

    python bench/cell_air_time.py                      # K = 5 10 20 50, seeds 0 1, 3 rounds each
    python bench/cell_air_time.py --clients 5 10 --rounds 2 --json out.json --plot out.png
    python bench/cell_air_time.py --replot out.json --plot out.png   # the plot again, from the figures
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
from cell_rounds import Cell, shared_tensors

from pfl_app.config import parse_run_config
from pfl_app.strategies import STRATEGIES
from pfl_app.wireless.aircomp import estimate_noise_variance

#: (label, method, wireless.aggregation)
METHODS = (("FedIT", "fedit", "digital"), ("PFTT", "pftt", "digital"), ("AirComp PFTT", "pftt", "aircomp"))


def run_cell(overrides: dict, k: int, tensors: dict, rounds: int) -> list[dict]:
    """Per round: its time on the air, the slowest downlink (with waits), updates lost or truncated,
    uplink energy and air time, and AirComp's noise."""
    cell = Cell(overrides, k, tensors)
    out = []
    for rnd in range(1, rounds + 1):
        r = cell.round(rnd)
        rows = r["rows"]
        plan = getattr(cell.strategy, "last_plan", None) if overrides["wireless.aggregation"] == "aircomp" else None
        noise_db = None
        if plan is not None and any(plan.transmitting):
            # Var(e) / s^2 per element, equal weights: sigma^2 / (M^2 eta), M transmitting.
            noise_db = 10 * math.log10(estimate_noise_variance(1.0, [1.0] * len(plan.transmitting), plan))
        cell.strategy.last_plan = None
        out.append({
            "round": rnd,
            "round_air_time_s": r["round_air_time_s"],
            "downlink_s": max(float(x.get("air_time_s_down", 0.0)) + float(x.get("wait_s_down", 0.0)) for x in rows),
            "lost": sum(x.get("status") == "lost" for x in rows),
            "truncated": int(sum(float(x.get("aircomp_truncated", 0.0)) for x in rows)),
            "energy_j_up": sum(float(x.get("energy_j_up", 0.0)) for x in rows),
            "air_time_s_up_mean": float(np.mean([float(x.get("air_time_s_up", 0.0)) for x in rows])),
            "noise_db": noise_db,
            "bytes_down": r["bytes_down"], "bytes_up": r["bytes_up"],
        })
    return out


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"tdma": "-", "ofdma": "--"}
    colours = {"FedIT": "tab:red", "PFTT": "tab:blue", "AirComp PFTT": "tab:green"}
    for label, _, _ in METHODS:
        for access in styles:
            these = [r for r in rows if r["method"] == label and r["access"] == access]
            if not these:
                continue
            ks = [r["clients"] for r in these]
            # AirComp's two lines coincide: its downlink takes K a under both schemes, its uplink n / B.
            axes[0].plot(ks, [r["round_air_time_s"] for r in these], styles[access], marker="o",
                         color=colours[label], label=f"{label}, {access.upper()}")
            axes[1].plot(ks, [r["energy_j_up"] for r in these], styles[access], marker="o",
                         color=colours[label], label=f"{label}, {access.upper()}")
    axes[0].set_ylabel("round time on the air (s), mean")
    axes[1].set_ylabel("uplink energy per round, all clients (J), mean")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted({r["clients"] for r in rows}))
        ax.set_xticklabels([str(k) for k in sorted({r["clients"] for r in rows})])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("clients scheduled in the round (K)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{rows[0]['profile']}, {rows[0]['distances']} m, seeds {rows[0]['seeds']}: "
                 "the channel alone", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[5, 10, 20, 50], help="K values")
    p.add_argument("--profile", default="lte-cell-edge")
    p.add_argument("--distance-min", type=float, default=100.0)
    p.add_argument("--distance-max", type=float, default=600.0)
    p.add_argument("--access", nargs="+", default=["tdma", "ofdma"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--rounds", type=int, default=3, help="rounds per seed (the fades differ by round)")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--plot", help="also draw them to this PNG")
    p.add_argument("--replot", metavar="JSON", help="only draw --plot from the figures a --json run wrote")
    args = p.parse_args()
    if args.replot:
        plot(json.loads(Path(args.replot).read_text()), args.plot)
        return 0
    logging.getLogger("flwr").setLevel(logging.ERROR)

    start = time.time()
    cfg = parse_run_config({})  # the embedded default model
    tensors = {m: shared_tensors(cfg, STRATEGIES[m].shared_groups) for _, m, _ in METHODS}
    rows = []
    print("| K | method | access | round time on the air (s): mean, median (min-max) | slowest downlink (s) "
          "| lost per round "
          "| truncated per round | uplink energy per round (J) | mean uplink air time (s) | AirComp noise var / s² (dB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in args.clients:
        for label, method, aggregation in METHODS:
            for access in args.access:
                per_round = []
                for seed in args.seeds:
                    overrides = {"method": method, "seed": seed, "wireless.profile": args.profile,
                                 "wireless.distance-min": args.distance_min,
                                 "wireless.distance-max": args.distance_max, "wireless.access": access,
                                 "wireless.aggregation": aggregation}
                    per_round += [{**x, "seed": seed} for x in run_cell(overrides, k, tensors[method], args.rounds)]
                noise = [x["noise_db"] for x in per_round if x["noise_db"] is not None]
                row = {
                    "clients": k, "method": label, "access": access, "profile": args.profile,
                    "distances": f"{args.distance_min:g}-{args.distance_max:g}", "seeds": args.seeds,
                    "rounds_per_seed": args.rounds,
                    "bytes_down": per_round[0]["bytes_down"], "bytes_up": per_round[0]["bytes_up"],
                    **{key: float(np.mean([x[key] for x in per_round]))
                       for key in ("round_air_time_s", "downlink_s", "lost", "truncated", "energy_j_up",
                                   "air_time_s_up_mean")},
                    "round_air_time_s_median": float(np.median([x["round_air_time_s"] for x in per_round])),
                    "round_air_time_s_min": min(x["round_air_time_s"] for x in per_round),
                    "round_air_time_s_max": max(x["round_air_time_s"] for x in per_round),
                    "noise_db": float(np.mean(noise)) if noise else None,
                    "per_round": per_round,
                }
                rows.append(row)
                print(f"| {k} | {label} | {access.upper()} | {row['round_air_time_s']:.1f}, "
                      f"{row['round_air_time_s_median']:.1f} "
                      f"({row['round_air_time_s_min']:.1f}-{row['round_air_time_s_max']:.1f}) | "
                      f"{row['downlink_s']:.1f} | {row['lost']:.2f} | "
                      f"{row['truncated']:.2f} | {row['energy_j_up']:.3g} | {row['air_time_s_up_mean']:.2f} | "
                      f"{'' if row['noise_db'] is None else format(row['noise_db'], '.1f')} |", flush=True)
    sizes = {r["method"]: (r["bytes_down"], r["bytes_up"]) for r in rows}
    print(f"\nmessage bytes (train down, reply up): {sizes}")
    print(f"{args.profile}, {args.distance_min:g}-{args.distance_max:g} m, seeds {args.seeds}, "
          f"{args.rounds} rounds each; {time.time() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
