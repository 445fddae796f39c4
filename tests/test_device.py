import pytest
import torch

from llm.device import autocast_dtype, mfu, peak_flops, resolve_device


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'cuda:1' requested but CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="'mps' requested but MPS is not available"):
        resolve_device("mps")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_peak_flops_for_mfu(monkeypatch):
    names = {0: "NVIDIA H100 PCIe", 1: "NVIDIA H100 80GB HBM3", 2: "NVIDIA GeForce RTX 4090"}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: names[device.index])
    bf16 = torch.bfloat16
    assert peak_flops(torch.device("cuda", 0), bf16) == 756e12  # not the SXM figure
    assert peak_flops(torch.device("cuda", 1), bf16) == 989e12
    assert peak_flops(torch.device("cuda", 2), bf16) is None  # unknown GPU: no MFU
    assert peak_flops(torch.device("cuda", 1), None) is None  # float32: no MFU
    assert peak_flops(torch.device("cpu"), bf16) is None


def test_a_missing_gpu_index_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="'cuda:99' does not exist: this machine has 2 GPU"):
        resolve_device("cuda:99")


def test_autocast_dtype_by_setting_and_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cuda) is torch.bfloat16 and autocast_dtype("auto", cpu) is None
    assert autocast_dtype("bfloat16", cpu) is torch.bfloat16
    assert autocast_dtype("float32", cuda) is None


def test_mfu_is_achieved_flops_over_peak():
    # 1,000 tokens/s x 6e9 FLOPs per token = 6e12 FLOP/s, 1% of a 6e14 FLOP/s peak.
    assert mfu(1_000, 6e9, 6e14) == pytest.approx(0.01)
    assert mfu(1_000, 6e9, None) is None
