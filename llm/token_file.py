"""A .npy file of token ids written piece by piece, that an interrupted run can continue.

Encoding a multi-gigabyte text takes hours, so its output is never held in memory and never
started over. While it is written, OUTPUT.partial holds a .npy header (with room for any
length) and the ids so far, and OUTPUT.progress records what they cover: a first line naming
the input and tokenizer (a JSON object), then one line `INPUT_END TOKENS` per piece appended,
after the piece's ids were written. A new run with the same input and tokenizer reads the last
line that the .partial file holds in full, cuts off anything after it, and continues from
INPUT_END. When the input is done, the header gets the real length and .partial is renamed to
OUTPUT in one step, so OUTPUT is whole or absent.
"""

import io
import json
import os
from pathlib import Path

import numpy as np

from llm.atomic_write import fsync_directory


class TokenFileWriter:
    """Appends ids to OUTPUT.partial; `resume_from` is the input offset to continue from (0 for
    a fresh start) and `length` the ids already written. `source` identifies what is encoded
    (input, its size and time, tokenizer): progress is reused only when it is the same."""

    def __init__(self, output: str | Path, dtype: np.dtype, source: dict) -> None:
        self.output = Path(output)
        self.partial = self.output.with_name(self.output.name + ".partial")
        self.progress_path = self.output.with_name(self.output.name + ".progress")
        self.dtype = np.dtype(dtype)
        self.source = {**source, "dtype": self.dtype.name}
        self.resume_from, self.length = self._resume()
        self._data = self.partial.open("r+b")
        self._data.seek(self.header_size + self.length * self.dtype.itemsize)
        self._progress = self.progress_path.open("a", encoding="utf-8")

    def _resume(self) -> tuple[int, int]:
        """(input offset, ids written) of the progress that matches source; else a fresh start."""
        self.header_size = len(_header(self.dtype, 0))
        done = _progress_done(self.progress_path, self.source)
        if done and self.partial.is_file():
            size = self.partial.stat().st_size
            fits = [
                (end, n) for end, n in done if self.header_size + n * self.dtype.itemsize <= size
            ]
            if fits:  # cut what came after them: ids and a line a kill left unfinished
                end, n = fits[-1]
                with self.partial.open("r+b") as f:
                    f.truncate(self.header_size + n * self.dtype.itemsize)
                lines = [json.dumps(self.source)] + [f"{e} {k}" for e, k in fits]
                self.progress_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
                return end, n
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.partial.write_bytes(_header(self.dtype, 0))  # the length is known only at the end
        self.progress_path.write_text(json.dumps(self.source) + "\n", encoding="utf-8")
        return 0, 0

    def append(self, ids: np.ndarray, input_end: int) -> None:
        """Write the ids of the input up to byte `input_end`, then record them as done."""
        self._data.write(np.asarray(ids, dtype=self.dtype).tobytes())
        self._data.flush()  # in the OS before the progress line that counts on it
        self.length += len(ids)
        self._progress.write(f"{input_end} {self.length}\n")
        self._progress.flush()

    def finish(self) -> int:
        """Write the real length into the header and rename .partial to OUTPUT (durably); the
        progress file goes. Returns the number of ids."""
        header = _header(self.dtype, self.length)
        if len(header) != self.header_size:
            raise RuntimeError("the .npy header changed size")  # numpy leaves room for it
        self._data.seek(0)
        self._data.write(header)
        self._data.flush()
        os.fsync(self._data.fileno())
        self.close()
        os.replace(self.partial, self.output)
        fsync_directory(self.output.parent)
        self.progress_path.unlink()
        return self.length

    def discard(self) -> None:
        """Remove the partial output and its progress (after an error no rerun can get past)."""
        self.close()
        self.partial.unlink(missing_ok=True)
        self.progress_path.unlink(missing_ok=True)

    def close(self) -> None:
        self._data.close()
        self._progress.close()


def _progress_done(path: Path, source: dict) -> list[tuple[int, int]]:
    """The (input end, ids) lines of a progress file for `source`; [] for another or none."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    try:
        if json.loads(lines[0]) != source:
            return []
    except json.JSONDecodeError:
        return []
    done = []
    for line in lines[1:-1]:  # the last one is "" or a line cut short: not finished
        end, n = line.split()
        done.append((int(end), int(n)))
    return done


def _header(dtype: np.dtype, length: int) -> bytes:
    """The header of a 1-D .npy array of `length` ids. numpy pads it so that a longer shape fits
    in as many bytes, so it can be rewritten once the length is known."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
    np.lib.format.write_array_header_1_0(buffer, {**header, "shape": (length,)})
    return buffer.getvalue()
