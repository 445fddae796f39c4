"""Command lines built from config dataclasses: one way for every entry point.

A program's options are the fields of its config dataclass. Values are layered, later ones
winning:

    the dataclass defaults (or a preset)  <-  a TOML file (FILE.toml, --config FILE)  <-  flags

Flags are `--key value`, `--key=value`, or `--flag` alone for true; dashes and underscores are
the same (`--max-new-tokens` = `--max_new_tokens`); a nested field is a dotted flag
(`--model.d_model 256`). A list field takes several words (`--special-tokens A B`), a
comma-separated word, or the flag repeated. Some fields may be given by position
(`llm.plots RUN_DIR`). `--help` lists every option with its type, default and the comment
written beside the field. `run_main` turns the errors a user can cause into one line on stderr.
"""

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_origin, get_type_hints

from llm.config import ConfigError, closest, config_from_dict, describe_fields, load_toml

T = TypeVar("T")


def parse(
    cls: type[T],
    argv: list[str] | None = None,
    *,
    base: T | Callable[[dict], T] | None = None,
    description: str = "",
    prog: str = "",
    positional: tuple[str, ...] = (),
) -> T:
    """The config for a command-line program: defaults <- TOML <- flags; prints help and exits
    on --help. `base` may be a function of the raw values, so that a key such as a preset name
    can choose the defaults the other keys then override. `positional` names the fields that
    bare words fill, in order."""
    values, show_help = read_args(cls, sys.argv[1:] if argv is None else argv, positional)
    if callable(base):
        base = base(values)
    if show_help:
        _print(help_text(cls, base, description, prog, positional))
        raise SystemExit(0)
    return config_from_dict(cls, values, base)


