"""Loading a frozen backbone: devices, precision."""
import pytest
import torch

from autoplace.backbones import resolve_device
from autoplace.errors import AutoplaceError


def test_a_bare_cuda_device_is_the_current_one_with_its_index(monkeypatch):
    """`--device cuda` (no index, as most people type it) must name a device that torch.cuda.set_device accepts:
    the current one. Checked on a CPU machine with torch.cuda's answers stubbed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("cuda") == "cuda:1"
    assert resolve_device("cuda:0") == "cuda:0" and resolve_device("cpu") == "cpu"
    assert torch.device(resolve_device("cuda")).index == 1
    with pytest.raises(AutoplaceError, match="has 2 CUDA device"):
        resolve_device("cuda:2")


def test_cuda_on_a_machine_without_it_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AutoplaceError, match="CUDA is not available"):
        resolve_device("cuda")
