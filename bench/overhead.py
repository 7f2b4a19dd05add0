"""Where a round's time goes: the same work as a plain in-process loop and as a real `flwr run`.

The plain loop does what one PFTT round asks of the clients, in this process, with nothing
around it: for each client in turn, load its tensors into the one model, take
`train.local-steps` optimizer steps with a plain torch loop (AdamW on the trainable tensors,
loss on the answer tokens, the batches a trainer would draw), then score the personalized and
the global model on its test split with the project's own evaluation. The `flwr run` side is
the default scenario on an ideal link (no channel draws), through `pfl_app.launch.launch`:
Flower, Ray, the ServerApp's checks and checkpoints, and trl's SFTTrainer built anew for every
client call.

Printed: a round's wall time each way and their ratio; a training step each way (trl's
`train-seconds / train-steps` per client, which includes building the trainer, against the plain
loop's median step) and their ratio; and where the plain round's time goes (training,
evaluation). Run it on a quiet machine: both sides are wall times.

    python bench/overhead.py                  # 2 rounds of simulation.toml's scenario
    python bench/overhead.py --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from statistics import fmean, median

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from pfl_app.client.data import client_data  # noqa: E402
from pfl_app.config import parse_run_config  # noqa: E402
from pfl_app.launch import launch, load_scenario, resolve_run_config  # noqa: E402
from pfl_app.models.personalized import (  # noqa: E402
    TENSOR_GROUPS,
    set_tensors,
    set_trainable,
    shared_model_bundle,
)
from pfl_app.plots import load_run  # noqa: E402
from pfl_app.tasks import _pad  # noqa: E402
from pfl_app.tasks import evaluate as evaluate_task  # noqa: E402


def plain_steps(model, examples, settings, seed: int, pad_id: int) -> list[float]:
    """``settings.local_steps`` AdamW steps on shuffled batches; the seconds of each step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    model.train()
    times = []
    for step in range(settings.local_steps):
        start = time.perf_counter()
        picked = [order[(step * settings.batch_size + i) % len(order)] for i in range(settings.batch_size)]
        batch = examples.select(picked)
        ids = _pad(batch["input_ids"], pad_id)
        labels = torch.where(_pad(batch["completion_mask"], 0).bool(), ids, torch.full_like(ids, -100))
        attention = _pad([[1] * len(s) for s in batch["input_ids"]], 0)
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    model.eval()
    return times


def plain_rounds(cfg, num_clients: int, rounds: int) -> dict[str, float]:
    """The plain loop's rounds: wall time per round, its training and evaluation parts, the
    median step."""
    bundle = shared_model_bundle(cfg)
    model, tokenizer = bundle.model, bundle.tokenizer
    shared = cfg.method_spec.strategy.shared_groups
    local = [g for g in TENSOR_GROUPS if g not in shared]
    for c in range(num_clients):  # load every client's data first: flwr's clients cache theirs too
        client_data(cfg, c, num_clients, tokenizer)
    steps, train_s, eval_s, round_s = [], 0.0, 0.0, []
    for rnd in range(1, rounds + 1):
        start = time.perf_counter()
        for c in range(num_clients):
            data = client_data(cfg, c, num_clients, tokenizer)
            set_tensors(model, bundle.initial_tensors(TENSOR_GROUPS))
            set_trainable(model, TENSOR_GROUPS)
            t0 = time.perf_counter()
            steps += plain_steps(model, data.train, cfg.train, cfg.seed + rnd * 1009 + c, tokenizer.pad_token_id)
            t1 = time.perf_counter()
            evaluate_task(model, data.task, data.test, tokenizer, cfg.train.eval_batch_size)
            set_tensors(model, bundle.initial_tensors(local))
            evaluate_task(model, data.task, data.test, tokenizer, cfg.train.eval_batch_size)
            train_s += t1 - t0
            eval_s += time.perf_counter() - t1
        round_s.append(time.perf_counter() - start)
    return {"round_s": fmean(round_s), "step_s": median(steps), "train_s_per_round": train_s / rounds,
            "eval_s_per_round": eval_s / rounds}


def flwr_rounds(scenario, overrides: dict, results_dir: str) -> dict[str, float]:
    """The real run's rounds: wall time per round (the first, which loads the model, apart),
    and trl's seconds per step."""
    _, run_dir = launch(ROOT, scenario, {**overrides, "results-dir": results_dir},
                        echo=lambda line: print(line, flush=True) if line.startswith("round") else None)
    _, rows = load_run(run_dir)
    by_round: dict[int, float] = {}
    for r in rows:
        by_round[r["round"]] = r["round_wall_s"]
    trained = [r for r in rows if r.get("train_steps")]
    return {"round_s": fmean(by_round.values()), "first_round_s": by_round[min(by_round)],
            "later_round_s": fmean(v for k, v in by_round.items() if k > min(by_round)) if len(by_round) > 1
            else float("nan"),
            "step_s": fmean(r["train_seconds"] / r["train_steps"] for r in trained), "run_dir": str(run_dir)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=str(ROOT / "simulation.toml"))
    p.add_argument("--rounds", type=int, default=2, help="rounds each way; the flwr run's first is left out "
                   "of the comparison when there are more (it loads the model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="another run-config override for both sides (e.g. model.name=tiny-llama)")
    p.add_argument("--results-dir", default=str(ROOT / "results" / "overhead"))
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()

    from pfl_app.launch import parse_overrides

    scenario = load_scenario(args.scenario)
    overrides = {"num-server-rounds": args.rounds, "wireless.profile": "ideal", **parse_overrides(args.set)}
    cfg = parse_run_config(resolve_run_config(scenario, overrides, ROOT))
    num_clients = int(scenario.federation["num-supernodes"])
    torch.set_num_threads(max(1, int(scenario.federation.get("client-resources-num-cpus", os.cpu_count() or 1))))

    print(f"== plain loop: {num_clients} clients x {args.rounds} round(s) ==", flush=True)
    plain = plain_rounds(cfg, num_clients, args.rounds)
    print("== flwr run: the same scenario ==", flush=True)
    real = flwr_rounds(scenario, overrides, args.results_dir)

    # The run's first round also loads the model into the Ray actor; the plain loop loaded it before timing.
    real_round = real["later_round_s"] if args.rounds > 1 else real["round_s"]
    rows = [
        ("round wall time (s)", plain["round_s"], real_round),
        ("training step (s)", plain["step_s"], real["step_s"]),
    ]
    print()
    print("| | plain loop | flwr run | ratio |")
    print("|---|---|---|---|")
    for label, a, b in rows:
        print(f"| {label} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
    print(f"\nplain round: training {plain['train_s_per_round']:.1f} s, evaluation {plain['eval_s_per_round']:.1f} s "
          f"({plain['eval_s_per_round'] / plain['round_s']:.0%} of the round)")
    if args.rounds > 1:
        print(f"flwr run: first round {real['first_round_s']:.1f} s (loads the model), later rounds "
              f"{real['later_round_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"plain": plain, "flwr": real}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
