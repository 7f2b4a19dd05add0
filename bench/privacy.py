"""Accuracy against privacy: PFTT under central user-level DP, by noise multiplier.

A federation of 20 clients (the embedded default's task and split, Dirichlet 0.5), 5 sampled
uniformly each round (fraction-train 0.25), on an ideal link. For each noise multiplier z the
run clips every adapter update to ``--clip`` and adds noise of std z C / 5 to their mean;
``summary.json`` gives the ε spent at δ = 1e-5 (Flower's RDP accountant, replace-one, with the
amplification of sampling 5 of 20). Two references on the same seed: no DP at all, and
clipping alone (z = 1e-6: the cost of clipping without noise). Only the last round evaluates.

The clients' LoRA is never sent, so never noised: the personalized accuracy shows how much of
PFTT's personalization survives noise on the shared adapters.

    python bench/privacy.py                                   # z 0.5 1 2 4, seed 0, 6 rounds
    python bench/privacy.py --z 1 4 --seeds 0 1 --json /tmp/privacy.json --plot docs/img/privacy_epsilon.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import fmean

# bench/ is on the path of a script run from it: runs.py is its neighbour.
from runs import ROOT, run_or_reuse  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--z", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0], help="noise multipliers")
    p.add_argument("--clip", type=float, default=1.0, help="dp.clipping-norm")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--fraction", type=float, default=0.25, help="fraction-train")
    p.add_argument("--method", default="pftt")
    p.add_argument("--results-dir", default=str(ROOT / "results" / "privacy"))
    p.add_argument("--plot", help="write accuracy against epsilon to this PNG")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()

    common = {"method": args.method, "num-server-rounds": args.rounds, "fraction-train": args.fraction,
              "wireless.profile": "ideal", "eval.every": args.rounds, "dp.delta": 1e-5}
    variants = [("no-dp", {}), ("clip-only", {"dp.mode": "central", "dp.clipping-norm": args.clip,
                                               "dp.noise-multiplier": 1e-6})]
    variants += [(f"z{z:g}", {"dp.mode": "central", "dp.clipping-norm": args.clip, "dp.noise-multiplier": z})
                 for z in args.z]
    rows = []
    for name, dp in variants:
        for seed in args.seeds:
            run_name = f"{args.method}-{name}-c{args.clip:g}-n{args.clients}-r{args.rounds}-s{seed}"
            summary, run_rows = run_or_reuse(Path(args.results_dir), run_name, {**common, **dp, "seed": seed},
                                             clients=args.clients)
            privacy = summary.get("privacy") or {}
            norms = [r["update_norm"] for r in run_rows if r.get("update_norm") is not None]
            rows.append({"variant": name, "seed": seed, "noise_multiplier": dp.get("dp.noise-multiplier"),
                         "epsilon": privacy.get("epsilon"), "updates_clipped": privacy.get("updates_clipped"),
                         "updates": len(norms), "update_norm_median": privacy.get("update_norm_median"),
                         "personalized_accuracy": summary["personalized_accuracy_mean"],
                         "global_accuracy": summary["global_accuracy_mean"]})

    print()
    print(f"| variant | z | ε (δ = 1e-5) | clipped | pers. acc | global acc |  ({args.clients} clients, "
          f"{args.fraction:g} sampled, {args.rounds} rounds, C = {args.clip:g}, mean over seeds {args.seeds})")
    print("|---|---|---|---|---|---|")
    table = []
    for name, _ in variants:
        mine = [r for r in rows if r["variant"] == name]
        eps = mine[0]["epsilon"]
        entry = {"variant": name, "noise_multiplier": mine[0]["noise_multiplier"], "epsilon": eps,
                 "personalized_accuracy": fmean(r["personalized_accuracy"] for r in mine),
                 "global_accuracy": fmean(r["global_accuracy"] for r in mine)}
        table.append(entry)
        clipped = f"{sum(r['updates_clipped'] or 0 for r in mine)}/{sum(r['updates'] for r in mine)}"
        print(f"| {name} | {entry['noise_multiplier'] if entry['noise_multiplier'] is not None else '-'} | "
              f"{'-' if eps is None else f'{eps:.3g}'} | {clipped if eps is not None else '-'} | "
              f"{entry['personalized_accuracy']:.4f} | {entry['global_accuracy']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "table": table}, indent=2))
    if args.plot:
        _plot(table, args)
    return 0


def _plot(table: list[dict], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noised = sorted((r for r in table if r["variant"].startswith("z")), key=lambda r: r["epsilon"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, color in (("personalized_accuracy", "personalized", "tab:blue"),
                              ("global_accuracy", "global", "tab:orange")):
        ax.plot([r["epsilon"] for r in noised], [r[key] for r in noised], "o-", color=color, label=label)
        for ref, style in (("no-dp", "--"), ("clip-only", ":")):
            found = [r for r in table if r["variant"] == ref]
            if found:
                ax.axhline(found[0][key], color=color, linestyle=style, linewidth=1,
                           label=f"{label}, {ref}")
    ax.set_xscale("log")
    ax.set_xlabel("ε at δ = 1e-5 (user level)")
    ax.set_ylabel("accuracy (mean over clients)")
    ax.set_title(f"{args.method}: {args.clients} clients, {args.fraction:g} sampled, {args.rounds} rounds, "
                 f"C = {args.clip:g}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    sys.exit(main())
