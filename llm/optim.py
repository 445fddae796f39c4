"""Optimizers, the learning-rate schedule and gradient clipping, written from tensor ops.

They also work on the sharded parameters of FSDP (llm/sharding.py), which are DTensors, each
process holding a slice of rows: AdamW and SGD are elementwise, so each process updates its
slice; the gradient norm sums the slices' squares over the processes; Muon, which needs whole
matrices, gathers each one (see _muon_update).
"""

import math
import sys
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from llm.sharding import is_dtensor, local_slice


def skip_dynamo_import() -> None:
    """Spare a run that compiles nothing the import of torch._dynamo: 2 s or more of its start.

    torch.optim.Optimizer's add_param_group, zero_grad, state_dict and load_state_dict are
    wrapped so that torch.compile never traces into them. The wrapper imports torch._dynamo the
    first time it runs, to make the function it then calls, and keeps that in the attribute
    `__dynamo_disable`. Giving it the plain function up front skips the import; torch.compile
    could then trace these four methods, which training never calls inside compiled code. A
    later torch without these attributes just imports torch._dynamo again."""
    if "torch._dynamo" in sys.modules:
        return
    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        plain = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if plain is not None:
            setattr(plain, "__dynamo_disable", plain)


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019, algorithm 2).

    For each parameter p with gradient g, at step t = 1, 2, ...:
        p <- p - lr * weight_decay * p                      (decay, independent of the gradient)
        m <- beta1 m + (1 - beta1) g                        (first moment)
        v <- beta2 v + (1 - beta2) g^2                      (second moment)
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)           m_hat = m / (1 - beta1^t),
                                                            v_hat = v / (1 - beta2^t)
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(
                f"AdamW needs lr, eps, weight_decay >= 0 and 0 <= betas < 1, got lr={lr}, "
                f"betas={betas}, eps={eps}, weight_decay={weight_decay}"
            )
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _call_closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    _adamw_update(p, self.state[p], group)
        return loss


def _adamw_update(p: Tensor, state: dict, group: dict) -> None:
    """One AdamW step of parameter p (see AdamW) with the hyperparameters of its group."""
    lr, (beta1, beta2) = group["lr"], group["betas"]
    if not state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["step"] += 1
    t = state["step"]
    p, g, m, v = (local_slice(x) for x in (p, p.grad, state["exp_avg"], state["exp_avg_sq"]))
    p.mul_(1 - lr * group["weight_decay"])
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(group["eps"])
    p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


class SGDDecay(torch.optim.Optimizer):
    """SGD whose step size decays as lr / sqrt(t + 1), t = 0, 1, ... (per parameter).

    Optional decoupled weight decay, so it accepts the same parameter groups as AdamW.
    """

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-3, weight_decay: float = 0.0
    ) -> None:
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"SGDDecay needs lr, weight_decay >= 0, got {lr}, {weight_decay}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _call_closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                t = state.get("t", 0)
                p, g = local_slice(p), local_slice(p.grad)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(g, alpha=-group["lr"] / math.sqrt(t + 1))
                state["t"] = t + 1
        return loss


