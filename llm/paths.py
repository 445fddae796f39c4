"""Checking, before any work, that a command can write where it was told to.

A path through a file (`--out notes.txt/run`) or into a read-only directory would otherwise fail
only at the first write, after minutes of work, with a traceback. Checked up front it is one line
that names the option to change.
"""

import os
from pathlib import Path

from llm.config import ConfigError


def check_writable_dir(directory: str | Path, option: str, given: str | Path | None = None) -> None:
    """Raise a ConfigError naming `option` unless `directory` is a directory this process can
    write in, or one it can create (its nearest existing ancestor is a writable directory).
    `given` is the option's value when that is not the directory itself (a file in it)."""
    directory = Path(directory)
    given = Path(given or directory)
    existing = directory
    while not existing.exists():  # also False for a path that goes through a file
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == given else f": {existing}"
        raise ConfigError(
            f"{option} {given}{where} is a file, not a directory; choose another {option}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{option} {given}: cannot write in {existing} (read-only); choose another {option}"
        )
