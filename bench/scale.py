"""Peak memory, wall time per round and per-client overhead of a simulation as the number of
clients grows.

Each point is a real Flower simulation of PFTT. A sampler thread sums the resident memory of
this process's whole tree (this launcher, SuperLink, ServerApp, Ray and its actors) every
0.5 s; the peak of that sum is reported. Clients run one after another in one Ray actor
(client-resources-num-cpus = 2 on 2 cores) that keeps one copy of the base model; a client's
own tensors live on disk and are read only when it is sampled (pfl_app/client/state.py), so
memory should not grow with the number of clients.

Per round, the clients report the seconds their compute took (``train_seconds`` of local
training, ``eval_seconds`` of scoring); the rest of the round's wall time is overhead: Flower
(messages, Ray, the SuperLink), data loading, reading and writing the client's tensors, the
server's aggregation and checkpoint. ``overhead per client`` divides it by the client calls of
the round (a train and an evaluate message each count once).

    python bench/scale.py                                    # SmolLM2, 10/25/50 clients, all train
    python bench/scale.py --light --clients 10 100 1000 --fraction 0.1

``--light`` is a workload small enough for 1,000 clients on 2 cores: the tiny random model
(``tiny-llama``), one local step of 2 examples, 2 test examples per client.
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

# The default: SmolLM2 with few examples (as before --fraction and --light existed).
FULL = {"data.max-train-examples": 8, "data.max-test-examples": 4, "train.batch-size": 4}
# Small enough for 1,000 clients on 2 cores: BBC's 2,225 articles give each of 1,000 IID clients
# 2 or 3, which a test fraction of 0.5 splits into train and test rows.
LIGHT = {
    "model.name": "tiny-llama", "model.max-length": 64, "adapter.bottleneck-dim": 4, "lora.r": 2,
    "lora.alpha": 4, "lora.target-modules": "q_proj,v_proj", "data.test-fraction": 0.5,
    "data.max-train-examples": 2, "data.max-test-examples": 2, "train.batch-size": 2, "eval.batch-size": 2,
}


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


def round_figures(rows: list[dict]) -> list[dict]:
    """Per round: its wall time, the clients' reported compute, the client calls (train and
    evaluate messages answered) and the overhead per call."""
    out = []
    for rnd in sorted({r["round"] for r in rows}):
        these = [r for r in rows if r["round"] == rnd]
        wall = float(these[0]["round_wall_s"])
        train = [float(r["train_seconds"]) for r in these if isinstance(r.get("train_seconds"), (int, float))]
        evals = [float(r["eval_seconds"]) for r in these if isinstance(r.get("eval_seconds"), (int, float))]
        calls = len(train) + len(evals)
        compute = sum(train) + sum(evals)
        out.append({"round": rnd, "wall_s": wall, "train_calls": len(train), "eval_calls": len(evals),
                    "compute_s": compute, "overhead_per_call_s": (wall - compute) / calls if calls else float("nan")})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, nargs="+", default=[10, 25, 50])
    p.add_argument("--fraction", type=float, default=1.0,
                   help="fraction-train and fraction-evaluate (min-clients is set to what it samples)")
    p.add_argument("--rounds", type=int, default=None, help="default: 1, with --light 2 (round 1 includes start-up)")
    p.add_argument("--light", action="store_true", help="the tiny model, 1 step of 2 examples, 2 test examples")
    p.add_argument("--model", default=None, help="model.name (default: smollm2-135m-instruct, with --light tiny-llama)")
    p.add_argument("--results-dir", default=str(ROOT / "results" / "scale"))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rounds = args.rounds if args.rounds is not None else (2 if args.light else 1)
    table = []
    for n in args.clients:
        sampled = max(1, int(n * args.fraction))  # as Flower's FedAvg computes it
        config = {
            **(LIGHT if args.light else FULL),
            "num-server-rounds": rounds, "data.partitioner": "iid", "train.local-steps": 1,
            "fraction-train": args.fraction, "fraction-evaluate": args.fraction,
            "min-clients": sampled, "min-answers": 1,
            "results-dir": args.results_dir, "run-name": f"clients-{n}-f{args.fraction:g}-{os.getpid()}",
        }
        if args.model or not args.light:
            config["model.name"] = args.model or "smollm2-135m-instruct"
        sampler = PeakMemory()
        sampler.start()
        start = time.time()
        _, run_dir = launch(ROOT, Scenario({"num-supernodes": n, "client-resources-num-cpus": 2}, config), {},
                            echo=lambda line: print(line, flush=True) if line.startswith("round") else None)
        wall = time.time() - start
        peak = sampler.stop()
        _, rows = load_run(run_dir)
        per_round = round_figures(rows)
        table.append({"clients": n, "fraction": args.fraction, "light": args.light, "peak_rss_gib": peak / 2**30,
                      "wall_s": wall, "rounds": per_round, "clients_seen": len({r.get("client") for r in rows}),
                      "run_dir": str(run_dir)})
        print(f"{n} clients: peak {peak / 2**30:.2f} GiB, rounds "
              f"{[round(r['wall_s'], 1) for r in per_round]} s, overhead per call "
              f"{[round(r['overhead_per_call_s'], 3) for r in per_round]} s", flush=True)
    print()
    print("| clients | sampled per round (train + evaluate) | peak memory (GiB) | wall time per round (s) "
          "| clients' compute per round (s) | overhead per client call (s) | whole run incl. start-up (s) |")
    print("|---|---|---|---|---|---|---|")
    for t in table:
        rs = t["rounds"]
        calls = ", ".join(f"{r['train_calls']} + {r['eval_calls']}" for r in rs)
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in rs)
        compute = ", ".join(f"{r['compute_s']:.1f}" for r in rs)
        overhead = ", ".join(f"{r['overhead_per_call_s']:.2f}" for r in rs)
        print(f"| {t['clients']} | {calls} | {t['peak_rss_gib']:.2f} | {walls} | {compute} | {overhead} "
              f"| {t['wall_s']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
