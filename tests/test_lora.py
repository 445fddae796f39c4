"""LoRA (llm/lora.py): the model is unchanged at step 0, only the adapters learn, merging keeps
the function, and the PEFT files load in `peft` onto the exported model with the same logits."""

import dataclasses
import re

import pytest
import torch
from conftest import SMALL, tiny_tokenizer

from llm.hf_format import save_hf
from llm.lora import (
    TARGETS,
    LoraSettings,
    apply_lora,
    merge_lora,
    merged_state_dict,
    save_peft_adapter,
)
from llm.transformer import Transformer

# Grouped-query attention (2 query heads, 1 KV head) so that Q and K rows differ in count.
CONFIG = dataclasses.replace(SMALL, vocab_size=300, num_kv_heads=1)
ALL = LoraSettings(rank=4, alpha=8.0, dropout=0.0, targets=list(TARGETS))


def lora_model(settings: LoraSettings = ALL, seed: int = 0) -> tuple[Transformer, Transformer]:
    """(the base model, a copy of it with adapters whose B is random: as after training)."""
    torch.manual_seed(seed)
    base = Transformer(CONFIG)
    model = apply_lora(Transformer(CONFIG), settings)
    model.load_state_dict(_with_base(model, base), strict=False)
    return base, model


def _with_base(model: Transformer, base: Transformer) -> dict:
    state = {}
    for key in model.state_dict():
        plain = key.replace(".base.", ".")
        if plain in base.state_dict():
            state[key] = base.state_dict()[plain]
    return state


def randomize_b(model: Transformer) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)


def test_the_model_is_unchanged_at_step_0():
    base, model = lora_model()
    ids = torch.randint(0, CONFIG.vocab_size, (2, 10))
    assert torch.equal(model(ids), base(ids))


def test_only_the_adapters_get_gradients():
    _, model = lora_model()
    randomize_b(model)  # with B = 0, A's gradient is zero too: make both non-trivial
    ids = torch.randint(0, CONFIG.vocab_size, (2, 10))
    model(ids).square().mean().backward()
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    d, f, r = CONFIG.d_model, CONFIG.d_ff, 4
    kv = CONFIG.d_model // CONFIG.num_heads  # one KV head
    per_layer = r * ((d + d) + (d + kv) * 2 + (d + d) + (d + f) * 2 + (f + d))
    assert trainable == per_layer * CONFIG.num_layers


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["k_proj", "down_proj"], TARGETS])
def test_merge_then_forward_equals_the_adapter_forward(targets):
    _, model = lora_model(dataclasses.replace(ALL, targets=list(targets)))
    randomize_b(model)
    ids = torch.randint(0, CONFIG.vocab_size, (2, 10))
    with torch.no_grad():
        expected = model(ids)
        plain = Transformer(CONFIG)
        plain.load_state_dict(merged_state_dict(model))  # a plain model, strict keys
        merged = merge_lora(model)
        assert not any("lora" in name for name in merged.state_dict())
        torch.testing.assert_close(merged(ids), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(plain(ids), expected, atol=1e-5, rtol=0)


def test_adapter_formula_against_a_dense_update():
    """y = x W^T + alpha/r x A^T B^T on exactly the target's rows: written as a dense W'."""
    base, model = lora_model(dataclasses.replace(ALL, targets=["k_proj"]))
    randomize_b(model)
    layer = model.blocks[0].attn.qkv_proj
    q_rows = CONFIG.d_model
    kv = CONFIG.d_model // CONFIG.num_heads
    dense = base.blocks[0].attn.qkv_proj.weight.clone()
    a, b = layer.lora_A["k_proj"], layer.lora_B["k_proj"]
    dense[q_rows : q_rows + kv] += (ALL.alpha / ALL.rank) * b @ a
    x = torch.randn(3, CONFIG.d_model)
    torch.testing.assert_close(layer(x), x @ dense.T, atol=1e-6, rtol=0)


def test_peft_loads_the_adapter_onto_the_exported_model(tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base, model = lora_model(dataclasses.replace(ALL, dropout=0.1))
    randomize_b(model)
    model.eval()
    save_hf(tmp_path / "base", base, tiny_tokenizer_for(CONFIG.vocab_size))
    save_peft_adapter(model, ALL, tmp_path / "adapter", str(tmp_path / "base"))
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "base", torch_dtype=torch.float32)
    with_adapter = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    ids = torch.randint(0, CONFIG.vocab_size, (2, 10))
    with torch.no_grad():
        ours, theirs = model(ids), with_adapter(ids).logits
        assert not torch.allclose(base(ids), ours, atol=1e-3)  # the adapter does something
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def tiny_tokenizer_for(vocab_size: int):
    tokenizer = tiny_tokenizer()
    assert tokenizer.vocab_size <= vocab_size
    return tokenizer


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rank": 0}, "lora_rank must be at least 1, not 0"),
        ({"rank": -2}, "lora_rank must be at least 1, not -2"),
        ({"targets": ["qkv"]}, "no matrix is named 'qkv'"),
        ({"alpha": 0.0}, "lora_alpha must be > 0"),
        ({"dropout": 1.0}, "lora_dropout must be in [0, 1)"),
    ],
)
def test_bad_settings_are_one_line_errors(change, message):
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        apply_lora(Transformer(CONFIG), dataclasses.replace(ALL, **change))
    assert "\n" not in str(e.value)


def test_a_target_the_ffn_lacks_is_an_error():
    silu = Transformer(dataclasses.replace(CONFIG, ffn="silu"))
    with pytest.raises(ValueError, match="has no up_proj"):
        apply_lora(silu, dataclasses.replace(ALL, targets=["up_proj"]))
