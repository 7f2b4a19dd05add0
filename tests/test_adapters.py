import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pfl_app.adapters import (
    BottleneckAdapter,
    BottleneckConfig,
    adapter_state_dict,
    inject_bottleneck_adapters,
    is_adapter_key,
)


def _tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                      num_attention_heads=2, num_key_value_heads=1)
    return LlamaForCausalLM(cfg).eval()


def test_fresh_adapter_is_identity_and_trained_one_is_not():
    adapter = BottleneckAdapter(8, 3, "gelu")
    h = torch.randn(2, 5, 8)
    assert torch.equal(adapter(h), h)
    with torch.no_grad():
        adapter.up.weight.fill_(0.1)
    assert not torch.allclose(adapter(h), h)


def test_injection_keeps_outputs_and_base_weight_names():
    model = _tiny_llama()
    ids = torch.randint(0, 50, (2, 7))
    before = model(ids).logits
    base_names = set(model.state_dict())
    added = inject_bottleneck_adapters(model, BottleneckConfig(bottleneck_dim=4))
    assert len(added) == 3 * 4  # 3 blocks x (down, up) x (weight, bias)
    assert all(is_adapter_key(n) and ".mlp.bottleneck_adapter.default." in n for n in added)
    assert base_names <= set(model.state_dict())
    assert torch.allclose(model(ids).logits, before, atol=1e-6)


def test_adapter_changes_the_output_once_trained():
    model = _tiny_llama()
    ids = torch.randint(0, 50, (1, 6))
    inject_bottleneck_adapters(model, BottleneckConfig(bottleneck_dim=4))
    before = model(ids).logits
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("up.weight") and is_adapter_key(name):
                p.fill_(0.05)
    assert not torch.allclose(model(ids).logits, before)


def test_two_named_adapters_live_side_by_side_and_names_must_be_unique():
    model = _tiny_llama()
    inject_bottleneck_adapters(model, BottleneckConfig(bottleneck_dim=4, adapter_name="a"))
    inject_bottleneck_adapters(model, BottleneckConfig(bottleneck_dim=2, adapter_name="b"))
    names = adapter_state_dict(model)
    assert any(".bottleneck_adapter.a." in n for n in names)
    assert any(".bottleneck_adapter.b." in n for n in names)
    with pytest.raises(ValueError, match="already inserted"):
        inject_bottleneck_adapters(model, BottleneckConfig(adapter_name="a"))


def test_gradients_reach_the_adapters():
    model = _tiny_llama()
    inject_bottleneck_adapters(model, BottleneckConfig(bottleneck_dim=4))
    for n, p in model.named_parameters():
        p.requires_grad = is_adapter_key(n)
    ids = torch.randint(0, 50, (2, 6))
    model(ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if is_adapter_key(n)}
    assert all(g is not None for g in grads.values())
    assert any(float(g.abs().sum()) > 0 for n, g in grads.items() if n.endswith("up.weight"))


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="cannot find the decoder blocks"):
        inject_bottleneck_adapters(torch.nn.Linear(3, 3), BottleneckConfig())


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="non_linearity"):
        BottleneckAdapter(4, 2, "swishy")
