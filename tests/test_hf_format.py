"""The Hugging Face Llama format, both ways, with `transformers` and `tokenizers` as the
reference: our exported model and tokenizer give our logits, ids and greedy text there; their
random Llama models give their logits here; what cannot be expressed is a one-line error."""

import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from llm import export, generating, training
from llm.bpe_files import read_tokenizer_json
from llm.bpe_tokenizer import EOT, BpeTokenizer
from llm.bpe_training import train_bpe
from llm.chat import CHATML, render_chat
from llm.checkpoint import read_checkpoint, save_checkpoint
from llm.generating import SamplingConfig, generate
from llm.hf_format import HfFormatError, hf_state_dict, load_hf_model, model_config_from_hf, save_hf
from llm.loading import load
from llm.transformer import ModelConfig, Transformer
from tests.conftest import markov_tokens

from hf_llama import NOT_LLAMA

TEXT = (
    "Once upon a time, a little cat named Tom found a big red ball. He said: 'It's mine!'\n"
    "Ünïcödé wörds, 日本語のテキスト, emoji 🙂🙂 and numbers 3.14159 appear too.\n"
)
SPECIALS = [EOT, "<|pad |>"]  # the second has a space: not a GPT-2 byte string


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> BpeTokenizer:
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text(f"{TEXT}{EOT}" * 20, encoding="utf-8")
    vocab, merges = train_bpe(corpus, 320, SPECIALS, num_workers=1, progress=False)
    return BpeTokenizer(vocab, merges, SPECIALS)


def small_model(vocab_size: int, **options) -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=vocab_size, context_length=64, d_model=32, num_layers=2,
                         num_heads=4, d_ff=64, **options)  # fmt: skip
    return Transformer(config).eval()


def run_dir_with(model: Transformer, tokenizer: BpeTokenizer, path) -> str:
    """A run directory holding model's checkpoint and tokenizer, as training leaves one."""
    tokenizer.save(path / "tok")
    save_checkpoint(model, None, 0, path / "checkpoint.pt", tokenizer_dir=path / "tok")
    return str(path)


@pytest.fixture(scope="module")
def exports(tokenizer, tmp_path_factory):
    """(our model, its export directory) of a kind, "untied-gqa" (grouped-query attention) or
    "tied", exported once on first use."""
    made = {}

    def get(kind: str):
        if kind not in made:
            options = {"tie_embeddings": True} if kind == "tied" else {"num_kv_heads": 2}
            model = small_model(tokenizer.vocab_size, **options)
            path = tmp_path_factory.mktemp(kind)
            made[kind] = model, export.export(run_dir_with(model, tokenizer, path), path / "hf")
        return made[kind]

    return get


@pytest.fixture(params=["untied-gqa", "tied"])
def exported(request, exports):
    """Both kinds, for the checks of the model itself."""
    return exports(request.param)


@pytest.fixture
def gqa_export(exports):
    """One kind, for the checks that do not depend on the model's kind."""
    return exports("untied-gqa")


def test_export_writes_a_llama_directory(exported, tokenizer):
    model, out = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(export.EXPORT_FILES)
    config = json.loads((out / "config.json").read_text())
    c = model.config
    assert config["num_key_value_heads"] == c.kv_heads
    assert config["tie_word_embeddings"] == c.tie_embeddings
    assert config["eos_token_id"] == config["bos_token_id"] == tokenizer.token_id(EOT)


def test_exported_model_gives_our_logits_in_transformers(exported):
    model, out = exported
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert hf.config.num_key_value_heads == model.config.kv_heads
    ids = torch.randint(0, model.config.vocab_size, (2, model.config.context_length))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-5, rtol=0)


def test_greedy_generation_in_transformers_equals_ours(exported, tokenizer):
    model, out = exported
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float64).eval()
    hf.generation_config.eos_token_id = None  # 50 tokens in both, <|endoftext|> or not
    prompt = tokenizer.encode("Once upon a time")
    sampling = SamplingConfig(max_new_tokens=50, temperature=0)  # float64: no near-ties
    ours = generate(model.double(), prompt, sampling)
    model.float()
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=50, do_sample=False)
    theirs = theirs[0, len(prompt) :]
    assert theirs.tolist() == ours and len(ours) == 50


def test_export_then_import_gives_the_same_weights(exported):
    model, out = exported
    loaded, info = load_hf_model(out)
    assert loaded.config == model.config
    assert info["tokenizer_dir"] == str(out)
    ours, back = model.state_dict(), loaded.state_dict()
    assert ours.keys() == back.keys()
    for name in ours:
        assert torch.equal(ours[name], back[name]), name


