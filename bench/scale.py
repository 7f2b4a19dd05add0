"""Peak memory and wall time per round of a simulation as the number of clients grows.

Each point is a real Flower simulation of the embedded default model (SmolLM2-135M) with
PFTT. A sampler thread sums the resident memory of this process's whole tree (SuperLink,
ServerApp, Ray and its actors) every 0.5 s; the peak of that sum is reported. Clients run
one after another in one Ray actor (client-resources-num-cpus = 2 on 2 cores) that keeps
one copy of the base model, so memory should not grow with the number of clients.

    python bench/scale.py                      # 10, 25, 50 clients, 1 round
    python bench/scale.py --clients 10 25 50 100 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

from pfl_app.launch import Scenario, launch  # noqa: E402
from pfl_app.plots import load_run  # noqa: E402


class PeakMemory(threading.Thread):
    """Sample the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._halt = interval, 0, threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self._halt.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[10, 25, 50])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--results-dir", default=str(ROOT / "results" / "scale"))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    table = []
    for n in args.clients:
        config = {
            "model.name": args.model, "num-server-rounds": args.rounds, "data.partitioner": "iid",
            "data.max-train-examples": 8, "data.max-test-examples": 4, "train.local-steps": 1,
            "train.batch-size": 4, "results-dir": args.results_dir, "run-name": f"clients-{n}-{os.getpid()}",
            "min-clients": n,
        }
        sampler = PeakMemory()
        sampler.start()
        start = time.time()
        _, run_dir = launch(ROOT, Scenario({"num-supernodes": n, "client-resources-num-cpus": 2}, config), {},
                            echo=lambda line: print(line, flush=True) if line.startswith("round") else None)
        wall = time.time() - start
        peak = sampler.stop()
        _, rows = load_run(run_dir)
        per_round = sorted({r["round"]: r["round_wall_s"] for r in rows}.items())
        table.append({"clients": n, "peak_rss_gib": peak / 2**30, "wall_s": wall,
                      "round_wall_s": [w for _, w in per_round], "clients_seen": len({r.get("client") for r in rows})})
        print(f"{n} clients: peak {peak / 2**30:.2f} GiB, rounds {[round(w, 1) for _, w in per_round]} s", flush=True)
    print()
    print("| clients | peak memory (GiB) | wall time per round (s) | whole run incl. start-up (s) |")
    print("|---|---|---|---|")
    for t in table:
        rounds = ", ".join(f"{w:.0f}" for w in t["round_wall_s"])
        print(f"| {t['clients']} | {t['peak_rss_gib']:.2f} | {rounds} | {t['wall_s']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
