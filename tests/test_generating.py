import io
import itertools
import math
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import tiny_tokenizer

from llm import generating
from llm.bpe_tokenizer import EOT, BpeTokenizer
from llm.checkpoint import CHECKPOINT_NAME, load_model, save_checkpoint
from llm.generating import (
    CompileError,
    SamplingConfig,
    TextStream,
    chat,
    compile_decoding,
    generate,
    left_pad,
    main,
    sample_next,
    stream,
    stream_batch,
    top_k_filter,
    top_p_filter,
)
from llm.transformer import MODEL_PRESETS, Transformer

TINY = MODEL_PRESETS["tiny"]  # vocab 512, context 64
CONTEXT = TINY.context_length


@pytest.fixture(scope="module")
def model64() -> Transformer:
    """float64, so cached and recomputed logits agree to ~1e-15 and argmax ties cannot flip."""
    torch.manual_seed(0)
    return Transformer(TINY, dtype=torch.float64).eval()


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(1)
    return Transformer(TINY).eval()


def random_prompt(length: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY.vocab_size, (length,), generator=gen).tolist()


@torch.no_grad()
def greedy_by_recomputing(model: Transformer, prompt: list[int], steps: int, slide: int):
    """Reference: no cache; every step runs the model on the whole current window. The window
    is the last context_length tokens of the prompt, then its start moves by `slide` whenever
    it would exceed the context (slide 1 = always the last context_length tokens)."""
    tokens = list(prompt[-CONTEXT:])
    start, new = 0, []
    for _ in range(steps):
        if len(tokens) - start > CONTEXT:
            start += slide
        logits = model(torch.tensor([tokens[start:]], device=model.lm_head.weight.device))[0, -1]
        new.append(int(logits.argmax()))
        tokens.append(new[-1])
    return new


# ---- the cached decoding loop equals recomputation ------------------------------------------


