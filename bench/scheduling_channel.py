"""The scheduling policies on a cell with a spread of distances: time on the air, updates lost,
uplink energy, fairness (issue #25, point 6). The channel alone, no training: accuracy is not here.

20 clients on ``lte-cell-edge`` with distances spread evenly over 100-700 m (the run's link
population, ``wireless.distance-min`` / ``-max``), K = 5 scheduled per round by each policy
(``schedule.policy``, ``schedule.clients-per-round``), PFTT's real update (the embedded default's
adapters, 2,306,960 bytes of tensors) on each scheduled client's ``CellChannel`` under TDMA, 50
rounds, seeds 0 and 1. The rounds are driven as a run drives them (bench/cell_rounds.py): the
strategy ``build_strategy`` makes (``ChannelScheduled``: its CSI, its exploration of unknown nodes,
its proportional-fair averages and last-scheduled rounds, learned from the replies) picks the
clients on a fake grid of 20 nodes, the wireless mod sends each message and reply, the strategy
aggregates. Every policy runs without a deadline and with ``wireless.deadline-s`` = ``--deadline``
(the ``deadline`` policy needs one); under a deadline a client whose downlink + uplink (with its
TDMA wait; ``wireless.compute-s`` = 0) exceeds it is a straggler and the round lasts at most the
deadline.

Per policy: the mean and median round time on the air, updates delivered, lost on the air and dropped as
stragglers (per seed), uplink energy per delivered update, how often each client was scheduled
(min, max, Jain's index), Jain's index of the updates each client delivered, and how many clients
ever delivered one.

    python bench/scheduling_channel.py                          # the figures of docs/wireless.md
    python bench/scheduling_channel.py --rounds 20 --deadline 60 --json out.json --plot out.png
    python bench/scheduling_channel.py --replot out.json --plot out.png   # the plot again, from the figures
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
from cell_rounds import NODE_BASE, Cell, shared_tensors

from pfl_app.config import parse_run_config
from pfl_app.strategies import STRATEGIES
from pfl_app.wireless.scheduling import jain_index, policy_names, policy_requires_deadline


def run_policy(overrides: dict, clients: int, tensors: dict, rounds: int) -> dict:
    """One seed of one policy: totals over the rounds and per-client counts."""
    cell = Cell(overrides, clients, tensors)
    scheduled, delivered = Counter(), Counter()
    air, energy, lost, stragglers, ok = [], 0.0, 0, 0, 0
    for rnd in range(1, rounds + 1):
        r = cell.round(rnd)
        air.append(r["round_air_time_s"])
        for row in r["rows"]:
            client = int(row.get("client", row["node"] - NODE_BASE))
            scheduled[client] += 1
            energy += float(row.get("energy_j_up", 0.0))
            if row.get("status") == "ok":
                ok += 1
                delivered[client] += 1
            elif str(row.get("error", "")).startswith("straggler"):
                stragglers += 1
            else:
                lost += 1
    times = [scheduled[c] for c in range(clients)]
    got = [delivered[c] for c in range(clients)]
    distance = [cell.cfg.link_population.profile(c, clients).distance_m for c in range(clients)]
    nearest_first = sorted(range(clients), key=distance.__getitem__)
    return {"round_air_time_s": float(np.mean(air)), "round_air_time_s_median": float(np.median(air)),
            "round_air_times_s": air, "delivered": ok, "lost": lost, "stragglers": stragglers,
            "energy_j_up": energy, "energy_per_delivered_j": energy / ok if ok else None,
            "scheduled_min": min(times), "scheduled_max": max(times), "jain_scheduled": jain_index(times),
            "jain_delivered": jain_index(got), "clients_delivering": sum(g > 0 for g in got),
            "times_scheduled": times, "updates_delivered": got, "distance_m": distance,
            "delivered_nearest_first": [got[c] for c in nearest_first],
            "distance_nearest_first": [distance[c] for c in nearest_first]}


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in rows:
        if row["deadline_s"] and row["policy"] != "deadline":
            continue  # the right panel: each policy once, without a deadline (deadline: with its own)
        # Every seed deals the same distances in its own order: average by distance.
        got = np.mean([s["delivered_nearest_first"] for s in row["seeds"]], axis=0)
        style = {"linestyle": "--", "marker": "x"} if row["policy"] == "deadline" else {"marker": "o"}
        axes[1].plot(row["seeds"][0]["distance_nearest_first"], got, ms=3, label=row["policy"], **style)
    labels = [r["policy"] + "\n" + (f"{r['deadline_s']:g} s" if r["deadline_s"] else "no deadline") for r in rows]
    x = np.arange(len(rows))
    axes[0].bar(x, [r["round_air_time_s_median"] for r in rows],
                color=["tab:blue" if not r["deadline_s"] else "tab:orange" for r in rows], label="median")
    axes[0].plot(x, [r["round_air_time_s"] for r in rows], "k_", ms=14, mew=2, linestyle="none", label="mean")
    axes[0].set_yscale("log")
    axes[0].set_xticks(x)
    axes[0].set_xticklabels(labels, fontsize=7, rotation=45, ha="right")
    axes[0].set_ylabel("round time on the air (s)")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("client's distance (m)")
    axes[1].set_ylabel("updates delivered in the run (mean of seeds)")
    axes[1].legend(fontsize=8)
    axes[1].grid(True, alpha=0.3)
    r0 = rows[0]
    fig.suptitle(f"{r0['clients']} clients, {r0['profile']}, {r0['distances'][0]:g}-{r0['distances'][1]:g} m, "
                 f"{r0['access'].upper()}, K = {r0['k']}, {r0['rounds']} rounds, seeds "
                 f"{[s['seed'] for s in r0['seeds']]}: the channel alone", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--k", type=int, default=5, help="schedule.clients-per-round")
    p.add_argument("--profile", default="lte-cell-edge")
    p.add_argument("--distance-min", type=float, default=100.0)
    p.add_argument("--distance-max", type=float, default=700.0)
    p.add_argument("--access", default="tdma")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--deadline", type=float, default=60.0, help="wireless.deadline-s of the runs with one")
    p.add_argument("--policies", nargs="+", default=list(policy_names()))
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--plot", help="also draw them to this PNG")
    p.add_argument("--replot", metavar="JSON", help="only draw --plot from the figures a --json run wrote")
    args = p.parse_args()
    if args.replot:
        plot(json.loads(Path(args.replot).read_text()), args.plot)
        return 0
    logging.getLogger("flwr").setLevel(logging.ERROR)

    start = time.time()
    tensors = shared_tensors(parse_run_config({}), STRATEGIES["pftt"].shared_groups)
    rows = []
    print("| policy | deadline (s) | round time on the air, mean (median) (s) | delivered | lost on the air | stragglers "
          "| uplink J per delivered update | times scheduled min-max | Jain (scheduled) | Jain (delivered) "
          "| clients that ever delivered |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for deadline in (0.0, args.deadline):
        for policy in args.policies:
            if policy_requires_deadline(policy) and not deadline:
                continue
            seeds = []
            for seed in args.seeds:
                overrides = {"method": "pftt", "seed": seed, "wireless.profile": args.profile,
                             "wireless.distance-min": args.distance_min, "wireless.distance-max": args.distance_max,
                             "wireless.access": args.access, "wireless.deadline-s": deadline,
                             "schedule.policy": policy, "schedule.clients-per-round": args.k}
                seeds.append({"seed": seed, **run_policy(overrides, args.clients, tensors, args.rounds)})

            def mean(key: str) -> float:
                return float(np.mean([s[key] for s in seeds]))

            row = {"policy": policy, "deadline_s": deadline, "access": args.access, "profile": args.profile,
                   "clients": args.clients, "k": args.k, "rounds": args.rounds,
                   "distances": [args.distance_min, args.distance_max],
                   "round_air_time_s_median": float(np.median([t for s in seeds for t in s["round_air_times_s"]])),
                   **{key: mean(key) for key in ("round_air_time_s", "delivered", "lost", "stragglers",
                                                 "scheduled_min", "scheduled_max", "jain_scheduled",
                                                 "jain_delivered", "clients_delivering")},
                   "energy_per_delivered_j": (sum(s["energy_j_up"] for s in seeds)
                                              / max(sum(s["delivered"] for s in seeds), 1)),
                   "seeds": seeds}
            rows.append(row)
            print(f"| {policy} | {deadline:g} | {row['round_air_time_s']:.1f} ({row['round_air_time_s_median']:.1f}) | {row['delivered']:.1f} | "
                  f"{row['lost']:.1f} | {row['stragglers']:.1f} | {row['energy_per_delivered_j']:.2f} | "
                  f"{row['scheduled_min']:.1f}-{row['scheduled_max']:.1f} | {row['jain_scheduled']:.3f} | "
                  f"{row['jain_delivered']:.3f} | {row['clients_delivering']:.1f} |", flush=True)
    print(f"\n{args.clients} clients, {args.profile}, {args.distance_min:g}-{args.distance_max:g} m, "
          f"{args.access}, K = {args.k}, {args.rounds} rounds, seeds {args.seeds} (counts: mean per seed); "
          f"{time.time() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
