"""benchmarks/gpu_check.sh, every line of it, on the CPU: the day a GPU is lent it must not fail on an untested line.

The carried folder is packed for this Python (the real one is packed for the device image's), the wheels install
into a target folder ahead of the venv, SmolLM2's architecture gets random weights (shrunk to one layer here), and
throughput and both searches run with --device cpu on it.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, SHARED_DATA

pytestmark = pytest.mark.slow


def _bash(script, *args, env):
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / script), *map(str, args)], capture_output=True,
                          text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_the_gpu_check_runs_every_line_on_the_cpu(tmp_path):
    carry = tmp_path / "carry"
    env = {**{k: v for k, v in os.environ.items() if k != "OUT"}, "CARRY": str(carry), "PYTHON": sys.executable,
           "PY_VERSION": f"{sys.version_info.major}.{sys.version_info.minor}", "DATA": str(SHARED_DATA)}
    _bash("gpu_prepare.sh", env=env)
    wheels = {p.name.split("-")[0].lower() for p in (carry / "wheels").glob("*.whl")}
    assert {"optuna", "datasets", "transformers", "peft"} <= wheels
    assert (carry / "smollm2" / "config.json").is_file() and (carry / "smollm2" / "tokenizer.json").is_file()
    assert not list((carry / "smollm2").glob("*.safetensors"))  # the weights never travel
    assert (carry / "data" / "FewGLUE_32dev" / "RTE" / "val.jsonl").is_file()

    out = tmp_path / "results"
    stdout = _bash("gpu_check.sh", "--dry-run", "--out", out, env=env)
    assert {p.name for p in out.iterdir()} == {"throughput-gpu.json", "throughput-gpu.md", "gpu_check-gpu.json",
                                                "gpu_check-gpu.md", "gpu_check-gpu.log"}
    report = json.loads((out / "gpu_check-gpu.json").read_text())
    assert report["cuda"]["cuda_available"] is False and "random weights" in report["backbone"]
    assert [s["workers"] for s in report["searches"]] == [1, 2]
    for s in report["searches"]:
        assert s["trials"]["complete"] + s["trials"]["pruned"] == 3 and 0 <= s["test"]["acc"] <= 1
    throughput = json.loads((out / "throughput-gpu.json").read_text())
    assert [r["length"] for r in throughput["results"]] == [32]
    assert "Two workers on one device take" in stdout
    log = (out / "gpu_check-gpu.log").read_text()
    assert "--workers 2 --devices cpu,cpu" in log and "--precision bf16" in log