@pytest.mark.filterwarnings("ignore:prompt of")
@pytest.mark.parametrize("prompt_len", [1, 40, 64, 90])
@pytest.mark.parametrize("slide", [1, None, 64])  # None: the default, a quarter of the context
def test_greedy_with_cache_equals_full_recompute_across_the_context(model64, prompt_len, slide):
    prompt = random_prompt(prompt_len, seed=prompt_len)
    steps = CONTEXT - min(prompt_len, CONTEXT) + 20  # 20 steps past the full context
    ours = generate(
        model64, prompt, SamplingConfig(max_new_tokens=steps, temperature=0, slide=slide)
    )
    assert ours == greedy_by_recomputing(model64, prompt, steps, slide or CONTEXT // 4)


def test_compile_decoding_compiles_only_the_one_token_steps_and_changes_no_token():
    torch.manual_seed(0)
    model = Transformer(TINY, dtype=torch.float64).eval()  # its own: compiling changes it
    prompt = random_prompt(10, seed=10)
    sampling = SamplingConfig(max_new_tokens=CONTEXT, temperature=0)  # a slide: a 2nd prefill
    eager = generate(model, prompt, sampling)
    compiled_lengths = []

    def backend(graph: torch.fx.GraphModule, inputs: list) -> Callable:
        """Dynamo's graph, run as it is; records how many tokens a row its token ids hold."""
        ids = [x for x in inputs if isinstance(x, torch.Tensor) and x.dtype == torch.long]
        compiled_lengths.extend(x.shape[1] for x in ids if x.ndim == 2)
        return graph.forward

    compile_decoding(model, backend)
    assert generate(model, prompt, sampling) == eager
    assert compiled_lengths and set(compiled_lengths) == {1}


def test_a_failed_compile_is_a_one_line_error_that_says_what_to_do():
    def no_compiler(graph: torch.fx.GraphModule, inputs: list) -> Callable:
        raise RuntimeError("no C++ compiler found\nmore lines")

    model = compile_decoding(Transformer(TINY).eval(), no_compiler)
    with pytest.raises(CompileError, match=r"RuntimeError: no C\+\+ compiler found; run wit") as e:
        generate(model, [1, 2, 3], SamplingConfig(max_new_tokens=3, temperature=0))
    assert "\n" not in str(e.value)


def test_long_prompt_keeps_its_last_context_tokens_with_a_warning(model64):
    prompt = random_prompt(CONTEXT + 30, seed=4)
    with pytest.warns(UserWarning, match="longer than the context length 64"):
        cropped = generate(model64, prompt, SamplingConfig(max_new_tokens=5, temperature=0))
    assert cropped == generate(
        model64, prompt[-CONTEXT:], SamplingConfig(max_new_tokens=5, temperature=0)
    )


def test_batched_prompts_of_different_lengths_equal_one_by_one(model64):
    prompts = [random_prompt(n, seed=n) for n in (3, 17, 1, 30)]
    batched = generate(model64, prompts, SamplingConfig(max_new_tokens=25, temperature=0))
    assert batched == [
        generate(model64, p, SamplingConfig(max_new_tokens=25, temperature=0)) for p in prompts
    ]


def test_left_pad_right_aligns_prompts():
    ids, is_real = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert is_real.tolist() == [[True, True, True], [False, False, True]]


def test_generation_stops_at_eos_per_row(model64):
    prompts = [random_prompt(5, seed=10), random_prompt(12, seed=11)]
    free = generate(model64, prompts, SamplingConfig(max_new_tokens=12, temperature=0))
    eos = free[0][4]  # the first row meets this token at step 5 at the latest
    stopped = generate(
        model64, prompts, SamplingConfig(max_new_tokens=12, temperature=0, eos_id=eos)
    )
    for row, out in zip(free, stopped, strict=True):
        expected = row[: row.index(eos)] if eos in row else row
        assert out == expected
    assert len(stopped[0]) <= 4
    assert (
        list(
            stream(
                model64, prompts[0], SamplingConfig(max_new_tokens=12, temperature=0, eos_id=eos)
            )
        )
        == stopped[0]
    )


def test_stream_yields_the_tokens_generate_returns(model):
    prompt = random_prompt(8, seed=5)
    streamed = list(
        stream(model, prompt, SamplingConfig(max_new_tokens=20, temperature=0.9, top_k=50, seed=7))
    )
    assert streamed == generate(
        model, prompt, SamplingConfig(max_new_tokens=20, temperature=0.9, top_k=50, seed=7)
    )


# ---- sampling -------------------------------------------------------------------------------


def test_fixed_seed_reproduces_samples_and_other_seeds_differ(model):
    prompts = [random_prompt(6, seed=6), random_prompt(2, seed=7)]
    first = generate(
        model, prompts, SamplingConfig(max_new_tokens=30, temperature=1.0, top_p=0.9, seed=123)
    )
    assert (
        generate(
            model, prompts, SamplingConfig(max_new_tokens=30, temperature=1.0, top_p=0.9, seed=123)
        )
        == first
    )
    assert (
        generate(
            model, prompts, SamplingConfig(max_new_tokens=30, temperature=1.0, top_p=0.9, seed=124)
        )
        != first
    )


def test_temperature_zero_is_deterministic_greedy(model):
    prompt = random_prompt(10, seed=8)
    runs = [
        generate(model, prompt, SamplingConfig(max_new_tokens=15, temperature=0, seed=s, top_p=0.5))
        for s in range(3)
    ]
    assert runs[0] == runs[1] == runs[2]
    with torch.no_grad():
        first = model(torch.tensor([prompt]))[0, -1].argmax().item()
    assert runs[0][0] == first


def nucleus_reference(probs: list[float], p: float) -> set[int]:
    """The smallest set of most likely tokens whose probability sums to at least p."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, mass = set(), 0.0
    for i in order:
        if mass >= p:
            break
        kept.add(i)
        mass += probs[i]
    return kept


@pytest.mark.parametrize("p", [1e-6, 0.3, 0.75, 0.95, 0.999])
def test_top_p_filter_keeps_exactly_the_nucleus(p):
    logits = torch.randn(8, 100, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    filtered = top_p_filter(logits, p)
    for row, out in zip(logits, filtered, strict=True):
        kept = set(torch.isfinite(out).nonzero().flatten().tolist())
        assert kept == nucleus_reference(torch.softmax(row, -1).tolist(), p)
        assert torch.equal(out[list(kept)], row[list(kept)])  # kept logits are untouched
    assert torch.equal(top_p_filter(logits, 1.0), logits)


@pytest.mark.parametrize("k", [1, 5, 99])
def test_top_k_filter_keeps_exactly_the_k_largest(k):
    logits = torch.randn(8, 100, generator=torch.Generator().manual_seed(1))
    filtered = top_k_filter(logits, k)
    for row, out in zip(logits, filtered, strict=True):
        kept = set(torch.isfinite(out).nonzero().flatten().tolist())
        assert kept == set(row.argsort(descending=True)[:k].tolist())
        assert torch.equal(out[list(kept)], row[list(kept)])
    assert torch.equal(top_k_filter(logits, 0), logits)
    assert torch.equal(top_k_filter(logits, 100), logits)


def test_sampling_never_leaves_the_top_k_then_top_p_set():
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(2))
    k, p, temperature = 10, 0.6, 1.5
    scaled = logits[0] / temperature
    top = scaled.argsort(descending=True)[:k].tolist()
    probs_in_top = torch.softmax(scaled[top], -1).tolist()
    allowed = {top[i] for i in nucleus_reference(probs_in_top, p)}
    assert 1 < len(allowed) < k  # both filters bite

    filtered = top_p_filter(top_k_filter(scaled[None], k), p)[0]
    probs = torch.softmax(filtered, -1)
    assert set(probs.nonzero().flatten().tolist()) == allowed
    assert math.isclose(probs.sum().item(), 1.0, rel_tol=1e-6)

    gen = torch.Generator().manual_seed(3)
    draws = sample_next(logits.expand(4000, -1), temperature, p, k, gen)
    assert set(draws.tolist()) == allowed  # every allowed token appears, nothing else


def test_sample_next_with_temperature_zero_is_argmax():
    logits = torch.randn(6, 30, generator=torch.Generator().manual_seed(4))
    assert torch.equal(sample_next(logits, temperature=0, top_p=0.1, top_k=3), logits.argmax(-1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.5}, "temperature must be >= 0"),
        ({"temperature": float("nan")}, "temperature must be >= 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -1}, "top_k must be >= 0"),
        ({"slide": 65}, "slide must be in"),
    ],
)
def test_bad_sampling_arguments_are_clear_errors(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(model, [1, 2, 3], SamplingConfig(max_new_tokens=5, **kwargs))


def test_empty_prompt_or_unknown_ids_are_clear_errors(model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[1, 2], []], SamplingConfig(max_new_tokens=5))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, vocab_size=512\)"):
        generate(model, [1, 512], SamplingConfig(max_new_tokens=5))


# ---- streaming text -------------------------------------------------------------------------


def decode_all(vocab: dict[int, bytes], ids: list[int]) -> list[str]:
    text = TextStream(vocab)
    return [text.add(i) for i in ids] + [text.finish()]


def test_text_stream_prints_multibyte_characters_whole():
    text = "héllo 日本 🙂!"
    data = text.encode()
    vocab = {i: data[i : i + 1] for i in range(len(data))}  # one byte per token
    pieces = decode_all(vocab, list(range(len(data))))
    assert "".join(pieces) == text
    assert pieces[:3] == ["h", "", "é"]  # "é" is two bytes: it appears with its second one


def test_text_stream_replaces_invalid_bytes_like_decode():
    vocab = {0: b"a", 1: b"\xff", 2: b"\xe6\x97"}  # a stray byte; a truncated 3-byte char
    ids = [0, 1, 0, 2]
    expected = b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
    assert "".join(decode_all(vocab, ids)) == expected == "a\ufffda\ufffd"


# ---- command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory holding a tiny model's checkpoint and, beside it, its tokenizer."""
    directory = tmp_path_factory.mktemp("run")
    tokenizer = tiny_tokenizer()
    tokenizer.save(directory / "tokenizer")
    torch.manual_seed(2)
    model = Transformer(replace(TINY, vocab_size=tokenizer.vocab_size))
    save_checkpoint(model, None, 0, directory / CHECKPOINT_NAME, tokenizer_dir="tokenizer")
    return directory


def expected_text(run_dir: Path, prompt: str, max_new_tokens: int) -> str:
    model, _ = load_model(run_dir)
    tokenizer = BpeTokenizer.load(run_dir / "tokenizer")
    eos = tokenizer.token_id(EOT)
    new = generate(
        model,
        tokenizer.encode(prompt),
        SamplingConfig(max_new_tokens=max_new_tokens, temperature=0, eos_id=eos),
    )
    return prompt + tokenizer.decode(new) + "\n"


def test_cli_streams_greedy_text_equal_to_the_library(run_dir, capsys):
    main(["--checkpoint", str(run_dir), "--prompt", "the cat", "--temperature", "0",
          "--max-new-tokens", "30", "--device", "cpu"])  # fmt: skip
    out, err = capsys.readouterr()
    assert out == expected_text(run_dir, "the cat", 30)
    assert re.fullmatch(r"\[\d+ tokens in [\d.]+ s, [\d.]+ tokens/s\]\n", err)


def test_cli_reads_a_piped_prompt_and_numbers_samples_by_seed(run_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("the cat\n"))
    args = ["--checkpoint", str(run_dir / CHECKPOINT_NAME), "--max-new-tokens", "12",
            "--seed", "5", "--top-k", "20", "--device", "cpu"]  # fmt: skip
    main([*args, "--num-samples", "2"])
    two = capsys.readouterr().out.split("-" * 40 + "\n")
    assert len(two) == 2 and all(s.startswith("the cat") for s in two)
    monkeypatch.setattr(sys, "stdin", io.StringIO("the cat\n"))
    main([*args, "--num-samples", "1"])
    assert capsys.readouterr().out == two[0]  # sample 0 uses seed 5 again


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_interactive_loop_answers_each_prompt_until_eof(run_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", Terminal("the\ncat\n"))
    main(["--checkpoint", str(run_dir), "--temperature", "0", "--max-new-tokens", "8",
          "--device", "cpu"])  # fmt: skip
    out = capsys.readouterr().out
    expected = expected_text(run_dir, "the", 8) + expected_text(run_dir, "cat", 8)
    assert out.replace("> ", "") == expected


def write_checkpoint(path: Path, vocab_size: int, tokenizer_dir: str) -> None:
    torch.manual_seed(0)
    model = Transformer(replace(TINY, vocab_size=vocab_size))
    save_checkpoint(model, None, 0, path, tokenizer_dir=tokenizer_dir)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top-p", "1.5"], r"top_p must be in \(0, 1\]"),
        (["--top-p", "0"], r"top_p must be in \(0, 1\]"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--top-k", "-3"], "top_k must be >= 0"),
        (["--max-new-tokens", "0"], "max_new_tokens must be >= 1"),
        (["--num-samples", "0"], "num_samples must be >= 1"),
        (["--device", "banana"], "unknown device 'banana'"),
        (["--device", "cuda:99"], "'cuda:99'"),
        (["--max-new-tokens", "many"], "max_new_tokens must be int"),
        (["--tempreature", "1"], "unknown option --tempreature; did you mean --temperature\\?"),
    ],
)
def test_cli_bad_flags_are_one_line_errors(run_dir, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(run_dir), "--prompt", "x", *flags])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert re.match(f"error: .*{message}", err) and err.count("\n") == 1 and out == ""