@pytest.fixture(scope="module")
def hf_tokenizers(exports):
    _, out = exports("untied-gqa")
    return Tokenizer.from_file(str(out / "tokenizer.json")), AutoTokenizer.from_pretrained(out)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.one_of(st.text(max_size=20), st.sampled_from([*SPECIALS, " ", "  \n", "'s", TEXT])),
        max_size=6,
    )
)
def test_exported_tokenizer_gives_our_ids(hf_tokenizers, tokenizer, pieces):
    hf_tokenizer, auto = hf_tokenizers
    text = "".join(pieces)
    ids = tokenizer.encode(text)
    assert hf_tokenizer.encode(text).ids == ids
    assert auto(text)["input_ids"] == ids
    assert auto.decode(ids) == tokenizer.decode(ids)


def test_exported_tokenizer_loads_back(gqa_export, tokenizer):
    _, out = gqa_export
    loaded = BpeTokenizer.load(out)
    assert loaded.vocab == tokenizer.vocab
    assert loaded.merges == tokenizer.merges
    assert loaded.special_ids == tokenizer.special_ids


# --- import --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kv_heads, tie, eps",
    [(4, False, 1e-6), (2, True, 1e-5)],  # MHA untied, GQA tied
)
def test_a_random_hf_llama_gives_its_logits_in_ours(tmp_path, kv_heads, tie, eps):
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=32,
        rms_norm_eps=eps, rope_theta=500.0, tie_word_embeddings=tie,
        initializer_range=0.2,  # large weights: peaked attention, so that RoPE's layout shows
    )  # fmt: skip
    torch.manual_seed(0)
    hf = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)  # gains that are not all 1
    hf.save_pretrained(tmp_path)
    model, info = load_hf_model(tmp_path)
    assert (model.config.kv_heads, model.config.norm_eps, model.config.rope_theta) == (
        kv_heads, eps, 500.0,
    )  # fmt: skip
    assert info["tokenizer_dir"] is None
    ids = torch.randint(0, 100, (2, 32))
    with torch.no_grad():  # float64: the large weights' logits are far from 1e-5 in float32
        ours, theirs = model.double()(ids), hf.double()(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


LLAMA = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 1, "num_attention_heads": 4}  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "mistral"}, "model_type 'mistral' is not supported"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling .* is not"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope_type 'yarn' is"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
        ({"attention_bias": True}, "attention_bias True is not supported"),
        ({"head_dim": 16}, "head_dim 16 x 4 heads != hidden_size"),
        ({"num_key_value_heads": 3}, "num_kv_heads must divide num_heads=4"),
        ({"hidden_size": None}, "hidden_size is missing or not an integer"),
    ],
)
def test_unsupported_hf_configs_are_errors_naming_the_feature(change, message):
    with pytest.raises(HfFormatError, match=message):
        model_config_from_hf(LLAMA | change)
    assert model_config_from_hf(LLAMA).rope_theta == 10_000.0  # the unchanged config loads


@pytest.mark.parametrize("switch", NOT_LLAMA)
def test_export_refuses_what_llama_cannot_express(switch, tokenizer, tmp_path, capsys):
    model = small_model(tokenizer.vocab_size, **switch)
    source = run_dir_with(model, tokenizer, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        export.main([source, str(tmp_path / "out")])
    assert exit_info.value.code == 1
    key, value = next(iter(switch.items()))
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {key}={value!r} has no Llama equivalent")
    assert not (tmp_path / "out").exists()


def edit_json(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(normalizer={"type": "NFC"}), "normalizer 'NFC' is not supported"),
        (lambda d: d["model"].update(type="Unigram"), "model type 'Unigram' is not supported"),
        (lambda d: d.update(pre_tokenizer={"type": "Metaspace"}), "pre_tokenizer 'Metaspace'"),
        (lambda d: d["pre_tokenizer"].update(add_prefix_space=True), "add_prefix_space=true"),
        (lambda d: d["model"].update(byte_fallback=True), "byte_fallback=True is not"),
        (lambda d: d["added_tokens"][0].update(lstrip=True), "with lstrip=true is not"),
        (lambda d: d.update(post_processor={"type": "TemplateProcessing"}), "post_processor"),
        (lambda d: d["model"]["merges"].reverse(), "merge 1 .* out of id order"),
    ],
)
def test_unsupported_tokenizer_files_are_errors_naming_the_feature(gqa_export, tmp_path, edit,
                                                                    message):  # fmt: skip
    _, out = gqa_export
    path = tmp_path / "tokenizer.json"
    shutil.copy(out / "tokenizer.json", path)
    edit_json(path, edit)
    with pytest.raises(ValueError, match=message) as error:
        read_tokenizer_json(path)
    assert "\n" not in str(error.value)


