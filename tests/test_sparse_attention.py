"""The local-window + sink attention pattern: exactness, the pattern itself, and its use in a model."""

import pytest
import torch
import torch.nn.functional as F

from pfl_app.config import parse_run_config
from pfl_app.models.personalized import build_personalized_model
from pfl_app.models.sparse_attention import window_sink_attention

from .helpers import TINY


def _reference(query, key, value, pad, window, sinks):
    """Dense attention under an explicit (q x kv) mask of the pattern."""
    b, heads, q_len, _ = query.shape
    kv_len = key.shape[2]
    pad = torch.ones(b, kv_len, dtype=torch.bool) if pad is None else pad
    q_pos = torch.arange(kv_len - q_len, kv_len)[:, None]
    k_pos = torch.arange(kv_len)[None, :]
    is_sink = pad & (pad.long().cumsum(1) <= sinks)
    mask = (k_pos <= q_pos)[None] & ((k_pos > q_pos - window)[None] | is_sink[:, None, :]) & pad[:, None, :]
    rep = heads // key.shape[1]
    out = F.scaled_dot_product_attention(query, key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1),
                                         attn_mask=mask[:, None])
    return out.transpose(1, 2)


def _qkv(b=2, q_len=150, kv_len=150, heads=4, kv_heads=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, heads, q_len, d, generator=g), torch.randn(b, kv_heads, kv_len, d, generator=g),
            torch.randn(b, kv_heads, kv_len, d, generator=g))


@pytest.mark.parametrize("window,sinks,block", [(16, 4, 64), (7, 1, 5), (40, 0, 16), (1, 3, 64)])
@pytest.mark.parametrize("padding", ["none", "left"])
def test_the_blocked_pattern_equals_the_dense_masked_reference(window, sinks, block, padding):
    q, k, v = _qkv()
    pad = None
    if padding == "left":
        pad = torch.ones(2, 150, dtype=torch.bool)
        pad[1, :23] = False
    got = window_sink_attention(q, k, v, pad, window, sinks, block=block)
    want = _reference(q, k, v, pad, window, sinks)
    rows = slice(None) if pad is None else pad[:, :, None, None].expand_as(got)
    assert torch.allclose(got[rows], want[rows], atol=1e-5)


def test_a_decode_step_against_a_cache_follows_the_pattern():
    q, k, v = _qkv(q_len=1, kv_len=300)
    got = window_sink_attention(q, k, v, None, window=32, sinks=4)
    assert torch.allclose(got, _reference(q, k, v, None, 32, 4), atol=1e-5)
    # ... and the keys outside the window and sinks play no part
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 10:200] = 99.0
    v2[:, :, 10:200] = -99.0
    assert torch.allclose(window_sink_attention(q, k2, v2, None, 32, 4), got, atol=1e-6)


def test_a_window_covering_the_sequence_is_exact_causal_attention():
    q, k, v = _qkv(kv_len=150, q_len=150)
    dense = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
    assert torch.allclose(window_sink_attention(q, k, v, None, window=200, sinks=4), dense.transpose(1, 2),
                          atol=1e-5)


def test_a_pfit_model_with_local_window_attention_generates_like_dense_on_short_prompts():
    outputs = {}
    for pattern in ("dense", "local-window"):
        cfg = parse_run_config({**TINY, "method": "pfit", "rlhf.attention": pattern, "rlhf.attention-window": 512,
                                "rlhf.warmup-steps": 0})
        model, tok = build_personalized_model(cfg)
        assert model.config._attn_implementation == ("sdpa" if pattern == "dense" else "pfl_window512_sinks4")
        batch = tok(["Hello there, how are", "Hi"], return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            outputs[pattern] = model.generate(**batch, max_new_tokens=5, do_sample=False,
                                              pad_token_id=tok.pad_token_id)
    assert torch.equal(outputs["dense"], outputs["local-window"])
