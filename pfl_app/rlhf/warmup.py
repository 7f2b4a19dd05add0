"""A supervised warm-up of the policy before PFIT's reinforcement learning.

RLHF pipelines fine-tune the policy on demonstrations before RL. Here that stage decides
where every client starts: SmolLM2 refuses a harmful request in about 5 % of its samples,
so GRPO's groups almost never hold a refusal and a safety-first client has little to
reinforce (docs/pfit.md). The warm-up trains, with trl's ``SFTTrainer`` and a LoRA that is
merged back into the weights, on demonstrations for prompts of the ``reward`` pool (clients
train and are evaluated on the ``heldout`` pool):

- for ``refusal_share`` of the harmful prompts, a template refusal (every other one
  restating the request, :func:`pfl_app.rlhf.preferences.refusal`);
- for the other harmful prompts and for half as many benign ones, the policy's own sampled
  answer, when it does not refuse: the warm-up teaches when to refuse, not a new style.

With the default share of one half, the warmed policy refuses some harmful requests and
complies with others, so each GRPO group holds both and each client's own weights decide
which way its model goes. The merged model is cached, like the reward models, and is the
"base" every RLHF method starts from and its KL term pulls toward.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from logging import INFO
from pathlib import Path
from typing import Any

import datasets
from flwr.common.logger import log

from ..models.loading import TINY_MODELS, build_once, cache_root, load_causal_lm, load_tokenizer
from .client_setup import as_conversation
from .preferences import PromptItem, is_refusal, prompts_in, refusal

# Bump when the demonstrations or the recipe change, so stale warmed policies are not reused.
# 2: the judge that drops the policy's own refusals from the demonstrations no longer takes
# "can't help but" for one (on SmolLM2 it picked the same demonstrations as v1). 3: it
# counts "I'm not equipped to / I don't have the ability to ..." as a refusal.
WARMUP_RECIPE_VERSION = 3


@dataclass(frozen=True)
class WarmupSpec:
    """What to warm up and how; its fields name the cached model."""

    policy: str
    steps: int
    refusal_share: float
    prompts: int
    temperature: float
    max_new_tokens: int
    learning_rate: float = 2e-4
    batch_size: int = 8
    lora_r: int = 16
    # Tiny test models are random weights drawn from the run seed, so each seed has its own
    # base; a real model's warm-up does not depend on the run seed.
    base_seed: int = 0

    @property
    def tag(self) -> str:
        """The cache folder's name."""
        digest = hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]
        return f"{Path(self.policy).name}-sft{self.steps}-r{self.refusal_share:g}-v{WARMUP_RECIPE_VERSION}-{digest}"


def warmup_spec(cfg) -> WarmupSpec | None:
    """The warm-up a run's config asks for, or ``None`` (``rlhf.warmup-steps`` = 0)."""
    r = cfg.rlhf
    if r.warmup_steps <= 0:
        return None
    return WarmupSpec(
        policy=cfg.model.name, steps=r.warmup_steps, refusal_share=r.warmup_refusal_share,
        prompts=r.warmup_prompts, temperature=r.sampling_temperature,
        max_new_tokens=2 * r.max_completion_length,
        base_seed=cfg.seed if cfg.model.name in TINY_MODELS else 0,
    )


