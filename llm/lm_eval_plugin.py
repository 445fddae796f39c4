"""Our models inside lm-evaluation-harness (`lm_eval`, 0.4.13): any harness task, run by our code.

    uv run -m llm.lm_eval_plugin --model_args path=runs/tinystories --tasks hellaswag --limit 100
    uv run -m llm.lm_eval_plugin --model_args path=smollm2-135m,dtype=bfloat16 --tasks arc_easy

The command registers the model as "llm" and runs the harness's own command line (`lm-eval
run`: every option of it works; `--model llm` and `--device auto` are added unless given).
`path` is anything `llm.loading.load` takes (a run, a checkpoint, a Hugging Face directory, a
GGUF file, a pretrained name); `dtype` is float32 or bfloat16; `batch_size` the distinct
contexts per forward pass. From Python: `lm_eval.simple_evaluate(model=LlmLM(path=...),
tasks=[...])`, or `model="llm"` once this module is imported.

The harness asks a model three things:

- `loglikelihood`: for each (context, continuation), the sum of the continuation's token
  log-probabilities and whether greedy decoding gives it; our `llm.evaluate.loglikelihoods`,
  which tokenizes the way the harness's `hf` backend does.
- `loglikelihood_rolling`: the log-likelihood of a whole text (perplexity tasks). A text longer
  than the context is cut into the harness's windows (lm_eval.utils.get_rolling_token_windows):
  the first predicts up to context_length tokens after the end-of-text token, each next one the
  following context_length tokens given only the token before them, the last one the tokens
  left given as much of the text before them as fits.
- `generate_until`: text after a context, greedy or sampled as the request says
  (`do_sample`, `temperature`, `top_p`, `top_k`), ending at the first of its `until` strings
  (cut off), at the end-of-text token, or after `max_gen_toks` tokens; the context keeps its
  last context_length - max_gen_toks tokens, as in the harness.

lm-eval is a test dependency, not a runtime one: importing this module without it is a one-line
error naming the command that installs it.
"""

import sys

import torch

from llm.device import resolve_device
from llm.evaluate import loglikelihoods, score_batch
from llm.generating import DTYPES, SamplingConfig, TextStream, eos_id_of, stream
from llm.loading import load

try:
    from lm_eval.__main__ import cli_evaluate
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.models.utils import normalize_gen_kwargs
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError:
    raise ImportError(
        "llm.lm_eval_plugin needs lm-evaluation-harness: uv pip install lm-eval (or uv sync)"
    ) from None

DEFAULT_MAX_GEN_TOKS = 256  # the harness's default for a request that names none


@register_model("llm")
class LlmLM(LM):
    """A model of ours (anything llm.loading.load takes) as an lm-eval language model."""

    def __init__(
        self,
        path: str,
        dtype: str = "float32",
        batch_size: int | str = 8,
        device: str | None = None,
        max_batch_size: int | None = None,  # the harness passes it; for its "auto" batch size only
    ) -> None:
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        loaded = load(path, resolve_device(device or "auto"), DTYPES[dtype])
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.batch_size = int(batch_size)

    def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probabilities, is_greedy) for each (context,
        continuation) request."""
        pairs = [tuple(request.args) for request in requests]
        return loglikelihoods(self.model, self.tokenizer, pairs, self.batch_size)

    def loglikelihood_rolling(self, requests: list) -> list[float]:
        """The log-likelihood of each request's whole text, in the harness's rolling windows."""
        return [self.text_loglikelihood(request.args[0]) for request in requests]

    def text_loglikelihood(self, text: str) -> float:
        """The sum of the log-probabilities of all of text's tokens, the first one given the
        end-of-text token, in windows of the model's context (the module's docstring)."""
        eot = eos_id_of(self.tokenizer)
        if eot is None:
            raise ValueError("loglikelihood_rolling needs the tokenizer's <|endoftext|> token")
        windows = [
            make_disjoint_window(window)
            for window in get_rolling_token_windows(
                token_list=self.tokenizer.encode(text),
                prefix_token=eot,
                max_seq_len=self.model.config.context_length,
                context_len=1,
            )
        ]
        # One window per pass: a batch would left-pad the shorter contexts, and a padded window
        # no longer fits the model's context.
        scores = [score_batch(self.model, [context], [continuation], [0])[0][0]
                  for context, continuation in windows]  # fmt: skip
        return sum(scores)

    def generate_until(self, requests: list) -> list[str]:
        """The text generated after each request's context, cut at its first `until` string."""
        return [self.generate(context, gen_kwargs) for context, gen_kwargs in
                (request.args for request in requests)]  # fmt: skip

    def generate(self, context: str, gen_kwargs: dict) -> str:
        """One request of generate_until (the module's docstring)."""
        kwargs = normalize_gen_kwargs(gen_kwargs, DEFAULT_MAX_GEN_TOKS)
        until, max_gen_toks = kwargs["until"], kwargs["max_gen_toks"]
        room = self.model.config.context_length - max_gen_toks
        if room < 1:
            raise ValueError(
                f"max_gen_toks {max_gen_toks} leaves no room for the context in the model's "
                f"{self.model.config.context_length} tokens"
            )
        sampling = SamplingConfig(
            max_new_tokens=max_gen_toks,
            temperature=float(kwargs.get("temperature", 1.0)) if kwargs["do_sample"] else 0.0,
            top_p=kwargs.get("top_p") or 1.0,
            top_k=kwargs.get("top_k") or 0,
            eos_id=eos_id_of(self.tokenizer),
            seed=kwargs.get("seed"),
        )
        text, pieces = "", TextStream(self.tokenizer.vocab)
        for token in stream(self.model, self.tokenizer.encode(context)[-room:], sampling):
            text += pieces.add(token)
            if any(stop in text for stop in until):
                break
        text += pieces.finish()
        return cut_at_first(text, until)


def cut_at_first(text: str, stops: list[str]) -> str:
    """text up to the first occurrence of any of stops (all of it when none occurs)."""
    ends = [text.find(stop) for stop in stops if stop and stop in text]
    return text[: min(ends)] if ends else text


def main(argv: list[str] | None = None) -> None:
    """The harness's `lm-eval run` command line, with our model registered as "llm"."""
    args = list(sys.argv[1:] if argv is None else argv)
    for option, default in (("--model", "llm"), ("--device", "auto")):
        if not any(arg == option or arg.startswith(f"{option}=") for arg in args):
            args = [option, default, *args]
    sys.argv = ["lm-eval", "run", *args]
    with torch.inference_mode():
        cli_evaluate()


if __name__ == "__main__":
    main()
