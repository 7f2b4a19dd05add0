"""Quantized tensors as Flower records: fp16, and blockwise absmax int8 and int4.

A codec turns named float tensors into what travels: the *codes* and, for the integer codecs,
the *scales*, one float32 per block of every tensor, all in one Array. The float codecs send one
:class:`~flwr.app.Array` per tensor under the tensor's own name; the integer codecs send every
tensor's codes in one Array (``codes``), the tensors in the order of their sorted names, which
both ends know: an Array's header and name cost about 200 bytes, a third of a bit per element
of the default model's 120 adapter tensors, as much as the int4 codes' scales. Both are ordinary
records of the message, so :func:`pfl_app.records.message_bytes` (and so the wireless mod's
packets and air time, and the ``bytes_up`` / ``bytes_down`` of the results) counts exactly
the integer bytes and the scales that a device would send.

- ``none``: float32, as every message without compression (no scales).
- ``fp16``: float16 by round-to-nearest (numpy's cast; no scales, no blocks).
- ``int8``: each tensor, flattened in C order, is cut into blocks of ``block_size`` elements
  (the last one may be shorter; a tensor smaller than a block is one block); each block is
  scaled by its absolute maximum, ``scale = absmax / 127``, and its elements travel as the
  signed integers ``round(x / scale)`` in [-127, 127], one byte each; the tensors' codes one
  after another in a flat int8 Array.
- ``int4``: the same with 7 in place of 127, integers in [-7, 7], stored as ``q + 8`` in a
  nibble, two per byte (the first element in the low nibble), a flat uint8 Array of
  ``ceil(N / 2)`` bytes for the N elements of all the tensors.

The receiver knows which tensors come and their shapes (the server sent them, the client's
model has them) and passes them to :func:`decode`.

Rounding is to nearest (error at most ``scale / 2`` per element) or, with ``rng``, stochastic:
``floor(x / scale + u)`` with ``u`` uniform in [0, 1), unbiased, error below ``scale``. A block
of zeros has scale 0 and decodes to zeros.

Why by hand and not torchao: torchao 0.18 (which installs here) has blockwise affine
quantization primitives (``choose_qparams_affine`` / ``quantize_affine``), but they round to
nearest only, want every dimension to divide into whole blocks (a tensor here is cut into
blocks of its flattened elements, the last one shorter), and do not pack int4 into bytes for
the wire (their int4 layouts are GPU kernels'); it would also be a dependency for some 60
lines of numpy. The coder below is the textbook symmetric absmax scheme (as in
bitsandbytes' blockwise quantization), written for this wire format.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

CODEC_NONE = "none"
CODEC_FP16 = "fp16"
CODEC_INT8 = "int8"
CODEC_INT4 = "int4"
#: Every codec, in order of size.
CODECS = (CODEC_NONE, CODEC_FP16, CODEC_INT8, CODEC_INT4)
#: ``compression.uplink = adaptive``: the server picks one of CODECS per client and round
#: (:meth:`pfl_app.strategies.scheduling.ChannelScheduled.uplink_codec`); never on a message.
CODEC_ADAPTIVE = "adaptive"
UPLINK_CHOICES = CODECS + (CODEC_ADAPTIVE,)
#: Bits per element of each codec's codes (scales apart).
BITS = {"none": 32, "fp16": 16, "int8": 8, "int4": 4}
#: The largest integer of each blockwise codec: codes are in [-level, level].
LEVELS = {CODEC_INT8: 127, CODEC_INT4: 7}
#: The name of the one Array of a scales record.
SCALES_NAME = "scales"
#: The name of the one Array of an integer codec's codes record.
CODES_NAME = "codes"


class CodecError(ValueError):
    """Records that do not decode: a wrong dtype or size, scales that do not add up."""


def codec_problem(codec: str) -> str | None:
    """What is allowed when ``codec`` is not a codec, else ``None``."""
    return None if codec in CODECS else f"one of {', '.join(CODECS)}"


def is_blockwise(codec: str) -> bool:
    """Whether ``codec`` has blocks and scales (int8, int4)."""
    return codec in LEVELS


def num_blocks(size: int, block_size: int) -> int:
    """Blocks of ``block_size`` elements in a tensor of ``size`` (at least one)."""
    return max(1, -(-size // block_size))


def quantize(x: np.ndarray, codec: str, block_size: int,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(integer codes, float32 scales)`` of one tensor under a blockwise codec.

    The codes are int8 in ``x``'s shape, or for int4 the signed codes before packing (int8,
    flat); ``rng`` rounds stochastically.
    """
    level = LEVELS[codec]
    flat = np.asarray(x, dtype=np.float32).reshape(-1)
    n = flat.size
    nb = num_blocks(n, block_size)
    padded = np.zeros(nb * block_size, np.float32)
    padded[:n] = flat
    blocks = padded.reshape(nb, block_size)
    scales = (np.max(np.abs(blocks), axis=1) / level).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    y = blocks / safe[:, None]
    q = np.floor(y + rng.random(y.shape, dtype=np.float32)) if rng is not None else np.rint(y)
    q = np.clip(q, -level, level).astype(np.int8).reshape(-1)[:n]
    return q, scales


