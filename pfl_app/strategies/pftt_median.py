"""PFTT with a coordinate-wise median of the shared adapters in place of their average (the
median of Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates", ICML 2018, arXiv 1803.01498, as Flower's FedMedian computes it)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import MetricRecord

# Flower's own median of the legacy strategies (FedMedian of the Message API computes the
# same np.median inline, with no helper to call).
from flwr.server.strategy.aggregate import aggregate_median

from ..methods import register_method
from .base import AcceptedUpdate
from .pftt import PFTT


def filled(update: AcceptedUpdate, current: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The update's tensors, with every element lost on the air replaced by its value in ``current``.

    An update that arrived whole is returned as it is.
    """
    if update.mask is None:
        return dict(update.tensors)
    out = {}
    for name, value in update.tensors.items():
        if name not in update.mask:
            out[name] = value
            continue
        arrived = np.asarray(update.mask[name]).reshape(value.shape).astype(bool)
        out[name] = np.where(arrived, value, np.asarray(current[name], dtype=value.dtype))
    return out


def coordinate_median(tensors: list[Mapping[str, np.ndarray]], names: list[str]) -> dict[str, np.ndarray]:
    """The element-wise median over ``tensors`` of each tensor in ``names``, by Flower's
    :func:`~flwr.server.strategy.aggregate.aggregate_median`."""
    # Flower's helper takes (arrays in one order, number of examples), and ignores the numbers.
    medians = aggregate_median([([t[name] for name in names], 1) for t in tensors])
    return dict(zip(names, medians, strict=True))


@register_method("pftt-median")
class PFTTMedian(PFTT):
    """PFTT whose shared adapters are the coordinate-wise median of the clients' ones.

    What travels and what stays is PFTT's: the adapters are shared, each client's LoRA stays
    on it. The server takes, for every element of every adapter tensor, the median of the
    clients' values instead of their weighted mean: fewer than half of the clients sending
    values far off (a corrupted update, a client on a very different split) cannot drag it
    far. With two updates the median is their plain mean.

    The median ignores weights: every accepted update counts once, whatever its number of
    examples, so :meth:`aggregation_weights` gives each the same weight (it is what the round's
    rows record). The update checks, lost updates and norm outliers are the base's.

    A partial update (``wireless.loss-mode = "partial"``) counts, for each element it lost,
    as the value the server sent (``current``): a lost element votes for no change. Every
    element's median is then over the same updates, by Flower's helper that takes whole
    arrays, and each such vote moves the median by at most one rank. (The base's weighted
    average leaves lost elements out instead.)
    """

    def aggregation_weights(self, server_round: int, updates: list[tuple[int, MetricRecord]]) -> list[float]:
        return [1.0] * len(updates)

    def aggregate(
        self, updates: list[AcceptedUpdate], weights: list[float], current: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The coordinate-wise median of the updates (lost elements filled from ``current``).

        Parameters
        ----------
        updates : list of AcceptedUpdate
            The round's accepted updates.
        weights : list of float
            Not used: a median counts every update once.
        current : dict of str to ndarray
            The shared tensors sent this round.

        Returns
        -------
        dict of str to ndarray
            The median of each tensor of ``current``.
        """
        return coordinate_median([filled(u, current) for u in updates], list(current))
