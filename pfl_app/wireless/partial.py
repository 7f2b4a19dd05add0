"""Which elements of an update survive when some of its packets are lost ("partial" mode).

The uplink byte stream is laid out as ``[protocol overhead][tensor 0][tensor 1]...[metrics]``,
tensors in the order of the update's ArrayRecord, float32, row-major. Packet ``k`` carries
bytes ``[k * packet_bytes, (k + 1) * packet_bytes)`` of that stream; an element whose bytes
touch a lost packet is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

ITEM_BYTES = 4  # float32 on the wire


def arrival_masks(
    sizes: Mapping[str, int], lost_packets: Iterable[int], packet_bytes: int, overhead_bytes: int
) -> dict[str, np.ndarray]:
    """A boolean mask per tensor: ``True`` where the element arrived.

    Parameters
    ----------
    sizes : mapping of str to int
        Number of elements of each tensor, in stream order.
    lost_packets : iterable of int
        Indices of the packets that failed for good.
    packet_bytes, overhead_bytes : int
        Packet size and the bytes of protocol overhead that precede the tensors.
    """
    masks = {name: np.ones(n, dtype=bool) for name, n in sizes.items()}
    lost = sorted(set(int(k) for k in lost_packets))
    if not lost:
        return masks
    offset = overhead_bytes
    for name, n in sizes.items():
        start, end = offset, offset + n * ITEM_BYTES
        for k in lost:
            lo, hi = max(start, k * packet_bytes), min(end, (k + 1) * packet_bytes)
            if lo < hi:
                first = (lo - start) // ITEM_BYTES
                last = -(-(hi - start) // ITEM_BYTES)  # ceil: a half-lost element is lost
                masks[name][first:last] = False
        offset = end
    return masks


def masked_weighted_average(
    updates: list[Mapping[str, np.ndarray]],
    masks: list[Mapping[str, np.ndarray] | None],
    weights: list[float],
    previous: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Average updates element by element over the clients whose element arrived.

    ``masks[i]`` is ``None`` for a whole update. Where no client's element arrived, the
    previous global value is kept. Written by hand: Flower's aggregation helpers average
    whole arrays only.
    """
    out: dict[str, np.ndarray] = {}
    for name, prev in previous.items():
        num = np.zeros(prev.size, dtype=np.float64)
        den = np.zeros(prev.size, dtype=np.float64)
        for update, mask, w in zip(updates, masks, weights, strict=True):
            value = np.asarray(update[name], dtype=np.float64).reshape(-1)
            m = np.ones(prev.size, dtype=bool) if mask is None or name not in mask else np.asarray(mask[name]).reshape(-1).astype(bool)
            num += np.where(m, w * value, 0.0)
            den += np.where(m, w, 0.0)
        flat = np.where(den > 0, num / np.maximum(den, 1e-300), np.asarray(prev, dtype=np.float64).reshape(-1))
        out[name] = flat.reshape(prev.shape).astype(np.float32)
    return out
