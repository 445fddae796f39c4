"""Fully sharded data parallel (FSDP, `parallel = "fsdp"`): PyTorch's FSDP2 (`fully_shard`)
splits every weight, its gradient and its optimizer state into N slices, one per process, so a
model needs 1/N of the memory for them that DDP needs on each process.

The units are each TransformerBlock and the root (embedding, final norm and output layer, which
may be tied). In a unit's forward and backward its processes all-gather the whole weights, use
them and free them again; after the backward the gradients are reduce-scattered, each process
keeping the averaged slice of its own weights, which the optimizer then updates (llm/optim.py
works on these DTensor slices). On CUDA with bfloat16, the gathered weights are bfloat16 and the
gradients are averaged in float32; the slices the optimizer updates stay float32.
"""

import sys

import torch
import torch.distributed as dist

from llm.transformer import Transformer


def shard_model(model: Transformer, device: torch.device, dtype: torch.dtype | None) -> None:
    """Shard the model in place over all processes of the job (a process group must exist).
    dtype: the training's autocast dtype (None = float32)."""
    # Imported here: these modules take seconds to import, which no unsharded run should pay.
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if device.type == "cuda" and dtype is torch.bfloat16:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        policy = MixedPrecisionPolicy()  # float32 throughout
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)  # the root: what is left


def nonfinite_parameter(model: torch.nn.Module) -> str | None:
    """The name of a weight holding a NaN or infinity, else None. Sharded, each process checks
    its own slices and all of them learn whether any found one, so that they stop together."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(local_slice(p)).all()]
    first = next(model.parameters())
    if is_dtensor(first):
        flag = torch.tensor(float(bool(bad)), device=local_slice(first).device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and not bad:
            bad = ["(a slice on another process)"]
    return bad[0] if bad else None


def local_slice(t: torch.Tensor) -> torch.Tensor:
    """This process's slice of a sharded tensor (a DTensor), sharing its storage: updating it in
    place updates the DTensor, without DTensor's per-operation dispatch. A parameter, its
    gradient and its optimizer state are sliced alike, so their slices match element for
    element. A plain tensor is returned as it is."""
    return t.to_local() if is_dtensor(t) else t


def is_dtensor(t: torch.Tensor) -> bool:
    """Whether t is a DTensor (a sharded tensor). Only a sharded run has them, and it has
    imported torch.distributed.tensor, which is slow to import: other runs need not."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)
