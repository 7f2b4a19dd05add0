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


def norm_outliers(
    updates: list[tuple[int, Mapping[str, np.ndarray], Mapping[str, np.ndarray] | None]],
    current: Mapping[str, np.ndarray],
    factor: float,
) -> dict[int, str]:
    """Updates that moved far more than the others: ``{node: reason}``.

    The distance of an update is the L2 norm of its difference from the global tensors
    it started from (over the elements that arrived, for a partial update). With fewer
    than three updates there is no meaningful "others", and nothing is flagged.

    Parameters
    ----------
    updates : list of (node, tensors, mask or None)
    current : mapping of str to ndarray
        The global tensors sent this round.
    factor : float
        How many times the median distance is too far; 0 disables the check.
    """
    if factor <= 0 or len(updates) < 3 or not current:
        return {}
    norms = {}
    for node, tensors, mask in updates:
        total = 0.0
        for name, value in tensors.items():
            delta = np.asarray(value, dtype=np.float64) - np.asarray(current[name], dtype=np.float64)
            if mask is not None and name in mask:
                delta = delta * np.asarray(mask[name], dtype=np.float64)
            total += float(np.sum(delta * delta))
        norms[node] = total ** 0.5
    median = float(np.median(list(norms.values())))
    if median <= 0:
        return {}
    return {
        node: f"its change has norm {norm:.3g}, over {factor:g} x the round's median {median:.3g}"
        for node, norm in norms.items() if norm > factor * median
    }
