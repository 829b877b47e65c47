"""Training-step throughput, side by side in one process: autoplace vs a plain forward vs PEFT P-tuning.

Per backbone and sequence length, on the same batch of 8 real RTE texts cut to exactly that many tokens (8 of them
prompt tokens), the median wall time of repeated steps after warm-up:

  a   forward only (no grad) of the plain backbone: model(input_ids, attention_mask), full logits, no KV cache
  b   autoplace train step (collate + forward + backward + AdamW), prefix-only template  [P:8] {premise} ...
  b'  the same with the prefix cache off (it does not apply to a prefix template: b' should equal b)
  c   autoplace train step, mixed placement  [P:3] {premise} [P:3] Question: {hypothesis}? [P:2] Answer:
  d   PEFT P-tuning train step (PromptEncoderConfig, MLP encoder, 8 virtual tokens), used the standard way:
      full-vocabulary logits, cross-entropy at the last position, AdamW; its input is 8 tokens shorter, so the
      sequence the backbone sees has the same length
  e   autoplace train step, end-only template  {premise} Question: {hypothesis}? [P:8] Answer:, prefix cache warm
  e'  the same with the prefix cache off
  f   autoplace train step, a late prompt at half depth  [P:8@L/2] {premise} ..., late cache warm (the layers below
      it ran once, earlier)
  f'  the same with the late cache off
  g   autoplace train step, deep prompts  [P:8@all] {premise} ... (a fresh vector at every layer's input)

With --before, two more: b0 and e0 are b and e with the model's forward as it was before the prefix cache and the
no-K/V-copy change (commit b645f39), for a before/after record.

All variants use the same MLP-reparametrized prompt of 8 tokens, gradient clipping at 1.0 and AdamW. Steps are
interleaved round-robin (one step of each variant per round), so slow drift of a shared machine hits all alike.

Wall time is the measure (the JSON also keeps each step's process CPU time).

Peak memory per variant is measured after the timings, on one more step of each: on CUDA with
torch.cuda.max_memory_allocated, on CPU from torch.profiler's memory timeline (live tensor bytes), in both cases above
what was live when the step started (the backbone's weights, the prefix cache) - see MEMORY_METHOD.

    python benchmarks/throughput.py --models smollm2-135m tiny-gpt2 --lengths 64 128 256 --repeats 7
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import torch
from torch.nn import functional as F

warnings.filterwarnings("ignore", category=FutureWarning)  # peft calls a deprecated transformers helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autoplace.backbones import load_backbone  # noqa: E402
from common import cpu_model  # noqa: E402
from autoplace.featurize import collate  # noqa: E402
from autoplace.config import PromptConfig  # noqa: E402
from autoplace.pipeline import build  # noqa: E402
from autoplace.tasks import get_task  # noqa: E402
from autoplace.inference import autocast  # noqa: E402
from autoplace.trainer import train_step  # noqa: E402

DATA = Path(os.environ.get("AUTOPLACE_SHARED_DATA", REPO.parent / "shared" / "data")) / "FewGLUE_32dev" / "RTE"
BATCH, N_PROMPT, LR = 8, 8, 1e-3
TEMPLATES = {
    "plain": "{premise} Question: {hypothesis}? Answer: [MASK]",
    "prefix": "[P:8] {premise} Question: {hypothesis}? Answer: [MASK]",
    "mixed": "[P:3] {premise} [P:3] Question: {hypothesis}? [P:2] Answer: [MASK]",
    "end": "{premise} Question: {hypothesis}? [P:8] Answer: [MASK]",
    "late": "[P:8@HALF] {premise} Question: {hypothesis}? Answer: [MASK]",  # HALF: the backbone's layers // 2
    "deep": "[P:8@all] {premise} Question: {hypothesis}? Answer: [MASK]",
}
VARIANTS = {  # name: (description, template, prefix cache on)
    "a": ("plain backbone forward, no grad", "plain", None),
    "b": ("autoplace step, prefix-only", "prefix", True),
    "b'": ("autoplace step, prefix-only, cache off", "prefix", False),
    "c": ("autoplace step, mixed placement", "mixed", True),
    "d": ("PEFT P-tuning step", "plain", None),
    "e": ("autoplace step, end-only, prefix cache warm", "end", True),
    "e'": ("autoplace step, end-only, cache off", "end", False),
    "f": ("autoplace step, late prompt at half depth, late cache warm", "late", True),
    "f'": ("autoplace step, late prompt at half depth, cache off", "late", False),
    "g": ("autoplace step, deep prompts (every layer)", "deep", True),
}
BEFORE = {"b0": ("b at commit b645f39 (before)", "prefix", "before"),
          "e0": ("e at commit b645f39 (before)", "end", "before")}
RATIOS = {"b/a": 2.1, "c/a": None, "b/d": 0.8, "c/d": None, "e/b": 0.6, "e'/b": None, "b'/b": None, "f/b": 0.55,
          "f'/b": None, "g/b": 1.15}


def rte_examples(n: int) -> list[dict]:
    """n examples whose premise is long enough for any length: RTE premises run together, each from another start."""
    rows = [json.loads(line) for line in (DATA / "train.jsonl").read_text().splitlines() if line.strip()]
    return [{"premise": " ".join(r["premise"] for r in rows[i:] + rows[:i]), "hypothesis": rows[i]["hypothesis"],
             "label": rows[i]["label"]} for i in range(n)]


def exact_items(feat, examples, length):
    items = [feat.encode(ex) for ex in examples]
    assert all(len(it.input_ids) == length for it in items), "the text is too short for this length"
    return items


class Bench:
    """Every variant as a zero-argument step function on one backbone and sequence length."""

    def __init__(self, backbone, length: int, device: torch.device, before: bool = False):
        self.backbone, self.device = backbone, device
        task, examples = get_task("rte"), rte_examples(BATCH)
        self.models, self.steps = {}, {}
        plain_feat, _ = build(task, backbone, PromptConfig(TEMPLATES["plain"], encoder="none", max_length=length))
        plain = collate(exact_items(plain_feat, examples, length), backbone.tokenizer.pad_token_id, device)
        short_feat, _ = build(task, backbone, PromptConfig(TEMPLATES["plain"], max_length=length - N_PROMPT))
        short = collate(exact_items(short_feat, examples, length - N_PROMPT), backbone.tokenizer.pad_token_id, device)
        label_ids = torch.tensor(plain_feat.label_ids, device=device)[short["label"]]

        def forward():
            with torch.no_grad(), autocast(backbone):
                backbone.model(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"], use_cache=False)
        self.steps["a"] = forward

        for name, (_, template, cached) in {**VARIANTS, **(BEFORE if before else {})}.items():
            if cached is None:
                continue
            text = TEMPLATES[template].replace("HALF", str(backbone.n_layers // 2))
            feat, model = build(task, backbone, PromptConfig(text, encoder="mlp", max_length=length))
            model.use_prefix_cache = model.use_late_cache = cached is True
            if cached == "before":
                model.forward = types.MethodType(forward_before, model)
            items = exact_items(feat, examples, length)
            optimizer = torch.optim.AdamW([p for p in model.encoder.parameters() if p.requires_grad], lr=LR)
            self.models[name] = model
            self.steps[name] = lambda m=model, it=items, o=optimizer: train_step(
                m, collate(it, backbone.tokenizer.pad_token_id, device), o, 1.0)

        self.steps["d"] = self.peft_step(short, label_ids)
        self.steps = {k: self.steps[k] for k in [*VARIANTS, *BEFORE] if k in self.steps}

    def peft_step(self, batch, label_ids):
        """PEFT P-tuning the way its users train it: logits for the whole vocabulary, loss at the last position."""
        from peft import PromptEncoderConfig, get_peft_model
        config = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=N_PROMPT,
                                     encoder_reparameterization_type="MLP")
        peft_model = get_peft_model(self.backbone.model, config).to(self.device)  # the prompt encoder too
        peft_model.train()
        self.backbone.model.eval()  # the backbone stays as autoplace uses it (no dropout in either model)
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=LR)

        def step():
            with autocast(self.backbone):
                logits = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = F.cross_entropy(logits[:, -1].float(), label_ids)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            return loss.item()
        return step



def forward_before(self, input_ids, slot_ids, attention_mask, answer, **_):
    """PromptedModel.forward at commit b645f39: the whole input with autograd, the trunk's own K/V cache on."""
    hidden = self.backbone.trunk(inputs_embeds=self.embed(input_ids, slot_ids),
                                 attention_mask=attention_mask).last_hidden_state
    return self.score(hidden[torch.arange(hidden.shape[0], device=hidden.device), answer])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(steps: dict, device, warmup: int, repeats: int) -> tuple[dict, dict]:
    """Wall and process-CPU seconds of each step, one step of every variant per round."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    wall, cpu = {name: [] for name in steps}, {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def peak_memory(fn, device) -> int:
    """Tensor bytes at the peak of one (warm) step, above what was live when it started."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline  # what export_memory_timeline draws
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    return max(map(sum, sizes)) - sum(sizes[0]) if sizes else 0