def parse_command(
    commands: Mapping[str, tuple[type, str]],
    argv: list[str] | None = None,
    *,
    default: str | None = None,
    description: str = "",
    prog: str = "",
    positional: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[str, Any]:
    """(command name, its config) for a program with subcommands: `prog COMMAND [options]`.
    `commands` maps each name to (config dataclass, one-line summary). Without a command
    word, `default` runs (or, when None, the usage is an error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in commands:
        name, argv = argv[0], argv[1:]
    else:
        if argv[:1] in (["-h"], ["--help"]):
            _print(_commands_text(commands, default, description, prog))
            if default is None:
                raise SystemExit(0)
        if default is None:
            given = f"{argv[0]!r} is not one of them" if argv else "none was given"
            raise ConfigError(f"the command must be one of {', '.join(commands)}; {given}")
        name = default
    cls, summary = commands[name]
    where = (positional or {}).get(name, ())
    return name, parse(cls, argv, description=summary, prog=f"{prog} {name}", positional=where)


def run_main(main: Callable[[], T], errors: tuple[type[BaseException], ...] = ()) -> T:
    """Run an entry point so that a user never sees a traceback for a mistake of theirs:
    a ConfigError (a bad flag or setting) exits 2 and `errors` exit 1, each as one line
    `error: ...` on stderr; Ctrl-C exits 130; output cut short by a closed pipe (`| head`)
    ends quietly."""
    try:
        return main()
    except ConfigError as e:
        _fail(e, 2)
    except BrokenPipeError:  # before `errors`, which may list its base class OSError
        # stdout's reader is gone: point stdout at /dev/null so the flush at exit cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
    except errors as e:
        _fail(e, 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _fail(error: BaseException, code: int) -> None:
    message = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and error.strerror:
        message = f"{error.filename}: {error.strerror}"
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(code) from None


def read_args(cls: type, argv: list[str], positional: tuple[str, ...] = ()) -> tuple[dict, bool]:
    """Parse `[FILE.toml] [--config FILE] [WORD]... [--key value]... [--help]` for `cls`.

    Returns (values, help_requested): TOML values first, then the flags and positional words
    over them, as a nested dict of strings ready for config_from_dict."""
    toml_values: dict = {}
    flag_values: dict = {}
    show_help = False
    words = list(positional)
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word in ("-h", "--help"):
            show_help = True
        elif not word.startswith("--"):
            if word.endswith(".toml"):
                _merge(toml_values, load_toml(word))
            elif words:
                _set(cls, flag_values, words.pop(0), word)
            else:
                raise ConfigError(f"unexpected argument {word!r}: options are written --key value")
        else:
            flag, has_value, value = word.partition("=")
            key = flag[2:].replace("-", "_")
            if key != "config" and _field_type(cls, key) is None:
                raise ConfigError(_unknown_option(cls, flag))
            if has_value:
                values = [value]
            else:
                values = []
                takes_many = _is_list(cls, key)
                while i < len(argv) and not _is_flag(argv[i]) and (takes_many or not values):
                    values.append(argv[i])
                    i += 1
                if not values:
                    values = ["true"]
            if key == "config":
                _merge(toml_values, load_toml(values[0]))
            else:
                for value in values:
                    _set(cls, flag_values, key, value)
    return _merge(toml_values, flag_values), show_help


def help_text(
    cls: type, base: Any = None, description: str = "", prog: str = "",
    positional: tuple[str, ...] = (),
) -> str:  # fmt: skip
    """Every option with its type, default and comment."""
    words = " ".join(name.upper() for name in positional)
    lines = [description.strip(), ""] if description else []
    lines += [
        f"usage: {prog or 'PROGRAM'} {words + ' ' if words else ''}[CONFIG.toml] [--key value]...",
        "Values: defaults <- TOML file <- flags. Nested keys: [table] in TOML, --table.key flag.",
        "",
    ]
    for key, type_name, default, comment in describe_fields(cls, base):
        lines.append(f"  --{key:<26} {type_name:<16} default: {default!r}")
        if comment:
            lines.append(f"      {comment}")
    return "\n".join(lines)


def _commands_text(
    commands: Mapping[str, tuple[type, str]], default: str | None, description: str, prog: str
) -> str:
    lines = [description.strip(), ""] if description else []
    lines.append(
        f"usage: {prog} COMMAND [--key value]...   ({prog} COMMAND --help for its options)"
    )
    for name, (_, summary) in commands.items():
        lines.append(f"  {name:<12} {summary}" + ("  (the default)" if name == default else ""))
    return "\n".join(lines) + "\n"


def _print(text: str) -> None:
    print(text, flush=True)


def _is_flag(word: str) -> bool:
    return word.startswith("--") or word in ("-h",)


def _field_type(cls: type, dotted: str) -> Any:
    """The type of the field `dotted` (e.g. model.d_model) of cls, or None if there is none."""
    tp: Any = cls
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        tp = get_type_hints(tp).get(part)
    return tp


def _unknown_option(cls: type, flag: str) -> str:
    """`unknown option --max-iter; did you mean --max_iters?`, naming the flag as typed."""
    near = closest(flag[2:].replace("-", "_"), [key for key, *_ in describe_fields(cls)])
    return f"unknown option {flag}; " + (f"did you mean --{near}?" if near else "see --help")


def _is_list(cls: type, key: str) -> bool:
    tp = _field_type(cls, key)
    return get_origin(tp) is list or (get_origin(tp) is tuple and tp is not None)


def _set(cls: type, values: dict, key: str, value: str) -> None:
    """Put a flag's value at its dotted place; a list field collects every value given."""
    *tables, leaf = key.split(".")
    for table in tables:
        values = values.setdefault(table, {})
        if not isinstance(values, dict):
            raise ConfigError(f"--{key}: {table} is not a table of keys")
    if get_origin(_field_type(cls, key)) is list:
        parts = [p for p in value.split(",") if p] if "," in value else [value]
        values[leaf] = [*values.get(leaf, []), *parts]
    else:
        values[leaf] = value


def _merge(into: dict, other: Mapping) -> dict:
    """Recursively merge `other` into `into` (other wins) and return `into`."""
    for key, value in other.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into
