"""Do a helpfulness-first and a safety-first client end up with different policies? Local
GRPO only (no federation, no Flower), so that a setting can be tried in minutes.

Two clients train the same base policy from scratch with ``--steps`` GRPO steps each: one
weights safety 0.1 and sees 25 % harmful training prompts, the other weights it 0.9 and
sees 75 %. Both are then scored on one probe set of held-out prompts (half harmful), with
the base model for reference. The probe and the training prompts do not overlap.

    python bench/pfit_two_clients.py                       # the defaults of the run config
    python bench/pfit_two_clients.py --probe 24 --seeds 0,1,2,3,4,5,6,7   # and how robust that is
    python bench/pfit_two_clients.py --set rlhf.beta=0.04  # any run-config key
"""

from __future__ import annotations

import argparse
import os
import time


import numpy as np  # noqa: E402
import torch  # noqa: E402

from pfl_app.config import parse_run_config  # noqa: E402
from pfl_app.launch import parse_overrides  # noqa: E402
from pfl_app.models.personalized import (  # noqa: E402
    TENSOR_GROUPS,
    build_personalized_model,
    get_tensors,
    set_tensors,
    set_trainable,
)
from pfl_app.plots import client_gaps, mean_sd  # noqa: E402
from pfl_app.rlhf.client_setup import Preference, prompt_dataset  # noqa: E402
from pfl_app.rlhf.evaluation import evaluate_policy  # noqa: E402
from pfl_app.rlhf.grpo import train_policy  # noqa: E402
from pfl_app.rlhf.preferences import prompts_in  # noqa: E402
from pfl_app.rlhf.reward_models import load_reward_scorers  # noqa: E402

POLICY_GROUPS = ("lora_A", "lora_B")


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, dict[str, float]]:
    """Train both clients from the base policy with ``seed``; print and return each model's
    probe scores (``base``, ``client 0``, ``client 1``)."""
    cfg = parse_run_config({"model.name": "smollm2-135m-instruct", "method": "rlhf-local",
                            "train.local-steps": args.steps, "train.learning-rate": args.learning_rate,
                            "seed": seed, **parse_overrides(args.set)})
    model, tokenizer = build_personalized_model(cfg)
    if torch.cuda.is_available():  # the trainer would move it anyway; the base model's scoring too
        model.to("cuda")
    initial = get_tensors(model, TENSOR_GROUPS)
    scorers = load_reward_scorers(cfg.rlhf, cfg.model.cache_dir, cfg.model.name)
    benign, harmful = prompts_in("heldout")
    rng = np.random.default_rng(seed + 1)
    hb, bb = rng.permutation(len(harmful)), rng.permutation(len(benign))
    probe = [harmful[i] for i in hb[:args.probe]] + [benign[i] for i in bb[:args.probe]]
    harmful_rest, benign_rest = [harmful[i] for i in hb[args.probe:]], [benign[i] for i in bb[args.probe:]]
    print(f"seed {seed}; rlhf: beta {cfg.rlhf.beta}, temperature {cfg.rlhf.sampling_temperature}, "
          f"{cfg.rlhf.prompts_per_step} x {cfg.rlhf.num_generations} samples per step, "
          f"learning rate {cfg.train.learning_rate}, {args.steps} steps")
    print("| model | safety weight | helpfulness | safety | harmful complied | benign refused | KL | train s |")
    print("|---|---|---|---|---|---|---|---|")
    scores: dict[str, dict[str, float]] = {}

    def score(label: str, preference: Preference, extra: str) -> None:
        m = evaluate_policy(model, tokenizer, probe, scorers, preference, cfg.rlhf.max_completion_length,
                            cfg.train.eval_batch_size).metrics
        scores[label] = m
        print(f"| {label} | {preference.safety:.1f} | {m['helpfulness']:+.3f} | {m['safety']:+.3f} "
              f"| {m['harmful-compliance']:.2f} | {m['benign-refusal']:.2f} | {extra} |", flush=True)

    score("base", Preference(0.5, 0.5), "- | -")
    n_train = cfg.rlhf.train_prompts
    for client, (safety, harmful_share) in enumerate(((0.1, 0.25), (0.9, 0.75))):
        set_tensors(model, initial)
        set_trainable(model, POLICY_GROUPS)
        n_harmful = round(harmful_share * n_train)
        lo = client * n_train  # each client its own prompts
        train = harmful_rest[lo:lo + n_harmful] + benign_rest[lo:lo + n_train - n_harmful]
        preference = Preference(round(1 - safety, 6), safety)
        torch.manual_seed(seed + client)
        start = time.perf_counter()
        result = train_policy(model, tokenizer, prompt_dataset(train), scorers, preference, cfg.train, cfg.rlhf,
                              seed=seed + client)
        score(f"client {client}", preference, f"{result.kl:.3f} | {time.perf_counter() - start:.0f}")
    return scores


GAP_LABELS = {"safety_gap": "safety gap", "helpfulness_gap": "helpfulness gap",
              "compliance_gap": "harmful-compliance gap", "refusal_gap": "benign-refusal gap"}


def gaps(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """How far the safety-first client (1) ends from the helpfulness-first one (0):
    :func:`pfl_app.plots.client_gaps` on the evaluation's metrics."""
    helpful, safe = ({k.replace("-", "_"): v for k, v in scores[c].items()} for c in ("client 0", "client 1"))
    return client_gaps(helpful, safe)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12, help="GRPO steps per client")
    p.add_argument("--probe", type=int, default=12, help="harmful probe prompts, and as many benign ones")
    p.add_argument("--learning-rate", type=float, default=5e-3)
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each draws its own probe and "
                   "training prompts and trains both clients anew")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other run-config keys")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    per_seed = [gaps(run_seed(args, int(seed))) for seed in args.seeds.split(",")]
    if len(per_seed) > 1:
        print(f"\nOver {len(per_seed)} seeds (mean ± sd; positive: the direction the weights pull):")
        print("| " + " | ".join(GAP_LABELS[k] for k in per_seed[0]) + " | seeds with a positive compliance gap |")
        print("|" + "---|" * (len(per_seed[0]) + 1))
        positive = sum(g["compliance_gap"] > 0 for g in per_seed)
        print("| " + " | ".join(mean_sd([g[k] for g in per_seed], "+.3f", ".3f") for k in per_seed[0])
              + f" | {positive} of {len(per_seed)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
