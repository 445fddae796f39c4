"""Our Transformer as a Hugging Face `LlamaForCausalLM`: the same architecture (pre-norm RMSNorm,
SwiGLU, RoPE), so the tests can check our logits against an independent implementation and the
benchmarks can time both on the same weights. Needs the `transformers` package (a dev dependency),
so it lives here, outside the `llm` package: the kernel scripts import it as a sibling
(`from hf_llama import to_hf_llama`), the tests as `from kernel.hf_llama import to_hf_llama`.
"""

import torch

from llm.transformer import Transformer


def rope_pairs_to_halves(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder the output rows of a query or key projection for Llama's RoPE convention.

    We rotate adjacent pairs (x[2i], x[2i+1]); Llama rotates halves (x[i], x[i + d/2]). Within
    each head, putting our even rows first and odd rows second turns one into the other.
    """
    d_model = weight.shape[1]
    per_head = weight.view(num_heads, -1, 2, d_model)  # (heads, d_head / 2, pair, d_model)
    return per_head.transpose(1, 2).reshape(-1, d_model)


def to_hf_llama(model: Transformer, attn_implementation: str = "sdpa"):
    """A LlamaForCausalLM holding a copy of `model`'s weights (same dtype and device). Only the
    Llama architecture maps: grouped-query attention does (num_key_value_heads), the ablation
    switches (post-norm, no norm, NoPE, SiLU FFN) and QK-norm don't."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    llama = {"norm_position": "pre", "position_encoding": "rope", "ffn": "swiglu", "qk_norm": False}
    for key, value in llama.items():
        if getattr(c, key) != value:
            raise ValueError(f"{key}={getattr(c, key)!r} has no Llama equivalent (needs {value!r})")
    config = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        intermediate_size=c.d_ff,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.kv_heads,
        max_position_embeddings=c.context_length,
        rope_theta=c.rope_theta,
        rms_norm_eps=model.final_norm.eps.item(),
        hidden_act="silu",
        tie_word_embeddings=c.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        attn_implementation=attn_implementation,
    )
    weight = model.lm_head.weight
    hf = LlamaForCausalLM(config).to(device=weight.device, dtype=weight.dtype)
    state = {
        "model.embed_tokens.weight": model.embedding.weight,
        "model.norm.weight": model.final_norm.weight,
        "lm_head.weight": model.lm_head.weight,
    }
    for i, block in enumerate(model.blocks):
        prefix = f"model.layers.{i}."
        q_rows, kv_rows = c.num_heads * c.d_head, c.kv_heads * c.d_head
        wq, wk, wv = block.attn.qkv_proj.weight.split([q_rows, kv_rows, kv_rows], dim=0)
        state |= {
            prefix + "input_layernorm.weight": block.attn_norm.weight,
            prefix + "post_attention_layernorm.weight": block.ffn_norm.weight,
            prefix + "self_attn.q_proj.weight": rope_pairs_to_halves(wq, c.num_heads),
            prefix + "self_attn.k_proj.weight": rope_pairs_to_halves(wk, c.kv_heads),
            prefix + "self_attn.v_proj.weight": wv,
            prefix + "self_attn.o_proj.weight": block.attn.out_proj.weight,
            prefix + "mlp.gate_proj.weight": block.ffn.w1.weight,
            prefix + "mlp.up_proj.weight": block.ffn.w3.weight,
            prefix + "mlp.down_proj.weight": block.ffn.w2.weight,
        }
    hf.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return hf.eval()
