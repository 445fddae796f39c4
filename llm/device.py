"""Where the model runs: the device, mixed precision, peak FLOP/s for MFU, and the processes of a
data-parallel job. Training, generation and the benchmarks all take their device from here.
"""

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Dense bf16 tensor-core peak FLOP/s, for MFU (model FLOPs utilisation). First match wins.
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; otherwise the named device, checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (try cpu, cuda, cuda:0, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r} does not exist: this machine has {count} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available here")
    return device


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a `dtype` setting ("auto", "float32", "bfloat16"), or None for
    plain float32. "auto" is bfloat16 on CUDA, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if dtype == "bfloat16" else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Mixed precision in `dtype` on `device`, or nothing when dtype is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


def peak_flops(device: torch.device, dtype: torch.dtype | None) -> float | None:
    """Dense bf16 peak FLOP/s of a known GPU, for MFU; None elsewhere."""
    if device.type != "cuda" or dtype is not torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: the FLOP/s the model's arithmetic needs at this speed, as a
    fraction of the device's peak (PaLM, Chowdhery et al. 2022). None when the peak is unknown."""
    return tokens_per_s * flops_per_token / peak if peak else None


@dataclass
class Distributed:
    """This process's place in a data-parallel job (world_size 1: a single process)."""

    rank: int  # this process, 0 .. world_size - 1; rank 0 logs, evaluates and writes files
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str, always: bool = False) -> Distributed:
    """Single process, or one process of a torchrun job (WORLD_SIZE > 1 in the environment):
    NCCL between GPUs, one per process (LOCAL_RANK), Gloo between CPU processes. `always`
    starts a process group for a single process too (FSDP and its checkpoints work in one)."""
    device = resolve_device(device_name)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1 and not always:
        return Distributed(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", device.index or 0)))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if world_size == 1 and "MASTER_ADDR" not in os.environ:  # not started by torchrun
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    else:
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), world_size, device)