# --- the command lines -----------------------------------------------------------------------


def test_export_cli_refuses_a_non_empty_directory_and_a_missing_source(gqa_export, tmp_path,
                                                                        capsys):  # fmt: skip
    model, out = gqa_export
    source = str(out)  # an HF directory exports too (here: to itself, with --force)
    (tmp_path / "notes.txt").write_text("mine")
    cases = [
        ([source, str(tmp_path)], 2, f"OUT_DIR {tmp_path} is not empty; choose another"),
        ([source, str(tmp_path), "--force"], 2, f"OUT_DIR {tmp_path} holds notes.txt"),
        ([str(tmp_path / "nope"), str(tmp_path / "x")], 1, f"{tmp_path}/nope: no such file"),
    ]
    for argv, code, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            export.main(argv)
        (line,) = capsys.readouterr().err.splitlines()
        assert (exit_info.value.code, line.startswith(f"error: {message}")) == (code, True), line
    before = hf_state_dict(model)
    export.main([source, source, "--force"])  # replaces an earlier export
    assert "exported" in capsys.readouterr().out
    after = hf_state_dict(load(out).model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_generating_cli_reads_an_hf_directory(gqa_export, tokenizer, capsys):
    model, out = gqa_export
    prompt = "Once upon a time"
    sampling = SamplingConfig(max_new_tokens=8, temperature=0, eos_id=tokenizer.token_id(EOT))
    expected = tokenizer.decode(generate(model, tokenizer.encode(prompt), sampling))
    argv = ["--checkpoint", str(out), "--prompt", prompt, "--max-new-tokens", "8"]
    generating.main([*argv, "--temperature", "0", "--device", "cpu"])
    assert capsys.readouterr().out == prompt + expected + "\n"


def test_init_from_starts_a_run_from_the_source_weights(gqa_export, tmp_path, capsys):
    model, out = gqa_export
    tokens = markov_tokens(2_000, vocab=model.config.vocab_size)
    np.save(tmp_path / "train.npy", tokens)
    argv = ["--init_from", str(out), "--train_data", str(tmp_path / "train.npy"),
            "--run_dir", str(tmp_path / "run"), "--max_iters", "1", "--warmup_iters", "5",
            "--batch_size", "2", "--model.context_length", "16", "--model.dropout", "0.1",
            "--final_eval", "none", "--device", "cpu"]  # fmt: skip
    config = training.load_train_config(argv)  # a shorter window and dropout: allowed
    assert config.model == ModelConfig(
        **{**vars(model.config), "context_length": 16, "dropout": 0.1}
    )
    assert config.tokenizer_dir == str(out)
    training.train(config)  # step 0 has learning rate 0: the weights stay the source's
    saved = read_checkpoint(tmp_path / "run")
    assert saved["iteration"] == 1 and saved["tokenizer_dir"] == str(out)
    for name, tensor in model.state_dict().items():
        assert torch.equal(saved["model"][name], tensor), name
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        training.main([*argv, "--model.d_model", "64"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        f"error: model.d_model=64 differs from {out}, which has 32: --init_from takes the "
        "model from there; drop the setting"
    )


def test_a_damaged_hf_directory_is_a_one_line_error(gqa_export, tmp_path):
    _, out = gqa_export
    shutil.copytree(out, tmp_path / "m")
    edit_json(tmp_path / "m" / "config.json", lambda d: d.update(num_hidden_layers=3))
    with pytest.raises(ValueError, match="the weights have no model.layers.2."):
        load(tmp_path / "m")


def test_bos_eos_and_chat_template_survive_export_and_import(tokenizer, tmp_path):
    """A chat model's bos, eos and template go into the Hugging Face files, where transformers
    finds them, and back (`--checkpoint DIR --chat` uses the template)."""
    model = small_model(tokenizer.vocab_size)
    template = CHATML.replace("assistant", "bot")  # any template: it travels as text
    save_hf(tmp_path, model, tokenizer, bos_id=256, eos_id=257, chat_template=template)
    _, info = load_hf_model(tmp_path)
    assert (info["bos_token_id"], info["eos_token_id"], info["chat_template"]) == (
        256, 257, template)  # fmt: skip
    messages = [{"role": "user", "content": "hi"}]
    theirs = AutoTokenizer.from_pretrained(tmp_path)
    assert theirs.eos_token == tokenizer.decode([257])
    rendered = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == render_chat(messages, template)
