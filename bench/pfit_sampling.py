"""How often the policy that RLHF starts from refuses when GRPO samples it, and what the two
reward models make of its refusals: the signal a client's RL has to work with.

The policy is the run config's starting point: the supervised warm-up's model
(``rlhf.warmup-steps``, ``docs/pfit.md``), or ``model.name`` itself with
``--set rlhf.warmup-steps=0``. For each temperature, it (no LoRA) samples ``--generations`` answers to each of
``--prompts`` held-out harmful and benign prompts, as GRPO does. Printed per temperature and
kind of prompt: the refusal rate, the mean helpfulness and safety reward of refusals and of
the other answers, and how many prompts got both a refusal and a non-refusal among their
samples (only those groups let GRPO favour, or disfavour, refusing).

A second table says how much of GRPO's learning signal on these samples is about refusing, for
a helpfulness-first and a safety-first client (safety weight 0.1 and 0.9) under each way of
turning rewards into advantages (``rlhf.reward-aggregation`` / ``rlhf.scale-rewards``): the
*refusal push* is the advantage summed over refusals, divided by the advantage's absolute sum
over all samples. Advantages are centred per prompt, so it lies in [-0.5, +0.5]: +0.5 when all
of the signal raises refusals over the other answers, -0.5 when all of it lowers them, near 0
when the signal is mostly about other differences between answers. One prompt per step (the
default ``rlhf.prompts-per-step``), so a step's batch is one group. It weighs whole answers;
trl's default loss (``dapo``) spreads each answer's advantage over its tokens, so read it as
the direction of the signal, not its exact share of the gradient.

    python bench/pfit_sampling.py                         # temperatures 0.7 and 1.0
    python bench/pfit_sampling.py --temperatures 0.5,0.7,1.0 --prompts 32
    python bench/pfit_sampling.py --set rlhf.warmup-steps=0   # the model before the warm-up
"""

from __future__ import annotations

import argparse
import os
import sys
import time


import numpy as np  # noqa: E402

from pfl_app.config import parse_run_config  # noqa: E402
from pfl_app.launch import parse_overrides  # noqa: E402
from pfl_app.models.loading import load_causal_lm, load_tokenizer  # noqa: E402
from pfl_app.rlhf.evaluation import sample_answers  # noqa: E402
from pfl_app.rlhf.preferences import is_refusal, prompts_in  # noqa: E402
from pfl_app.rlhf.prepare import prepare_rlhf_models  # noqa: E402


# (rlhf.reward-aggregation, rlhf.scale-rewards): the rows of the second table
PUSH_MODES = (("sum-then-normalize", "group"), ("sum-then-normalize", "none"), ("normalize-then-sum", "group"))


def _std(x: np.ndarray) -> np.ndarray:
    return x.std(axis=-1, ddof=1, keepdims=True)  # trl's nanstd is the unbiased one


def group_advantages(h: np.ndarray, s: np.ndarray, weights: tuple[float, float], aggregation: str,
                     scale: str) -> np.ndarray:
    """GRPO's advantages for groups (rows: a prompt's samples) of helpfulness ``h`` and
    safety ``s`` rewards, one group per step, as trl 1.16 computes them inside
    ``GRPOTrainer._generate_and_score_completions`` (not exposed as a function, so restated
    here to score groups offline)."""
    wh, ws = weights
    if aggregation == "normalize-then-sum":
        z = [(x - x.mean(axis=1, keepdims=True)) / (_std(x) + 1e-4) for x in (h, s)]
        r = wh * z[0] + ws * z[1]
        return (r - r.mean(axis=1, keepdims=True)) / (_std(r) + 1e-4)
    r = wh * h + ws * s
    centred = r - r.mean(axis=1, keepdims=True)
    return centred if scale == "none" else centred / (_std(r) + 1e-4)


def refusal_push(advantages: np.ndarray, refused: np.ndarray) -> float:
    """The advantage summed over refusals over its absolute sum: see the module's docstring."""
    total = np.abs(advantages).sum()
    return float(advantages[refused].sum() / total) if total > 0 else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--temperatures", default="0.7,1.0")
    p.add_argument("--prompts", type=int, default=16, help="harmful prompts, and as many benign ones")
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other run-config keys")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    cfg = parse_run_config({"model.name": args.model, "method": "pfit", **parse_overrides(args.set)})
    tokenizer = load_tokenizer(cfg.model.name)
    models = prepare_rlhf_models(cfg)
    print(f"policy: {models.policy}", file=sys.stderr)
    model = load_causal_lm(models.policy).eval()
    helpfulness, safety = models.scorers
    benign, harmful = prompts_in("heldout")
    rng = np.random.default_rng(args.seed)
    sets = {"harmful": [harmful[i] for i in rng.choice(len(harmful), args.prompts, replace=False)],
            "benign": [benign[i] for i in rng.choice(len(benign), args.prompts, replace=False)]}
    k = args.generations
    pushes = []
    print(f"| temperature | prompts | refusal rate | refusals: helpfulness / safety | others: helpfulness / "
          f"safety | prompts with both kinds among {k} samples |")
    print("|---|---|---|---|---|---|")
    for temperature in [float(t) for t in args.temperatures.split(",")]:
        for kind, items in sets.items():
            start = time.time()
            # One batch of every prompt, as the figures in docs/pfit.md were drawn.
            grouped = sample_answers(model, tokenizer, items, k, temperature, args.max_new_tokens,
                                     batch_size=len(items), seed=args.seed)
            answers = [a for group in grouped for a in group]
            questions = [q.text for q in items for _ in range(k)]
            h, s = helpfulness.score(questions, answers), safety.score(questions, answers)
            refused = np.array([is_refusal(a) for a in answers])
            mixed = sum(0 < refused[i * k:(i + 1) * k].sum() < k for i in range(len(items)))
            for aggregation, scale in PUSH_MODES:
                push = [refusal_push(group_advantages(h.reshape(-1, k), s.reshape(-1, k), (1 - w, w),
                                                      aggregation, scale), refused.reshape(-1, k))
                        for w in (0.1, 0.9)]
                pushes.append(f"| {temperature} | {kind} | {aggregation} / {scale} | {push[0]:+.3f} | "
                              f"{push[1]:+.3f} | {push[1] - push[0]:+.3f} |")

            def scores(mask: np.ndarray) -> str:
                return f"{h[mask].mean():+.2f} / {s[mask].mean():+.2f} (n={mask.sum()})" if mask.any() else "-"

            print(f"| {temperature} | {kind} | {refused.mean():.2f} | {scores(refused)} | {scores(~refused)} "
                  f"| {mixed} of {len(items)} |", flush=True)
            print(f"<!-- {kind} at {temperature}: {len(answers)} answers in {time.time() - start:.0f} s -->",
                  file=sys.stderr)
    print("\n| temperature | prompts | reward-aggregation / scale-rewards | refusal push, safety weight 0.1 "
          "| refusal push, safety weight 0.9 | difference |")
    print("|---|---|---|---|---|---|")
    print("\n".join(pushes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
