"""Scoring a policy on a client's held-out prompts: rewards, compliance and refusals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from ..precision import autocast
from .client_setup import Preference, as_conversation
from .preferences import PromptItem, is_refusal


@torch.no_grad()
def _answers(model, tokenizer: PreTrainedTokenizerBase, items: Sequence[PromptItem], batch_size: int,
             **generate_kwargs) -> list[str]:
    """The model's answers to ``items``, each asked as a one-turn chat, in batches; with
    ``num_return_sequences`` = n, n answers per item, one after another."""
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        for i in range(0, len(items), batch_size):
            chats = [as_conversation(p) for p in items[i:i + batch_size]]
            texts = tokenizer.apply_chat_template(chats, add_generation_prompt=True, tokenize=False)
            batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                              add_special_tokens=False).to(model.device)
            out = model.generate(**batch, pad_token_id=tokenizer.pad_token_id, **generate_kwargs)
            answers.extend(tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True))
    finally:
        model.train(was_training)
    return [a.strip() for a in answers]


def generate(model, tokenizer: PreTrainedTokenizerBase, items: Sequence[PromptItem], max_new_tokens: int,
             batch_size: int = 8) -> list[str]:
    """Greedy answers to ``items``: deterministic, so two models compare on the same
    footing."""
    return _answers(model, tokenizer, items, batch_size, max_new_tokens=max_new_tokens, do_sample=False)


def sample_answers(model, tokenizer: PreTrainedTokenizerBase, items: Sequence[PromptItem], n: int,
                   temperature: float, max_new_tokens: int, batch_size: int = 8, seed: int = 0) -> list[list[str]]:
    """``n`` answers to each of ``items``, sampled at ``temperature`` as GRPO draws them."""
    torch.manual_seed(seed)
    flat = _answers(model, tokenizer, items, batch_size, max_new_tokens=max_new_tokens, do_sample=True,
                    temperature=temperature, num_return_sequences=n)
    return [flat[i:i + n] for i in range(0, len(flat), n)]


@dataclass(frozen=True)
class PolicyScores:
    """A policy's scores on held-out prompts, and its answers."""

    metrics: dict[str, float]
    samples: list[dict[str, Any]]


def score_answers(items: Sequence[PromptItem], answers: Sequence[str], scorers: Sequence,
                  preference: Preference) -> PolicyScores:
    """Mean helpfulness and safety rewards over every prompt, the client's own objective
    (their mix with its weights), the share of harmful requests complied with, and the
    share of benign ones refused (by :func:`pfl_app.rlhf.preferences.is_refusal`)."""
    helpfulness_scorer, safety_scorer = scorers
    questions = [p.text for p in items]
    helpfulness = helpfulness_scorer.score(questions, answers).tolist()
    safety = safety_scorer.score(questions, answers).tolist()
    refused = [is_refusal(a) for a in answers]
    harmful = [r for p, r in zip(items, refused) if p.harmful]
    benign = [r for p, r in zip(items, refused) if not p.harmful]
    h, s = fmean(helpfulness), fmean(safety)
    metrics = {
        "helpfulness": h,
        "safety": s,
        "objective": preference.mix(h, s),
        "harmful-compliance": fmean(not r for r in harmful) if harmful else float("nan"),
        "benign-refusal": fmean(benign) if benign else float("nan"),
    }
    samples = [
        {"prompt": p.text, "harmful": p.harmful, "source": p.source, "answer": a,
         "helpfulness": hh, "safety": ss, "refused": r}
        for p, a, hh, ss, r in zip(items, answers, helpfulness, safety, refused)
    ]
    return PolicyScores(metrics, samples)


def evaluate_policy(model, tokenizer: PreTrainedTokenizerBase, items: Sequence[PromptItem], scorers: Sequence,
                    preference: Preference, max_new_tokens: int, batch_size: int = 8,
                    precision: str = "fp32") -> PolicyScores:
    """Answer ``items`` greedily and score the answers (see :func:`score_answers`). The
    policy generates in ``precision`` (resolved, see :mod:`pfl_app.precision`); the reward
    models score in float32 whatever it is, so that every policy is measured alike."""
    with autocast(precision, next(model.parameters()).device):
        answers = generate(model, tokenizer, items, max_new_tokens, batch_size)
    return score_answers(items, answers, scorers, preference)
