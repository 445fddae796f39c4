"""Muon (Jordan et al., 2024): the Newton-Schulz orthogonalisation, one step against a float64
reference of the formula, which parameters it takes, and training runs with it."""

import math

import pytest
import torch
from conftest import SMALL, train_config

from llm import training
from llm.config import ConfigError
from llm.optim import AdamW, Muon, muon_param_groups, newton_schulz
from llm.run_dir import read_metrics
from llm.training import load_train_config, train
from llm.transformer import ModelConfig, Transformer


def _with_singular_values(rows: int, cols: int, s: torch.Tensor, seed: int) -> tuple:
    """(U diag(s) V^T, U, V) with random orthonormal U (rows, k) and V (cols, k), k = len(s)."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, len(s), generator=gen))
    v, _ = torch.linalg.qr(torch.randn(cols, len(s), generator=gen))
    return u @ torch.diag(s) @ v.T, u, v


@pytest.mark.parametrize("rows, cols", [(64, 64), (32, 128), (128, 32)])
def test_newton_schulz_orthogonalises_keeping_the_singular_vectors(rows, cols):
    # Singular values spread over a factor 100 (a random square Gaussian matrix has some near
    # 0, which 5 steps do not lift: Muon accepts that); U and V must be kept. 5 steps map every
    # singular value s >= ||g||_F / 700 into [0.68, 1.2024] (the polynomial's range).
    k = min(rows, cols)
    s = torch.logspace(0, -2, k) * 7.0
    g, u, v = _with_singular_values(rows, cols, s, seed=rows + cols)
    o = newton_schulz(g)
    assert o.shape == g.shape and o.dtype == torch.float32
    core = u.T @ o @ v  # (k, k): diag(s') if o = U diag(s') V^T
    assert core.diagonal().min() >= 0.6 and core.diagonal().max() <= 1.21
    off_diagonal = core - torch.diag(core.diagonal())
    assert off_diagonal.abs().max() < 1e-4
    svdvals = torch.linalg.svdvals(o)
    assert svdvals.min() >= 0.6 and svdvals.max() <= 1.21


@pytest.mark.parametrize("rows, cols", [(32, 128), (128, 32), (96, 32)])
def test_newton_schulz_of_random_matrices_has_singular_values_near_1(rows, cols):
    gen = torch.Generator().manual_seed(0)
    for scale in (1e-3, 1.0, 1e3):  # the result does not depend on g's scale
        g = torch.randn(rows, cols, generator=gen) * scale
        svdvals = torch.linalg.svdvals(newton_schulz(g))
        assert svdvals.min() >= 0.6 and svdvals.max() <= 1.21
    assert newton_schulz(g.double()).dtype == torch.float64  # computed in float32, returned as g


def test_newton_schulz_in_bfloat16_stays_near_float32():
    g = torch.randn(96, 32, generator=torch.Generator().manual_seed(1))
    o = newton_schulz(g, dtype=torch.bfloat16)
    assert o.dtype == torch.float32  # g's dtype
    svdvals = torch.linalg.svdvals(o)
    assert svdvals.min() >= 0.6 and svdvals.max() <= 1.25  # bfloat16: 3 significant digits
    torch.testing.assert_close(o, newton_schulz(g), atol=0.03, rtol=0.05)
    assert not torch.equal(o, newton_schulz(g))  # it did run in bfloat16
    steps = []
    for dtype in (torch.bfloat16, None):  # Muon's ns_dtype reaches the iteration
        w = torch.nn.Parameter(torch.zeros(96, 32))
        w.grad = g.clone()
        Muon([w], lr=0.1, ns_dtype=dtype).step()
        steps.append(w.detach())
    torch.testing.assert_close(steps[0], steps[1], atol=0.01, rtol=0.05)
    assert not torch.equal(steps[0], steps[1])


# --- one step against the formula ----------------------------------------------------------

A, B, C = 3.4445, -4.7750, 2.0315


def reference_newton_schulz(g: torch.Tensor, steps: int) -> torch.Tensor:
    x = g / (torch.linalg.norm(g) + 1e-7)
    if g.shape[0] > g.shape[1]:
        return reference_newton_schulz(g.T, steps).T
    for _ in range(steps):
        gram = x @ x.T
        x = A * x + (B * gram + C * gram @ gram) @ x
    return x


def reference_muon(w, grads, lr, momentum, nesterov, weight_decay, ns_steps):
    """Muon on matrix w, in float64, with the gradients of successive steps."""
    w, buf = w.double(), torch.zeros_like(w, dtype=torch.float64)
    rows, cols = w.shape
    for grad in grads:
        grad = grad.double()
        buf = momentum * buf + grad
        g = grad + momentum * buf if nesterov else buf
        o = reference_newton_schulz(g, ns_steps)
        w = w - lr * (o * max(1, rows / cols) ** 0.5 + weight_decay * w)
    return w, buf


@pytest.mark.parametrize("nesterov", [True, False])
def test_two_muon_steps_equal_the_formula_and_adamw_parts_equal_adamw(nesterov):
    gen = torch.Generator().manual_seed(0)
    shapes = {"tall": (48, 16), "wide": (16, 48), "embedding": (10, 16), "gain": (16,)}
    start = {name: torch.randn(shape, generator=gen) for name, shape in shapes.items()}
    grads = [{n: torch.randn(s, generator=gen) for n, s in shapes.items()} for _ in range(2)]
    grads[1]["wide"] *= 100  # the momentum buffer must weigh the first gradient by momentum
    params = {name: torch.nn.Parameter(w.clone()) for name, w in start.items()}
    adam_params = {n: torch.nn.Parameter(start[n].clone()) for n in ("embedding", "gain")}
    hyper = dict(lr=0.05, momentum=0.8, nesterov=nesterov, ns_steps=4)
    muon = Muon(
        [
            {"params": [params["tall"], params["wide"]], "weight_decay": 0.3},
            {"params": [params["embedding"]], "muon": False, "weight_decay": 0.2},
            {"params": [params["gain"]], "muon": False, "weight_decay": 0.0},
        ],
        adam_lr=0.01, betas=(0.8, 0.9), eps=1e-3, **hyper,
    )  # fmt: skip
    adamw = AdamW(
        [
            {"params": [adam_params["embedding"]], "weight_decay": 0.2},
            {"params": [adam_params["gain"]], "weight_decay": 0.0},
        ],
        lr=0.01, betas=(0.8, 0.9), eps=1e-3,
    )  # fmt: skip
    for step_grads in grads:
        for name, p in [*params.items(), *adam_params.items()]:
            p.grad = step_grads[name].clone()
        muon.step()
        adamw.step()

    for name in ("tall", "wide"):
        weight, buf = reference_muon(
            start[name], [g[name] for g in grads], weight_decay=0.3, **hyper
        )
        torch.testing.assert_close(params[name].detach().double(), weight, atol=2e-6, rtol=0)
        torch.testing.assert_close(muon.state[params[name]]["momentum_buffer"], buf.float())
        assert (weight - start[name]).abs().max() > 0.02  # 10000x the tolerance
    for name in ("embedding", "gain"):  # bit for bit our AdamW
        assert torch.equal(params[name], adam_params[name]), name
    assert [g["lr"] for g in muon.param_groups] == [0.05, 0.01, 0.01]
    assert [g["lr_scale"] for g in muon.param_groups] == pytest.approx([1.0, 0.2, 0.2])


def test_a_parameter_without_gradient_is_left_alone():
    p, frozen = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.ones(3, 3))
    muon = Muon([p, frozen])
    p.grad = torch.randn(4, 3)
    muon.step()
    assert torch.equal(frozen.detach(), torch.ones(3, 3)) and frozen not in muon.state


def test_muon_rejects_bad_hyperparameters_and_vectors():
    p = [torch.nn.Parameter(torch.zeros(2, 2))]
    bad = [dict(lr=0), dict(adam_lr=-1), dict(momentum=1.0), dict(momentum=-0.1)]
    bad += [dict(ns_steps=0), dict(weight_decay=-1), dict(eps=-1), dict(betas=(0.9, 1.0))]
    for kwargs in bad:
        with pytest.raises(ValueError, match="Muon needs"):
            Muon(p, **kwargs)
    with pytest.raises(ValueError, match="matrices only"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


# --- which parameters Muon takes -----------------------------------------------------------


@pytest.mark.parametrize("tie_embeddings", [False, True])
def test_muon_takes_the_block_matrices_and_adamw_the_rest(tie_embeddings):
    model = Transformer(ModelConfig(**{**SMALL.__dict__, "tie_embeddings": tie_embeddings}))
    muon, other_matrices, gains = muon_param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}

    def named(group):
        return {names[id(p)] for p in group["params"]}

    assert muon["muon"] and not other_matrices["muon"] and not gains["muon"]
    assert named(muon) == {
        "blocks.0.attn.qkv_proj.weight",
        "blocks.0.attn.out_proj.weight",
        "blocks.0.ffn.w1.weight",
        "blocks.0.ffn.w2.weight",
        "blocks.0.ffn.w3.weight",
    }
    # A tied matrix is one parameter, named after the embedding.
    expected = {"embedding.weight"} | (set() if tie_embeddings else {"lm_head.weight"})
    assert named(other_matrices) == expected
    assert named(gains) == {n for n, p in model.named_parameters() if p.ndim == 1}
    assert {"final_norm.weight", "blocks.0.attn_norm.weight"} <= named(gains)
    assert [g["weight_decay"] for g in (muon, other_matrices, gains)] == [0.1, 0.1, 0.0]
    assert sum(len(g["params"]) for g in (muon, other_matrices, gains)) == len(names)


def test_muon_param_groups_leave_out_frozen_parameters():
    model = Transformer(SMALL)
    model.blocks[0].ffn.w1.weight.requires_grad_(False)
    model.lm_head.weight.requires_grad_(False)
    grouped = {id(p) for g in muon_param_groups(model, 0.1) for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}


def test_muon_trains_a_model_step_by_step():
    torch.manual_seed(0)
    model = Transformer(SMALL)
    muon = Muon(muon_param_groups(model, 0.0), lr=0.02, adam_lr=3e-3)
    data = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (8, 16), generator=data)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.roll(-1, 1).flatten())
        loss.backward()
        muon.step()
        muon.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0 and math.isfinite(losses[-1])


# --- training runs with optimizer = "muon" -------------------------------------------------

MUON = dict(optimizer="muon", max_lr=0.02, min_lr=0.002, adam_lr=4e-3)


def test_the_schedule_scales_the_adamw_groups_by_adam_lr_over_max_lr():
    config = load_train_config(
        ["--optimizer", "muon", "--max_lr", "0.02", "--adam_lr", "4e-3", "--min_lr", "0.002"]
        + ["--momentum", "0.9", "--nesterov", "false", "--ns_steps", "3", "--warmup_iters", "10"]
    )
    optimizer = training._build_optimizer(Transformer(config.model), config, None)
    assert isinstance(optimizer, Muon) and optimizer.ns_dtype is None
    bf16 = training._build_optimizer(Transformer(config.model), config, torch.bfloat16)
    assert bf16.ns_dtype is torch.bfloat16  # under bfloat16 autocast, so is Newton-Schulz
    muon_group, *adamw_groups = optimizer.param_groups
    assert [muon_group[key] for key in ("momentum", "nesterov", "ns_steps")] == [0.9, False, 3]
    for step, lr in [(5, 0.01), (config.max_iters, 0.002)]:  # warm-up; the end of the decay
        assert training._set_lr(optimizer, step, config) == pytest.approx(lr)
        assert muon_group["lr"] == pytest.approx(lr)
        assert [g["lr"] for g in adamw_groups] == pytest.approx([lr / 5, lr / 5])


def test_training_with_muon_lowers_the_loss(token_data_dir, tmp_path):
    config = train_config(token_data_dir, tmp_path / "run", max_iters=30, batch_size=16, **MUON)
    result = train(config)
    train_records = [r for r in read_metrics(tmp_path / "run") if r["type"] == "train"]
    assert train_records[-1]["loss"] < train_records[0]["loss"] - 1.0
    assert result["val_loss"] < 4.0  # ln 512 = 6.2 nats at the start
    assert train_records[0]["lr"] == pytest.approx(0.01)  # the Muon lr: 2nd step of 2 warm-up


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(momentum=1.0), r"^momentum must be in \[0, 1\), not 1.0$"),
        (dict(momentum=-0.5), "momentum must be in"),
        (dict(ns_steps=0), "^ns_steps must be at least 1, not 0$"),
        (dict(adam_lr=0.0), "^adam_lr must be > 0, not 0.0$"),
        (dict(adam_lr=float("nan")), "adam_lr must be > 0"),
    ],
)
def test_bad_muon_settings_are_named(token_data_dir, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(train_config(token_data_dir, tmp_path / "run", optimizer="muon", **overrides))
    assert not (tmp_path / "run").exists()
