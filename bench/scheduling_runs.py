"""The scheduling policies trained end to end: accuracy, time on the air, energy and fairness.

Every policy schedules K of the clients each round on `lte-cell-edge` with the clients spread
over a range of distances, sharing the cell by TDMA, under a round deadline that every policy
faces (a late update is dropped), with compute time and energy from a device model. Each
(policy, seed) is a real Flower simulation; only the last round evaluates (`eval.every`), every
client, so the accuracy is that of every client's delivered model.

    python bench/scheduling_runs.py                     # 5 policies x seeds 0 1, 6 clients, K = 2, 6 rounds
    python bench/scheduling_runs.py --policies random deadline --seeds 0 --json out.json

bench/scheduling_channel.py gives the same policies' air time and fairness over many rounds from
the channel alone; this script adds what only training gives: the accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import fmean

# bench/ is on the path of a script run from it: runs.py is its neighbour.
from runs import ROOT, delivered_share, run_or_reuse  # noqa: E402

POLICIES = ["random", "best-snr", "proportional-fair", "age-aware", "deadline"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", nargs="+", default=POLICIES)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--k", type=int, default=2, help="schedule.clients-per-round")
    # The channel-aware policies first schedule each client they have no channel for (exploration,
    # pfl_app/wireless/scheduling.py), and age-aware each never-scheduled one: with K = 2 of
    # 6 clients that takes 3 rounds, so 3 rounds would compare only the order of that tour: 6 rounds
    # give the policies 3 rounds of their own choice.
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--method", default="pftt")
    p.add_argument("--distances", type=float, nargs=2, default=[100.0, 700.0], metavar=("MIN", "MAX"))
    p.add_argument("--deadline", type=float, default=45.0, help="wireless.deadline-s, for every policy")
    p.add_argument("--access", default="tdma")
    p.add_argument("--device", default="phone-sd8gen3")
    p.add_argument("--results-dir", default=str(ROOT / "results" / "scheduling-runs"))
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()

    table = []
    tour = -(-args.clients // args.k)  # rounds to schedule every client once, K a round
    for policy in args.policies:
        for seed in args.seeds:
            overrides = {
                "method": args.method, "seed": seed, "num-server-rounds": args.rounds, "eval.every": args.rounds,
                "wireless.profile": "lte-cell-edge", "wireless.distance-min": args.distances[0],
                "wireless.distance-max": args.distances[1], "wireless.access": args.access,
                "wireless.device": args.device, "wireless.deadline-s": args.deadline,
                "schedule.policy": policy, "schedule.clients-per-round": args.k,
            }
            name = f"{policy}__{args.method}__n{args.clients}k{args.k}r{args.rounds}__seed{seed}"
            s, rows = run_or_reuse(Path(args.results_dir), name, overrides, clients=args.clients)
            counts = s["times_scheduled"]
            # The rounds after the exploration tour (each client met once), where the policy chooses.
            chosen = [r for r in rows if r.get("scheduled") and r["round"] > tour]
            table.append({
                "policy": policy, "seed": seed, "personalized_accuracy": s["personalized_accuracy_mean"],
                "global_accuracy": s["global_accuracy_mean"], "delivered": delivered_share(s),
                "updates_delivered": s["updates_delivered"], "updates_lost": s["updates_lost"],
                "air_time_s": s["air_time_s_total"], "simulated_time_s": s["simulated_time_s_total"],
                "energy_j": s["energy_j_total"], "jain": s["scheduling_jain_index"],
                "never_scheduled": args.clients - len(counts), "times_scheduled": counts,
                "after_tour_snr_db_up": fmean(r["snr_db_up"] for r in chosen) if chosen else None,
                "after_tour_lost": sum(r.get("status") == "lost" for r in chosen),
                "after_tour_scheduled": len(chosen),
            })

    print()
    print("| policy | seed | personalized acc | global acc | updates delivered | time on air (s) | simulated time (s) "
          f"| energy (J) | Jain's index | clients never scheduled | uplink SNR after round {tour} (dB) "
          f"| lost after round {tour} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in table:
        snr = "-" if t["after_tour_snr_db_up"] is None else f"{t['after_tour_snr_db_up']:.1f}"
        print(f"| {t['policy']} | {t['seed']} | {t['personalized_accuracy']:.3f} | {t['global_accuracy']:.3f} "
              f"| {t['delivered']} | {t['air_time_s']:.1f} | {t['simulated_time_s']:.1f} | {t['energy_j']:.1f} "
              f"| {t['jain']:.3f} | {t['never_scheduled']} | {snr} "
              f"| {t['after_tour_lost']}/{t['after_tour_scheduled']} |")
    print()
    print("| policy | personalized acc (mean of seeds) | global acc | updates delivered | simulated time (s) "
          "| energy (J) | Jain's index |")
    print("|---|---|---|---|---|---|---|")
    for policy in args.policies:
        these = [t for t in table if t["policy"] == policy]
        delivered = sum(t["updates_delivered"] for t in these)
        sent = delivered + sum(t["updates_lost"] for t in these)
        print(f"| {policy} | {fmean(t['personalized_accuracy'] for t in these):.3f} "
              f"| {fmean(t['global_accuracy'] for t in these):.3f} | {delivered}/{sent} "
              f"| {fmean(t['simulated_time_s'] for t in these):.1f} | {fmean(t['energy_j'] for t in these):.1f} "
              f"| {fmean(t['jain'] for t in these):.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
