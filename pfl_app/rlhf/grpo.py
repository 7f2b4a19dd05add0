"""Local RLHF on one client: trl's GRPOTrainer with the two reward models.

The reward of a completion is ``w_h * helpfulness + w_s * safety`` with the client's own
weights: trl's ``reward_weights`` does the weighting. The loss adds, to GRPO's, a KL term
toward the *base* model (``beta``) and a proximal term ``mu / 2 * ||w - w_global||^2``
toward the weights the round started from.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl import GRPOConfig, GRPOTrainer

from ..config import RlhfSettings, TrainSettings
from ..training import anchor_tensors, local_run_args, restored_after_training, train_quietly
from .clients import Preference

class ProximalGRPOTrainer(GRPOTrainer):
    """trl's GRPOTrainer plus a proximal term ``mu / 2 * ||w - anchor||^2`` over the
    parameters named in ``anchor``."""

    def __init__(self, *, args: GRPOConfig, anchor: Mapping[str, torch.Tensor], mu: float, **kwargs) -> None:
        # Given a peft model and beta > 0, trl copies the policy's adapter into a "ref"
        # adapter, making the round's starting point the reference. RLHF's reference is the
        # base model, which trl uses (LoRA disabled) when it finds no "ref" adapter; so the
        # trainer is built with beta = 0 and beta is set afterwards. (trl's copy would also
        # trip over our bottleneck adapters, whose parameter names contain ".default.".)
        beta, args.beta = args.beta, 0.0
        super().__init__(args=args, **kwargs)
        self.beta = args.beta = beta
        self.anchor, self.mu = dict(anchor), mu

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if self.mu > 0 and self.anchor:
            drift = sum(((p - self.anchor[n].to(p.device)) ** 2).sum()
                        for n, p in model.named_parameters() if n in self.anchor)
            # trl scales GRPO's loss for gradient accumulation itself; scale ours alike.
            loss = loss + 0.5 * self.mu * drift / self.current_gradient_accumulation_steps
        return loss


@dataclass(frozen=True)
class PolicyResult:
    """What a round of local RL did: means over its steps."""

    loss: float
    steps: int
    seconds: float
    reward: float
    reward_helpfulness: float
    reward_safety: float
    kl: float
    step_seconds: float


def _mean(history: Sequence[dict], key: str) -> float:
    values = [float(h[key]) for h in history if key in h and np.isfinite(h[key])]
    return fmean(values) if values else float("nan")


def grpo_config(settings: TrainSettings, rlhf: RlhfSettings, preference: Preference, seed: int,
                output_dir: str) -> GRPOConfig:
    """The GRPOConfig of one client's round: ``prompts-per-step x num-generations``
    completions per optimizer step, ``train.local-steps`` steps."""
    return GRPOConfig(
        **local_run_args(settings, seed, output_dir),
        per_device_train_batch_size=rlhf.prompts_per_step * rlhf.num_generations,
        gradient_accumulation_steps=1,
        num_generations=rlhf.num_generations,
        max_completion_length=rlhf.max_completion_length,
        temperature=rlhf.sampling_temperature,
        scale_rewards=rlhf.scale_rewards,
        multi_objective_aggregation=rlhf.reward_aggregation.replace("-", "_"),
        beta=rlhf.beta,
        reward_weights=preference.weights,
        logging_steps=1,  # the rewards are read back from the per-step logs
    )


def train_policy(
    model,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Dataset,
    reward_funcs: Sequence,
    preference: Preference,
    settings: TrainSettings,
    rlhf: RlhfSettings,
    seed: int,
    anchor: Mapping[str, np.ndarray] | None = None,
) -> PolicyResult:
    """Run ``settings.local_steps`` GRPO steps on ``prompts`` (see
    :func:`pfl_app.rlhf.clients.prompt_dataset`), updating the parameters that require
    grad; ``reward_funcs`` are the (helpfulness, safety) scorers."""
    if len(prompts) < rlhf.prompts_per_step:
        raise ValueError(f"a client has {len(prompts)} training prompts, fewer than run-config key "
                         f"'rlhf.prompts-per-step' = {rlhf.prompts_per_step}")
    with tempfile.TemporaryDirectory(prefix="pfl-grpo-") as out, restored_after_training(model):
        trainer = ProximalGRPOTrainer(
            anchor=anchor_tensors(anchor),
            mu=rlhf.proximal_mu,
            model=model,
            reward_funcs=list(reward_funcs),
            args=grpo_config(settings, rlhf, preference, seed, out),
            train_dataset=prompts,
            processing_class=tokenizer,
        )
        output, seconds = train_quietly(trainer)
    model.eval()
    history = [h for h in trainer.state.log_history if "reward" in h]
    return PolicyResult(
        loss=float(output.training_loss),
        steps=int(output.global_step),
        seconds=seconds,
        reward=_mean(history, "reward"),
        reward_helpfulness=_mean(history, f"rewards/{reward_funcs[0].__name__}/mean"),
        reward_safety=_mean(history, f"rewards/{reward_funcs[1].__name__}/mean"),
        kl=_mean(history, "kl"),
        step_seconds=_mean(history, "step_time"),
    )