class Muon(torch.optim.Optimizer):
    """Muon, MomentUm Orthogonalized by Newton-Schulz (Jordan et al., 2024), for the hidden
    matrices, and AdamW for the other parameters, in one optimizer (one state to save).

    Groups with "muon": True hold 2-D weights W (rows x cols); with gradient g, per step:
        buf <- momentum buf + g
        u   <- g + momentum buf  (Nesterov, the default), or buf
        O   <- newton_schulz(u)                     ~ U V^T where u = U S V^T (orthogonalised)
        W   <- W - lr (O sqrt(max(1, rows / cols)) + weight_decay W)
    Groups with "muon": False take exactly AdamW's step (see AdamW), at adam_lr unless the group
    sets its own lr. Each group gets lr_scale = its lr / lr, which a schedule that sets one lr
    for all groups multiplies by (llm.training: Muon at the schedule's lr, AdamW at
    lr x adam_lr / max_lr).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.0,
        adam_lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        ns_dtype: torch.dtype | None = None,
    ) -> None:
        ok = lr > 0 and adam_lr > 0 and 0 <= momentum < 1 and ns_steps >= 1 and eps >= 0
        if not (ok and weight_decay >= 0 and all(0 <= b < 1 for b in betas)):
            raise ValueError(
                f"Muon needs lr, adam_lr > 0, 0 <= momentum < 1, ns_steps >= 1, eps, "
                f"weight_decay >= 0 and 0 <= betas < 1, got lr={lr}, adam_lr={adam_lr}, "
                f"momentum={momentum}, ns_steps={ns_steps}, eps={eps}, "
                f"weight_decay={weight_decay}, betas={betas}"
            )
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]  # plain tensors: all Muon
        groups = [{"muon": True, **group} for group in groups]
        for group in groups:
            group.setdefault("lr", lr if group["muon"] else adam_lr)
            group.setdefault("lr_scale", group["lr"] / lr)
            if group["muon"] and any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon updates matrices only: give other parameters muon=False")
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
            weight_decay=weight_decay, betas=betas, eps=eps,
        )  # fmt: skip
        super().__init__(groups, defaults)
        self.ns_dtype = ns_dtype  # of the Newton-Schulz iteration (see newton_schulz)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _call_closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["muon"]:
                    _muon_update(p, self.state[p], group, self.ns_dtype)
                else:
                    _adamw_update(p, self.state[p], group)
        return loss


def _muon_update(p: Tensor, state: dict, group: dict, ns_dtype: torch.dtype | None) -> None:
    """One Muon step of matrix p (see Muon) with the hyperparameters of its group."""
    lr, momentum = group["lr"], group["momentum"]
    if not state:
        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    buf = state["momentum_buffer"]
    buf.mul_(momentum).add_(p.grad)
    u = p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf
    rows, cols = p.shape
    p.mul_(1 - lr * group["weight_decay"])
    if is_dtensor(u):
        from torch.distributed.tensor import distribute_tensor  # a sharded run imported it

        # A sharded matrix (FSDP): every process gathers the whole of u, orthogonalises it (the
        # same computation on each) and keeps its own slice of the result, without sending it.
        full = newton_schulz(u.full_tensor(), group["ns_steps"], ns_dtype)
        update = distribute_tensor(full, u.device_mesh, u.placements, src_data_rank=None)
    else:
        update = newton_schulz(u, group["ns_steps"], ns_dtype)
    p.add_(update, alpha=-lr * math.sqrt(max(1, rows / cols)))


def newton_schulz(g: Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> Tensor:
    """Orthogonalise the matrix g = U S V^T: about U S' V^T with S' near the identity, the
    update direction Muon uses (Jordan et al., 2024; ideally U V^T).

    A quintic Newton-Schulz iteration. X = g / ||g||_F has singular values s in [0, 1]; each
    step X <- a X + b (X X^T) X + c (X X^T)^2 X maps every s to a s + b s^3 + c s^5, whose
    coefficients grow small s fast (x3.4 a step) instead of converging to 1 exactly: after 5
    steps every s >= 1/700 lies in [0.68, 1.21], and U, V are kept. X is made wide (rows <=
    cols) so that X X^T is the smaller Gram matrix. Runs in `dtype`, by default bfloat16 on CUDA,
    as the reference implementation does (fast, and the iteration tolerates the rounding), and
    float32 elsewhere (bfloat16 pays on CPUs with bf16 matrix units); returns g's dtype."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(dtype or (torch.bfloat16 if g.is_cuda else torch.float32))
    tall = g.shape[0] > g.shape[1]
    if tall:
        x = x.T  # (rows, cols) -> (cols, rows), wide
    x = x / (torch.linalg.matrix_norm(x) + 1e-7)  # Frobenius norm >= spectral norm: s <= 1
    for _ in range(steps):
        gram = x @ x.T  # (short, short)
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.T
    return x.to(g.dtype)


