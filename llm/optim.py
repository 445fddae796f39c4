"""Optimizers, the learning-rate schedule and gradient clipping, written from tensor ops."""

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


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
    t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
    p.mul_(1 - lr * group["weight_decay"])
    m.lerp_(p.grad, 1 - beta1)
    v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
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
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(p.grad, alpha=-group["lr"] / math.sqrt(t + 1))
                state["t"] = t + 1
        return loss


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


@torch.no_grad()
def gradient_clip(params: Iterable[Tensor], max_norm: float, eps: float = 1e-6) -> Tensor:
    """Scale all gradients together so their global L2 norm is at most max_norm.

    Returns the norm before clipping (a 0-dim tensor; no host sync, so it is cheap on a GPU).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads])
    total = torch.linalg.vector_norm(norms)
    scale = (max_norm / (total + eps)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (ndim >= 2) decay; vectors such as RMSNorm gains (ndim < 2) do not,
    since shrinking a gain towards 0 only fights the normalisation it scales."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
