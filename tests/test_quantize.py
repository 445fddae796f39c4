"""Weight-only int8/int4 quantisation (llm/quantize.py): against PyTorch's fake-quantisation
ops, the layers' float reference, the packed kernels, and back through checkpoints and GGUF."""

import copy

import numpy as np
import pytest
import torch
from gguf.quants import dequantize
from test_gguf_model import write_tiny_llama_gguf

from llm import evaluate, export, generating, serve
from llm.checkpoint import save_checkpoint
from llm.generating import SamplingConfig
from llm.gguf_format import GgufFile
from llm.loading import LoadError, load
from llm.quantize import (
    Int4Linear,
    Int8Linear,
    Quantization,
    QuantizedLinear,
    dequantize_int4,
    dequantize_int8,
    quantize_int4,
    quantize_int8,
    quantize_model,
)
from llm.transformer import Linear, ModelConfig, Transformer


def weights(rows: int = 8, cols: int = 128, seed: int = 0) -> torch.Tensor:
    """Random weights with the cases that go wrong: a zero row and a row with one outlier."""
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    w[1] = 0
    w[2, 5] = 50.0
    return w


def test_int8_is_per_channel_absmax_rounding_like_pytorchs_fake_quantize():
    w = weights()
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (8,)
    expected = torch.fake_quantize_per_channel_affine(
        w, scale, torch.zeros(8, dtype=torch.int32), 0, -127, 127
    )
    deq = dequantize_int8(q, scale)
    torch.testing.assert_close(deq, expected, rtol=0, atol=1e-6)
    assert (w - deq).abs().le(scale[:, None] / 2 * (1 + 1e-6)).all()  # half a step at most
    assert torch.equal(deq[1], torch.zeros(128)) and scale[1] > 0  # a zero row: a real step
    assert deq[2, 5] == pytest.approx(50.0) and scale[2] == pytest.approx(50 / 127)


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_groups_round_like_fake_quantize_and_keep_outliers_to_their_group(group_size):
    w = weights(cols=256)
    q, scale, zero = quantize_int4(w, group_size)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15 and scale.shape == (8, 256 // group_size)
    deq = dequantize_int4(q, scale, zero)
    # Each group is a "channel" of fake_quantize: rows of (out * in / g, g), q in -8 .. 7.
    groups = w.reshape(-1, group_size)
    expected = torch.fake_quantize_per_channel_affine(
        groups, scale.reshape(-1), torch.zeros(groups.shape[0], dtype=torch.int32), 0, -8, 7
    ).reshape(w.shape)
    torch.testing.assert_close(deq, expected, rtol=0, atol=1e-6)
    step = scale.repeat_interleave(group_size, dim=1)
    assert (w - deq).abs().le(step / 2 * (1 + 1e-6)).all()
    assert torch.equal(deq[1], torch.zeros(256)) and (scale > 0).all()
    # Row 2's outlier sets only its own group's scale: the other groups stay as fine as row 0's.
    assert scale[2, 0] == pytest.approx(50 / 7)
    assert scale[2, 1:].max() < 1.0


def test_int4_needs_a_group_size_that_divides_the_row():
    with pytest.raises(ValueError, match="int4 group_size 64 does not divide in_features 96"):
        quantize_int4(torch.randn(4, 96), 64)


@pytest.mark.parametrize(
    "make",
    [lambda w: Int8Linear.from_float(w), lambda w: Int4Linear.from_float(w, 32)],
    ids=["int8", "int4"],
)
def test_a_quantised_layer_is_its_dequantised_float_layer_and_the_kernel_agrees(make):
    w = weights(rows=48, cols=64)
    layer = make(w)
    assert layer.fast, "the packed kernels exist in this PyTorch"
    reference = Linear(64, 48)
    reference.weight.data = layer.dequantize()  # the float layer holding the rounded weights
    x = torch.randn(2, 3, 64)
    expected = reference(x).detach()
    fast = layer(x)
    layer.fast = False
    torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-5)
    # The kernel computes in bfloat16: equal to a few bfloat16 roundings of the output's size.
    torch.testing.assert_close(fast, expected, rtol=0, atol=0.02 * expected.abs().max().item())


