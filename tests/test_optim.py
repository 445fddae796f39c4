import math
import subprocess
import sys

import pytest
import torch
from conftest import SMALL

from llm.optim import (
    AdamW,
    SGDDecay,
    cos_lr_scheduler,
    gradient_clip,
    param_groups,
    wsd_lr_scheduler,
)
from llm.transformer import ModelConfig, Transformer, cross_entropy


def _train(optimizer_cls, steps: int, **kwargs) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(SMALL)
    optimizer = optimizer_cls(param_groups(model, 0.1), **kwargs)
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, 64, (4, 16), generator=data)
        cross_entropy(model(x), x.roll(-1, dims=1)).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def test_adamw_matches_torch_over_100_steps():
    kwargs = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    ours = _train(AdamW, 100, **kwargs)
    theirs = _train(
        lambda groups, **kw: torch.optim.AdamW(groups, foreach=False, **kw), 100, **kwargs
    )
    ours_params, theirs_params = dict(ours.named_parameters()), dict(theirs.named_parameters())
    torch.testing.assert_close(ours_params, theirs_params, atol=1e-6, rtol=0)
    torch.manual_seed(0)
    start = Transformer(SMALL)  # the weights must actually have moved
    assert not torch.allclose(ours.lm_head.weight, start.lm_head.weight, atol=1e-3)


def test_adamw_first_step_by_hand():
    # Step 1: m_hat = g, v_hat = g^2, so p <- p (1 - lr wd) - lr g / (|g| + eps).
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    p.grad = torch.tensor([0.5, -4.0, 0.0])
    AdamW([p], lr=0.1, weight_decay=0.5, eps=1e-8).step()
    expected = torch.tensor([1.0, -2.0, 3.0]) * (1 - 0.05) - 0.1 * torch.tensor([1.0, -1.0, 0.0])
    torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0)


def test_sgd_decay_step_sizes():
    p = torch.nn.Parameter(torch.zeros(2))
    optimizer = SGDDecay([p], lr=0.5)
    for _ in range(4):
        p.grad = torch.tensor([1.0, -2.0])
        optimizer.step()
    # Steps of lr / sqrt(t + 1) for t = 0..3.
    total = sum(0.5 / math.sqrt(t + 1) for t in range(4))
    torch.testing.assert_close(p.detach(), torch.tensor([-total, 2 * total]))


def test_optimizers_reject_bad_hyperparameters():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="betas"):
        AdamW(p, betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="lr"):
        SGDDecay(p, lr=-1)


def test_cosine_schedule_at_known_points():
    def lr(t):
        return cos_lr_scheduler(t, max_lr=1.0, min_lr=0.1, warmup_iters=7, cosine_cycle_iters=21)

    assert lr(0) == 0.0
    assert lr(3) == pytest.approx(3 / 7)  # linear warm-up
    assert lr(7) == pytest.approx(1.0)  # peak at the end of warm-up
    assert lr(14) == pytest.approx(0.55)  # half-way through the cosine: the mean of max and min
    assert lr(21) == pytest.approx(0.1)
    assert lr(100) == 0.1  # flat after the cycle
    decay = [lr(t) for t in range(7, 22)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert cos_lr_scheduler(0, 1.0, 0.1, 0, 10) == pytest.approx(1.0)  # no warm-up


def test_wsd_schedule_at_known_points():
    def lr(t):
        return wsd_lr_scheduler(
            t, max_lr=1.0, min_lr=0.1, warmup_iters=4, decay_iters=6, total_iters=20
        )

    assert [lr(t) for t in range(5)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])  # warm-up
    assert {lr(t) for t in range(4, 15)} == {1.0}  # stable up to the decay's first step, 14
    assert lr(17) == pytest.approx(0.55)  # half-way down the straight line from 1.0 to 0.1
    assert [lr(t) for t in (20, 21, 100)] == [0.1, 0.1, 0.1]
    decay = [lr(t) for t in range(14, 21)]
    steps = [a - b for a, b in zip(decay, decay[1:], strict=False)]
    assert steps == pytest.approx([0.15] * 6)  # equal steps: linear


@pytest.mark.parametrize("max_norm", [0.01, 1e6])  # clipped, and left alone
def test_gradient_clip_matches_torch(max_norm):
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for a, b in zip(ours, theirs, strict=True):
        a.grad = torch.randn_like(a) * 3
        b.grad = a.grad.clone()
    extra = torch.nn.Parameter(torch.randn(2))  # a parameter without a gradient is skipped
    norm = gradient_clip([*ours, extra], max_norm)
    expected_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    torch.testing.assert_close(norm, expected_norm)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-7, rtol=1e-6)


