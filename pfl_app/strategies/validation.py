"""Checks a client update must pass before it is aggregated."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def update_problem(update: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why ``update`` must not be aggregated, or ``None`` if it may be.

    Parameters
    ----------
    update : mapping of str to ndarray
        The tensors a client sent.
    expected : mapping of str to shape
        The tensors the server sent out this round, with their shapes: an update must
        carry exactly these names and shapes.
    """
    extra = sorted(set(update) - set(expected))
    if extra:
        return f"carries {len(extra)} tensor(s) that are not shared, e.g. {extra[0]!r}"
    missing = sorted(set(expected) - set(update))
    if missing:
        return f"lacks {len(missing)} shared tensor(s), e.g. {missing[0]!r}"
    for name, value in update.items():
        if tuple(value.shape) != tuple(expected[name]):
            return f"tensor {name!r} has shape {tuple(value.shape)}, expected {tuple(expected[name])}"
        if not np.all(np.isfinite(value)):
            return f"tensor {name!r} holds NaN or Inf"
    return None