def float_copy(model: Transformer) -> Transformer:
    """The model with every quantised layer replaced by a float Linear of its dequantised
    weights: what the quantised model should compute."""
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, QuantizedLinear):
            parent, _, attribute = name.rpartition(".")
            linear = Linear(module.in_features, module.out_features)
            linear.weight.data = module.dequantize()
            setattr(out.get_submodule(parent), attribute, linear)
    return out


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_quantised_model_generates_what_its_dequantised_float_model_does(small_config, kind):
    torch.manual_seed(0)
    model = Transformer(small_config).eval()
    quantized = quantize_model(copy.deepcopy(model), Quantization(kind, 32, head=True))
    kinds = {type(m).__name__ for m in quantized.modules() if isinstance(m, QuantizedLinear)}
    assert kinds == ({"Int8Linear"} if kind == "int8" else {"Int4Linear", "Int8Linear"})
    assert isinstance(quantized.lm_head, Int8Linear)  # the head is int8 whatever the kind
    reference = float_copy(quantized)
    ids = torch.randint(0, 64, (2, 5))
    fast_logits = quantized(ids)
    for module in quantized.modules():
        if isinstance(module, QuantizedLinear):
            module.fast = False
    torch.testing.assert_close(quantized(ids), reference(ids), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_logits, reference(ids), rtol=0, atol=0.05)
    sampling = generating.SamplingConfig(max_new_tokens=10, temperature=0)
    ours = generating.generate(quantized, [[1, 2, 3], [4]], sampling)
    assert ours == generating.generate(reference, [[1, 2, 3], [4]], sampling)
    assert ours != generating.generate(model, [[1, 2, 3], [4]], sampling) or kind == "int8"


def test_int4_stores_a_matrix_whose_rows_the_group_does_not_divide_in_int8(small_config):
    small_config.d_ff = 48  # the FFN's down projection has 48 inputs: not a multiple of 32
    model = quantize_model(Transformer(small_config).eval(), Quantization("int4", 32))
    kinds = {name: type(m).__name__ for name, m in model.named_modules()
             if isinstance(m, QuantizedLinear)}  # fmt: skip
    assert kinds == {"blocks.0.attn.qkv_proj": "Int4Linear", "blocks.0.attn.out_proj": "Int4Linear",
                     "blocks.0.ffn.w1": "Int4Linear", "blocks.0.ffn.w3": "Int4Linear",
                     "blocks.0.ffn.w2": "Int8Linear"}  # fmt: skip


def test_a_quantised_checkpoint_loads_back_bit_for_bit(small_config, tmp_path):
    torch.manual_seed(0)
    small_config.d_ff = 48  # one int8 matrix among the int4 ones: loading must make it so too
    save_checkpoint(Transformer(small_config), None, 3, tmp_path / "float.pt")
    out = export.export_quantized(
        tmp_path / "float.pt", tmp_path / "q.pt", Quantization("int4", 32, head=True)
    )
    spec = Quantization("int4", 32, head=True)
    direct = load(tmp_path / "float.pt", tokenizer=False, quantization=spec)
    loaded = load(out, tokenizer=False)
    assert loaded.format == "checkpoint" and loaded.info["quantization"]["kind"] == "int4"
    saved, again = direct.model.state_dict(), loaded.model.state_dict()
    assert saved.keys() == again.keys() and "lm_head.weight_q" in saved
    for key, tensor in saved.items():
        assert tensor.dtype == again[key].dtype and torch.equal(tensor, again[key]), key
    ids = torch.randint(0, 64, (1, 8))
    assert torch.equal(direct.model(ids), loaded.model(ids))  # the kernels' forms remade too
    with pytest.raises(LoadError, match="is quantised already"):
        load(out, tokenizer=False, quantization=Quantization("int8"))


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gguf")
    for quant in ("Q8_0", "Q4_1"):
        write_tiny_llama_gguf(directory / f"{quant}.gguf", quant=quant, tie=False)
    return directory


def test_gguf_q8_0_goes_straight_to_int8_as_dequantise_then_quantise(gguf_files):
    path = gguf_files / "Q8_0.gguf"
    model = load(path, quantization=Quantization("int8", head=True)).model
    file = GgufFile(path)
    pairs = {"blocks.1.ffn.w2": "blk.1.ffn_down.weight", "lm_head": "output.weight"}
    for ours, theirs in pairs.items():
        info = file.tensors[theirs]
        rows = dequantize(info.data, info.tensor_type).reshape(info.shape[1], -1)
        q, scale = quantize_int8(torch.from_numpy(rows))  # gguf's dequantised floats, ours after
        layer = model.get_submodule(ours)
        assert torch.equal(layer.weight_q, q) and torch.equal(layer.scale, scale), ours


