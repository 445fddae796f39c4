"""Dataclass configs from TOML files and `--key value` command-line flags.

Values are layered, later ones winning:

    the dataclass defaults (or a preset)  <-  a TOML file (--config FILE)  <-  --key value flags

A nested dataclass field is a TOML table (`[model]` then `d_model = 256`) and a dotted flag
(`--model.d_model 256`). Every key is checked against the dataclass and converted to the field's
type before any work starts, so a typo or a wrong type is an immediate, named error.
`--help` lists every key with its type, default and the comment written beside the field.
"""

import dataclasses
import inspect
import re
import sys
import tomllib
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class ConfigError(ValueError):
    """A config file or flag that does not fit the config dataclass."""


def load_toml(path: str | Path) -> dict:
    """Read a TOML file into a (nested) dict, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def read_args(argv: list[str]) -> tuple[dict, bool]:
    """Parse `[FILE.toml] [--config FILE] [--key value | --key=value | --flag]... [--help]`.

    Returns (values, help_requested). Values from the TOML file come first and flags override
    them; a dotted key (--model.d_model) goes into the nested table. A flag with no value (the
    next word is another flag, or there is none) means true.
    """
    toml_values: dict = {}
    flag_values: dict = {}
    show_help = False
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word in ("-h", "--help"):
            show_help = True
            continue
        if not word.startswith("--"):
            if word.endswith(".toml"):
                _merge(toml_values, load_toml(word))
                continue
            raise ConfigError(f"unexpected argument {word!r}: flags are written --key value")
        key, has_value, value = word[2:].partition("=")
        if not has_value:
            if i < len(argv) and not argv[i].startswith("--"):
                value = argv[i]
                i += 1
            else:
                value = "true"
        if key == "config":
            _merge(toml_values, load_toml(value))
        else:
            _set_dotted(flag_values, key, value)
    return _merge(toml_values, flag_values), show_help


def config_from_dict(cls: type[T], values: Mapping[str, Any], base: T | None = None) -> T:
    """Build a `cls` from `base` (default: cls()) with `values` applied, checked and converted."""
    return _apply(cls, values, cls() if base is None else base, prefix="")


def config_from_toml(cls: type[T], path: str | Path, base: T | None = None) -> T:
    """Load a `cls` from a TOML file (e.g. a ModelConfig from `[model]`-less TOML)."""
    return config_from_dict(cls, load_toml(path), base)


def config_to_dict(config: Any) -> dict:
    """The config as plain dicts/lists/scalars (for checkpoints and JSON)."""
    return dataclasses.asdict(config)


def parse_config(
    cls: type[T],
    argv: list[str] | None = None,
    base: T | Callable[[dict], T] | None = None,
    description: str = "",
) -> T:
    """The config for a command-line program: defaults <- TOML <- flags; prints help and exits
    on --help. `base` may be a function of the raw values, so that a key such as a preset name
    can choose the defaults the other keys then override."""
    values, show_help = read_args(sys.argv[1:] if argv is None else argv)
    if callable(base):
        base = base(values)
    if show_help:
        print(help_text(cls, base, description))
        raise SystemExit(0)
    return config_from_dict(cls, values, base)


def help_text(cls: type, base: Any = None, description: str = "") -> str:
    """Every key with its type, default and comment."""
    base = cls() if base is None else base
    lines = [description.strip(), ""] if description else []
    lines += [
        "usage: [CONFIG.toml] [--config CONFIG.toml] [--key value]...",
        "Values: defaults <- TOML file <- flags. Nested keys: [table] in TOML, --table.key flag.",
        "",
    ]
    for key, type_name, default, comment in _describe(cls, base, prefix=""):
        lines.append(f"  --{key:<26} {type_name:<16} default: {default!r}")
        if comment:
            lines.append(f"      {comment}")
    return "\n".join(lines)


def format_config(config: Any) -> str:
    """One `key = value` line per field (nested keys dotted), for printing at start."""
    return "\n".join(
        f"{key} = {default!r}" for key, _, default, _ in _describe(type(config), config, "")
    )


# ---------------------------------------------------------------------------------------------


def _apply(cls: type[T], values: Mapping[str, Any], base: T, prefix: str) -> T:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.')} is a table of keys, not {values!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    changes = {}
    for key, value in values.items():
        if key not in names:
            valid = ", ".join(prefix + n for n in names)
            raise ConfigError(f"unknown config key {prefix + key!r}; valid keys are: {valid}")
        field_type = hints[key]
        if dataclasses.is_dataclass(field_type):
            changes[key] = _apply(field_type, value, getattr(base, key), prefix + key + ".")
        else:
            changes[key] = _convert(value, field_type, prefix + key)
    try:
        return dataclasses.replace(base, **changes)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid {cls.__name__}: {e}") from None


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert a TOML value or a command-line string to the field type `tp`."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, key)
    if origin in (tuple, list):
        items = value
        if isinstance(value, str):
            items = [s for s in value.strip("[]()").replace(" ", "").split(",") if s]
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis and len(items) != len(args):
            raise ConfigError(f"{key} must have {len(args)} items, got {value!r}")
        item_types = args[:1] * len(items) if origin is list or args[-1:] == (...,) else args
        return origin(_convert(v, t, key) for v, t in zip(items, item_types, strict=True))
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
        elif tp is int:
            if isinstance(value, str):
                value = float(value) if any(c in value for c in ".eE") else int(value)
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and value == int(value)
            ):
                return int(value)
        elif tp is float:
            if isinstance(value, int | float | str) and not isinstance(value, bool):
                return float(value)
        elif tp is str:
            if isinstance(value, str):
                return value
        else:
            raise ConfigError(f"{key}: unsupported field type {tp}")
    except ValueError:
        pass
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")


def _describe(cls: type, base: Any, prefix: str) -> list[tuple[str, str, Any, str]]:
    """(dotted key, type name, current value, comment) for every leaf field."""
    hints = get_type_hints(cls)
    comments = _field_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        value = getattr(base, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            rows += _describe(hints[f.name], value, prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, _type_name(hints[f.name]), value, comments.get(f.name)))
    return rows


def _field_comments(cls: type) -> dict[str, str]:
    """The `# comment` written on each field's line of the dataclass source, used as help."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    pattern = re.compile(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", re.MULTILINE)
    return {name: comment.strip() for name, comment in pattern.findall(source)}


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    return str(tp).replace("typing.", "")


def _set_dotted(values: dict, key: str, value: str) -> None:
    *tables, leaf = key.split(".")
    for table in tables:
        values = values.setdefault(table, {})
        if not isinstance(values, dict):
            raise ConfigError(f"--{key}: {table} is not a table of keys")
    values[leaf] = value


def _merge(into: dict, other: Mapping) -> dict:
    """Recursively merge `other` into `into` (other wins) and return `into`."""
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into