@pytest.mark.parametrize(
    "args, installed, got",
    [([], False, ""), (["--gguf", "a.gguf", "--pretrained", "smollm2-135m"], True, " (got 2)")],
)
def test_cli_needs_one_model(capsys, monkeypatch, args, installed, got):
    """Bare, it chats with SmolLM2 when that is installed (tests/test_gguf_model.py); else the
    error says what to give."""
    monkeypatch.setattr(generating, "is_installed", lambda package: installed)
    with pytest.raises(SystemExit) as exit_info:
        main(["--prompt", "x", *args])
    assert exit_info.value.code == 2
    expected = "give one model: --checkpoint RUN_DIR, --gguf FILE or --pretrained smollm2-135m"
    assert capsys.readouterr().err == f"error: {expected}{got}\n"


def test_a_huge_max_new_tokens_streams_without_allocating_it(model):
    """The token buffer holds one window, not max_new_tokens: 10^10 tokens would need 80 GB."""
    tokens = stream(model, [1, 2, 3], SamplingConfig(max_new_tokens=10**10, seed=0))
    assert len(list(itertools.islice(tokens, 3 * CONTEXT))) == 3 * CONTEXT


def test_cli_bad_checkpoints_are_one_line_errors(run_dir, tmp_path, capsys):
    write_checkpoint(tmp_path / "wrong_vocab.pt", 300, str(run_dir / "tokenizer"))
    write_checkpoint(tmp_path / "no_tokenizer.pt", TINY.vocab_size, str(tmp_path / "gone"))
    cases = {
        tmp_path / "missing": "missing: no such file or directory; expected",
        tmp_path / "wrong_vocab.pt": "has 262 tokens but the model was trained with 300",
        tmp_path / "no_tokenizer.pt": "tokenizer .* does not exist",
    }
    for path, message in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(["--checkpoint", str(path), "--prompt", "x", "--device", "cpu"])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert re.match(f"error: .*{message}", err) and err.count("\n") == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_generation_on_cuda(run_dir, capsys):
    torch.manual_seed(0)
    model = Transformer(TINY, dtype=torch.float64).cuda().eval()
    prompts = [random_prompt(n, seed=n) for n in (3, 50)]
    for prompt in prompts:
        steps = CONTEXT - len(prompt) + 20
        cached = generate(
            model, prompt, SamplingConfig(max_new_tokens=steps, temperature=0, slide=7)
        )
        assert cached == greedy_by_recomputing(model, prompt, steps, 7)
    assert generate(model, prompts, SamplingConfig(max_new_tokens=10, temperature=0)) == [
        generate(model, p, SamplingConfig(max_new_tokens=10, temperature=0)) for p in prompts
    ]
    sampled = generate(
        model, prompts, SamplingConfig(max_new_tokens=20, top_p=0.9, top_k=40, seed=3)
    )
    assert (
        generate(model, prompts, SamplingConfig(max_new_tokens=20, top_p=0.9, top_k=40, seed=3))
        == sampled
    )
    with torch.autocast("cuda", dtype=torch.bfloat16):  # the cache takes the autocast dtype
        assert (
            len(
                generate(
                    model.float(), prompts[0], SamplingConfig(max_new_tokens=70, temperature=0)
                )
            )
            == 70
        )
    main(["--checkpoint", str(run_dir), "--prompt", "the", "--device", "cuda",
          "--max-new-tokens", "5", "--temperature", "0"])  # fmt: skip
    assert capsys.readouterr().out.startswith("the")


