"""A checkpoint written by older code still loads and gives the same logits.

tests/fixtures/legacy-checkpoint-b112436.ckpt was written at commit b112436 (main, before the
layers took the ModelConfig) by this script, run from the repository root:

    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=32, context_length=16, d_model=16, num_layers=2, num_heads=2, d_ff=24,
        rope_theta=500.0,  # not the default, so a layer that ignores it fails
    )
    model = Transformer(config)
    optimizer = AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):  # a few steps, so the norm gains are not all ones
        ids = torch.randint(0, 32, (4, 17))
        loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_checkpoint(model, optimizer, 3, "tests/fixtures/legacy-checkpoint-b112436.ckpt")
    ids = torch.arange(32).view(2, 16) * 7 % 32
    with torch.no_grad():
        logits = model.eval()(ids)
    json.dump({"token_ids": ids.tolist(), "logits": logits.tolist()},
              open("tests/fixtures/legacy-checkpoint-b112436.json", "w"))

Never regenerate these files: they stand for every checkpoint already on disk. If this test
fails, the change broke loading old checkpoints (a renamed parameter, a changed computation).
"""

import json
from pathlib import Path

import torch

from llm.checkpoint import load_checkpoint, load_model
from llm.optim import AdamW

FIXTURES = Path(__file__).parent / "fixtures"
CHECKPOINT = FIXTURES / "legacy-checkpoint-b112436.ckpt"
REFERENCE = json.loads((FIXTURES / "legacy-checkpoint-b112436.json").read_text())


def test_legacy_checkpoint_gives_the_same_logits():
    model, checkpoint = load_model(CHECKPOINT)  # strict: every saved tensor fits by name
    assert checkpoint["iteration"] == 3
    with torch.no_grad():
        logits = model(torch.tensor(REFERENCE["token_ids"]))
    # Equal up to float32 rounding (assert_close's default tolerance for float32): another CPU
    # or BLAS may round a matmul differently.
    torch.testing.assert_close(logits, torch.tensor(REFERENCE["logits"]))


def test_legacy_checkpoint_resumes_its_optimizer():
    model, _ = load_model(CHECKPOINT)
    optimizer = AdamW(model.parameters(), lr=1e-2)
    assert load_checkpoint(CHECKPOINT, model, optimizer) == 3
    state = optimizer.state[model.lm_head.weight]
    assert state["step"] == 3
    assert state["exp_avg"].shape == model.lm_head.weight.shape
