"""Our Transformer as a Hugging Face `LlamaForCausalLM`: the same architecture (pre-norm RMSNorm,
SwiGLU, RoPE), so the tests can check our logits against an independent implementation and the
benchmarks can time both on the same weights. The weights are mapped by llm/hf_format.py (the
export's own mapping, so these checks test it too). Needs the `transformers` package (a dev
dependency), so it lives with the tests, outside the `llm` package. The tests import it as
`from hf_llama import to_hf_llama` (pytest puts tests/ on the path); the kernel scripts put
tests/ on the path first.
"""

from llm.hf_format import hf_config, hf_state_dict
from llm.transformer import Transformer

# Model settings that Llama has no equivalent of: export and to_hf_llama refuse each.
NOT_LLAMA = [
    {"norm_position": "post"},
    {"position_encoding": "none"},
    {"ffn": "silu"},
    {"qk_norm": True},
    {"position_encoding": "alibi"},
    {"sliding_window": 8},
]


def to_hf_llama(model: Transformer, attn_implementation: str = "sdpa"):
    """A LlamaForCausalLM holding a copy of `model`'s weights (same dtype and device). Only the
    Llama architecture maps: grouped-query attention does (num_key_value_heads), the ablation
    switches (post-norm, no norm, NoPE, ALiBi, SiLU FFN), QK-norm and a sliding window don't (a
    ValueError)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_dict(hf_config(model.config), attn_implementation=attn_implementation)
    weight = model.lm_head.weight
    hf = LlamaForCausalLM(config).to(device=weight.device, dtype=weight.dtype)
    state = hf_state_dict(model)
    state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])  # tied: the same matrix
    hf.load_state_dict(state, strict=True)
    return hf.eval()
