"""Sharded token data (.npy and llm.c .bin shards read as one stream) and weighted mixtures."""

import numpy as np
import pytest
import torch
from conftest import ctrl_c_at_step, markov_tokens, train_config

from llm import plots, training
from llm.config import ConfigError
from llm.data import DataError, Mixture, TokenStream, get_batch, open_tokens, sample_starts
from llm.training import load_train_config, train


def write_bin(path, tokens, magic=20240520, version=1, dtype=np.uint16):
    """An llm.c shard written from its spec: 256 little-endian int32, then the ids."""
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens)
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype=dtype).tobytes())


@pytest.fixture
def three_shards(tmp_path):
    """shards/ with a .npy, a .bin and a .npy shard (sorted by name), and their concatenation."""
    parts = [np.arange(0, 300), np.arange(300, 350), np.arange(350, 1000)]
    folder = tmp_path / "shards"
    folder.mkdir()
    np.save(folder / "a_000.npy", parts[0].astype(np.uint16))
    write_bin(folder / "a_001.bin", parts[1])
    np.save(folder / "a_002.npy", parts[2].astype(np.uint16))
    return folder, np.concatenate(parts).astype(np.uint16)


def test_a_stream_over_three_shards_equals_their_concatenation(three_shards):
    folder, whole = three_shards
    stream = open_tokens(folder)
    assert isinstance(stream, TokenStream) and len(stream) == len(whole)
    rng = np.random.default_rng(0)
    for start, length in [(0, 1000), (295, 10), (299, 1), (300, 50), (340, 20), (990, 50)]:
        assert np.array_equal(stream[start : start + length], whole[start : start + length])
    for start in rng.integers(0, 1000, 50):  # random windows, many across shard ends
        assert np.array_equal(stream[start : start + 64], whole[start : start + 64])
    # The same seed draws the same batches from the stream as from the concatenated array.
    a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = get_batch(stream, 16, 32, "cpu", a)
        u, v = get_batch(whole, 16, 32, "cpu", b)
        assert torch.equal(x, u) and torch.equal(y, v)


def test_a_glob_picks_its_shards_in_order(three_shards):
    folder, whole = three_shards
    assert np.array_equal(open_tokens(folder / "a_00[12].*")[:], whole[300:])
    with pytest.raises(DataError, match="no token files match"):
        open_tokens(folder / "b_*.npy")
    (folder.parent / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .npy or .bin token shards"):
        open_tokens(folder.parent / "empty")


def test_bin_shards_are_read_only_memory_maps_and_checked(tmp_path):
    write_bin(tmp_path / "gpt2.bin", [5, 6, 7])
    write_bin(tmp_path / "llama.bin", [70_000, 1], magic=20240801, version=7, dtype=np.uint32)
    gpt2, llama = open_tokens(tmp_path / "gpt2.bin"), open_tokens(tmp_path / "llama.bin")
    assert gpt2.dtype == np.uint16 and list(gpt2) == [5, 6, 7] and not gpt2.flags.writeable
    assert llama.dtype == np.uint32 and list(llama) == [70_000, 1]
    write_bin(tmp_path / "bad.bin", [1, 2], magic=1234)
    with pytest.raises(DataError, match="not an llm.c token shard"):
        open_tokens(tmp_path / "bad.bin")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "gpt2.bin").read_bytes()[:-2])
    with pytest.raises(DataError, match="header says 3 tokens, but the file holds 2"):
        open_tokens(tmp_path / "cut.bin")


def test_a_mixture_samples_in_proportion_and_never_across_datasets():
    # Dataset i holds only the id 10 * i, so every window tells where it came from.
    sizes, weights = [5000, 200, 3000], [0.5, 0.2, 0.3]
    datasets = [np.full(n, 10 * i, dtype=np.uint16) for i, n in enumerate(sizes)]
    mixture = Mixture(datasets, [w * 4 for w in weights])  # weights are normalised
    gen = torch.Generator().manual_seed(0)
    draws, ctx = 20_000, 16
    x, y = get_batch(mixture, draws, ctx, "cpu", gen)
    assert torch.equal(x.min(1).values, x.max(1).values)  # one dataset per window
    assert torch.equal(y.min(1).values, x[:, 0])  # targets too: no window runs into the next
    counts = np.bincount(x[:, 0].numpy() // 10, minlength=3)
    for count, w in zip(counts, weights, strict=True):  # binomial: within 5 standard deviations
        assert abs(count - draws * w) < 5 * (draws * w * (1 - w)) ** 0.5
    # Starts are uniform over each dataset: the smallest one's every start is drawn.
    offsets = mixture.offsets
    starts = sample_starts(mixture, draws, ctx, gen).numpy()
    small = starts[(starts >= offsets[1]) & (starts < offsets[2])] - offsets[1]
    assert set(small) == set(range(200 - ctx))
    assert starts.max() <= offsets[3] - ctx - 1


def test_mixture_settings_are_checked(token_data_dir, tmp_path):
    with pytest.raises(DataError, match="one weight > 0 per dataset"):
        Mixture([np.zeros(10), np.zeros(10)], [1.0, 0.0])
    source = [{"path": str(token_data_dir / "train.npy")}]
    with pytest.raises(ConfigError, match="train_data or a \\[\\[data\\]\\] mixture, not both"):
        training.check_config(train_config(token_data_dir, tmp_path, data=source))


def test_a_mixture_run_resumes_exactly(token_data_dir, tmp_path, monkeypatch):
    """A [[data]] mixture from TOML trains, and stopped and resumed it draws the same windows as
    an unbroken run."""
    tokens = markov_tokens(6000, seed=1)
    np.save(tmp_path / "b.npy", tokens)
    toml = tmp_path / "mix.toml"
    toml.write_text(
        f'[[data]]\npath = "{token_data_dir / "train.npy"}"\nweight = 3\n'
        f'[[data]]\npath = "{tmp_path / "b.npy"}"\nweight = 1\n'
    )
    monkeypatch.setattr(plots, "plot_run", lambda run_dir: [])  # seconds of matplotlib: not here
    starts, sample = [], training.sample_starts
    monkeypatch.setattr(
        training, "sample_starts", lambda *a: starts.append(sample(*a)) or starts[-1]
    )

    def run(name, *flags):
        starts.clear()
        small = "--model.d_model 32 --model.num_layers 1 --model.num_heads 2 --model.d_ff 64"
        common = "--max_iters 6 --warmup_iters 1 --batch_size 4 --device cpu --final_eval none"
        flags = [str(toml), "--run_dir", str(tmp_path / name), *common.split(), *small.split()]
        train(load_train_config([*flags, "--model.context_length", "16"]))
        return list(starts)

    full = run("full")
    schedule = ctrl_c_at_step(monkeypatch, training, 3)  # stop after step 3 and save
    first = run("split")
    monkeypatch.setattr(training, "cos_lr_scheduler", schedule)  # (plot_run stays patched)
    starts.clear()
    train(load_train_config(["--run_dir", str(tmp_path / "split"), "--resume"]))
    resumed = first + starts
    assert len(first) == 4 and len(resumed) == 6
    assert all(torch.equal(a, b) for a, b in zip(full, resumed, strict=True))
    both = torch.cat(full)
    assert (both < 20_000).any() and (both >= 20_000).any()  # both datasets were drawn
