"""llm.download against a local HTTP server on 127.0.0.1 (never the internet).

The server imitates Hugging Face: /resolve/<name> answers 302 with an X-Linked-ETag header (the
sha256) and points to /cdn/<name>, which serves the bytes and honours `Range: bytes=N-`.
"""

import gzip
import hashlib
import random
import socket
import subprocess
import sys
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm import download
from llm.config import ConfigError
from llm.download import ChecksumError, DownloadError, OfflineError, RemoteFile

DATA = random.Random(0).randbytes(300_000)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/resolve/"):
            self.send_response(302)
            self.send_header("Location", f"/cdn/{name}")
            if name in srv.etags:
                self.send_header("X-Linked-Etag", f'"{srv.etags[name]}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if name not in srv.files:
            self.send_error(404)
            return
        body = srv.files[name]
        start = 0
        if self.headers.get("Range") and not srv.ignore_range:
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            first = 0 if srv.wrong_range else start  # a broken server: the range it was not asked
            self.send_header("Content-Range", f"bytes {first}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        sent = body[start:] if srv.cut_after is None else body[start : start + srv.cut_after]
        srv.bytes_sent += len(sent)  # counted before sending: the client may finish first
        self.wfile.write(sent)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.etags, srv.requests = {}, {}, []
    srv.ignore_range, srv.cut_after, srv.bytes_sent, srv.wrong_range = False, None, 0, False
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _serve(srv, name: str, body: bytes, etag: str | None = "correct") -> RemoteFile:
    srv.files[name] = body
    if etag == "correct":
        srv.etags[name] = hashlib.sha256(body).hexdigest()
    elif etag is not None:
        srv.etags[name] = etag
    return RemoteFile("train", f"{srv.url}/resolve/{name}")


def test_full_download_follows_redirect_and_checks_server_sha256(server, tmp_path):
    remote = _serve(server, "stories.txt", DATA)
    path = download.download_file(remote, tmp_path, progress=False)
    assert path == tmp_path / "stories.txt"
    assert path.read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stories.txt"]  # no .part left
    assert [p for p, _ in server.requests] == ["/resolve/stories.txt", "/cdn/stories.txt"]


def test_partial_download_is_resumed_with_range(server, tmp_path):
    remote = _serve(server, "stories.txt", DATA)
    (tmp_path / "stories.txt.part").write_bytes(DATA[:123_456])
    path = download.download_file(remote, tmp_path, progress=False)
    assert path.read_bytes() == DATA
    assert ("/resolve/stories.txt", "bytes=123456-") in server.requests
    assert ("/cdn/stories.txt", "bytes=123456-") in server.requests  # Range kept over redirect
    assert server.bytes_sent == len(DATA) - 123_456


def test_interrupted_download_keeps_part_then_resumes(server, tmp_path):
    remote = _serve(server, "stories.txt", DATA)
    server.cut_after = 100_000
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download.download_file(remote, tmp_path, progress=False)
    part = tmp_path / "stories.txt.part"
    assert part.read_bytes() == DATA[:100_000]
    assert not (tmp_path / "stories.txt").exists()
    server.cut_after = None
    assert download.download_file(remote, tmp_path, progress=False).read_bytes() == DATA
    assert not part.exists()


def test_complete_part_answered_416_is_verified_and_kept(server, tmp_path):
    remote = _serve(server, "stories.txt", DATA)
    (tmp_path / "stories.txt.part").write_bytes(DATA)
    assert download.download_file(remote, tmp_path, progress=False).read_bytes() == DATA
    assert server.bytes_sent == 0


def test_server_ignoring_range_restarts_from_scratch(server, tmp_path):
    remote = _serve(server, "stories.txt", DATA)
    server.ignore_range = True
    (tmp_path / "stories.txt.part").write_bytes(b"junk that must not stay at the front")
    assert download.download_file(remote, tmp_path, progress=False).read_bytes() == DATA


def test_bad_checksum_is_rejected_and_the_file_deleted(server, tmp_path):
    remote = _serve(server, "stories.txt", DATA, etag="ab" * 32)
    with pytest.raises(ChecksumError, match="corrupt") as err:
        download.download_file(remote, tmp_path, progress=False)
    assert hashlib.sha256(DATA).hexdigest() in str(err.value)  # names the actual hash
    assert list(tmp_path.iterdir()) == []


def test_corrupted_resumed_part_is_rejected(server, tmp_path):
    remote = _serve(server, "stories.txt", DATA)
    (tmp_path / "stories.txt.part").write_bytes(b"x" * 1000)  # a wrong prefix
    with pytest.raises(ChecksumError):
        download.download_file(remote, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_known_hash_table_entry_is_used_without_server_hash(server, tmp_path):
    _serve(server, "a.txt", DATA, etag=None)
    good = RemoteFile("train", f"{server.url}/resolve/a.txt", hashlib.sha256(DATA).hexdigest())
    assert download.download_file(good, tmp_path, progress=False).read_bytes() == DATA

    _serve(server, "b.txt", DATA, etag=None)
    bad = RemoteFile("train", f"{server.url}/resolve/b.txt", "00" * 32)
    with pytest.raises(ChecksumError, match="corrupt"):
        download.download_file(bad, tmp_path, progress=False)
    assert not (tmp_path / "b.txt").exists() and not (tmp_path / "b.txt.part").exists()


def test_known_hash_disagreeing_with_server_is_an_error(server, tmp_path):
    _serve(server, "a.txt", DATA)  # the server sends the true sha256
    remote = RemoteFile("train", f"{server.url}/resolve/a.txt", "11" * 32)
    with pytest.raises(ChecksumError, match="changed upstream"):
        download.download_file(remote, tmp_path, progress=False)
    assert not (tmp_path / "a.txt").exists()


def test_no_hash_anywhere_checks_size_only(server, tmp_path, capsys):
    remote = _serve(server, "a.txt", DATA, etag=None)
    assert download.download_file(remote, tmp_path, progress=False).read_bytes() == DATA
    assert "no sha256 known" in capsys.readouterr().out


def test_server_sha256_reads_only_lfs_etags():
    sha = "0123456789abcdef" * 4
    lfs, plain, weak = Message(), Message(), Message()
    lfs["X-Linked-Etag"] = f'"{sha.upper()}"'
    plain["ETag"] = f'"{sha}"'  # a plain ETag is not a content hash we can trust
    weak["X-Linked-Etag"] = '"abc123"'  # not a sha256
    assert download.server_sha256([plain, lfs]) == sha
    assert download.server_sha256([plain, weak]) is None


def test_gz_is_unpacked_and_removed(server, tmp_path):
    text = b"hello<|endoftext|>world<|endoftext|>" * 1000
    remote = _serve(server, "owt_valid.txt.gz", gzip.compress(text))
    path = download.download_file(remote, tmp_path, progress=False)
    assert path == tmp_path / "owt_valid.txt"
    assert path.read_bytes() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owt_valid.txt"]


def test_existing_final_file_is_not_downloaded_again(server, tmp_path):
    remote = _serve(server, "stories.txt", DATA)
    (tmp_path / "stories.txt").write_bytes(b"already here")
    assert download.download_file(remote, tmp_path, progress=False).read_bytes() == b"already here"
    assert server.requests == []


def test_http_error_is_reported(server, tmp_path):
    remote = RemoteFile("train", f"{server.url}/cdn/missing.txt")
    with pytest.raises(DownloadError, match="HTTP 404"):
        download.download_file(remote, tmp_path, progress=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_error_says_what_to_download_and_where(tmp_path, monkeypatch, capsys):
    base = f"http://127.0.0.1:{_closed_port()}"
    remotes = (RemoteFile("train", f"{base}/x/owt_train.txt.gz"),
               RemoteFile("valid", f"{base}/x/owt_valid.txt.gz"))  # fmt: skip
    monkeypatch.setitem(download.DATASETS, "owt", remotes)
    with pytest.raises(OfflineError) as err:
        download.download_dataset("owt", tmp_path, progress=False)
    message = str(err.value)
    assert "could not reach 127.0.0.1" in message
    for remote in remotes:
        assert remote.url in message
        assert str(tmp_path / remote.name) in message
    assert "it unpacks the .gz files" in message

    with pytest.raises(SystemExit) as exit_:
        download.main(["owt", "--data-dir", str(tmp_path), "--split", "valid"])
    assert exit_.value.code == 1
    err_text = capsys.readouterr().err
    assert err_text.startswith("error: could not reach") and err_text.count("\n") == 1
    assert remotes[1].url in err_text and remotes[0].url not in err_text
    assert list(tmp_path.iterdir()) == []


def test_gz_put_there_by_hand_is_unpacked_offline(tmp_path):
    remote = RemoteFile("valid", f"http://127.0.0.1:{_closed_port()}/x/owt_valid.txt.gz")
    (tmp_path / "owt_valid.txt.gz").write_bytes(gzip.compress(b"by hand<|endoftext|>"))
    path = download.download_file(remote, tmp_path, progress=False)
    assert path.read_bytes() == b"by hand<|endoftext|>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owt_valid.txt"]


def test_corrupt_gz_is_an_error_and_leaves_no_output(tmp_path):
    remote = RemoteFile("valid", f"http://127.0.0.1:{_closed_port()}/x/owt_valid.txt.gz")
    (tmp_path / "owt_valid.txt.gz").write_bytes(gzip.compress(DATA)[:100_000])  # truncated
    with pytest.raises(DownloadError, match="not a valid .gz file"):
        download.download_file(remote, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owt_valid.txt.gz"]


def test_main_downloads_a_dataset(server, tmp_path, monkeypatch, capsys):
    train = _serve(server, "t_train.txt", DATA)
    valid = RemoteFile("valid", _serve(server, "t_valid.txt", DATA[:5000]).url)
    monkeypatch.setitem(download.DATASETS, "tinystories", (train, valid))
    download.main(["tinystories", "--data-dir", str(tmp_path)])
    assert (tmp_path / "t_train.txt").read_bytes() == DATA
    assert (tmp_path / "t_valid.txt").read_bytes() == DATA[:5000]
    assert "t_valid.txt" in capsys.readouterr().out


def test_real_dataset_table_names_the_expected_files():
    names = {name: [r.name for r in remotes] for name, remotes in download.DATASETS.items()}
    assert names == {
        "tinystories": ["TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-valid.txt"],
        "owt": ["owt_train.txt.gz", "owt_valid.txt.gz"],
        "fineweb-edu": ["fineweb-edu-10BT-000.parquet"],
    }
    (fineweb,) = download.DATASETS["fineweb-edu"]
    assert fineweb.final_name == "fineweb-edu-10BT-000.txt"
    assert fineweb.url.endswith(
        "/HuggingFaceFW/fineweb-edu/resolve/main/sample/10BT/000_00000.parquet"
    )
    assert all(r.url.startswith("https://huggingface.co/datasets/") for r in
               download.DATASETS["tinystories"] + download.DATASETS["owt"])  # fmt: skip


def test_server_sending_the_wrong_range_is_an_error_and_the_part_is_kept(server, tmp_path):
    remote = _serve(server, "stories.txt", DATA)
    server.wrong_range = True
    part = tmp_path / "stories.txt.part"
    part.write_bytes(DATA[:1000])
    with pytest.raises(DownloadError, match="the server sent the wrong range; delete"):
        download.download_file(remote, tmp_path, progress=False)
    assert part.read_bytes() == DATA[:1000]  # nothing appended at the wrong place
    assert not (tmp_path / "stories.txt").exists()


def test_known_hash_may_be_written_in_upper_case(server, tmp_path):
    _serve(server, "a.txt", DATA)
    remote = RemoteFile(
        "train", f"{server.url}/resolve/a.txt", hashlib.sha256(DATA).hexdigest().upper()
    )
    assert download.download_file(remote, tmp_path, progress=False).read_bytes() == DATA


def test_unknown_dataset_is_named():
    with pytest.raises(
        DownloadError, match="unknown dataset 'wiki'; choose one of tinystories, owt"
    ):
        download.download_dataset("wiki", Path("unused"))


def test_offline_error_lists_only_the_files_still_missing(tmp_path, monkeypatch):
    base = f"http://127.0.0.1:{_closed_port()}"
    remotes = (RemoteFile("train", f"{base}/x/t_train.txt"),
               RemoteFile("valid", f"{base}/x/t_valid.txt"))  # fmt: skip
    monkeypatch.setitem(download.DATASETS, "tinystories", remotes)
    (tmp_path / "t_valid.txt").write_text("downloaded earlier")
    with pytest.raises(OfflineError) as err:
        download.download_dataset("tinystories", tmp_path, progress=False)
    assert remotes[0].url in str(err.value) and remotes[1].url not in str(err.value)
    assert (tmp_path / "t_valid.txt").read_text() == "downloaded earlier"


def test_the_data_directory_is_created_once_the_server_answers(server, tmp_path):
    remote = _serve(server, "stories.txt", DATA)
    path = download.download_file(remote, tmp_path / "new" / "data", progress=False)
    assert path == tmp_path / "new" / "data" / "stories.txt" and path.read_bytes() == DATA


def test_the_data_modules_download_command(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(download, "download", calls.append)
    download.data_main(["download", "tinystories", "--data-dir", "x", "--split=valid"])
    assert calls == [download.DownloadConfig("tinystories", split="valid", data_dir="x")]
    with pytest.raises(SystemExit) as exit_:
        download.data_main(["--help"])
    assert exit_.value.code == 0 and "download" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        download.data_main([])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: the command must be one of download; none was given\n"


def test_uv_run_llm_data_download_still_runs_the_command():
    """`uv run -m llm.data download ...` as the README writes it: llm/data.py's __main__."""
    argv = [sys.executable, "-m", "llm.data", "download", "wiki"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "error: unknown dataset 'wiki'; choose one of tinystories, owt, fineweb-edu\n"
    )


def parquet_shard(path: Path, texts: list[str]) -> bytes:
    """A FineWeb-style shard: a `text` column beside others, in row groups of 2 documents."""
    table = pa.table({"text": texts, "id": [f"doc{i}" for i in range(len(texts))],
                      "score": [3.5] * len(texts)})  # fmt: skip
    pq.write_table(table, path, row_group_size=2)
    return path.read_bytes()


DOCS = ["First document.\nTwo lines.", "Ünïcödé 😀", "", "the last one"]


def test_a_fineweb_parquet_shard_is_downloaded_checked_and_written_as_text(server, tmp_path):
    body = parquet_shard(tmp_path / "made.parquet", DOCS)
    (tmp_path / "made.parquet").unlink()
    served = _serve(server, "000_00000.parquet", body)
    remote = RemoteFile("train", served.url, save_as="fw-000.parquet")
    path = download.download_file(remote, tmp_path, progress=False)
    assert path == tmp_path / "fw-000.txt"
    assert path.read_text(encoding="utf-8") == "".join(d + "<|endoftext|>" for d in DOCS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fw-000.txt"]  # the shard is gone


def test_fineweb_offline_says_what_to_fetch_and_converts_a_shard_put_there_by_hand(
    tmp_path, monkeypatch
):
    url = f"http://127.0.0.1:{_closed_port()}/x/sample/10BT/000_00000.parquet"
    remote = RemoteFile("train", url, save_as="fw-000.parquet")
    monkeypatch.setitem(download.DATASETS, "fineweb-edu", (remote,))
    with pytest.raises(OfflineError) as err:
        download.download_dataset("fineweb-edu", tmp_path, progress=False)
    assert f"{url} -> {tmp_path / 'fw-000.parquet'}" in str(err.value)
    assert "it writes the .parquet shard's text" in str(err.value)
    parquet_shard(tmp_path / "fw-000.parquet", DOCS[:1])
    assert download.download_dataset("fineweb-edu", tmp_path, progress=False) == [
        tmp_path / "fw-000.txt"
    ]
    assert (tmp_path / "fw-000.txt").read_text() == DOCS[0] + "<|endoftext|>"


def test_a_bad_parquet_shard_is_an_error_and_leaves_no_text(tmp_path):
    remote = RemoteFile("train", f"http://127.0.0.1:{_closed_port()}/x/a.parquet")
    (tmp_path / "a.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DownloadError, match="is not a FineWeb .parquet shard"):
        download.download_file(remote, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet"]


def test_fineweb_settings_are_checked_before_any_download(tmp_path, monkeypatch):
    config = download.DownloadConfig("fineweb-edu", data_dir=str(tmp_path), split="valid")
    with pytest.raises(ConfigError, match="fineweb-edu has no valid split"):
        download.check_config(config)
    find_spec = download.importlib.util.find_spec
    monkeypatch.setattr(download.importlib.util, "find_spec",
                        lambda name: None if name == "pyarrow" else find_spec(name))  # fmt: skip
    with pytest.raises(ConfigError, match="read with pyarrow: uv sync --extra fineweb"):
        download.check_config(download.DownloadConfig("fineweb-edu", data_dir=str(tmp_path)))
