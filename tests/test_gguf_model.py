"""Loading llama.cpp's GGUF files, with `gguf` writing them and `transformers` as the reference.

Each test file is a tiny random Llama written the way llama.cpp's converter writes one: its
query and key rows permuted into the interleaved RoPE layout, its matrices quantised (F32, Q8_0,
Q4_1, or Q8_0 embeddings with Q4_1 elsewhere as in SmolLM2's files), and a byte-level BPE
vocabulary with control tokens. `load_gguf` must give the logits, greedy tokens and token ids
that transformers gives from the same file, the logits of the model the file was converted from,
and clear errors for files it cannot load.
"""

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, TokenType
from gguf.quants import dequantize, quant_shape_to_byte_shape, quantize
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from llm import generating
from llm.bpe_files import BYTE_TO_CHAR
from llm.export import export
from llm.generating import SamplingConfig, cache_for, chat_prompt, generate, main, stream
from llm.gguf_format import GgufError, load_gguf, pretrained_path
from llm.loading import Loaded

# The model's shape: every matrix row is a multiple of 32 values, the block of Q8_0 and Q4_1.
SHAPE = dict(d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, d_ff=128, context=128)
ROPE_BASE, RMS_EPS = 100_000.0, 1e-5  # SmolLM2's; the RoPE base is not our default
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Merges in GPT-2's spelling ("Ġ" is the space byte), in the order they were "learned". Each
# makes a token from two earlier ones, and, as in a trained vocabulary, a merged token is what
# BPE makes of its own text (where that fails, merging by token rank, as ours does, and by merge
# pair, as Hugging Face does, can differ: see llm/bpe_tokenizer.py).
MERGES = """Ġ t|h e|Ġ a|i n|Ġt he|e r|Ġ o|o n|r e|Ġ s|a n|Ġ w|o u|e n|Ġ b|Ġ c|l l|i s|a t|i t|e d
|Ġ h|o r|n d|Ġ f|Ġ m|in g|Ġ d|Ġ p|a r|Ġa nd|Ġt o|Ġo n|Ġ Ġ|ĠĠ ĠĠ|Ċ Ċ|Ġ is|a s|Ġw as|Ġc at"""
MERGES = [m.strip() for m in MERGES.split("|")]
Q = GGMLQuantizationType
QUANTS = {  # quant -> (type of token_embd, type of every other matrix)
    "F32": (Q.F32, Q.F32),
    "Q8_0": (Q.Q8_0, Q.Q8_0),
    "Q4_1": (Q.Q4_1, Q.Q4_1),
    "mixed": (Q.Q8_0, Q.Q4_1),
}
TEXTS = [
    "the cat was on the mat, and it is there",
    "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
    "  two  spaces,\n\ttabs and 123 numbers; Ünïcödé 🙂<|endoftext|>the end",
    "indented     by five, then a paragraph.\n\n",
]


def vocabulary() -> tuple[list[str], list[int]]:
    """Tokens in GPT-2's byte spelling and their types: the control tokens first (as in
    SmolLM2's files), then the 256 bytes, then one token per merge."""
    tokens = [*CONTROL, *(BYTE_TO_CHAR[b] for b in range(256))]
    for merge in MERGES:
        left, right = merge.split(" ")
        assert left in tokens and right in tokens, merge
        tokens.append(left + right)
    types = [TokenType.CONTROL] * len(CONTROL) + [TokenType.NORMAL] * (len(tokens) - len(CONTROL))
    return tokens, [int(t) for t in types]


def permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: Hugging Face's q/k rows (each head's rotated
    halves) into llama.cpp's layout (each head's rotated pairs adjacent)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def random_hf_weights(rng: np.random.Generator, vocab_size: int, tie: bool) -> dict:
    """A random Llama under Hugging Face's names and layouts. Queries and keys are large enough
    that attention is far from uniform, so a wrong RoPE layout changes the logits."""
    d, f = SHAPE["d_model"], SHAPE["d_ff"]
    d_head = d // SHAPE["num_heads"]
    kv = SHAPE["num_kv_heads"] * d_head

    def matrix(rows: int, cols: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def norm() -> np.ndarray:
        return (1 + 0.2 * rng.standard_normal(d)).astype(np.float32)

    w = {
        "model.embed_tokens.weight": matrix(vocab_size, d),
        "model.norm.weight": norm(),
    }
    if not tie:
        w["lm_head.weight"] = matrix(vocab_size, d)
    for i in range(SHAPE["num_layers"]):
        p = f"model.layers.{i}."
        w |= {
            p + "input_layernorm.weight": norm(),
            p + "self_attn.q_proj.weight": matrix(d, d, 3.0),
            p + "self_attn.k_proj.weight": matrix(kv, d, 3.0),
            p + "self_attn.v_proj.weight": matrix(kv, d),
            p + "self_attn.o_proj.weight": matrix(d, d),
            p + "post_attention_layernorm.weight": norm(),
            p + "mlp.gate_proj.weight": matrix(f, d),
            p + "mlp.up_proj.weight": matrix(f, d),
            p + "mlp.down_proj.weight": matrix(d, f),
        }
    return w


LAYER_NAMES = {  # Hugging Face's name in a layer -> llama.cpp's
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_tensors(hf: dict) -> dict[str, np.ndarray]:
    """The weights under llama.cpp's names, q and k permuted as its converter does."""
    t = {
        "token_embd.weight": hf["model.embed_tokens.weight"],
        "output_norm.weight": hf["model.norm.weight"],
    }
    if "lm_head.weight" in hf:
        t["output.weight"] = hf["lm_head.weight"]
    for i in range(SHAPE["num_layers"]):
        for hf_name, name in LAYER_NAMES.items():
            w = hf[f"model.layers.{i}.{hf_name}.weight"]
            if name == "attn_q":
                w = permute_rope(w, SHAPE["num_heads"])
            elif name == "attn_k":
                w = permute_rope(w, SHAPE["num_kv_heads"])
            t[f"blk.{i}.{name}.weight"] = w
    return t


def quantized(w: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """w's blocks of type qtype, as bytes (rows, bytes per row). A type gguf cannot quantise
    (only for the error tests) gets blocks of zero bytes."""
    try:
        return quantize(w, qtype)
    except NotImplementedError:
        return np.zeros(quant_shape_to_byte_shape(w.shape, qtype), dtype=np.uint8)


def write_tiny_llama_gguf(
    path,
    *,
    quant: str,
    seed: int = 0,
    tie: bool = True,
    architecture: str = "llama",
    drop_keys: tuple[str, ...] = (),
    tensor_types: dict[str, GGMLQuantizationType] | None = None,
    extra_bools: dict[str, bool] | None = None,
) -> dict:
    """Write a tiny random Llama GGUF as llama.cpp would, and return what went in: the Hugging
    Face layout float weights ("hf", before quantisation), "tokens", "types" (token types)
    and the "qtypes" of the tensors. `architecture` and `drop_keys` (metadata keys left out)
    make broken files; `tensor_types` overrides the type of the named tensors; `extra_bools`
    adds boolean metadata."""
    tokens, types = vocabulary()
    hf = random_hf_weights(np.random.default_rng(seed), len(tokens), tie)
    embd_type, matrix_type = QUANTS[quant]
    writer = GGUFWriter(str(path), architecture)
    a = architecture
    d_head = SHAPE["d_model"] // SHAPE["num_heads"]
    metadata = {
        f"{a}.block_count": (writer.add_uint32, SHAPE["num_layers"]),
        f"{a}.context_length": (writer.add_uint32, SHAPE["context"]),
        f"{a}.embedding_length": (writer.add_uint32, SHAPE["d_model"]),
        f"{a}.feed_forward_length": (writer.add_uint32, SHAPE["d_ff"]),
        f"{a}.attention.head_count": (writer.add_uint32, SHAPE["num_heads"]),
        f"{a}.attention.head_count_kv": (writer.add_uint32, SHAPE["num_kv_heads"]),
        f"{a}.rope.freq_base": (writer.add_float32, ROPE_BASE),
        f"{a}.attention.layer_norm_rms_epsilon": (writer.add_float32, RMS_EPS),
        f"{a}.rope.dimension_count": (writer.add_uint32, d_head),
        f"{a}.vocab_size": (writer.add_uint32, len(tokens)),
        "general.name": (writer.add_string, "tiny-llama"),
        "general.file_type": (writer.add_uint32, 0 if quant == "F32" else 7),
        "tokenizer.ggml.model": (writer.add_string, "gpt2"),
        "tokenizer.ggml.pre": (writer.add_string, "gpt-2"),
        "tokenizer.ggml.tokens": (writer.add_array, tokens),
        "tokenizer.ggml.token_type": (writer.add_array, types),
        "tokenizer.ggml.merges": (writer.add_array, MERGES),
        "tokenizer.ggml.bos_token_id": (writer.add_uint32, tokens.index("<|im_start|>")),
        "tokenizer.ggml.eos_token_id": (writer.add_uint32, tokens.index("<|im_end|>")),
    }
    metadata |= {key: (writer.add_bool, value) for key, value in (extra_bools or {}).items()}
    for key, (add, value) in metadata.items():
        if key not in drop_keys:
            add(key, value)
    qtypes = {}
    for name, w in gguf_tensors(hf).items():
        qtype = Q.F32 if w.ndim == 1 else embd_type if name == "token_embd.weight" else matrix_type
        qtype = (tensor_types or {}).get(name, qtype)
        qtypes[name] = qtype
        if qtype == Q.F32:
            writer.add_tensor(name, w)
        else:  # bytes (rows, row bytes): the writer works out the element shape
            writer.add_tensor(name, quantized(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"hf": hf, "tokens": tokens, "types": types, "qtypes": qtypes}


# ---------------------------------------------------------------------------------------------
# Fixtures: each file is written, and loaded both ways, once
# ---------------------------------------------------------------------------------------------

CASES = {  # name -> (quant, tie)
    "F32": ("F32", True),
    "F32-untied": ("F32", False),
    "Q8_0": ("Q8_0", True),
    "Q4_1": ("Q4_1", True),
    "Q4_1-untied": ("Q4_1", False),
    "mixed": ("mixed", True),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> (directory, written dict); each file is written on first use."""
    made = {}

    def get(name: str):
        if name not in made:
            quant, tie = CASES[name]
            directory = tmp_path_factory.mktemp(name)
            written = write_tiny_llama_gguf(directory / "tiny.gguf", quant=quant, tie=tie)
            made[name] = directory, written
        return made[name]

    return get


@pytest.fixture(scope="module")
def loaded(files):
    """name -> (our model, our tokenizer, info, transformers' model), loaded once."""
    made = {}

    def get(name: str):
        if name not in made:
            directory, _ = files(name)
            model, tokenizer, info = load_gguf(directory / "tiny.gguf")
            made[name] = model, tokenizer, info, hf_from_gguf(directory)
        return made[name]

    return get


def hf_from_gguf(directory):
    """transformers' LlamaForCausalLM from directory/tiny.gguf, in float32."""
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file="tiny.gguf", dtype=torch.float32
    )
    return model.eval()


def batch_ids(vocab_size: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# The writer itself: what it writes is what gguf and transformers read
# ---------------------------------------------------------------------------------------------


def test_writer_round_trips(files):
    """Every tensor reads back with its type, llama.cpp's shape, and the values quantised (the
    permuted q/k), dequantised by gguf within the quantisation's error."""
    directory, written = files("mixed")
    reader = GGUFReader(directory / "tiny.gguf")
    expected = gguf_tensors(written["hf"])
    assert {t.name for t in reader.tensors} == set(expected)
    for tensor in reader.tensors:
        w = expected[tensor.name]
        assert tensor.tensor_type == written["qtypes"][tensor.name]
        assert list(tensor.shape) == list(reversed(w.shape))  # GGUF lists dims innermost first
        values = dequantize(tensor.data, tensor.tensor_type).reshape(w.shape)
        step = np.abs(w).max() / (8 if tensor.tensor_type == Q.Q4_1 else 100)
        np.testing.assert_allclose(values, w, atol=step, err_msg=tensor.name)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["tokenizer.ggml.tokens"].contents() == written["tokens"]


def test_transformers_reads_the_writer_as_meant(files):
    """transformers undoes the q/k permutation: its weights are the Hugging Face ones."""
    directory, written = files("F32-untied")
    hf = hf_from_gguf(directory)
    state = hf.state_dict()
    for name, w in written["hf"].items():
        torch.testing.assert_close(state[name], torch.from_numpy(w), rtol=0, atol=0, msg=name)
    assert hf.config.num_key_value_heads == SHAPE["num_kv_heads"]
    assert not hf.config.tie_word_embeddings


# ---------------------------------------------------------------------------------------------
# Ours against transformers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(loaded, name):
    model, _, _, hf = loaded(name)
    ids = batch_ids(model.config.vocab_size)
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    assert ours.dtype == torch.float32 and not model.training
    assert (ours - theirs).abs().max().item() < 1e-4


def original_model(hf_weights: dict) -> LlamaForCausalLM:
    """The Llama the file was converted from, built from its Hugging Face weights directly."""
    config = LlamaConfig(
        vocab_size=len(vocabulary()[0]), hidden_size=SHAPE["d_model"],
        intermediate_size=SHAPE["d_ff"], num_hidden_layers=SHAPE["num_layers"],
        num_attention_heads=SHAPE["num_heads"], num_key_value_heads=SHAPE["num_kv_heads"],
        max_position_embeddings=SHAPE["context"], rope_theta=ROPE_BASE, rms_norm_eps=RMS_EPS,
        tie_word_embeddings="lm_head.weight" not in hf_weights,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    weights = {k: torch.from_numpy(w) for k, w in hf_weights.items()}
    result = model.load_state_dict(weights, strict=False)  # a tied model has no lm_head.weight
    assert set(result.missing_keys) <= {"lm_head.weight"} and not result.unexpected_keys
    model.tie_weights()
    return model


@pytest.mark.parametrize("name", ["F32", "F32-untied"])
def test_logits_match_the_original_model(files, loaded, name):
    """Against the model before conversion, not through transformers' GGUF reader: the two
    readers could share a mistake in the RoPE layout, and comparing them would not show it (any
    reordering of the q/k rows in the file moves both alike)."""
    _, written = files(name)
    model, _, _, _ = loaded(name)
    ids = batch_ids(model.config.vocab_size)
    with torch.no_grad():
        ours, theirs = model(ids), original_model(written["hf"])(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ["F32", "Q4_1-untied", "mixed"])
def test_config_read_from_metadata(loaded, name):
    model, _, _, _ = loaded(name)
    c = model.config
    assert c.vocab_size == len(vocabulary()[0])
    assert (c.context_length, c.d_model, c.num_layers, c.num_heads, c.num_kv_heads, c.d_ff) == (
        SHAPE["context"], SHAPE["d_model"], SHAPE["num_layers"], SHAPE["num_heads"],
        SHAPE["num_kv_heads"], SHAPE["d_ff"])  # fmt: skip
    assert (c.rope_theta, c.norm_eps) == (ROPE_BASE, pytest.approx(RMS_EPS))
    assert c.tie_embeddings == CASES[name][1]


def test_optional_metadata_may_be_missing(tmp_path):
    """Older files lack llama.vocab_size (the embedding's shape gives it) and
    llama.rope.dimension_count (RoPE on the whole head)."""
    path = tmp_path / "older.gguf"
    drop = ("llama.vocab_size", "llama.rope.dimension_count")
    write_tiny_llama_gguf(path, quant="Q8_0", drop_keys=drop)
    model, _, _ = load_gguf(path)
    assert model.config.vocab_size == len(vocabulary()[0])


@pytest.mark.parametrize("name", ["Q8_0", "F32-untied"])
def test_greedy_generation_matches_transformers(loaded, name):
    model, _, _, hf = loaded(name)
    ids = batch_ids(model.config.vocab_size)
    ours = generate(model, ids.tolist(), SamplingConfig(max_new_tokens=10, temperature=0))
    hf.generation_config.eos_token_id = None  # ours runs all 10 steps, so must theirs
    theirs = hf.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10, pad_token_id=0
    )
    assert ours == theirs[:, ids.shape[1] :].tolist()


def test_tokenizer_encodes_like_transformers(files, loaded):
    directory, written = files("F32")
    _, tokenizer, _, _ = loaded("F32")
    theirs = AutoTokenizer.from_pretrained(directory, gguf_file="tiny.gguf")
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False), text
        assert tokenizer.decode(ids) == text
    for token in CONTROL:
        assert tokenizer.encode(token) == [written["tokens"].index(token)]
    assert tokenizer.encode(" the cat") == [written["tokens"].index(t) for t in ("Ġthe", "Ġcat")]


# ---------------------------------------------------------------------------------------------
# Files we cannot load
# ---------------------------------------------------------------------------------------------


def test_other_architecture_is_refused(tmp_path):
    path = tmp_path / "gpt2.gguf"
    write_tiny_llama_gguf(path, quant="F32", architecture="gpt2")
    with pytest.raises(GgufError, match="gpt2"):
        load_gguf(path)
    assert issubclass(GgufError, ValueError)


def test_missing_metadata_is_named(tmp_path):
    path = tmp_path / "no-heads.gguf"
    write_tiny_llama_gguf(path, quant="F32", drop_keys=("llama.attention.head_count",))
    with pytest.raises(GgufError, match=r"llama\.attention\.head_count\b"):  # not _kv
        load_gguf(path)


def test_unsupported_tensor_type_is_named(tmp_path):
    """Q1_0 (1-bit blocks of 128 weights), which gguf cannot dequantise: the error names the
    tensor and its type."""
    path = tmp_path / "q1_0.gguf"
    write_tiny_llama_gguf(path, quant="Q8_0", tensor_types={"blk.1.ffn_down.weight": Q.Q1_0})
    with pytest.raises(GgufError, match="Q1_0") as error:
        load_gguf(path)
    assert "blk.1.ffn_down.weight" in str(error.value)


def test_not_a_gguf_file_is_named(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a GGUF file" * 10)
    with pytest.raises(GgufError, match="model.bin"):
        load_gguf(path)


@pytest.mark.parametrize("keep", [10, 1000, -100])
def test_truncated_file_is_named(files, tmp_path, keep):
    """A download cut short: in the header, in the metadata, in the last tensor."""
    directory, _ = files("Q8_0")
    path = tmp_path / "cut.gguf"
    path.write_bytes((directory / "tiny.gguf").read_bytes()[:keep])
    with pytest.raises(GgufError, match="cut.gguf"):
        load_gguf(path)


def test_export_writes_a_hugging_face_directory_with_the_same_logits(files, loaded, tmp_path):
    """`uv run -m llm.export FILE.gguf OUT` (llm/export.py reads GGUF files too)."""
    directory, _ = files("Q4_1")
    model, _, _, _ = loaded("Q4_1")
    out = export(directory / "tiny.gguf", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = batch_ids(model.config.vocab_size)
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max() < 1e-4


def test_generating_command_runs_a_gguf_file(files, loaded, capsys):
    directory, _ = files("Q8_0")
    model, tokenizer, _, _ = loaded("Q8_0")
    main(["--gguf", str(directory / "tiny.gguf"), "--prompt", "the cat", "--temperature", "0",
          "--max_new_tokens", "8", "--device", "cpu"])  # fmt: skip
    ids = generate(model, tokenizer.encode("the cat"), SamplingConfig(max_new_tokens=8,
                                                                      temperature=0))  # fmt: skip
    assert capsys.readouterr().out == "the cat" + tokenizer.decode(ids) + "\n"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (
            ["--pretrained", "llama-7b"],
            2,
            "unknown pretrained model 'llama-7b'; known: smollm2-135m",
        ),
        (["--gguf", "notes.txt"], 1, "notes.txt: not a model file; expected a GGUF file"),
        (["--gguf", "missing.gguf"], 1, "missing.gguf: no such file or directory; expected"),
    ],
)
def test_generating_command_errors_name_the_problem(capsys, tmp_path, monkeypatch, args, code,
                                                    message):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("plain text\n")
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--prompt", "x"])
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_bfloat16_loads_straight_to_bfloat16_and_keeps_the_tie(files, loaded):
    directory, _ = files("Q4_1")
    model, _, _, _ = loaded("Q4_1")
    half, _, _ = load_gguf(directory / "tiny.gguf", dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.lm_head.weight is half.embedding.weight
    for name, weight in model.state_dict().items():  # each weight: float32's, rounded
        assert torch.equal(half.state_dict()[name], weight.to(torch.bfloat16)), name


@pytest.mark.parametrize(
    "key, message",
    [("tokenizer.ggml.add_bos_token", "add_bos_token=true is not supported"),
     ("tokenizer.ggml.add_space_prefix", "add_space_prefix=true is not supported")],
)  # fmt: skip
def test_tokenizer_options_we_do_not_apply_are_refused(tmp_path, key, message):
    path = tmp_path / "tiny.gguf"
    write_tiny_llama_gguf(path, quant="F32", extra_bools={key: True})
    with pytest.raises(GgufError, match=message):
        load_gguf(path)


def test_chat_keeps_the_conversation_and_ends_at_eof(loaded, monkeypatch, capsys):
    """Two turns read from piped input: the second prompt holds the first exchange (ChatML, the
    fallback of a model without a template), then the end of the input ends the chat."""
    model, tokenizer, _, _ = loaded("Q8_0")
    lines, replies, prompts = iter(["hello", "and then?"]), iter(["first", "second"]), []

    def read(prompt: str) -> str:
        print(prompt, end="")
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    def reply(model, ids: list[int], sampling, cache):
        prompts.append(ids)
        assert sampling.eos_id == tokenizer.token_id("<|im_end|>")
        yield from tokenizer.encode(next(replies))

    monkeypatch.setattr("builtins.input", read)
    monkeypatch.setattr(generating, "stream", reply)
    user_messages = generating.typed_lines()
    generating.chat(
        model, tokenizer, SamplingConfig(temperature=0), None, "Be brief.", user_messages
    )
    expected = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n"
                "<|im_start|>assistant\nfirst<|im_end|>\n<|im_start|>user\nand then?"
                "<|im_end|>\n<|im_start|>assistant\n")  # fmt: skip
    assert len(prompts) == 2 and tokenizer.decode(prompts[1]) == expected
    out = capsys.readouterr().out
    assert "assistant> first\n" in out and out.endswith("you> \n")  # the last line is ended


def test_a_chat_turn_prefills_only_what_the_kv_cache_lacks(loaded):
    """The second turn continues the first turn's cache: the same tokens as a full prefill."""
    model, tokenizer, _, _ = loaded("Q8_0")
    sampling = SamplingConfig(max_new_tokens=12, temperature=0, eos_id=tokenizer.token_id(
        "<|im_end|>"))  # fmt: skip
    messages = [{"role": "user", "content": "the cat"}]
    first = chat_prompt(tokenizer, messages, None)
    cache = cache_for(model, None, [], first, 12)
    reply = list(stream(model, first, sampling, cache))
    cached = (first + reply)[: cache.length]
    messages += [{"role": "assistant", "content": tokenizer.decode(reply)},
                 {"role": "user", "content": "and the hat"}]  # fmt: skip
    second = chat_prompt(tokenizer, messages, None)
    cache = cache_for(model, cache, cached, second, 12)
    assert len(first) <= cache.length < len(second)  # the first turn is not prefilled again
    assert list(stream(model, second, sampling, cache)) == list(stream(model, second, sampling))


def test_a_reused_kv_cache_must_fit_the_prompt(loaded):
    model, _, _, _ = loaded("Q8_0")
    cache = model.new_kv_cache(1, capacity=8)
    model(torch.tensor([[1, 2, 3]]), cache)
    sampling = SamplingConfig(max_new_tokens=4, temperature=0)
    with pytest.raises(ValueError, match="the cache holds 3 tokens: the prompt must be longer"):
        list(stream(model, [1, 2, 3], sampling, cache))
    with pytest.raises(ValueError, match="room for 8 tokens: too few"):
        list(stream(model, [1, 2, 3, 4, 5, 6], sampling, cache))
    bigger = cache.with_capacity(16)
    assert bigger.length == 3 and torch.equal(bigger.keys[0][:, :, :3], cache.keys[0][:, :, :3])
    assert len(list(stream(model, [1, 2, 3, 4, 5, 6], sampling, bigger))) == 4


def test_run_bare_the_command_chats_with_smollm2(loaded, monkeypatch, capsys):
    """`uv run -m llm.generating` with no model: a chat with the installed SmolLM2 (here the
    tiny model stands in for it), ended by the end of the input."""
    model, tokenizer, info, _ = loaded("Q8_0")
    paths = []

    def load(source, device, dtype, **_):
        paths.append(source)
        return Loaded(model, tokenizer, info, "gguf", pretrained_path(source))

    def end_of_input(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr(generating, "load", load)
    monkeypatch.setattr("builtins.input", end_of_input)
    main(["--device", "cpu"])
    assert paths == ["smollm2-135m"]
    assert "no model given: chatting with smollm2-135m" in capsys.readouterr().err
