"""What PFIT's two sparse self-attention knobs save, against dense, on the embedded SmolLM2.

1. Sparse attention *update* (``rlhf.sparse-update``): the bytes of the policy LoRA each
   client sends per round, and the time of one GRPO step, for every layer (dense), the last
   k layers, and every k-th layer.
2. Sparse attention *pattern* (``rlhf.attention = local-window``): the time of a forward
   pass over long prompts with a local window plus sink tokens, against dense attention.

    python bench/pfit_sparse.py                 # all of it, ~5 minutes on 2 cores
    python bench/pfit_sparse.py --skip-grpo     # bytes and attention only
"""

from __future__ import annotations

import argparse
import os
import time
from statistics import median

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from pfl_app.config import parse_run_config  # noqa: E402
from pfl_app.models.personalized import build_personalized_model, get_tensors, set_trainable  # noqa: E402
from pfl_app.records import to_arrayrecord  # noqa: E402
from pfl_app.rlhf.client_setup import client_preference, client_prompts, prompt_dataset  # noqa: E402
from pfl_app.rlhf.grpo import train_policy  # noqa: E402
from pfl_app.rlhf.reward_models import load_reward_scorers  # noqa: E402

UPDATES = (("dense", 1), ("last-k", 10), ("every-k", 3), ("last-k", 4))


def update_costs(grpo_steps: int) -> None:
    print("| sparse update | layers with LoRA | bytes sent per client per round | vs dense | GRPO step s |")
    print("|---|---|---|---|---|")
    dense_bytes = None
    for update, k in UPDATES:
        cfg = parse_run_config({"method": "pfit", "rlhf.sparse-update": update, "rlhf.sparse-k": k,
                                "train.local-steps": grpo_steps, "train.learning-rate": 1e-3})
        torch.manual_seed(0)
        model, tok = build_personalized_model(cfg)
        tensors = get_tensors(model, ("lora_A", "lora_B"))
        nbytes = to_arrayrecord(tensors).count_bytes()
        dense_bytes = dense_bytes or nbytes
        layers = len({n.split(".layers.")[1].split(".")[0] for n in tensors})
        step = "-"
        if grpo_steps:
            set_trainable(model, ("lora_A", "lora_B"))
            prompts = client_prompts(cfg.rlhf, 0, 4, 0)
            scorers = load_reward_scorers(cfg.rlhf, cfg.model.cache_dir, cfg.model.name)
            result = train_policy(model, tok, prompt_dataset(prompts.train), scorers,
                                  client_preference(cfg.rlhf, 0, 4), cfg.train, cfg.rlhf, seed=0)
            step = f"{result.seconds / result.steps:.2f}"
        label = "dense" if update == "dense" else f"{update}, k={k}"
        print(f"| {label} | {layers} | {nbytes:,} | {nbytes / dense_bytes:.3f} | {step} |", flush=True)


def attention_costs(lengths: list[int], window: int, sinks: int, repeats: int) -> None:
    print(f"\n| prompt tokens | dense forward s | local window {window} + {sinks} sinks s | speed-up |")
    print("|---|---|---|---|")
    models = {}
    for pattern in ("dense", "local-window"):
        cfg = parse_run_config({"method": "pfit", "rlhf.attention": pattern, "rlhf.attention-window": window,
                                "rlhf.sink-tokens": sinks})
        models[pattern] = build_personalized_model(cfg)[0].eval()
    for length in lengths:
        ids = torch.randint(100, 40000, (1, length), generator=torch.Generator().manual_seed(length))
        times = {}
        for pattern, model in models.items():
            with torch.no_grad():
                model(input_ids=ids)  # warm-up
                runs = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    model(input_ids=ids)
                    runs.append(time.perf_counter() - start)
            times[pattern] = median(runs)
        print(f"| {length} | {times['dense']:.2f} | {times['local-window']:.2f} "
              f"| {times['dense'] / times['local-window']:.2f}x |", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grpo-steps", type=int, default=3, help="GRPO steps timed per setting")
    p.add_argument("--skip-grpo", action="store_true")
    p.add_argument("--lengths", default="512,1024,2048")
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--sinks", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    update_costs(0 if args.skip_grpo else args.grpo_steps)
    attention_costs([int(x) for x in args.lengths.split(",")], args.window, args.sinks, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