def test_param_groups_skip_weight_decay_on_norm_gains():
    model = Transformer(ModelConfig(**{**SMALL.__dict__, "tie_embeddings": True}))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} == {
        "blocks.0.attn_norm.weight",
        "blocks.0.ffn_norm.weight",
        "final_norm.weight",
    }
    assert all(p.ndim == 2 for p in decay["params"])
    # Every parameter once (the tied embedding/output matrix is not counted twice).
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_adamw_matches_torch_where_eps_decay_and_lr_changes_matter():
    # A large eps and weight decay make their placement visible, a lr changed between steps
    # (as the schedule does) must be used, and a parameter without a gradient is left alone.
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(4, 3, generator=gen)
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    frozen = torch.nn.Parameter(torch.ones(2))
    kwargs = dict(lr=0.1, betas=(0.8, 0.9), eps=0.1, weight_decay=0.3)
    opt_ours = AdamW([ours, frozen], **kwargs)
    opt_theirs = torch.optim.AdamW([theirs], foreach=False, **kwargs)
    for step in range(6):
        grad = torch.randn(4, 3, generator=gen) * 0.1
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        for opt in (opt_ours, opt_theirs):
            opt.param_groups[0]["lr"] = 0.1 / (step + 1)
            opt.step()
    torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-6, rtol=0)
    assert (ours.detach() - start).abs().min() > 1e-3  # every element moved
    assert torch.equal(frozen.detach(), torch.ones(2)) and frozen not in opt_ours.state


def test_sgd_decay_with_weight_decay_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = SGDDecay([p], lr=0.1, weight_decay=0.5)
    expected = torch.tensor([1.0, -2.0])
    for t in range(3):
        grad = torch.tensor([0.5, 1.0]) * (t + 1)
        p.grad = grad.clone()
        optimizer.step()
        expected = expected * (1 - 0.1 * 0.5) - 0.1 / math.sqrt(t + 1) * grad
    torch.testing.assert_close(p.detach(), expected)


@pytest.mark.parametrize("optimizer_cls", [AdamW, SGDDecay])
def test_step_calls_the_closure_with_grad_enabled_and_returns_its_loss(optimizer_cls):
    p = torch.nn.Parameter(torch.tensor([2.0]))
    optimizer = optimizer_cls([p], lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = (p**2).sum()
        loss.backward()  # fails if the closure ran under no_grad
        return loss

    loss = optimizer.step(closure)
    assert loss.item() == 4.0 and p.item() < 2.0


def test_optimizers_reject_each_bad_hyperparameter():
    p = [torch.nn.Parameter(torch.zeros(1))]
    bad = [dict(lr=-1), dict(eps=-1), dict(weight_decay=-0.1), dict(betas=(-0.1, 0.9))]
    bad += [dict(betas=(0.9, 1.0))]
    for kwargs in bad:
        with pytest.raises(ValueError, match="AdamW needs"):
            AdamW(p, **kwargs)
    with pytest.raises(ValueError, match="SGDDecay needs"):
        SGDDecay(p, weight_decay=-1)


def test_gradient_clip_without_gradients_returns_zero():
    params = [torch.nn.Parameter(torch.ones(3))]
    assert gradient_clip(params, 1.0).item() == 0.0
    assert params[0].grad is None


def test_param_groups_leave_out_frozen_parameters():
    model = Transformer(SMALL)
    model.embedding.weight.requires_grad_(False)
    model.final_norm.weight.requires_grad_(False)
    decay, no_decay = param_groups(model, 0.1)
    grouped = {id(p) for p in decay["params"] + no_decay["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable and id(model.embedding.weight) not in grouped


def test_training_uses_its_optimizers_without_importing_torch_dynamo():
    """skip_dynamo_import spares a run the 4.5 s import: building, stepping, saving and
    loading the optimizers must work without it (a fresh process: this one has imported it)."""
    code = """
import sys, torch
from llm.optim import AdamW, Muon, skip_dynamo_import
skip_dynamo_import()
model = torch.nn.Linear(8, 8)
for optimizer in (AdamW(model.parameters()), Muon([{"params": [model.weight], "muon": True},
                                                   {"params": [model.bias], "muon": False}])):
    model(torch.randn(4, 8)).square().sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    optimizer.load_state_dict(optimizer.state_dict())
print("torch._dynamo" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout == "False\n"
