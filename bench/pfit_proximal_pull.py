"""What moves a PFIT client in the last round of a finished run: the proximal term's pull
toward the global policy, set against GRPO's own gradient, and how far a round moves the
clients compared with how far apart they are.

From the run folder it reads each client's policy LoRA as of the last round and the one
before (``clients/client-NNN/local_tensors*.safetensors``) and the global policy the last
round started from (``checkpoints/round-<last-1>/shared.safetensors``), and prints their
distances (L2 over every LoRA weight). Then it replays the last round's local GRPO for
``--client`` from its own policy of the round before, anchored to that global policy, with
the run's config and seed, and prints per step the norm of GRPO's gradient, of the proximal
gradient ``mu * (w - w_global)``, and the share of weights where the proximal one is the
larger (Adam scales each weight's step by its own gradient history, so where the pull
dominates it sets the step's direction whatever ``mu`` is).

    python bench/pfit_proximal_pull.py results/pfit-pair-s0            # client 1, the safety-first
    python bench/pfit_proximal_pull.py RUN --client 0 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path


import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from pfl_app.client.task_tuning import round_seed  # noqa: E402
from pfl_app.client.state import client_dir, saved_round  # noqa: E402
from pfl_app.config import parse_run_config  # noqa: E402
from pfl_app.models.personalized import build_personalized_model, set_tensors, set_trainable  # noqa: E402
from pfl_app.rlhf import grpo  # noqa: E402
from pfl_app.rlhf.client_setup import client_preference, client_prompts, prompt_dataset  # noqa: E402
from pfl_app.rlhf.reward_models import load_reward_scorers  # noqa: E402
from pfl_app.training import anchor_tensors  # noqa: E402


def distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """L2 distance over the tensors both hold."""
    return float(np.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in a if k in b)))


class GradientSplit(grpo.ProximalGRPOTrainer):
    """Records, each step, GRPO's gradient and the proximal term's, apart."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = grpo.GRPOTrainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                             num_items_in_batch=num_items_in_batch)
        params = [(n, p) for n, p in model.named_parameters() if n in self.anchor]
        grads = torch.autograd.grad(loss, [p for _, p in params], retain_graph=True)
        rl = torch.cat([g.flatten() for g in grads]).detach()
        prox = torch.cat([(self.mu * (p - self.anchor[n].to(p.device))).flatten() for n, p in params]).detach()
        self.split.append((rl, prox))
        return loss + self.proximal_term(model)  # the step itself is the usual one


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a finished PFIT run folder")
    p.add_argument("--client", type=int, default=1)
    p.add_argument("--steps", type=int, help="GRPO steps to replay (default: the run's train.local-steps)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run = Path(args.run).resolve()
    config = json.loads((run / "config.json").read_text())
    cfg = parse_run_config(config["run_config"])
    num_clients = len(list((run / "clients").glob("client-*")))

    last, before = {}, {}
    for c in range(num_clients):
        d = client_dir(run, c)
        last[c], before[c] = load_file(str(d / "local_tensors.safetensors")), \
            load_file(str(d / "local_tensors.previous.safetensors"))
    rnd = saved_round(client_dir(run, args.client) / "local_tensors.safetensors")
    glob = load_file(str(run / "checkpoints" / f"round-{rnd - 1:04d}" / "shared.safetensors"))
    print(f"run {run.name}: {cfg.method}, seed {cfg.seed}, {num_clients} clients; round {rnd} (the last)"
          + (f", anchored to the global policy of round {rnd - 1}" if glob else ""))
    print("| client | moved in round | from the global, round before | from the global, after |")
    print("|---|---|---|---|")
    for c in range(num_clients):
        from_global = (f"{distance(before[c], glob):.2f} | {distance(last[c], glob):.2f}" if glob else "- | -")
        print(f"| {c} | {distance(last[c], before[c]):.2f} | {from_global} |")
    if num_clients > 1:
        print(f"clients 0 and {num_clients - 1} apart: {distance(before[0], before[num_clients - 1]):.2f} "
              f"(round {rnd - 1}), {distance(last[0], last[num_clients - 1]):.2f} (round {rnd})")

    if not glob:
        print("nothing is shared in this run, so there is no proximal term to replay")
        return 0

    model, tokenizer = build_personalized_model(cfg)
    set_tensors(model, before[args.client])
    set_trainable(model, ("lora_A", "lora_B"))
    settings = replace(cfg.train, local_steps=args.steps or cfg.train.local_steps)
    seed = round_seed(cfg.seed, rnd, args.client)  # the seed the client's last round used
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as out:
        trainer = GradientSplit(
            anchor=anchor_tensors(glob), mu=cfg.rlhf.proximal_mu, model=model,
            reward_funcs=list(load_reward_scorers(cfg.rlhf, cfg.model.cache_dir, cfg.model.name)),
            args=grpo.grpo_config(settings, cfg.rlhf, client_preference(cfg.rlhf, args.client, num_clients), seed,
                                  out),
            train_dataset=prompt_dataset(client_prompts(cfg.rlhf, args.client, num_clients, cfg.seed).train),
            processing_class=tokenizer)
        trainer.split = []
        trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    print(f"\nclient {args.client}'s last round replayed (mu {cfg.rlhf.proximal_mu}, "
          f"{len(trainer.split)} steps):")
    print("| step | reward | GRPO gradient | proximal gradient | ratio | weights where the pull is larger |")
    print("|---|---|---|---|---|---|")
    for i, ((rl, prox), reward) in enumerate(zip(trainer.split, rewards)):
        print(f"| {i + 1} | {reward:+.3f} | {rl.norm():.4f} | {prox.norm():.4f} | {prox.norm() / rl.norm():.2f} "
              f"| {(prox.abs() > rl.abs()).float().mean():.2f} |")
    rl_sum, prox_sum = sum(s[0] for s in trainer.split), sum(s[1] for s in trainer.split)
    print(f"summed over the steps: ratio {prox_sum.norm() / rl_sum.norm():.2f}, pull larger on "
          f"{(prox_sum.abs() > rl_sum.abs()).float().mean():.2f} of the weights")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