def dequantize(q: np.ndarray, scales: np.ndarray, block_size: int, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 tensor of ``shape`` that signed codes ``q`` and their block ``scales`` stand for."""
    n = int(np.prod(shape, dtype=np.int64))
    nb = num_blocks(n, block_size)
    padded = np.zeros(nb * block_size, np.float32)
    padded[:n] = np.asarray(q, dtype=np.float32).reshape(-1)
    out = padded.reshape(nb, block_size) * np.asarray(scales, dtype=np.float32)[:, None]
    return out.reshape(-1)[:n].reshape(shape)


def pack_int4(q: np.ndarray) -> np.ndarray:
    """Signed codes in [-7, 7] as nibbles ``q + 8``, two per byte, the first in the low nibble."""
    u = (np.asarray(q, dtype=np.int16).reshape(-1) + 8).astype(np.uint8)
    if u.size % 2:
        u = np.append(u, np.uint8(8))  # a code of 0 pads the last byte
    return (u[0::2] | (u[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` signed codes of :func:`pack_int4`'s bytes."""
    p = np.asarray(packed, dtype=np.uint8).reshape(-1)
    u = np.empty(p.size * 2, np.int16)
    u[0::2], u[1::2] = p & 0x0F, p >> 4
    return (u[:n] - 8).astype(np.int8)


def encode(tensors: Mapping[str, np.ndarray], codec: str, block_size: int,
           rng: np.random.Generator | None = None) -> tuple[ArrayRecord, ArrayRecord | None]:
    """``(codes, scales)``: the records that carry ``tensors`` under ``codec``.

    ``scales`` is ``None`` for ``none`` and ``fp16``; else one float32 Array holding every
    tensor's block scales, in the order of ``codes``. ``rng`` rounds the integer codecs
    stochastically (``fp16`` always rounds to nearest).
    """
    if codec_problem(codec):
        raise ValueError(f"unknown codec {codec!r}; allowed: {codec_problem(codec)}")
    if codec == CODEC_NONE:
        return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.float32)) for k, v in tensors.items()}), None
    if codec == CODEC_FP16:
        return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.float16)) for k, v in tensors.items()}), None
    codes, scales = [], []
    for name in sorted(tensors):  # the order decode() reads them in
        q, s = quantize(tensors[name], codec, block_size, rng)
        codes.append(q)
        scales.append(s)
    flat = np.concatenate(codes) if codes else np.zeros(0, np.int8)
    all_scales = np.concatenate(scales) if scales else np.zeros(0, np.float32)
    return (ArrayRecord({CODES_NAME: Array(pack_int4(flat) if codec == CODEC_INT4 else flat)}),
            ArrayRecord({SCALES_NAME: Array(all_scales.astype(np.float32))}))