MEMORY_METHOD = {
    "cuda": "torch.cuda.max_memory_allocated during one warm step, above the allocation at its start",
    "cpu": "peak of live tensor bytes during one warm step, above those live at its start, from torch.profiler's "
           "memory timeline (profile_memory=True; the data behind export_memory_timeline). Resident-set deltas were "
           "not used: glibc keeps freed blocks, so a later variant reuses an earlier one's pages and shows ~0",
}


def machine(device, threads: int) -> dict:
    import peft
    import transformers
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": threads, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "device": str(device),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    info["cpu"] = cpu_model()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def ratios(medians: dict) -> dict:
    return {r: round(medians[r.split("/")[0]] / medians[r.split("/")[1]], 3) for r in RATIOS}


def before_after(medians: dict) -> dict:
    if "b0" not in medians:
        return {}
    return {"before_after": {r: round(medians[r[0]] / medians[r[-2:]], 3) for r in ("b/b0", "e/e0")}}


def run(args) -> dict:
    device = torch.device(args.device)
    results = []
    for name in args.models:
        backbone = load_backbone(name, args.device)
        for length in args.lengths:
            bench = Bench(backbone, length, device, args.before)
            load_before = os.getloadavg()[0]
            wall, cpu = time_steps(bench.steps, device, args.warmup, args.repeats)
            load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            medians = {k: statistics.median(v) for k, v in wall.items()}
            cpu_medians = {k: statistics.median(v) for k, v in cpu.items()}
            row = {"model": name, "length": length, "batch": BATCH, "prompt_tokens": N_PROMPT, "loadavg_1min": load,
                   "median_ms": {k: round(v * 1e3, 2) for k, v in medians.items()}, "ratios": ratios(medians),
                   "cpu_median_ms": {k: round(v * 1e3, 2) for k, v in cpu_medians.items()},
                   "cpu_ratios": ratios(cpu_medians), **before_after(medians),
                   "all_ms": {k: [round(t * 1e3, 2) for t in v] for k, v in wall.items()}}
            if args.memory:
                row["peak_memory_mb"] = {k: round(peak_memory(fn, device) / 2**20, 1) for k, fn in bench.steps.items()}
            results.append(row)
            print(f"{name} L={length} (load {load[0]}->{load[1]}): "
                  + "  ".join(f"{k}={v:.2f}" for k, v in row["ratios"].items()) + "   ms: "
                  + "  ".join(f"{k}={v}" for k, v in row["median_ms"].items()), flush=True)
            del bench
    variants = {k: v[0] for k, v in {**VARIANTS, **(BEFORE if args.before else {})}.items()}
    return {"machine": machine(device, torch.get_num_threads()), "memory_measured": MEMORY_METHOD[device.type],
            "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]),
            "settings": {"batch": BATCH, "prompt_tokens": N_PROMPT, "warmup": args.warmup, "repeats": args.repeats,
                         "lr": LR, "encoder": "mlp"},
            "variants": variants, "targets": {k: v for k, v in RATIOS.items() if v}, "templates": TEMPLATES,
            "results": results}


