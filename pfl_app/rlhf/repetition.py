"""Whether an answer loops: a degeneration that RL on small models leaves behind.

A policy pushed hard by a small reward model can settle on a phrase ("I can't help but
think ...", "I can help you with that.") and repeat it until the token budget ends. Its
rewards and refusal rate then say little about what it learned, so the tables report how
many answers loop. Counting repeated word n-grams is a few lines; the metric
libraries that compute distinct-n need a hub download, hence this module.
"""

from __future__ import annotations

# An answer is repetitive when at least this share of its word 4-grams already occurred
# earlier in it. 98 % of the warmed SmolLM2 policy's 32-token greedy answers stay below 0.08
# (the base model of the pair-scenario runs in docs/pfit.md); a sentence said twice in a
# 32-token answer gives 0.15 or more.
REPETITIVE_SHARE = 0.15
NGRAM = 4


def repeated_ngram_share(text: str, n: int = NGRAM) -> float:
    """The share of ``text``'s word ``n``-grams (case-insensitive) that repeat an earlier
    one: 0 when every n-gram is new, towards 1 for a loop of one phrase; 0 for a text
    shorter than ``n`` words."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def is_repetitive(text: str, threshold: float = REPETITIVE_SHARE) -> bool:
    """Whether ``text`` loops: its :func:`repeated_ngram_share` is ``threshold`` or more."""
    return repeated_ngram_share(text) >= threshold
