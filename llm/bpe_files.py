"""The GPT-2 tokenizer file format: vocab.json and merges.txt.

Both files are text, so GPT-2 maps each of the 256 byte values to a printable Unicode character
(printable ASCII and Latin-1 stand for themselves; the space, control bytes and the rest become
chars from U+0100 on: the space byte is "Ġ"). A token's bytes are written as those characters.

    vocab.json   {"Ġthe": 262, ...}   token -> id
    merges.txt   "#version: 0.2" then one merge per line, "Ġ t", in the order they were learned

We add special_tokens.json, a JSON list of the special tokens as text.

Hugging Face `tokenizers` and GPT-2's own files use this format. Hugging Face also keeps a whole
tokenizer in one file, tokenizer.json: the same vocabulary and merges, the special tokens with
their ids ("added_tokens"), and the pipeline around the model (normaliser, pre-tokenizer,
post-processor, decoder). Ours is byte-level BPE with the GPT-2 pre-tokenizer (or SmolLM's,
which cuts off each digit first) and nothing else, so `tokenizer_json` writes exactly that, and
`read_tokenizer_json` reads a file only when it describes the same kind of tokenizer, naming the
first feature that differs.
"""

import copy
import json
from pathlib import Path

from llm.atomic_write import write_text


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte value to a printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def token_to_str(token: bytes) -> str:
    return "".join(BYTE_TO_CHAR[b] for b in token)


def str_to_token(text: str, where: str) -> bytes:
    """The bytes a GPT-2 token string stands for; `where` (file:line) names it in errors."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in text)
    except KeyError as e:
        raise ValueError(
            f"{where}: {e.args[0]!r} in {text!r} is not a GPT-2 byte character"
        ) from None


def write_vocab(path: str | Path, vocab: dict[int, bytes]) -> None:
    entries = {token_to_str(vocab[i]): i for i in sorted(vocab)}
    write_text(path, json.dumps(entries, ensure_ascii=False, indent=0) + "\n")


def write_merges(path: str | Path, merges: list[tuple[bytes, bytes]]) -> None:
    lines = [f"{token_to_str(a)} {token_to_str(b)}\n" for a, b in merges]
    write_text(path, "#version: 0.2\n" + "".join(lines))


def read_vocab(path: str | Path) -> dict[int, bytes]:
    """vocab.json as {id: bytes}. Errors name the file and line."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.lstrip().startswith("{"):
        raise ValueError(f"{path}:1: expected a JSON object {{token: id, ...}}")
    try:
        pairs = json.loads(text, object_pairs_hook=list)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    vocab: dict[int, bytes] = {}
    seen: set[bytes] = set()
    for token, token_id in pairs:
        where = f"{path}:{_line_of(text, token)}"
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            raise ValueError(f"{where}: the id of {token!r} is {token_id!r}, not an int >= 0")
        token_bytes = str_to_token(token, where)
        if token_id in vocab or token_bytes in seen:
            raise ValueError(f"{where}: token {token!r} or id {token_id} appears twice")
        vocab[token_id] = token_bytes
        seen.add(token_bytes)
    return vocab


def _line_of(text: str, token: str) -> int:
    """The line of vocab.json where the key `token` is written (for error messages)."""
    at = text.find(json.dumps(token, ensure_ascii=False) + ":")
    if at < 0:
        at = text.find(json.dumps(token) + ":")
    return text.count("\n", 0, max(at, 0)) + 1


def read_merges(path: str | Path, token_bytes: set[bytes]) -> list[tuple[bytes, bytes]]:
    """merges.txt as [(bytes, bytes)]. Each part and their concatenation must be in the
    vocabulary `token_bytes`. Errors name the file and line."""
    merges = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line or (lineno == 1 and line.startswith("#version")):
                continue
            where = f"{path}:{lineno}"
            fields = line.split(" ")
            if len(fields) != 2 or not all(fields):
                raise ValueError(f"{where}: expected two tokens separated by a space, got {line!r}")
            a, b = (str_to_token(s, where) for s in fields)
            for token in (a, b, a + b):
                if token not in token_bytes:
                    raise ValueError(f"{where}: {token_to_str(token)!r} is not in the vocabulary")
            merges.append((a, b))
    return merges


def tokenizer_json(
    vocab: dict[int, bytes],
    merges: list[tuple[bytes, bytes]],
    special_ids: dict[str, int],
    pretokenizer: str = "gpt2",
    ignore_merges: bool = True,
) -> dict:
    """The tokenizer.json of a byte-level BPE tokenizer: the ByteLevel pre-tokenizer with
    use_regex is the GPT-2 regex (llm/pretokenization.py), after Digits for SmolLM's; and
    "ignore_merges" is tiktoken's rule that ours follows by default: a pre-token that is a token
    is that token. Special tokens are in
    "added_tokens", which Hugging Face cuts out of the text before pre-tokenizing, as we do, and
    in the vocab as they are written (no byte characters), where Hugging Face finds their ids."""
    specials = {i: token for token, i in special_ids.items()}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for token, i in special_ids.items()
        ],  # fmt: skip
        "normalizer": None,
        "pre_tokenizer": copy.deepcopy(PRE_TOKENIZERS_JSON[pretokenizer]),
        "post_processor": None,
        "decoder": dict(_BYTE_LEVEL),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": ignore_merges,
            "vocab": {specials.get(i) or token_to_str(vocab[i]): i for i in sorted(vocab)},
            "merges": [f"{token_to_str(a)} {token_to_str(b)}" for a, b in merges],
        },
    }


