"""A sparse self-attention pattern: a causal local window plus a few sink tokens.

Each query attends to the ``sinks`` first (non-padding) tokens of its sequence and to the
``window`` tokens ending at itself: the pattern of StreamingLLM-style attention, which
keeps cost linear in the length instead of quadratic. It is registered through
transformers' attention interface, so any model that dispatches attention through it
(Llama and most decoder LMs) can switch to it with ``set_attn_implementation``.

Hand-written because no maintained library provides it for transformers' interface on
CPU: FlexAttention needs compilation, and transformers' own sliding window has no sinks.
The queries are cut into blocks; each block attends to the sinks plus the keys its window
can reach, and all blocks go through one ``scaled_dot_product_attention`` call with a
small boolean mask, so the work grows as ``length x (window + block + sinks)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import prepare_padding_mask

BLOCK = 64  # queries per block: 64 was fastest on CPU at windows of 64 to 256


def padding_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, attention_mask=None, **kwargs):
    """transformers' mask hook for the pattern: the 2D padding mask (``True`` = a real
    token), or ``None`` when nothing is padded; never a dense ``q x kv`` mask."""
    if attention_mask is None:
        return None
    mask = prepare_padding_mask(attention_mask, kv_length, kv_offset)[:, kv_offset:kv_offset + kv_length]
    return None if bool(mask.all()) else mask


def _dense(query, key, value, pad, scaling, dropout, gqa):
    """Plain causal attention: exact when the window reaches every key."""
    q_len, kv_len = query.shape[2], key.shape[2]
    mask = None
    if pad is not None:
        causal = torch.arange(kv_len, device=query.device)[None, :] <= torch.arange(kv_len - q_len, kv_len,
                                                                                      device=query.device)[:, None]
        mask = causal[None, None] & pad[:, None, None, :]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                         is_causal=mask is None and q_len > 1, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous()


def window_sink_attention(query, key, value, pad, window: int, sinks: int, scaling=None, dropout=0.0,
                          block: int = BLOCK) -> torch.Tensor:
    """Attention of ``query`` ``(b, heads, q, d)`` over ``key``/``value`` ``(b, kv_heads, kv, d)``
    (the queries being the last ``q`` positions, as with a KV cache) under the pattern;
    returns ``(b, q, heads, d)``. ``pad`` is ``None`` or a ``(b, kv)`` bool mask."""
    b, heads, q_len, d = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    gqa = heads != kv_heads
    if kv_len <= window + sinks:
        return _dense(query, key, value, pad, scaling, dropout, gqa)
    dev = query.device
    q_first = kv_len - q_len  # absolute position of the first query

    # Sinks: the first `sinks` real tokens of each row (left padding moves them).
    if pad is None:
        sink_pos = torch.arange(sinks, device=dev).expand(b, sinks)
        sink_real = torch.ones(b, sinks, dtype=torch.bool, device=dev)
    else:
        sink_pos = torch.sort((~pad).to(torch.int8), dim=1, stable=True).indices[:, :sinks]
        sink_real = pad.gather(1, sink_pos)
    gather = sink_pos[:, None, :, None].expand(b, kv_heads, sinks, d)
    sink_k, sink_v = key.gather(2, gather), value.gather(2, gather)

    # Query blocks of size bq; block n reaches keys [q_first + n*bq - window + 1, q_first + (n+1)*bq).
    bq = min(block, q_len)
    n_blocks = -(-q_len // bq)
    tail = n_blocks * bq - q_len
    span = bq + window - 1
    start = max(0, q_first - window + 1)
    head_pad = window - 1 - (q_first - start)

    def per_block(x):  # (b, kv_heads, kv, d) -> (b, n_blocks, kv_heads, span, d), a view after padding
        return F.pad(x[:, :, start:], (0, 0, head_pad, tail)).unfold(2, span, bq).permute(0, 2, 1, 4, 3)

    keys = torch.cat([sink_k[:, None].expand(b, n_blocks, kv_heads, sinks, d), per_block(key)], dim=3)
    values = torch.cat([sink_v[:, None].expand(b, n_blocks, kv_heads, sinks, d), per_block(value)], dim=3)
    queries = F.pad(query, (0, 0, 0, tail)).view(b, heads, n_blocks, bq, d).transpose(1, 2)

    n = torch.arange(n_blocks, device=dev)[:, None, None]
    q_pos = q_first + n * bq + torch.arange(bq, device=dev)[None, :, None]  # (n_blocks, bq, 1)
    k_pos = q_first + n * bq - (window - 1) + torch.arange(span, device=dev)[None, None]  # (n_blocks, 1, span)
    in_window = (k_pos <= q_pos) & (k_pos > q_pos - window) & (k_pos >= 0) & (k_pos < kv_len)
    k_at = k_pos.clamp(0, kv_len - 1).reshape(1, -1).expand(b, -1)
    if pad is None:
        usable = k_at >= sinks  # a sink inside the window is counted once, as a sink
    else:
        is_sink = torch.zeros_like(pad).scatter_(1, sink_pos, sink_real)
        usable = pad.gather(1, k_at) & ~is_sink.gather(1, k_at)
    window_mask = in_window[None] & usable.view(b, n_blocks, 1, span)
    sink_mask = sink_real[:, None, None, :] & (sink_pos[:, None, None, :] <= q_pos[None])
    mask = torch.cat([sink_mask, window_mask], dim=-1)[:, :, None]  # (b, n_blocks, 1, bq, sinks + span)

    # 4-D inputs: CPU SDPA takes its fast kernel only for those.
    out = F.scaled_dot_product_attention(
        queries.reshape(b * n_blocks, heads, bq, d), keys.reshape(b * n_blocks, kv_heads, sinks + span, d),
        values.reshape(b * n_blocks, kv_heads, sinks + span, d), attn_mask=mask.flatten(0, 1),
        dropout_p=dropout, scale=scaling, enable_gqa=gqa)
    out = out.view(b, n_blocks, heads, bq, d).permute(0, 1, 3, 2, 4).reshape(b, n_blocks * bq, heads, d)
    return out[:, :q_len].contiguous()


def register_window_sink(window: int, sinks: int) -> str:
    """Register the pattern with transformers under a name for this window and sink count;
    return the name to pass to ``model.set_attn_implementation``. Registration is per
    process, so every process that builds a model calls this."""
    if window < 1 or sinks < 0:
        raise ValueError(f"window must be >= 1 and sinks >= 0, got {window} and {sinks}")
    name = f"pfl_window{window}_sinks{sinks}"

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(f"{name} expects a 2D padding mask; was its mask function registered?")
        return window_sink_attention(query, key, value, attention_mask, window, sinks, scaling, dropout), None

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, padding_mask)
    return name
