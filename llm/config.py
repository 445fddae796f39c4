"""Config dataclasses from dicts and TOML files, and back.

A config is a dataclass; a nested dataclass field is a TOML table (`[model]` then
`d_model = 256`). Every key is checked against the dataclass and converted to the field's type
before any work starts, so a typo or a wrong type is an immediate, named error. A field with no
default is required. The command line (`llm/cli.py`) layers flags over a TOML file over the
defaults with the same functions.
"""

import dataclasses
import difflib
import inspect
import re
import tomllib
import types
from collections.abc import Iterable, Mapping
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


def config_from_dict(cls: type[T], values: Mapping[str, Any], base: T | None = None) -> T:
    """Build a `cls` from `base` (default: the dataclass defaults) with `values` applied,
    checked and converted. Without a base, every field that has no default must be given."""
    return _apply(cls, values, base, prefix="")


def config_from_toml(cls: type[T], path: str | Path, base: T | None = None) -> T:
    """Load a `cls` from a TOML file (e.g. a ModelConfig from `[model]`-less TOML)."""
    return config_from_dict(cls, load_toml(path), base)


def config_to_dict(config: Any) -> dict:
    """The config as plain dicts/lists/scalars (for checkpoints and JSON)."""
    return dataclasses.asdict(config)


def required_fields(cls: type) -> list[str]:
    """The fields of `cls` with no default value."""
    missing = dataclasses.MISSING
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is missing and f.default_factory is missing and f.init
    ]


def format_config(config: Any) -> str:
    """One `key = value` line per field (nested keys dotted), for printing at start."""
    return "\n".join(
        f"{key} = {default!r}" for key, _, default, _ in _describe(type(config), config, "")
    )


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to a mistyped `word` (by difflib's similarity), or None if none is
    close: `max_iter` -> `max_iters`, `epochs` -> None."""
    matches = difflib.get_close_matches(word, list(choices), n=1)
    return matches[0] if matches else None


# ---------------------------------------------------------------------------------------------


def _apply(cls: type[T], values: Mapping[str, Any], base: T | None, prefix: str) -> T:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.')} is a table of keys, not {values!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    changes = {}
    for key, value in values.items():
        if key not in names:
            near = closest(key, names)
            hint = (
                f"did you mean {prefix + near!r}?"
                if near
                else "valid keys are: " + ", ".join(prefix + n for n in names)
            )
            raise ConfigError(f"unknown config key {prefix + key!r}; {hint}")
        field_type = hints[key]
        if dataclasses.is_dataclass(field_type):
            inner = None if base is None else getattr(base, key)
            changes[key] = _apply(field_type, value, inner, prefix + key + ".")
        else:
            changes[key] = _convert(value, field_type, prefix + key)
    if base is None:
        missing = [prefix + name for name in required_fields(cls) if name not in changes]
        if missing:
            raise ConfigError(f"missing required setting: {', '.join('--' + k for k in missing)}")
    try:
        return cls(**changes) if base is None else dataclasses.replace(base, **changes)
    except (ValueError, TypeError) as e:  # the dataclass's own checks (__post_init__)
        raise ConfigError(str(e)) from None


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
    if dataclasses.is_dataclass(tp):  # a list item that is a table: [[data]] in TOML
        return _apply(tp, value, None, key + ".")
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


REQUIRED = "(required)"  # the value describe_fields shows for a field with no default


def describe_fields(cls: type, base: Any = None) -> list[tuple[str, str, Any, str | None]]:
    """(dotted key, type name, value in `base` or default, comment) for every leaf field."""
    return _describe(cls, base, prefix="")


def _describe(cls: type, base: Any, prefix: str) -> list[tuple[str, str, Any, str | None]]:
    hints = get_type_hints(cls)
    comments = _field_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        value = getattr(base, f.name) if base is not None else _default(f)
        if dataclasses.is_dataclass(hints[f.name]):
            rows += _describe(hints[f.name], value, prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, _type_name(hints[f.name]), value, comments.get(f.name)))
    return rows


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED


def _field_comments(cls: type) -> dict[str, str]:
    """The `# comment` written on each field's line of the dataclass source, used as help. The
    classes it inherits from are read too (a subclass's own comment wins), since a field's
    comment is written where the field is."""
    pattern = re.compile(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", re.MULTILINE)
    comments = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        comments.update((name, text.strip()) for name, text in pattern.findall(source))
    return comments


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    return str(tp).replace("typing.", "")
