"""The GPT-2 tokenizer file format: vocab.json and merges.txt.

Both files are text, so GPT-2 maps each of the 256 byte values to a printable Unicode character
(printable ASCII and Latin-1 stand for themselves; the space, control bytes and the rest become
chars from U+0100 on: the space byte is "Ġ"). A token's bytes are written as those characters.

    vocab.json   {"Ġthe": 262, ...}   token -> id
    merges.txt   "#version: 0.2" then one merge per line, "Ġ t", in the order they were learned

We add special_tokens.json, a JSON list of the special tokens as text.

Hugging Face `tokenizers` and GPT-2's own files use this format.
"""

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
