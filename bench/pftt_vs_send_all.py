"""PFTT against send-all (adapters and LoRA both averaged) on the same seed, data and split.

Runs both methods as real Flower simulations through `pfl-app`'s launcher and prints, per
round, the uplink bytes and the mean personalized accuracy of each, and their ratios.

    python bench/pftt_vs_send_all.py                      # defaults: simulation.toml's scenario
    python bench/pftt_vs_send_all.py --rounds 5 --alpha 0.1 --clients 6
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parents[1]

from pfl_app.launch import launch, load_scenario  # noqa: E402
from pfl_app.plots import load_run  # noqa: E402


def per_round(run_dir: Path) -> dict[int, dict[str, float]]:
    _, rows = load_run(run_dir)
    out: dict[int, dict[str, float]] = {}
    for rnd in sorted({r["round"] for r in rows}):
        these = [r for r in rows if r["round"] == rnd]
        train_up = [r for r in these if r.get("status") == "ok"]
        out[rnd] = {
            "uplink_bytes": sum(r["bytes_up"] for r in these),
            "personalized_accuracy": fmean(r["personalized_accuracy"] for r in train_up),
            "global_accuracy": fmean(r["global_accuracy"] for r in train_up),
        }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=str(ROOT / "simulation.toml"))
    p.add_argument("--clients", type=int, help="override num-supernodes")
    p.add_argument("--rounds", type=int, help="override num-server-rounds")
    p.add_argument("--alpha", type=float, help="override data.alpha (Dirichlet label skew)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="override model.name")
    p.add_argument("--results-dir", default=str(ROOT / "results" / "bench"))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    scenario = load_scenario(args.scenario)
    if args.clients:
        scenario.federation["num-supernodes"] = args.clients
    # An ideal link: this benchmark is about bytes and accuracy; bench/wireless_sweep.py is about the air.
    common = {"seed": args.seed, "results-dir": args.results_dir, "data.partitioner": "dirichlet",
              "wireless.profile": "ideal"}
    for key, value in (("num-server-rounds", args.rounds), ("data.alpha", args.alpha), ("model.name", args.model)):
        if value is not None:
            common[key] = value
    tag = f"s{args.seed}-{os.getpid()}"
    figures = {}
    for method in ("pftt", "send-all"):
        print(f"== {method} ==", flush=True)
        _, run_dir = launch(ROOT, scenario, {**common, "method": method, "run-name": f"{method}-{tag}"},
                            echo=lambda line: print(line, flush=True) if line.startswith("round") else None)
        figures[method] = {"run_dir": str(run_dir), "rounds": per_round(run_dir),
                           "summary": load_run(run_dir)[0]}

    a, b = figures["pftt"], figures["send-all"]
    print()
    print("| round | PFTT uplink B | send-all uplink B | ratio | PFTT pers. acc | send-all pers. acc | PFTT global acc | send-all global acc |")
    print("|---|---|---|---|---|---|---|---|")
    for rnd in sorted(a["rounds"]):
        x, y = a["rounds"][rnd], b["rounds"][rnd]
        print(f"| {rnd} | {x['uplink_bytes']:,} | {y['uplink_bytes']:,} | {x['uplink_bytes'] / y['uplink_bytes']:.3f} "
              f"| {x['personalized_accuracy']:.3f} | {y['personalized_accuracy']:.3f} "
              f"| {x['global_accuracy']:.3f} | {y['global_accuracy']:.3f} |")
    sa, sb = a["summary"], b["summary"]
    print()
    print(f"uplink total: PFTT {sa['uplink_bytes_total']:,} B, send-all {sb['uplink_bytes_total']:,} B, "
          f"ratio {sa['uplink_bytes_total'] / sb['uplink_bytes_total']:.3f}")
    print(f"final personalized accuracy: PFTT {sa['personalized_accuracy_mean']:.3f}, "
          f"send-all {sb['personalized_accuracy_mean']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