def test_stream_batch_repeats_eos_after_it_and_ends_when_every_row_has_it(model64):
    prompts = [random_prompt(5, seed=10), random_prompt(12, seed=11)]
    free = generate(model64, prompts, SamplingConfig(max_new_tokens=12, temperature=0))
    eos = free[0][2]
    first = free[0].index(eos)
    steps = [
        s.tolist()
        for s in stream_batch(
            model64, prompts, SamplingConfig(max_new_tokens=12, temperature=0, eos_id=eos)
        )
    ]
    rows = list(zip(*steps, strict=True))
    assert list(rows[0]) == free[0][:first] + [eos] * (len(steps) - first)  # eos, then eos
    assert eos not in free[1] and list(rows[1]) == free[1]  # the other row goes on, untouched
    same = list(
        stream_batch(
            model64, [prompts[0]] * 2, SamplingConfig(max_new_tokens=12, temperature=0, eos_id=eos)
        )
    )
    assert len(same) == first + 1  # every row has ended: no more steps


def test_prompts_as_tensors(model64):
    prompts = [random_prompt(6, seed=12), random_prompt(6, seed=13)]
    expected = generate(model64, prompts, SamplingConfig(max_new_tokens=5, temperature=0))
    assert (
        generate(model64, torch.tensor(prompts[0]), SamplingConfig(max_new_tokens=5, temperature=0))
        == expected[0]
    )
    assert (
        generate(model64, torch.tensor(prompts), SamplingConfig(max_new_tokens=5, temperature=0))
        == expected
    )