def markdown(report: dict) -> str:
    m = report["machine"]
    settings = report["settings"]
    lines = [f"# Training-step throughput ({m['device']})", "",
             f"{m['date']} · {m['platform']} · {m['cpu']} · {m['cpu_count']} CPUs · torch threads "
             f"{m['torch_threads']}" + (f" · {m['gpu']}" if "gpu" in m else "")
             + f" · torch {m['torch']} · transformers {m['transformers']} · peft {m['peft']}", "",
             f"Batch {settings['batch']}, {settings['prompt_tokens']} prompt tokens, median of {settings['repeats']} "
             f"interleaved steps after {settings['warmup']} warm-up step(s) of each. "
             f"Produced by `{report.get('command', 'python benchmarks/throughput.py')}`; the module docstring "
             "defines every variant. "
             f"The machine's 1-minute load average is shown beside each row: above {m['cpu_count']}, other processes "
             "shared the cores and that row's times are less reliable.", "",
             "| variant | what |", "|---|---|", *[f"| {k} | {v} |" for k, v in report["variants"].items()], "",
             "## Ratios (time / time; targets at length 128: " +
             ", ".join(f"{k} ≤ {v}" for k, v in report["targets"].items()) + ")", "",
             "| model | length | " + " | ".join(RATIOS) + " | load (1 min) before→after |",
             "|---|---|" + "---|" * (len(RATIOS) + 1)]
    for row in report["results"]:
        cells = []
        for r in RATIOS:
            value, target = row["ratios"][r], RATIOS[r]
            mark = "" if target is None or row["length"] != 128 else (" ✓" if value <= target else " ✗")
            cells.append(f"{value:.2f}{mark}")
        load = row["loadavg_1min"]
        lines.append(f"| {row['model']} | {row['length']} | " + " | ".join(cells) + f" | {load[0]}→{load[1]} |")
    timed = list(report["results"][0]["median_ms"])
    lines += ["", "## Median step time (ms)", "", "| model | length | " + " | ".join(timed) + " |",
              "|---|---|" + "---|" * len(timed)]
    lines += [f"| {row['model']} | {row['length']} | " + " | ".join(f"{row['median_ms'][k]:.1f}" for k in timed)
              + " |" for row in report["results"]]
    if "before_after" in report["results"][0]:
        lines += ["", "## Before / after this change (time / time; b0, e0: the forward at commit b645f39)", "",
                  "| model | length | b/b0 | e/e0 |", "|---|---|---|---|"]
        lines += [f"| {row['model']} | {row['length']} | {row['before_after']['b/b0']:.2f} | "
                  f"{row['before_after']['e/e0']:.2f} |" for row in report["results"]]
    if any(row.get("peak_memory_mb") for row in report["results"]):
        lines += ["", f"## Peak memory (MiB): {report['memory_measured']}", "",
                  "| model | length | " + " | ".join(timed) + " |", "|---|---|" + "---|" * len(timed)]
        lines += [f"| {row['model']} | {row['length']} | "
                  + " | ".join(f"{row['peak_memory_mb'][k]:.0f}" for k in timed) + " |" for row in report["results"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "tiny-gpt2"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory pass")
    parser.add_argument("--before", action="store_true", help="also time b0/e0: b and e as at commit b645f39")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"throughput-{torch.device(args.device).type}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    from common import publish  # benchmarks/results/ only: then the table goes into benchmarks/README.md too
    publish(stem.with_suffix(".md"))
    print(markdown(report))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
