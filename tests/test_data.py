import numpy as np
import pytest
import torch

from llm import data
from llm.data import DataError, check_tokens, eval_starts, get_batch, load_tokens


@pytest.fixture
def arange_file(tmp_path):
    path = tmp_path / "tokens.npy"
    np.save(path, np.arange(1000, dtype=np.uint16))
    return path


def test_load_tokens_is_memory_mapped(arange_file):
    tokens = load_tokens(arange_file)
    assert isinstance(tokens, np.memmap)
    assert tokens.dtype == np.uint16 and len(tokens) == 1000 and tokens[999] == 999


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((10, 10), dtype=np.int32), "1-D"),
        (np.zeros(10, dtype=np.float32), "integer"),
        (np.array(["a", None], dtype=object), "not a .npy array of token ids"),
    ],
)
def test_load_tokens_rejects_bad_files(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=message):
        load_tokens(path)


def test_load_tokens_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="does not exist; make it first: uv run -m llm.bpe_token"):
        load_tokens(tmp_path / "nope.npy")
    preset = tmp_path / "data" / "tinystories-bpe-10k" / "train.npy"  # the presets' data
    with pytest.raises(DataError, match="uv run -m llm.data download tinystories, then"):
        load_tokens(preset)


def test_get_batch_shapes_ranges_and_shift(arange_file):
    tokens = load_tokens(arange_file)
    gen = torch.Generator().manual_seed(0)
    seen_starts = set()
    for _ in range(100):
        x, y = get_batch(tokens, 256, 32, "cpu", gen)
        assert x.shape == y.shape == (256, 32) and x.dtype == y.dtype == torch.int64
        # On arange data each row is a run of consecutive ids and targets are inputs + 1.
        assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(256, 31, dtype=torch.int64))
        assert torch.equal(y, x + 1)
        seen_starts.update(x[:, 0].tolist())
    # Starts cover [0, 1000 - 33] and never go past it (the last target is id 999).
    assert min(seen_starts) == 0 and max(seen_starts) == 1000 - 33
    assert len(seen_starts) == 1000 - 32


def test_get_batch_is_deterministic_for_a_seed(arange_file):
    tokens = load_tokens(arange_file)

    def batches(seed):
        gen = torch.Generator().manual_seed(seed)
        return [get_batch(tokens, 4, 8, "cpu", gen)[0] for _ in range(3)]

    a, b, c = batches(1), batches(1), batches(2)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(u, v) for u, v in zip(a, c, strict=True))


def test_get_batch_generator_state_resumes_the_sequence(arange_file):
    tokens = load_tokens(arange_file)
    gen = torch.Generator().manual_seed(3)
    get_batch(tokens, 4, 8, "cpu", gen)
    state = gen.get_state()
    expected = get_batch(tokens, 4, 8, "cpu", gen)[0]
    resumed = torch.Generator()
    resumed.set_state(state)
    assert torch.equal(get_batch(tokens, 4, 8, "cpu", resumed)[0], expected)


def test_check_tokens_accepts_fitting_data():
    check_tokens(np.array([0, 5, 9, 3], dtype=np.uint16), vocab_size=10, context_length=3)


@pytest.mark.parametrize(
    "tokens, message",
    [
        (np.array([0, 1, 10, 2, 3]), "token id 10, outside the model's vocabulary"),
        (np.array([0, 1, -1, 2, 3]), "token id -1"),
        (np.array([0, 1, 2]), "fewer than context_length \\+ 1 = 4"),
    ],
)
def test_check_tokens_errors(tokens, message):
    with pytest.raises(DataError, match=message):
        check_tokens(tokens, vocab_size=10, context_length=3, name="valid_data")


def test_check_tokens_scans_every_chunk(monkeypatch):
    monkeypatch.setattr(data, "_CHECK_CHUNK", 4)
    tokens = np.zeros(40, dtype=np.int64)
    tokens[37] = 99  # in the last chunk
    with pytest.raises(DataError, match="99"):
        check_tokens(tokens, vocab_size=50, context_length=8)


def test_eval_starts_are_fixed_spread_and_in_range():
    starts = eval_starts(num_tokens=1000, context_length=32, num_windows=10)
    assert np.array_equal(starts, eval_starts(1000, 32, 10))
    assert len(starts) == 10 and starts[0] == 0 and starts[-1] == 1000 - 33
    assert np.all(np.diff(starts) > 32 - 1)  # evenly spread
    # Capped at the number of non-overlapping windows; never empty.
    assert len(eval_starts(100, 32, 64)) == 3
    assert list(eval_starts(33, 32, 5)) == [0]


@pytest.mark.parametrize("damage", ["truncated", "header only", "not npy"])
def test_load_tokens_rejects_damaged_files(arange_file, tmp_path, damage):
    good = arange_file.read_bytes()
    data = {"truncated": good[:500], "header only": good[:50], "not npy": b"hello world"}[damage]
    path = tmp_path / "damaged.npy"
    path.write_bytes(data)
    with pytest.raises(DataError, match="is not a .npy array of token ids"):
        load_tokens(path)


def test_load_tokens_rejects_an_empty_file(tmp_path):
    """An empty file (a `touch`ed or zero-length copy) is a DataError, which `llm.training`
    prints as one line, not np.load's bare EOFError."""
    path = tmp_path / "empty.npy"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="is not a .npy array of token ids"):
        load_tokens(path)