def test_negative_max_new_tokens_is_an_error_and_zero_gives_nothing(model):
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0, got -1"):
        generate(model, [1, 2], SamplingConfig(max_new_tokens=-1))
    assert generate(model, [1, 2], SamplingConfig(max_new_tokens=0)) == [] and generate(
        model, [[1], [2, 3]], SamplingConfig(max_new_tokens=0)
    ) == [[], []]


def test_cli_empty_prompt_starts_a_document_after_end_of_text(run_dir, capsys):
    main(["--checkpoint", str(run_dir), "--prompt", "", "--temperature", "0",
          "--max-new-tokens", "10", "--device", "cpu"])  # fmt: skip
    model, _ = load_model(run_dir)
    tokenizer = BpeTokenizer.load(run_dir / "tokenizer")
    eos = tokenizer.token_id(EOT)
    new = generate(model, [eos], SamplingConfig(max_new_tokens=10, temperature=0, eos_id=eos))
    assert capsys.readouterr().out == tokenizer.decode(new) + "\n"


def test_cli_checkpoint_without_tokenizer_uses_raw_bytes(tmp_path, capsys):
    write_checkpoint(tmp_path / "bytes.pt", 256, "")
    main(["--checkpoint", str(tmp_path / "bytes.pt"), "--prompt", "hé", "--temperature", "0",
          "--max-new-tokens", "12", "--device", "cpu"])  # fmt: skip
    model, _ = load_model(tmp_path / "bytes.pt")
    new = generate(model, list("hé".encode()), SamplingConfig(max_new_tokens=12, temperature=0))
    assert capsys.readouterr().out == "hé" + bytes(new).decode("utf-8", "replace") + "\n"
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path / "bytes.pt"), "--prompt", "", "--device", "cpu"])
    assert "error: the prompt is empty and the tokenizer has no" in capsys.readouterr().err


def test_a_kv_cache_refuses_more_tokens_than_its_capacity(model):
    cache = model.new_kv_cache(1, capacity=4)
    assert cache.capacity == 4
    model(torch.tensor([[1, 2, 3]]), cache)
    with pytest.raises(ValueError, match="after 3 cached tokens does not fit the KV cache's 4"):
        model(torch.tensor([[4, 5]]), cache)


def test_chat_needs_a_chat_model(model):
    """Our story models have no chat template and no <|im_end|>: --chat says so."""
    tokenizer = BpeTokenizer({i: bytes([i]) for i in range(256)}, [], [EOT])
    with pytest.raises(ValueError, match="--chat needs a chat model"):
        chat(model, tokenizer, SamplingConfig(), None, None, ["hello"])
