import builtins
import os
import pickle
import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import SMALL

from llm import checkpoint as ckpt
from llm.checkpoint import (
    CheckpointError,
    clean_state_dict,
    load_checkpoint,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from llm.optim import AdamW, param_groups
from llm.transformer import ModelConfig, Transformer, cross_entropy


def _trained(steps: int = 3, config: ModelConfig = SMALL) -> tuple[Transformer, AdamW]:
    torch.manual_seed(0)
    model = Transformer(config)
    optimizer = AdamW(param_groups(model, 0.1), lr=1e-2)
    for _ in range(steps):
        x = torch.randint(0, config.vocab_size, (2, 16))
        cross_entropy(model(x), x).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            _assert_same_state(a[key], b[key])
        else:
            assert a[key] == b[key], key


def _draw(gen: torch.Generator) -> tuple:
    """One number from every random number generator a checkpoint restores."""
    return (
        random.random(),
        np.random.rand(),
        torch.rand(1),
        torch.randint(0, 99, (4,), generator=gen),
    )


def test_round_trip_restores_model_optimizer_configs_and_rngs(tmp_path):
    model, optimizer = _trained()
    gen = torch.Generator().manual_seed(5)
    torch.randint(0, 10, (3,), generator=gen)
    path = save_checkpoint(
        model, optimizer, 3, tmp_path / "c.pt", train_config={"max_lr": 0.01},
        tokenizer_dir="tok", data_generator=gen, extra={"loss_sum": 1.5},
    )  # fmt: skip
    after_save = _draw(gen)

    fresh = Transformer(SMALL)
    fresh_opt = AdamW(param_groups(fresh, 0.1), lr=1e-2)
    fresh_gen = torch.Generator()
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    step = load_checkpoint(path, fresh, fresh_opt, data_generator=fresh_gen, restore_rng=True)
    assert step == 3
    _assert_same_state(fresh.state_dict(), model.state_dict())
    _assert_same_state(fresh_opt.state_dict()["state"], optimizer.state_dict()["state"])
    after_load = _draw(fresh_gen)
    assert after_load[:2] == after_save[:2]
    assert torch.equal(after_load[2], after_save[2]) and torch.equal(after_load[3], after_save[3])

    saved = read_checkpoint(path)
    assert saved["model_config"]["d_model"] == 32 and saved["train_config"] == {"max_lr": 0.01}
    assert saved["tokenizer_dir"] == "tok" and saved["extra"] == {"loss_sum": 1.5}


def test_compiled_and_ddp_prefixes_are_stripped(tmp_path, monkeypatch):
    model, optimizer = _trained(1)
    compiled = torch.compile(model)  # wrapping only: nothing is compiled until it is called
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    save_checkpoint(compiled, optimizer, 1, tmp_path / "compiled.pt")
    assert not any("_orig_mod" in k for k in read_checkpoint(tmp_path / "compiled.pt")["model"])

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29000 + os.getpid() % 1000))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(torch.compile(model))
        assert next(iter(wrapped.state_dict())).startswith("module._orig_mod.")
        save_checkpoint(wrapped, optimizer, 1, tmp_path / "ddp.pt")
    finally:
        dist.destroy_process_group()
    keys = set(read_checkpoint(tmp_path / "ddp.pt")["model"])
    assert keys == set(model.state_dict())

    # A file written by other code with prefixes still loads into a plain model.
    prefixed = {"module._orig_mod." + k: v for k, v in model.state_dict().items()}
    torch.save({"model": prefixed, "iteration": 7}, tmp_path / "other.pt")
    fresh = Transformer(SMALL)
    assert load_checkpoint(tmp_path / "other.pt", fresh) == 7
    _assert_same_state(fresh.state_dict(), model.state_dict())


def test_clean_state_dict():
    value = torch.zeros(1)
    cleaned = clean_state_dict(
        {"module._orig_mod.a.b": value, "c": value, "_orig_mod.module.d": value}
    )
    assert list(cleaned) == ["a.b", "c", "d"]