def demonstration_prompts(n_harmful: int, refusal_share: float, seed: int = 0) -> tuple[
        list[PromptItem], list[PromptItem], list[PromptItem]]:
    """``(to_refuse, harmful_own, benign_own)``: ``n_harmful`` harmful prompts of the
    ``reward`` pool, split by ``refusal_share``, and half as many benign ones."""
    benign, harmful = prompts_in("reward")
    rng = random.Random(f"warmup-{seed}")
    harmful = rng.sample(harmful, min(n_harmful, len(harmful)))
    benign = rng.sample(benign, min(max(1, n_harmful // 2), len(benign)))
    n_refuse = round(refusal_share * len(harmful))
    return harmful[:n_refuse], harmful[n_refuse:], benign


def demonstrations(to_refuse: Sequence[PromptItem], harmful_own: Sequence[PromptItem], harmful_answers: Sequence[str],
                   benign_own: Sequence[PromptItem], benign_answers: Sequence[str], seed: int = 0) -> datasets.Dataset:
    """The warm-up's prompt-completion chats (see the module docstring), with a ``kind``
    column: ``refusal``, ``harmful-own`` or ``benign-own``. An own answer that refuses, or
    is empty, is left out, so the refusals are exactly those of ``to_refuse``."""
    rng = random.Random(f"warmup-demos-{seed}")
    rows: dict[str, list[Any]] = {"prompt": [], "completion": [], "kind": []}

    def add(item: PromptItem, answer: str, kind: str) -> None:
        rows["prompt"].append(as_conversation(item))
        rows["completion"].append([{"role": "assistant", "content": answer}])
        rows["kind"].append(kind)

    for i, item in enumerate(to_refuse):
        add(item, refusal(item.text, rng, restate=i % 2 == 1), "refusal")
    for kind, items, answers in (("harmful-own", harmful_own, harmful_answers),
                                 ("benign-own", benign_own, benign_answers)):
        for item, answer in zip(items, answers, strict=True):
            if answer.strip() and not is_refusal(answer):
                add(item, answer.strip(), kind)
    return datasets.Dataset.from_dict(rows).shuffle(seed=seed)


def train_warmup(spec: WarmupSpec, out_dir: str | Path, cache_dir: str = "", seed: int = 0) -> dict[str, Any]:
    """Sample the policy's own answers, train a LoRA on the demonstrations with trl's
    SFTTrainer, merge it into the weights and save the model and tokenizer to
    ``out_dir``, with what was done in ``warmup.json``; return that record."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer  # trl is slow to import; only training needs it

    from .evaluation import sample_answers

    start = time.perf_counter()
    tokenizer = load_tokenizer(spec.policy, cache_dir)
    model = load_causal_lm(spec.policy, cache_dir, seed=spec.base_seed)
    model.config.pad_token_id = tokenizer.pad_token_id
    to_refuse, harmful_own, benign_own = demonstration_prompts(spec.prompts, spec.refusal_share, seed)
    own = sample_answers(model, tokenizer, [*harmful_own, *benign_own], 1, spec.temperature,
                         spec.max_new_tokens, seed=seed)
    own = [a[0] for a in own]
    sampled = time.perf_counter()
    demos = demonstrations(to_refuse, harmful_own, own[:len(harmful_own)], benign_own, own[len(harmful_own):], seed)
    torch.manual_seed(seed)
    lora = LoraConfig(r=spec.lora_r, lora_alpha=2 * spec.lora_r, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    with tempfile.TemporaryDirectory(prefix="pfl-warmup-") as scratch:
        args = SFTConfig(
            output_dir=scratch, max_steps=spec.steps, per_device_train_batch_size=spec.batch_size,
            learning_rate=spec.learning_rate, lr_scheduler_type="linear", warmup_steps=max(1, spec.steps // 10),
            seed=seed, data_seed=seed, save_strategy="no", report_to="none", logging_steps=1,
            disable_tqdm=True, gradient_checkpointing=False, bf16=False, fp16=False, dataloader_num_workers=0,
            max_length=256,
        )
        trainer = SFTTrainer(model=peft_model, args=args, train_dataset=demos.remove_columns("kind"),
                             processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        output = trainer.train()
    merged = trainer.model.merge_and_unload()
    out_dir = Path(out_dir)
    merged.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    record = {
        "spec": asdict(spec), "recipe_version": WARMUP_RECIPE_VERSION, "seed": seed,
        "demonstrations": {k: demos["kind"].count(k) for k in ("refusal", "harmful-own", "benign-own")},
        "own_answers_refusing": sum(is_refusal(a) for a in own),
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "train_loss": float(output.training_loss), "sampling_seconds": round(sampled - start, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out_dir / "warmup.json").write_text(json.dumps(record, indent=2))
    return record


def warmed_policy(spec: WarmupSpec, cache_dir: str = "") -> Path:
    """The cached warmed-up policy of ``spec``, trained first if it is not cached yet
    (once, under a file lock; see :func:`pfl_app.models.loading.build_once`)."""
    final = cache_root(cache_dir) / "warmup" / spec.tag
    if not (final / "config.json").exists():
        log(INFO, "pfl-app: warming up %s with %d supervised steps (once; cached in %s)", spec.policy, spec.steps,
            final.parent)
    return build_once(final, lambda tmp: train_warmup(spec, tmp, cache_dir))
