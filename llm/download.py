"""Download the real datasets into data/: TinyStories (V2, GPT-4), the CS336 OpenWebText sample,
and a shard of FineWeb-Edu's 10BT sample.

    uv run -m llm.data download tinystories            # train ~2.2 GB, valid ~22 MB
    uv run -m llm.data download owt --split valid      # owt_valid.txt.gz, unpacked
    uv run -m llm.data download fineweb-edu            # one ~2 GB .parquet shard, as text

A download goes into `<file>.part` and resumes from where it stopped (an HTTP Range request) when
run again. The finished file is checked against a sha256: the one in our table when we know it,
otherwise the one Hugging Face sends for large (LFS) files in the X-Linked-ETag header. A bad
file is deleted, never left in place. `.gz` files are unpacked, and `.parquet` shards
(FineWeb-Edu's) become text files of their documents, each followed by <|endoftext|> (reading
them needs pyarrow: `uv sync --extra fineweb`). Without network, the error says which URL to
fetch by hand and where to put it.
"""

import gzip
import hashlib
import http.client
import importlib.util
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from tqdm import tqdm

from llm.atomic_write import atomic_write, remove_stale_temp_files
from llm.bpe_tokenizer import EOT  # ends each document of a converted .parquet shard
from llm.cli import parse, parse_command, run_main
from llm.config import ConfigError
from llm.paths import check_writable_dir

CHUNK = 1 << 20
TINYSTORIES = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main"
OWT = "https://huggingface.co/datasets/stanford-cs336/owt-sample/resolve/main"
FINEWEB_EDU = "https://huggingface.co/datasets/HuggingFaceFW/fineweb-edu/resolve/main"


@dataclass(frozen=True)
class RemoteFile:
    split: str  # "train" or "valid"
    url: str
    sha256: str | None = None  # of the file as served; None: use the server's X-Linked-ETag
    save_as: str = ""  # the name in data/ ("": the URL's last part)

    @property
    def name(self) -> str:  # as saved: "owt_train.txt.gz"
        return self.save_as or self.url.rsplit("/", 1)[-1]

    @property
    def final_name(self) -> str:  # after unpacking: "owt_train.txt"; a .parquet becomes .txt
        name = self.name.removesuffix(".gz")
        return name.removesuffix(".parquet") + ".txt" if name.endswith(".parquet") else name


# We cannot look the real hashes up offline, so none is written here: add one when you know it.
DATASETS: dict[str, tuple[RemoteFile, ...]] = {
    "tinystories": (
        RemoteFile("train", f"{TINYSTORIES}/TinyStoriesV2-GPT4-train.txt"),
        RemoteFile("valid", f"{TINYSTORIES}/TinyStoriesV2-GPT4-valid.txt"),
    ),
    "owt": (
        RemoteFile("train", f"{OWT}/owt_train.txt.gz"),
        RemoteFile("valid", f"{OWT}/owt_valid.txt.gz"),
    ),
    # The first of the 14 shards of the 10-billion-token sample (about 2 GB of .parquet). The
    # sample has no validation split: hold out a part of the text (see the README).
    "fineweb-edu": (
        RemoteFile(
            "train",
            f"{FINEWEB_EDU}/sample/10BT/000_00000.parquet",
            save_as="fineweb-edu-10BT-000.parquet",
        ),
    ),
}


class DownloadError(Exception):
    """A download that failed; the message says what happened and what to do."""


class ChecksumError(DownloadError):
    pass


class OfflineError(DownloadError):
    """The host could not be reached at all."""


class _RedirectRecorder(urllib.request.HTTPRedirectHandler):
    """Keeps the headers of each redirect: Hugging Face puts X-Linked-ETag on its 302."""

    def __init__(self) -> None:
        self.headers: list[Message] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.headers.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def server_sha256(headers: list[Message]) -> str | None:
    """The sha256 that Hugging Face reports for an LFS file (X-Linked-ETag), if any."""
    for h in headers:
        etag = (h.get("X-Linked-Etag") or "").removeprefix("W/").strip('"').lower()
        if re.fullmatch(r"[0-9a-f]{64}", etag):
            return etag
    return None