class _Payload:
    """Unpickling this calls open(marker, "w"): a stand-in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "raw pickle"])
def test_malicious_checkpoint_is_refused(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    evil = {"model": {}, "iteration": 0, "payload": _Payload(marker)}
    if writer == "torch.save":
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path, Transformer(SMALL))
    assert not marker.exists()  # the payload never ran
    if writer == "raw pickle":  # and the payload is real: plain pickle runs it
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_atomic_save_keeps_the_old_checkpoint_when_a_save_fails(tmp_path, monkeypatch):
    model, optimizer = _trained(1)
    path = save_checkpoint(model, optimizer, 1, tmp_path / "c.pt")
    good = path.read_bytes()

    def crash_midway(obj, f):
        f.write(b"PK\x03\x04 partial data")  # a torn write, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, optimizer, 2, path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["c.pt"]  # no temp file left behind
    monkeypatch.undo()
    assert load_checkpoint(path, Transformer(SMALL)) == 1


def test_mismatching_checkpoint_is_a_clear_error(tmp_path):
    model, optimizer = _trained(1)
    save_checkpoint(model, optimizer, 1, tmp_path / "c.pt")
    other = Transformer(ModelConfig(**{**SMALL.__dict__, "d_model": 64, "d_ff": 64}))
    with pytest.raises(CheckpointError, match=r"does not fit") as error:
        load_checkpoint(tmp_path / "c.pt", other)
    message = str(error.value)
    assert "embedding.weight: checkpoint (64, 32) vs model (64, 64)" in message
    assert "d_model=32 (model has 64)" in message
    deeper = Transformer(ModelConfig(**{**SMALL.__dict__, "num_layers": 2}))
    with pytest.raises(CheckpointError, match="missing blocks.1.attn.qkv_proj.weight"):
        load_checkpoint(tmp_path / "c.pt", deeper)


def test_unreadable_and_missing_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "missing.pt")
    model, optimizer = _trained(1)
    path = save_checkpoint(model, optimizer, 1, tmp_path / "c.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        read_checkpoint(tmp_path / "cut.pt")
    np.save(tmp_path / "tokens.npy", np.arange(4))  # never unpickled: not a torch.save file
    with pytest.raises(CheckpointError, match="tokens.npy is not a checkpoint"):
        read_checkpoint(tmp_path / "tokens.npy")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "notours.pt")
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        read_checkpoint(tmp_path / "notours.pt")


def test_load_model_from_file_or_run_dir(tmp_path):
    model, optimizer = _trained(2)
    save_checkpoint(model, optimizer, 2, tmp_path / ckpt.CHECKPOINT_NAME, tokenizer_dir="tok")
    x = torch.randint(0, 64, (1, 16))
    for source in (tmp_path, tmp_path / ckpt.CHECKPOINT_NAME):
        loaded, checkpoint = load_model(source)
        assert not loaded.training and loaded.config == SMALL
        assert checkpoint["tokenizer_dir"] == "tok" and checkpoint["iteration"] == 2
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


def test_load_model_needs_a_model_config_this_code_understands(tmp_path):
    model, optimizer = _trained(1)
    save_checkpoint(model, optimizer, 1, tmp_path / "c.pt")
    checkpoint = read_checkpoint(tmp_path / "c.pt")
    torch.save({**checkpoint, "model_config": None}, tmp_path / "no_config.pt")
    with pytest.raises(CheckpointError, match="holds no model_config; cannot rebuild the model"):
        load_model(tmp_path / "no_config.pt")
    future = {**checkpoint["model_config"], "num_experts": 8}  # written by newer code
    torch.save({**checkpoint, "model_config": future}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="does not fit this code: unknown config key"):
        load_model(tmp_path / "future.pt")


def test_resuming_needs_the_optimizer_and_data_sampler_states(tmp_path):
    model, _ = _trained(1)
    save_checkpoint(model, None, 1, tmp_path / "weights_only.pt")  # as for generation
    fresh = Transformer(SMALL)
    with pytest.raises(CheckpointError, match="holds no optimizer state; cannot resume"):
        load_checkpoint(tmp_path / "weights_only.pt", fresh, AdamW(fresh.parameters()))
    with pytest.raises(CheckpointError, match="holds no data-sampler state; cannot resume"):
        load_checkpoint(
            tmp_path / "weights_only.pt", fresh, data_generator=torch.Generator(), restore_rng=True
        )
    assert load_checkpoint(tmp_path / "weights_only.pt", fresh) == 1  # weights alone: fine


def test_many_mismatches_are_listed_up_to_ten(tmp_path):
    model, optimizer = _trained(1)
    save_checkpoint(model, optimizer, 1, tmp_path / "c.pt")
    deeper = Transformer(ModelConfig(**{**SMALL.__dict__, "num_layers": 4}))
    with pytest.raises(CheckpointError, match=r"\(\d+ problems\)") as error:
        load_checkpoint(tmp_path / "c.pt", deeper)
    message = str(error.value)
    count = int(message.split("(")[1].split(" problems")[0])
    assert count == sum(k.startswith(("blocks.1.", "blocks.2.", "blocks.3.")) for k in
                        deeper.state_dict())  # fmt: skip
    assert message.count("\n  missing ") == 10 and "\n  ..." in message
    assert "num_layers=1 (model has 4)" in message


def test_damaged_checkpoint_files_are_checkpoint_errors(tmp_path):
    """A checkpoint cut short by a full disk or an interrupted copy (torch.load raises OSError at
    most cut points) and a file that is not a checkpoint at all (KeyError from the unpickler)
    are both CheckpointError, which the training and generation commands report in one line."""
    model, optimizer = _trained(1)
    good = save_checkpoint(model, optimizer, 1, tmp_path / "c.pt").read_bytes()
    damaged = {f"cut_{n}": good[:n] for n in (200, len(good) // 4, len(good) // 2, len(good) - 100)}
    damaged["text"] = b"hello world, not a checkpoint at all"
    failures = {}
    for name, data in damaged.items():
        (tmp_path / name).write_bytes(data)
        try:
            read_checkpoint(tmp_path / name)
            failures[name] = "no error"
        except CheckpointError:
            pass
        except Exception as e:  # noqa: BLE001 - the test reports which errors escape
            failures[name] = f"{type(e).__name__}: {e}"
    assert failures == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA RNG state exists only with CUDA")
def test_cuda_rng_state_round_trips_through_a_checkpoint(tmp_path):
    torch.cuda.manual_seed_all(3)
    torch.rand(1, device="cuda")  # start CUDA, so that its state is saved
    save_checkpoint(Transformer(SMALL), None, 0, tmp_path / "c.pt")
    expected = torch.rand(4, device="cuda")
    torch.rand(100, device="cuda")  # move the generator on
    load_checkpoint(tmp_path / "c.pt", Transformer(SMALL), restore_rng=True)
    assert torch.equal(torch.rand(4, device="cuda"), expected)
