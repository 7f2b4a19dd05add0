"""Quantized messages: what the shared tensors travel as, in both directions.

Run-config keys ``compression.*`` (see docs/compression.md). The strategy
(:class:`pfl_app.strategies.base.PersonalizedFedAvg`) takes them as its settings and writes
them into every message's config, so a client needs nothing else to decode what it received
and encode what it sends:

- **downlink**: the server encodes the global shared tensors ``W`` once per message kind and
  round (``compression.downlink``); every client of the round decodes the same ``Ŵ`` and
  trains and is scored from it.
- **uplink**: with ``compression.uplink`` a client sends not its tensors ``W_k`` but its
  update from what it decoded, ``d_k = W_k - Ŵ``, encoded. With error feedback
  (``compression.error-feedback``) it sends ``Q(d_k + e_k)`` and keeps
  ``e_k' = d_k + e_k - deQ(Q(d_k + e_k))``, the part the codec dropped, for its next update
  (on disk beside its own tensors: :class:`pfl_app.client.state.ClientState`). Quantizing the
  update and not the weights is what makes int4 usable: an update is small and centred on
  zero, its block scales fit it, while the weights' scales would be set by their largest
  values and a round's change could fall under one step.
- **the server** adds each decoded update to the float32 global it holds, ``W + deQ(d_k)``
  (an uncompressed uplink under a compressed downlink: ``W + (W_k - Ŵ)``), then checks and
  aggregates those tensors as any others. Keeping ``W`` in float32 on the server, rather than
  going on from ``Ŵ``, keeps the downlink's rounding out of the global model: a change
  smaller than half a step of the downlink codec would otherwise be rounded away every round.

:mod:`pfl_app.compression.codec` holds the codecs themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from ..protocol import (
    ARRAYS_KEY,
    COMPRESSION_BLOCK_KEY,
    COMPRESSION_DOWN_KEY,
    COMPRESSION_FEEDBACK_KEY,
    COMPRESSION_STOCHASTIC_KEY,
    COMPRESSION_UP_KEY,
    SCALES_KEY,
)
from .codec import CODEC_ADAPTIVE, CODEC_INT4, CODEC_NONE, CODECS, CodecError, codec_problem, decode, encode, is_blockwise

__all__ = ["CODECS", "CodecError", "Compression", "decode_content", "encode_into", "error_feedback_encode"]


@dataclass(frozen=True)
class Compression:
    """The ``compression.*`` settings of a run, as the messages carry them."""

    uplink: str = CODEC_NONE
    downlink: str = CODEC_NONE
    block_size: int = 64
    stochastic_rounding: bool = False
    error_feedback: bool = True

    @property
    def active(self) -> bool:
        """Whether either direction is compressed (``adaptive`` may pick any codec)."""
        return self.uplink != CODEC_NONE or self.downlink != CODEC_NONE

    @property
    def adaptive(self) -> bool:
        """Whether the uplink codec is picked per client and round (``compression.uplink = adaptive``)."""
        return self.uplink == CODEC_ADAPTIVE

    @property
    def blockwise(self) -> bool:
        """Whether either direction uses blocks (int8, int4)."""
        return self.adaptive or is_blockwise(self.uplink) or is_blockwise(self.downlink)

    def write(self, config: ConfigRecord) -> ConfigRecord:
        """Add the settings to a message's config (nothing when compression is off, so such
        messages stay as they were)."""
        if self.active:
            config[COMPRESSION_DOWN_KEY] = self.downlink
            # A message names a codec, never "adaptive": the strategy puts the one it picks into
            # each train message (PersonalizedFedAvg._with_uplink_codec); until then, and in an
            # evaluate message, whose reply sends no tensors, the narrowest stands in.
            config[COMPRESSION_UP_KEY] = CODEC_INT4 if self.adaptive else self.uplink
            config[COMPRESSION_BLOCK_KEY] = int(self.block_size)
            config[COMPRESSION_STOCHASTIC_KEY] = bool(self.stochastic_rounding)
            config[COMPRESSION_FEEDBACK_KEY] = bool(self.error_feedback)
        return config

    @classmethod
    def read(cls, config: Mapping) -> Compression:
        """The settings a message's config carries (none: no compression).

        Raises ``ValueError`` for a codec this version does not know.
        """
        found = cls(
            uplink=str(config.get(COMPRESSION_UP_KEY, CODEC_NONE)),
            downlink=str(config.get(COMPRESSION_DOWN_KEY, CODEC_NONE)),
            block_size=int(config.get(COMPRESSION_BLOCK_KEY, 64)),
            stochastic_rounding=bool(config.get(COMPRESSION_STOCHASTIC_KEY, False)),
            error_feedback=bool(config.get(COMPRESSION_FEEDBACK_KEY, True)),
        )
        for codec in (found.uplink, found.downlink):
            if codec_problem(codec):
                raise ValueError(f"the message asks for codec {codec!r}; allowed: {codec_problem(codec)}")
        if found.block_size < 1:
            raise ValueError(f"the message asks for block size {found.block_size}; allowed: a whole number >= 1")
        return found


def encode_into(content: RecordDict, tensors: Mapping[str, np.ndarray], codec: str, block_size: int,
                rng: np.random.Generator | None = None) -> None:
    """Put ``tensors`` into ``content`` as ``codec`` makes them: ``arrays``, and the scales
    under ``arrays-scales`` for the integer codecs."""
    codes, scales = encode(tensors, codec, block_size, rng)
    content[ARRAYS_KEY] = codes
    if scales is not None:
        content[SCALES_KEY] = scales


def decode_content(content: RecordDict, codec: str, block_size: int,
                   shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The float32 tensors of ``content``'s ``arrays`` (and ``arrays-scales``) under ``codec``.

    Raises :class:`CodecError` when they do not decode (see :func:`codec.decode`)."""
    if ARRAYS_KEY not in content.array_records:
        raise CodecError(f"no ArrayRecord '{ARRAYS_KEY}'")
    return decode(content.array_records[ARRAYS_KEY], content.array_records.get(SCALES_KEY), codec, block_size,
                  shapes)


def error_feedback_encode(
    delta: Mapping[str, np.ndarray], residual: Mapping[str, np.ndarray] | None, codec: str, block_size: int,
    rng: np.random.Generator | None = None,
) -> tuple[RecordDict, dict[str, np.ndarray]]:
    """Encode ``delta + residual``; return the records and the new residual, what the codec
    dropped of it (``residual`` ``None``: no feedback, and the error is still returned).

    A residual whose names are not ``delta``'s (another method's, from a reused folder) is
    ignored.
    """
    target = {k: np.asarray(v, np.float32) for k, v in delta.items()}
    if residual is not None and set(residual) == set(target):
        target = {k: v + np.asarray(residual[k], np.float32).reshape(v.shape) for k, v in target.items()}
    content = RecordDict()
    encode_into(content, target, codec, block_size, rng)
    sent = decode_content(content, codec, block_size, {k: v.shape for k, v in target.items()})
    return content, {k: target[k] - sent[k] for k in target}