def test_gguf_q4_1_blocks_become_int4_groups_without_rounding(gguf_files, monkeypatch):
    path = gguf_files / "Q4_1.gguf"
    dequantised = []
    real_tensor = GgufFile.tensor
    monkeypatch.setattr(GgufFile, "tensor", lambda self, name, *a: dequantised.append(name)
                        or real_tensor(self, name, *a))  # fmt: skip
    model = load(path, quantization=Quantization("int4", 32)).model
    assert "token_embd.weight" in dequantised  # the embedding stays float
    assert not [name for name in dequantised if name.startswith("blk.") and "norm" not in name]
    monkeypatch.undo()
    file = GgufFile(path)
    qkv = model.blocks[0].attn.qkv_proj
    assert isinstance(qkv, Int4Linear) and qkv.group_size == 32
    parts = []
    for x in "qkv":
        info = file.tensors[f"blk.0.attn_{x}.weight"]
        parts.append(dequantize(info.data, info.tensor_type).reshape(info.shape[1], -1))
    expected = torch.cat([torch.from_numpy(p) for p in parts])
    torch.testing.assert_close(qkv.dequantize(), expected, rtol=0, atol=1e-6)
    # With another group size the blocks cannot be used as they are: quantised from floats.
    other = load(path, quantization=Quantization("int4", 64)).model.blocks[0].attn.qkv_proj
    assert other.group_size == 64 and not torch.equal(other.dequantize(), expected)


def test_bad_quantisation_settings_are_one_line_errors(small_config):
    with pytest.raises(ValueError, match="quantize must be one of int8, int4, not 'int3'"):
        Quantization("int3")
    with pytest.raises(ValueError, match="group_size must be one of 32, 64, 128 for int4"):
        Quantization("int4", 48)
    model = Transformer(small_config)  # in training mode, as built
    with pytest.raises(ValueError, match=r"call model.eval\(\) first"):
        quantize_model(model, Quantization("int8"))
    small_config.d_ff = 96
    with pytest.raises(ValueError, match=r"int4 groups of 64 divide none .* \(32, 96\)"):
        quantize_model(Transformer(small_config).eval(), Quantization("int4", 64))


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--quantize", "int3"], ["quantize must be one of int8, int4, not 'int3'"]),
        (["--quantize", "int4", "--group_size", "100"], ["group_size must be one of 32, 64"]),
    ],
)
def test_the_commands_refuse_bad_quantize_flags(argv, words, capsys, tmp_path):
    commands = {generating.main: ["--checkpoint", "x"], evaluate.main: ["x"],
                export.main: [str(tmp_path), "x"], serve.main: ["x"]}  # fmt: skip
    for main, model in commands.items():
        with pytest.raises(SystemExit) as exit_:
            main([*model, *argv])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1, err
        assert all(word in err for word in words), err


def test_the_generating_command_runs_a_quantised_model(tmp_path, capsys):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=256, context_length=16, d_model=32, num_layers=1,
                         num_heads=2, d_ff=64)  # fmt: skip
    save_checkpoint(Transformer(config), None, 1, tmp_path / "model.pt")
    argv = ["--checkpoint", str(tmp_path / "model.pt"), "--prompt", "ab", "--temperature", "0",
            "--max_new_tokens", "4", "--quantize", "int4", "--quantize_head"]  # fmt: skip
    generating.main(argv)
    quantised_text = capsys.readouterr().out
    model = load(tmp_path / "model.pt", quantization=Quantization("int4", 32, head=True)).model
    ids = generating.generate(model, list(b"ab"), SamplingConfig(max_new_tokens=4, temperature=0))
    assert bytes(ids).decode("utf-8", "replace") in quantised_text


def test_training_and_fine_tuning_refuse_a_quantised_model(tmp_path, capsys):
    from conftest import markov_tokens

    from llm import finetune, training

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=256, context_length=16, d_model=32, num_layers=1,
                         num_heads=2, d_ff=64)  # fmt: skip
    save_checkpoint(Transformer(config), None, 3, tmp_path / "float.pt")
    quantized = export.export_quantized(tmp_path / "float.pt", tmp_path / "q.pt",
                                        Quantization("int8"))  # fmt: skip
    np.save(tmp_path / "tokens.npy", markov_tokens(2_000, vocab=256))
    data = ["--train_data", str(tmp_path / "tokens.npy"), "--device", "cpu",
            "--valid_data", str(tmp_path / "tokens.npy")]  # fmt: skip
    commands = {
        training.main: ["--init_from", str(quantized), *data, "--run_dir", str(tmp_path / "r")],
        finetune.main: ["--model", str(quantized), "--run_dir", str(tmp_path / "f")],
    }
    for main, argv in commands.items():
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1, err
        assert f"{quantized} is quantised (integer weights cannot train)" in err, err
    assert not (tmp_path / "r").exists() and not (tmp_path / "f").exists()
