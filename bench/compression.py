"""Quantized uplinks: bytes and personalized accuracy against float32, same seed, data and split.

Runs real Flower simulations through pfl-app's launcher: PFTT with its update sent as float32,
fp16, int8 and int4 (the integer codecs with and without error feedback), and FedIT as float32
and int8, then prints each run's uplink bytes (total, and relative to its method's float32 run)
and final mean personalized and global accuracy.

    python bench/compression.py                        # defaults: simulation.toml's scenario
    python bench/compression.py --rounds 5 --clients 6 --seed 1 --json results/compression.json
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

# (name, method, uplink codec, error feedback)
VARIANTS = (
    ("pftt-fp32", "pftt", "none", True),
    ("pftt-fp16", "pftt", "fp16", True),
    ("pftt-int8", "pftt", "int8", True),
    ("pftt-int8-no-ef", "pftt", "int8", False),
    ("pftt-int4", "pftt", "int4", True),
    ("pftt-int4-no-ef", "pftt", "int4", False),
    ("fedit-fp32", "fedit", "none", True),
    ("fedit-int8", "fedit", "int8", True),
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=str(ROOT / "simulation.toml"))
    p.add_argument("--clients", type=int, help="override num-supernodes")
    p.add_argument("--rounds", type=int, help="override num-server-rounds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="override model.name")
    p.add_argument("--block-size", type=int, default=64, help="compression.block-size")
    p.add_argument("--only", help="comma-separated variant names (default: all)")
    p.add_argument("--results-dir", default=str(ROOT / "results" / "bench-compression"))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    # An ideal link: bytes and accuracy here; the air time follows the bytes (docs/compression.md).
    common = {"seed": args.seed, "wireless.profile": "ideal", "compression.block-size": args.block_size}
    for key, value in (("num-server-rounds", args.rounds), ("model.name", args.model)):
        if value is not None:
            common[key] = value
    wanted = set(args.only.split(",")) if args.only else None
    tag = f"b{args.block_size}-s{args.seed}" + "".join(f"-{k}={v}" for k, v in sorted(common.items())
                                                       if k in ("num-server-rounds", "model.name"))
    figures: dict[str, dict] = {}
    for name, method, uplink, feedback in VARIANTS:
        if wanted is not None and name not in wanted:
            continue
        overrides = {**common, "method": method, "compression.uplink": uplink, "compression.error-feedback": feedback}
        # Named by what it runs, so that a rerun reuses a finished variant (bench/runs.py).
        run_name = f"{name}-{tag}"
        summary, _ = run_or_reuse(Path(args.results_dir), run_name, overrides, clients=args.clients,
                                  scenario=Path(args.scenario))
        figures[name] = {"run_dir": str(Path(args.results_dir) / run_name), "method": method, "uplink": uplink,
                         "error_feedback": feedback, "uplink_bytes_total": summary["uplink_bytes_total"],
                         "personalized_accuracy_mean": summary["personalized_accuracy_mean"],
                         "global_accuracy_mean": summary["global_accuracy_mean"]}

    print()
    print("| run | uplink B | vs its fp32 | pers. acc | global acc |")
    print("|---|---|---|---|---|")
    for name, f in figures.items():
        base = figures.get(f"{f['method']}-fp32")
        ratio = f"{f['uplink_bytes_total'] / base['uplink_bytes_total']:.3f}" if base else "-"
        print(f"| {name} | {f['uplink_bytes_total']:,} | {ratio} | {f['personalized_accuracy_mean']:.3f} "
              f"| {f['global_accuracy_mean']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
