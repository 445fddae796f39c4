"""Fine-tuning data: JSONL conversations, rendered with the model's chat template and tokenized
with the mask of the tokens the model learns to write (the response mask).

Each line of a file is one JSON object, in the formats people already have:

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
    {"prompt": "...", "completion": "..."}                 (a user turn and the assistant's reply)
    {"prompt": ..., "chosen": ..., "rejected": ...}        (DPO: a preference pair)

In a preference pair the prompt is a string (the user's turn) or a list of messages, and chosen
and rejected are strings (the assistant's reply) or lists of messages; without a prompt, chosen
and rejected are whole conversations. A pair's response is its last assistant turn.

A conversation is rendered with the model's chat template (SmolLM2's ChatML, from its tokenizer;
for our own models llm/chat.py's CHATML, whose <|im_start|> and <|im_end|> the tokenizer gains
as special tokens, see llm/finetune.py). The assistant's tokens are found by rendering the
conversation up to each assistant turn, with the turn opened (what the model reads at
generation time), and then with that turn written: the difference is the reply, up to and
including the end of the turn (<|im_end|>), so the model learns to stop. The prefix and the
reply are encoded apart, as generation encodes the prompt alone. Only the assistant turns are
learnt; every other token (system, user, the template's markers) is read but never predicted.

A conversation longer than the context is an error naming its line, or with too_long = "drop"
it is left out (and counted): cutting it would cut the reply and its end-of-turn token, and
teach the model to stop in mid-answer. Every line is checked before any training starts.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llm.bpe_tokenizer import BpeTokenizer
from llm.chat import END_OF_TURN, render_chat

ROLES = ("system", "user", "assistant")


class ChatDataError(ValueError):
    """A fine-tuning file that cannot be used: the message names the file and the line."""


@dataclass
class Example:
    """A tokenized conversation: ids, and mask[i] = whether ids[i] is a token to learn."""

    ids: list[int]
    mask: list[bool]


@dataclass
class Preference:
    """A DPO pair: the same prompt, answered well (chosen) and badly (rejected)."""

    chosen: Example
    rejected: Example


def read_jsonl(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(where: "FILE line N", the record) for each non-blank line of a JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise ChatDataError(f"{path}: no such file (give a JSONL file of conversations)")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ChatDataError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise ChatDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def _messages(value: object, where: str, key: str) -> list[dict]:
    """A list of {"role", "content"} messages, checked."""
    if not isinstance(value, list) or not value:
        raise ChatDataError(f"{where}: {key!r} must be a non-empty list of messages")
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ChatDataError(f"{where}: each message needs a string 'content'")
        if message.get("role") not in ROLES:
            raise ChatDataError(
                f"{where}: a message's role is {message.get('role')!r}, not one of {ROLES}"
            )
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _turn(value: object, role: str, where: str, key: str) -> list[dict]:
    """A string as one message of `role`, or a list of messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return _messages(value, where, key)


def conversation(record: dict, where: str) -> list[dict]:
    """The messages of an SFT record ({"messages"} or {"prompt", "completion"})."""
    if "messages" in record:
        messages = _messages(record["messages"], where, "messages")
    elif "prompt" in record and "completion" in record:
        messages = _turn(record["prompt"], "user", where, "prompt")
        messages += _turn(record["completion"], "assistant", where, "completion")
    else:
        raise ChatDataError(
            f"{where}: expected {{'messages': [...]}} or {{'prompt', 'completion'}}, got keys "
            f"{sorted(record)}"
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise ChatDataError(f"{where}: no assistant turn, nothing to learn")
    return messages


def preference(record: dict, where: str) -> tuple[list[dict], list[dict]]:
    """The chosen and rejected conversations of a DPO record."""
    if "chosen" not in record or "rejected" not in record:
        raise ChatDataError(
            f"{where}: expected {{'prompt', 'chosen', 'rejected'}}, got keys {sorted(record)}"
        )
    prompt = _turn(record["prompt"], "user", where, "prompt") if "prompt" in record else []
    pair = []
    for key in ("chosen", "rejected"):
        messages = prompt + _turn(record[key], "assistant", where, key)
        if messages[-1]["role"] != "assistant":
            raise ChatDataError(f"{where}: {key!r} does not end with an assistant turn")
        pair.append(messages)
    return pair[0], pair[1]


def encode_conversation(
    messages: list[dict],
    tokenizer: BpeTokenizer,
    template: str | None,
    last_only: bool = False,
    where: str = "",
) -> Example:
    """The ids of the rendered conversation and the mask of its assistant replies (each up to
    and including the end of its turn); last_only: the last reply alone (a DPO response)."""
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if last_only:
        replies = replies[-1:]
    ids: list[int] = []
    mask: list[bool] = []
    done = ""  # the text encoded so far

    def add(text: str, learn: bool) -> None:
        new = tokenizer.encode(text)
        ids.extend(new)
        mask.extend([learn] * len(new))

    for i in replies:
        prefix = render_chat(messages[:i], template, add_generation_prompt=True)
        full = render_chat(messages[: i + 1], template, add_generation_prompt=False)
        if not (prefix.startswith(done) and full.startswith(prefix)):
            raise ChatDataError(f"{where}: the chat template does not render turn by turn")
        answer = full[len(prefix) :]
        cut = answer.find(END_OF_TURN)
        end = cut + len(END_OF_TURN) if cut >= 0 else len(answer)
        add(prefix[len(done) :], False)
        add(answer[:end], True)
        add(answer[end:], False)
        done = full
    return Example(ids, mask)


def _fits(example: Example, context_length: int, where: str, too_long: str) -> bool:
    """Whether the example fits the context (its ids less the last, which is only a label)."""
    if len(example.ids) - 1 <= context_length:
        return True
    if too_long == "drop":
        return False
    raise ChatDataError(
        f"{where}: {len(example.ids)} tokens, longer than the context ({context_length} + 1); "
        "shorten it, or set too_long = 'drop' to leave such lines out"
    )


def load_sft(
    path: str | Path,
    tokenizer: BpeTokenizer,
    template: str | None,
    context_length: int,
    too_long: str = "error",
) -> tuple[list[Example], int]:
    """The SFT examples of a JSONL file and how many were dropped for their length."""
    examples, dropped = [], 0
    for where, record in read_jsonl(path):
        example = encode_conversation(conversation(record, where), tokenizer, template, where=where)
        if _fits(example, context_length, where, too_long):
            examples.append(example)
        else:
            dropped += 1
    return _non_empty(examples, path, dropped), dropped


def load_preferences(
    path: str | Path,
    tokenizer: BpeTokenizer,
    template: str | None,
    context_length: int,
    too_long: str = "error",
) -> tuple[list[Preference], int]:
    """The DPO pairs of a JSONL file and how many were dropped for their length."""
    pairs, dropped = [], 0
    for where, record in read_jsonl(path):
        chosen, rejected = (
            encode_conversation(messages, tokenizer, template, last_only=True, where=where)
            for messages in preference(record, where)
        )
        if all(_fits(e, context_length, where, too_long) for e in (chosen, rejected)):
            pairs.append(Preference(chosen, rejected))
        else:
            dropped += 1
    return _non_empty(pairs, path, dropped), dropped


def _non_empty(items: list, path: str | Path, dropped: int) -> list:
    if not items:
        why = f" ({dropped} longer than the context were dropped)" if dropped else ""
        raise ChatDataError(f"{path}: no examples{why}")
    return items
