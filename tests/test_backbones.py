"""Loading a frozen backbone: devices, precision."""
import math

import pytest
import torch

from autoplace.backbones import resolve_device
from autoplace.config import TrainConfig
from autoplace.errors import AutoplaceError
from autoplace.inference import evaluate
from autoplace.trainer import train
from conftest import build_prompt


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


def test_bf16_precision_runs_the_frozen_forward_in_bf16_and_keeps_prompts_fp32(toy_task_file):
    from autoplace.backbones import load_backbone
    fp32, bf16 = load_backbone("tiny-gpt2", "cpu"), load_backbone("tiny-gpt2", "cpu", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16") and fp32.model is bf16.model  # one loaded copy
    scores = {}
    for backbone in (fp32, bf16):
        task, feat, model = build_prompt(toy_task_file, backbone, "[P:2] {sentence} It was [MASK]", encoder="mlp")
        items = feat.encode_all(task.load_split("train"))
        seen = []
        hook = backbone.trunk.h[0].attn.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
        result = train(model, task, items, items, TrainConfig(steps=4, eval_every=2), progress=False)
        hook.remove()
        assert math.isfinite(result.losses[-1]) and model.encoder.input.dtype == torch.float32
        assert set(seen) == {torch.bfloat16 if backbone is bf16 else torch.float32}
        scores[backbone.precision] = evaluate(model, task, items)[0]["acc"]
    assert abs(scores["bf16"] - scores["fp32"]) <= 0.25  # same prompts learned, up to bf16 rounding


def test_unknown_precision_is_refused():
    from autoplace.backbones import load_backbone
    with pytest.raises(AutoplaceError, match="precision 'fp8'"):
        load_backbone("tiny-gpt2", "cpu", precision="fp8")


@pytest.mark.parametrize("has_bf16", [False, True])
def test_bf16_on_a_cpu_without_bf16_instructions_warns_once(has_bf16, monkeypatch, capsys):
    from autoplace import backbones
    monkeypatch.setattr(backbones, "cpu_has_bf16", lambda: has_bf16)
    monkeypatch.setattr(backbones, "_WARNED", set(), raising=False)  # as in a fresh process
    capsys.readouterr()
    for precision in ("bf16", "bf16", "fp32", "auto"):  # a search loads its backbone more than once
        backbones.load_backbone("tiny-gpt2", "cpu", precision=precision)
    lines = capsys.readouterr().err.splitlines()
    if has_bf16:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("autoplace: precision bf16 on a CPU without bf16 instructions")
        assert "avx512_bf16" in lines[0] and "amx_bf16" in lines[0] and "fp32 is likely faster" in lines[0]