def decode(codes: ArrayRecord, scales: ArrayRecord | None, codec: str, block_size: int,
           shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The float32 tensors that :func:`encode`'s records stand for, by name.

    Parameters
    ----------
    codes, scales : ArrayRecord
        As :func:`encode` made them (``scales`` ``None`` for ``none`` and ``fp16``).
    codec, block_size
        What they were encoded with.
    shapes : mapping of str to shape
        The float codecs: the shape of every tensor that may arrive (each must equal it).
        The integer codecs: exactly the tensors that were encoded, whose names and shapes do
        not travel (their codes are one flat Array, in the order of the sorted names).

    Raises
    ------
    CodecError
        For a tensor not in ``shapes``, codes of another dtype or size than ``codec`` makes,
        or scales missing or of the wrong count. Values are not checked: a scale that is
        not finite decodes to a tensor that is not, which the receiver's checks refuse.
    """
    if codec_problem(codec):
        raise CodecError(f"unknown codec {codec!r}; allowed: {codec_problem(codec)}")
    if is_blockwise(codec):
        return _decode_blockwise(codes, scales, codec, block_size, shapes)
    out: dict[str, np.ndarray] = {}
    wanted = {CODEC_NONE: np.float32, CODEC_FP16: np.float16}[codec]
    for name, array in codes.items():
        if name not in shapes:
            raise CodecError(f"carries a tensor that is not shared, {name!r}")
        shape = tuple(shapes[name])
        q = array.numpy()
        if q.dtype != wanted:
            raise CodecError(f"tensor {name!r} arrived as {q.dtype}, expected {np.dtype(wanted)} ({codec})")
        if tuple(q.shape) != shape:
            raise CodecError(f"tensor {name!r} arrived with shape {tuple(q.shape)}; expected {shape}")
        out[name] = q.astype(np.float32)
    return out


def _decode_blockwise(codes: ArrayRecord, scales: ArrayRecord | None, codec: str, block_size: int,
                      shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """:func:`decode` of the integer codecs: one Array of codes for the tensors of ``shapes``,
    in the order of their sorted names, and one of their scales."""
    if list(codes.keys()) != [CODES_NAME]:
        raise CodecError(f"{codec} codes arrive as one Array {CODES_NAME!r}, not {sorted(codes.keys())[:3]}")
    if scales is None or SCALES_NAME not in scales:
        raise CodecError(f"{codec} codes arrived without their scales")
    all_scales = scales[SCALES_NAME].numpy().reshape(-1)
    if all_scales.dtype != np.float32:
        raise CodecError(f"the scales arrived as {all_scales.dtype}, expected float32")
    names = sorted(shapes)
    sizes = [int(np.prod(tuple(shapes[k]), dtype=np.int64)) for k in names]
    total = sum(sizes)
    q = codes[CODES_NAME].numpy().reshape(-1)
    wanted, expected_size = (np.uint8, -(-total // 2)) if codec == CODEC_INT4 else (np.int8, total)
    if q.dtype != wanted:
        raise CodecError(f"the codes arrived as {q.dtype}, expected {np.dtype(wanted)} ({codec})")
    if q.size != expected_size:
        raise CodecError(f"{q.size} codes arrived; {codec} of the {len(names)} shared tensors "
                         f"({total} elements) has {expected_size}")
    signed = unpack_int4(q, total) if codec == CODEC_INT4 else q
    blocks = [num_blocks(n, block_size) for n in sizes]
    if all_scales.size != sum(blocks):
        raise CodecError(f"{all_scales.size} scales arrived for {sum(blocks)} blocks")
    out: dict[str, np.ndarray] = {}
    at, used = 0, 0
    for name, n, nb in zip(names, sizes, blocks):
        out[name] = dequantize(signed[at:at + n], all_scales[used:used + nb], block_size, tuple(shapes[name]))
        at, used = at + n, used + nb
    return out