def sha256_file(path: Path, progress: bool = False) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with (
        open(path, "rb") as f,
        tqdm(total=size, unit="B", unit_scale=True, desc="sha256", disable=not progress) as bar,
    ):
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> list[Message]:
    """Downloads `url` into `part`, continuing an existing `part`; returns the response headers."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "llm-download"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    recorder = _RedirectRecorder()
    try:
        response = urllib.request.build_opener(recorder).open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # nothing left after `start`: the .part is complete
            return [*recorder.headers, e.headers]
        raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise OfflineError(f"could not reach {urllib.parse.urlparse(url).netloc}: {reason}") from e
    with response:
        if start and response.status != 206:
            start = 0  # the server ignored our Range: start over
        elif start and not response.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
            raise DownloadError(f"{url}: the server sent the wrong range; delete {part} and retry")
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        part.parent.mkdir(parents=True, exist_ok=True)  # only now: offline, nothing is created
        try:
            with (
                open(part, "ab" if start else "wb") as f,
                tqdm(
                    initial=start,
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=part.name[:-5],
                    disable=not progress,
                ) as bar,
            ):
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise DownloadError(
                f"the download of {url} was interrupted ({e!r}) after "
                f"{part.stat().st_size:,} bytes; run the same command again to resume"
            ) from e
    if total is not None and part.stat().st_size != total:
        raise DownloadError(
            f"the download of {url} stopped after {part.stat().st_size:,} of {total:,} bytes "
            f"(kept in {part}); run the same command again to resume"
        )
    return [*recorder.headers, response.headers]


def _verify(part: Path, known: str | None, served: str | None, progress: bool) -> None:
    """Checks `part` against the known or the server's sha256; deletes it when it is wrong."""
    if known and served and known.lower() != served:
        raise ChecksumError(
            f"the server's sha256 for {part.name[:-5]} is {served}, our table says {known}: "
            "the file has changed upstream; check it and update DATASETS in llm/download.py"
        )
    expected = (known or served or "").lower()
    origin = "in our table" if known else "sent by the server (X-Linked-ETag)"
    if not expected:
        print(f"note: no sha256 known for {part.name[:-5]}; only its size was checked")
        return
    actual = sha256_file(part, progress)
    if actual != expected:
        part.unlink()
        raise ChecksumError(
            f"{part.name[:-5]} is corrupt: sha256 {actual}, expected {expected} ({origin}). "
            "The bad file was deleted; run the command again to download it afresh."
        )


def gunzip(src: Path, dst: Path, progress: bool = True) -> None:
    """Unpacks `src` into `dst` atomically (a temp file, renamed once complete)."""
    try:
        with (
            open(src, "rb") as raw,
            gzip.open(raw) as gz,
            atomic_write(dst) as out,
            tqdm(
                total=src.stat().st_size,
                unit="B",
                unit_scale=True,
                desc=f"gunzip {src.name}",
                disable=not progress,
            ) as bar,
        ):
            while chunk := gz.read(CHUNK):
                out.write(chunk)
                bar.update(raw.tell() - bar.n)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # bad header, truncated, bad data
        raise DownloadError(f"{src} is not a valid .gz file ({e}); delete it and run again") from e


def parquet_to_text(src: Path, dst: Path, progress: bool = True) -> None:
    """Writes the `text` column of a .parquet shard to `dst` atomically, each document followed
    by <|endoftext|>; one row group at a time, so memory holds one group, not the shard."""
    import pyarrow.parquet as pq  # optional (the fineweb extra); check_config made sure of it

    try:
        shard = pq.ParquetFile(src)
        groups = range(shard.num_row_groups)
        with (
            atomic_write(dst) as out,
            tqdm(groups, desc=f"text of {src.name}", unit="group", disable=not progress) as bar,
        ):
            for group in bar:
                texts = shard.read_row_group(group, columns=["text"]).column("text").to_pylist()
                out.write("".join(text + EOT for text in texts).encode("utf-8"))
    except (OSError, KeyError, ValueError) as e:  # pyarrow's errors derive from these
        raise DownloadError(f"{src} is not a FineWeb .parquet shard with a text column ({e}); "
                            "delete it and run again") from e  # fmt: skip


def download_file(
    remote: RemoteFile, data_dir: Path, timeout: float = 30.0, progress: bool = True
) -> Path:
    """Downloads, verifies and unpacks one file into `data_dir`; returns the final path.

    A file is moved from `.part` to its name only once verified, so a file with its own name is
    trusted; a final file already in place is not downloaded again.
    """
    final, served = data_dir / remote.final_name, data_dir / remote.name
    if final.exists():
        return final
    remove_stale_temp_files(data_dir)
    if not served.exists():
        part = served.with_name(served.name + ".part")
        headers = _fetch(remote.url, part, timeout, progress)
        _verify(part, remote.sha256, server_sha256(headers), progress)
        os.replace(part, served)
    if served != final:
        unpack = parquet_to_text if served.suffix == ".parquet" else gunzip
        unpack(served, final, progress)
        served.unlink()
    return final


