"""Writing files so that a crash, a kill or a full disk never leaves a half-written one.

Every file the project writes (checkpoints, token arrays, tokenizer files, configs, metrics,
plots) goes through `atomic_write`: the bytes go to a temp file in the same directory, are
flushed to disk (fsync), and only then renamed over the target. A rename within one directory
is atomic, so a reader sees the old file or the new one, never a mix. On an error the temp file
is removed. A process killed outright (SIGKILL, power loss) cannot clean up after itself: its
temp file, named `.NAME.PID.XXXX.tmp`, is removed by `remove_stale_temp_files` the next time a
command writes to that directory. `atomic_directory` does the same for a directory of files.
"""

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path` for writing ("wb", or "w" for UTF-8 text with "\\n" line
    ends on every platform); on a clean exit it is fsynced and renamed to `path` (mode 0o666
    less the umask, as open() would make it), on an error it is deleted."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None  # a signal (Ctrl-C, SIGTERM) may come as soon as mkstemp has made the file
    try:
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
        )
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode + "+", **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0o600)
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temp directory beside `path` to fill (each file written with atomic_write, so it
    is on disk); on a clean exit it replaces `path`, on an error it is deleted. An existing
    `path` is first renamed aside and deleted after the swap, so that `path` is always the old
    directory or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new-"))
    try:
        yield temp
        os.chmod(temp, 0o777 & ~_umask())  # mkdtemp makes the directory private (0o700)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old)  # over the empty directory mkdtemp made
        os.rename(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    fsync_directory(path.parent)
    if old is not None:
        shutil.rmtree(old)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def remove_stale_temp_files(directory: str | Path, name: str | None = None) -> list[Path]:
    """Delete temp files that `atomic_write` left in `directory` when its process was killed
    (its PID no longer runs); only those for target `name` if given. Returns what was deleted."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.iterdir():
        match = _TEMP_NAME.match(path.name)
        if not match or (name is not None and match["name"] != name):
            continue
        if not _process_exists(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, run by another user
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