def read_tokenizer_json(
    path: str | Path,
) -> tuple[dict[int, bytes], list, list[str], str, bool]:
    """(vocab {id: bytes}, merges, special tokens, pre-tokenizer name, ignore_merges) of a
    Hugging Face tokenizer.json that is a byte-level BPE with the GPT-2 or SmolLM pre-tokenizer;
    anything else is a ValueError naming the file and the feature."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    model = data.get("model") or {}

    def unsupported(feature: str) -> ValueError:
        return ValueError(f"{path}: {feature} is not supported (only byte-level BPE with the GPT-2 "
                          "or SmolLM pre-tokenizer loads into BpeTokenizer)")  # fmt: skip

    if model.get("type") != "BPE":
        raise unsupported(f"model type {model.get('type')!r}")
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "byte_fallback"):
        if model.get(key):
            raise unsupported(f"model {key}={model[key]!r}")
    if data.get("normalizer") is not None:
        raise unsupported(f"normalizer {data['normalizer'].get('type')!r}")
    pretokenizer = pretokenizer_name(data.get("pre_tokenizer") or {})
    if pretokenizer is None:
        raise unsupported(f"pre_tokenizer {describe_pretokenizer(data.get('pre_tokenizer'))}")
    for key in ("post_processor", "decoder"):
        if data.get(key) is not None and data[key].get("type") != "ByteLevel":
            raise unsupported(f"{key} {data[key].get('type')!r}")
    added = {token["id"]: token for token in data.get("added_tokens", [])}
    vocab = {}
    for token, token_id in model.get("vocab", {}).items():
        if token_id not in added:
            vocab[token_id] = str_to_token(token, f"{path}: vocab")
    merges = parse_merges(model.get("merges", []), vocab, str(path))
    for token_id, token in added.items():
        for key in ("single_word", "lstrip", "rstrip"):
            if token.get(key):
                raise unsupported(f"added token {token['content']!r} with {key}=true")
        if token["content"].encode("utf-8") in vocab.values():
            raise ValueError(f"{path}: added token {token['content']!r} is also a vocab token")
        vocab[token_id] = token["content"].encode("utf-8")
    specials = [token["content"] for token in added.values()]
    return vocab, merges, specials, pretokenizer, bool(model.get("ignore_merges", False))


def parse_merges(merges: list, vocab: dict[int, bytes], where: str) -> list[tuple[bytes, bytes]]:
    """Merges written as "Ġ t" (or ["Ġ", "t"]) as pairs of bytes, checked against the vocab
    {id: bytes}. Our encoder ranks tokens by id (as tiktoken does), so the ids must follow the
    order of the merges, as they do in every BPE-trained vocabulary (GPT-2's, SmolLM2's)."""
    ids = {token: i for i, token in vocab.items()}
    pairs = []
    for n, merge in enumerate(merges):
        a, b = merge.split(" ") if isinstance(merge, str) else merge
        pair = (str_to_token(a, f"{where}: merge {n}"), str_to_token(b, f"{where}: merge {n}"))
        if not all(token in ids for token in (*pair, pair[0] + pair[1])):
            raise ValueError(f"{where}: merge {n} ({a} {b}) uses or makes a token not in the vocab")
        if not ids[pair[0] + pair[1]] > max(ids[pair[0]], ids[pair[1]]):
            raise ValueError(f"{where}: merge {n} ({a} {b}) makes a token of lower id than its "
                             "parts; BpeTokenizer needs ids in merge order")  # fmt: skip
        if pairs and ids[pair[0] + pair[1]] < ids[pairs[-1][0] + pairs[-1][1]]:
            raise ValueError(f"{where}: merge {n} ({a} {b}) is out of id order; BpeTokenizer "
                             "needs ids in merge order")  # fmt: skip
        pairs.append(pair)
    return pairs


_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
               "use_regex": True}  # fmt: skip
# Our pre-tokenizers (llm/pretokenization.py) as Hugging Face writes them.
PRE_TOKENIZERS_JSON = {
    "gpt2": _BYTE_LEVEL,
    "smollm": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
}  # fmt: skip


def pretokenizer_name(pre: dict) -> str | None:
    """Which of PRE_TOKENIZERS_JSON a tokenizer.json's "pre_tokenizer" is (trim_offsets, which
    only moves offsets, is ignored); None for any other."""

    def same(a: dict, b: dict) -> bool:
        if a.get("type") == "Sequence":
            parts_a, parts_b = a.get("pretokenizers", []), b.get("pretokenizers", [])
            return len(parts_a) == len(parts_b) and all(map(same, parts_a, parts_b))
        defaults = {"use_regex": True, "add_prefix_space": False}  # Hugging Face's defaults
        a = defaults | {k: v for k, v in a.items() if k != "trim_offsets"}
        b = defaults | {k: v for k, v in b.items() if k != "trim_offsets"}
        return a == b

    return next((name for name, known in PRE_TOKENIZERS_JSON.items() if same(pre, known)), None)


def describe_pretokenizer(pre: dict | None) -> str:
    """A tokenizer.json pre-tokenizer in words for an error: its type and the settings of ours
    that differ, e.g. "'ByteLevel' with add_prefix_space=true"."""
    if not pre:
        return "none"
    if pre.get("type") == "Sequence":
        return "Sequence of " + ", ".join(map(describe_pretokenizer, pre.get("pretokenizers", [])))
    ours = {k: v for k, v in _BYTE_LEVEL.items() if k not in ("type", "trim_offsets")}
    differ = [f"{k}={json.dumps(v)}" for k, v in pre.items() if k in ours and v != ours[k]]
    return repr(pre.get("type")) + (f" with {', '.join(differ)}" if differ else "")


def write_special_tokens(path: str | Path, special_tokens: list[str]) -> None:
    write_text(path, json.dumps(special_tokens, ensure_ascii=False) + "\n")


def read_special_tokens(path: str | Path) -> list[str]:
    try:
        tokens = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
        raise ValueError(f"{path}:1: expected a list of non-empty strings")
    return tokens