def _call_closure(closure: Callable[[], float] | None) -> float | None:
    """The loss from the optional closure, which re-evaluates the model (so needs grad mode)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def cos_lr_scheduler(
    t: int, max_lr: float, min_lr: float, warmup_iters: int, cosine_cycle_iters: int
) -> float:
    """Learning rate at step t: linear warm-up from 0 to max_lr over warmup_iters steps, cosine
    decay to min_lr at step cosine_cycle_iters, then flat at min_lr (SGDR, Loshchilov & Hutter
    2017, one cycle)."""
    if t < warmup_iters:
        return max_lr * t / warmup_iters
    if t >= cosine_cycle_iters:
        return min_lr
    progress = (t - warmup_iters) / (cosine_cycle_iters - warmup_iters)  # 0 -> 1
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def wsd_lr_scheduler(
    t: int, max_lr: float, min_lr: float, warmup_iters: int, decay_iters: int, total_iters: int
) -> float:
    """Learning rate at step t: warm-up, stable, decay (WSD; Hu et al. 2024, MiniCPM). Linear
    warm-up from 0 to max_lr over warmup_iters steps, max_lr until decay_iters steps before
    total_iters, then a linear decay to min_lr at step total_iters, flat after. Unlike the cosine
    schedule, most steps run at the peak rate, and the decay at the end buys the drop in loss."""
    if t < warmup_iters:
        return max_lr * t / warmup_iters
    decay_start = total_iters - decay_iters
    if t < decay_start:
        return max_lr
    if t >= total_iters:
        return min_lr
    progress = (t - decay_start) / decay_iters  # 0 -> 1
    return max_lr + progress * (min_lr - max_lr)


@torch.no_grad()
def gradient_clip(params: Iterable[Tensor], max_norm: float, eps: float = 1e-6) -> Tensor:
    """Scale all gradients together so their global L2 norm is at most max_norm.

    Returns the norm before clipping (a 0-dim tensor; no host sync, so it is cheap on a GPU).
    Sharded gradients (FSDP's DTensors, each process holding a slice) give the norm of the
    whole gradients: the slices' sums of squares are added up over the processes.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    sharded = is_dtensor(grads[0])
    if sharded:
        _check_row_sharded(grads)
        grads = [local_slice(g) for g in grads]  # this process's slices, sharing storage
    norms = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads])
    total = torch.linalg.vector_norm(norms)
    if sharded:
        total = total.square()
        dist.all_reduce(total)  # sum of squares over the slices of all processes
        total = total.sqrt()
    scale = (max_norm / (total + eps)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


def _check_row_sharded(grads: list[Tensor]) -> None:
    """The norm above is right only if every gradient is split into disjoint slices over all
    processes: one Shard placement on a mesh of the whole job (as fully_shard makes)."""
    for g in grads:
        whole_job = g.device_mesh.size() == dist.get_world_size()
        if not (is_dtensor(g) and whole_job and all(p.is_shard() for p in g.placements)):
            raise ValueError("gradient_clip: mixed or replicated DTensor gradients are not handled")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (ndim >= 2) decay; vectors such as RMSNorm gains (ndim < 2) do not,
    since shrinking a gain towards 0 only fights the normalisation it scales."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def muon_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Muon's groups for a Transformer: Muon for the 2-D weights of its blocks (attention and FFN
    matrices); AdamW for the embedding, the output layer and the norm gains, which are not
    hidden linear maps (Jordan et al., 2024), decaying matrices only as in param_groups."""
    hidden = {id(p) for p in model.blocks.parameters() if p.ndim == 2}
    params = [p for p in model.parameters() if p.requires_grad]
    matrices = [p for p in params if id(p) in hidden]
    other_matrices = [p for p in params if id(p) not in hidden and p.ndim >= 2]
    return [
        {"params": matrices, "muon": True, "weight_decay": weight_decay},
        {"params": other_matrices, "muon": False, "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "muon": False, "weight_decay": 0.0},
    ]


class OptimizerChoice(NamedTuple):
    """An optimizer as training chooses it by name: how to build it, and its default peak lr."""

    build: Callable[[nn.Module, Any, torch.dtype | None], torch.optim.Optimizer]
    max_lr: float


def _build_adamw(model: nn.Module, config: Any, dtype: torch.dtype | None) -> AdamW:
    groups = param_groups(model, config.weight_decay)
    return AdamW(groups, lr=config.max_lr, betas=config.betas, eps=config.eps)


def _build_sgd(model: nn.Module, config: Any, dtype: torch.dtype | None) -> SGDDecay:
    return SGDDecay(param_groups(model, config.weight_decay), lr=config.max_lr)


def _build_muon(model: nn.Module, config: Any, dtype: torch.dtype | None) -> Muon:
    """Muon orthogonalises in the autocast dtype when there is one."""
    return Muon(
        muon_param_groups(model, config.weight_decay), lr=config.max_lr,
        momentum=config.momentum, nesterov=config.nesterov, ns_steps=config.ns_steps,
        adam_lr=config.adam_lr, betas=config.betas, eps=config.eps, ns_dtype=dtype,
    )  # fmt: skip


# name -> OptimizerChoice; `build(model, config, autocast dtype)` reads the fields of
# llm.training.TrainConfig. Muon's 0.02 is Jordan et al.'s default (orthogonalised updates have
# a fixed size: a larger lr than AdamW's); SGD keeps AdamW's, being untuned.
OPTIMIZERS = {
    "adamw": OptimizerChoice(_build_adamw, max_lr=1e-3),
    "sgd": OptimizerChoice(_build_sgd, max_lr=1e-3),
    "muon": OptimizerChoice(_build_muon, max_lr=0.02),
}
