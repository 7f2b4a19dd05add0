"""PFIT against federated RLHF with uniform weights (plain FedAvg) and local-only RLHF, on
the same seed, clients, prompts and reward models; the base model is scored in the same
runs (last round). Writes the helpfulness-vs-safety plot and prints the table.

    python bench/pfit_compare.py                          # scenarios/pfit.toml
    python bench/pfit_compare.py --rounds 5 --steps 8     # longer
    python bench/pfit_compare.py --methods rlhf-fedavg,rlhf-local --with-runs results/pfit-default
    python bench/pfit_compare.py --seeds 0,1,2 --methods pfit,rlhf-fedavg,rlhf-local,rlhf-single

The per-client table and the plot show the lowest seed among the runs (``--with-runs``
included); the separation table (how far apart the helpfulness-first and the safety-first
client end up) averages over every seed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from pfl_app.launch import launch, load_scenario, parse_overrides  # noqa: E402
from pfl_app.plots import load_run, objective_table, plot_preferences, preference_table, separation_table  # noqa: E402,E501

METHODS = ("pfit", "rlhf-fedavg", "rlhf-local")


def run_seed(run_dir: Path) -> int:
    """The seed a finished run was made with (its ``config.json``)."""
    return int(json.loads((run_dir / "config.json").read_text())["run_config"]["seed"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=str(ROOT / "scenarios" / "pfit.toml"))
    p.add_argument("--rounds", type=int, help="override num-server-rounds")
    p.add_argument("--steps", type=int, help="override train.local-steps")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, each a full set of runs")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="run-config keys to override in every run (e.g. rlhf.proximal-mu=0.001)")
    p.add_argument("--with-runs", nargs="*", default=[],
                   help="finished runs of the same scenario and first seed to include instead of rerunning "
                        "them (e.g. the default PFIT run)")
    p.add_argument("--results-dir", default=str(ROOT / "results" / "bench"))
    p.add_argument("--plot", default=str(ROOT / "results" / "bench" / "pfit_helpfulness_vs_safety.png"))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    scenario = load_scenario(args.scenario)
    common = {"results-dir": args.results_dir}
    common.update(parse_overrides(args.set))
    if args.rounds:
        common["num-server-rounds"] = args.rounds
    if args.steps:
        common["train.local-steps"] = args.steps
    seeds = [int(s) for s in args.seeds.split(",") if s]
    runs = [Path(r).resolve() for r in args.with_runs]
    for seed in seeds:
        for method in [m for m in args.methods.split(",") if m]:
            print(f"== {method}, seed {seed} ==", flush=True)
            _, run_dir = launch(ROOT, scenario, {**common, "seed": seed, "method": method,
                                                 "run-name": f"{method}-s{seed}-{os.getpid()}"},
                                echo=lambda line: print(line, flush=True) if line.startswith("round") else None)
            runs.append(run_dir)
    lowest = min(run_seed(r) for r in runs)
    first_seed = [r for r in runs if run_seed(r) == lowest]
    print()
    print(preference_table(first_seed))
    print()
    groups: dict[str, list[Path]] = {}
    for run in runs:
        groups.setdefault(load_run(run)[0].get("method", run.name), []).append(run)
    print(separation_table(groups))
    print()
    print(objective_table(groups))
    print()
    print(f"runs: {', '.join(str(r) for r in runs)}")
    print(f"plot: {plot_preferences(first_seed, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