def manual_instructions(remotes: list[RemoteFile], data_dir: Path) -> str:
    """What to fetch by hand and where to put it, as one sentence (it ends an error line)."""
    moves = "; ".join(f"{remote.url} -> {data_dir / remote.name}" for remote in remotes)
    text = f"download by hand (a browser, or curl -L -O URL) and put in place: {moves}"
    if any(remote.name.endswith(".gz") for remote in remotes):
        text += "; then run this command again: it unpacks the .gz files"
    if any(remote.name.endswith(".parquet") for remote in remotes):
        text += "; then run this command again: it writes the .parquet shard's text"
    return text


def download_dataset(
    name: str, data_dir: Path, split: str = "all", timeout: float = 30.0, progress: bool = True
) -> list[Path]:
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    remotes = [r for r in DATASETS[name] if split in ("all", r.split)]
    paths = []
    for i, remote in enumerate(remotes):
        try:
            paths.append(download_file(remote, data_dir, timeout, progress))
        except OfflineError as e:
            todo = [r for r in remotes[i:] if not (data_dir / r.final_name).exists()]
            raise OfflineError(f"{e}; {manual_instructions(todo, data_dir)}") from e
    return paths


@dataclass
class DownloadConfig:
    """`uv run -m llm.data download DATASET`: what to fetch and where to put it."""

    dataset: str  # tinystories, owt or fineweb-edu
    split: str = "all"  # all, train or valid
    data_dir: str = "data"  # the directory the text files go to
    timeout: float = 30.0  # seconds to wait for each network read


SPLITS = ("all", "train", "valid")
ERRORS = (DownloadError, OSError)  # the failures `run_main` turns into one line (exit 1)


def check_config(config: DownloadConfig) -> None:
    """Raise a ConfigError for a bad setting, before anything is fetched or written."""
    if config.dataset not in DATASETS:
        raise ConfigError(
            f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}"
        )
    if config.split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, not {config.split!r}")
    if config.timeout <= 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, not {config.timeout}")
    check_writable_dir(config.data_dir, "--data-dir")
    if not any(config.split in ("all", r.split) for r in DATASETS[config.dataset]):
        raise ConfigError(f"{config.dataset} has no {config.split} split; use --split all")
    parquet = any(r.name.endswith(".parquet") for r in DATASETS[config.dataset])
    if parquet and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(
            f"{config.dataset} comes as .parquet, read with pyarrow: uv sync --extra fineweb"
        )


def download(config: DownloadConfig) -> list[Path]:
    """Check the settings, download the dataset, and print each file with its size."""
    check_config(config)
    paths = download_dataset(config.dataset, Path(config.data_dir), config.split, config.timeout)
    for path in paths:
        print(f"{path}  ({path.stat().st_size:,} bytes)")
    if config.dataset == "tinystories" and config.data_dir == DownloadConfig.data_dir:
        print("next, the tokenizer and token arrays: uv run -m llm.bpe_tokenizer")
    return paths


def main(argv: list[str] | None = None) -> None:
    """`uv run -m llm.download tinystories|owt|fineweb-edu [--split ...] [--data-dir data]`, the
    same as `uv run -m llm.data download ...`. A failure is one line on stderr, exit status 1."""

    def command() -> None:
        prog = "uv run -m llm.download"
        download(
            parse(DownloadConfig, argv, description=__doc__, prog=prog, positional=("dataset",))
        )

    run_main(command, errors=ERRORS)


def data_main(argv: list[str] | None = None) -> None:
    """`uv run -m llm.data download DATASET [options]`: the same command, as the data module's."""

    def command() -> None:
        _, config = parse_command(
            {
                "download": (
                    DownloadConfig,
                    "download TinyStories, the OpenWebText sample or FineWeb-Edu into data/",
                )
            },
            argv,
            description="Token data for training; this command line fetches the real datasets.",
            prog="uv run -m llm.data",
            positional={"download": ("dataset",)},
        )
        download(config)

    run_main(command, errors=ERRORS)


if __name__ == "__main__":
    main()
