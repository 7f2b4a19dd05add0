"""Conversions between numpy tensors and Flower records, and message sizes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, Message

from .protocol import SIMULATION_PREFIX


def to_arrayrecord(tensors: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord holding ``tensors`` by name, as float32 (bfloat16 cannot travel)."""
    return ArrayRecord(
        {k: Array(np.ascontiguousarray(v, dtype=np.float32)) for k, v in tensors.items()}
    )


def from_arrayrecord(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The tensors of an ArrayRecord as numpy arrays, by name."""
    return {k: v.numpy() for k, v in record.items()}


def message_bytes(message: Message) -> int:
    """Bytes of a message's content: its array, metric and config records.

    This is the payload Flower serialises and sends; transport framing is not counted, nor
    are the records the channel simulator adds (keys starting with ``wireless``), which
    describe the simulated link rather than travel on it.
    """
    return int(sum(
        record.count_bytes() for key, record in message.content.items()
        if not key.startswith(SIMULATION_PREFIX)
    ))
