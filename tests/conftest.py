import json
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUTOPLACE_SHARED_DATA", REPO.parent / "shared" / "data"))
FEWGLUE = SHARED_DATA / "FewGLUE_32dev"
BENCHMARK_OUTPUTS = (REPO / "benchmarks" / "README.md", REPO / "benchmarks" / "results")


def _benchmark_outputs() -> dict:
    """What the committed benchmark results are on disk: the benchmarks README and each results file, by size and
    modification time (a write changes the latter)."""
    readme, results = BENCHMARK_OUTPUTS
    files = sorted(results.iterdir()) if results.is_dir() else []
    return {path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in (readme, *files) if path.is_file()}


@pytest.fixture(autouse=True)
def _committed_results_untouched(request):
    """A test that runs a benchmark's main() must point it at a temporary folder and README: one that wrote its
    stand-in table into benchmarks/README.md went unnoticed until a later commit nearly carried it."""
    before = _benchmark_outputs()
    yield
    after = _benchmark_outputs()
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"{request.node.nodeid} changed committed benchmark results: {', '.join(changed)}"


@pytest.fixture(scope="session")
def fewglue() -> Path:
    if not (FEWGLUE / "CB" / "train.jsonl").is_file():
        pytest.fail(f"shared data not found at {FEWGLUE}")
    return FEWGLUE


@pytest.fixture(scope="session")
def tiny_gpt2():
    from autoplace.backbones import load_backbone
    return load_backbone("tiny-gpt2", "cpu")


@pytest.fixture(scope="session")
def tiny_bert():
    from autoplace.backbones import load_backbone
    return load_backbone("tiny-bert", "cpu")


@pytest.fixture(params=["tiny-gpt2", "tiny-bert"])
def tiny(request):
    from autoplace.backbones import load_backbone
    return load_backbone(request.param, "cpu")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


WORDS = {"pos": ["good", "great", "fine", "nice", "happy", "superb", "lovely", "brilliant"],
         "neg": ["bad", "awful", "poor", "sad", "terrible", "horrible", "ugly", "dreadful"]}


def synthetic_rows(n: int, seed: int):
    """A learnable toy sentiment task: the label is whether the sentence holds a positive or a negative word."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        word = WORDS[label][int(torch.randint(len(WORDS[label]), (1,), generator=g))]
        rows.append({"sentence": f"the movie was {word}", "label": label})
    return rows


@pytest.fixture
def toy_task_file(tmp_path) -> Path:
    """A custom task YAML with train/dev/test jsonl files next to it."""
    for split, n, seed in (("train", 32, 0), ("dev", 16, 1), ("test", 16, 2)):
        write_jsonl(tmp_path / f"{split}.jsonl", synthetic_rows(n, seed))
    path = tmp_path / "toy.yaml"
    path.write_text(
        "name: toy\nkind: classification\n"
        "data_files: {train: train.jsonl, dev: dev.jsonl, test: test.jsonl}\n"
        "fields: [sentence]\nlabel_field: label\n"
        'verbalizer: {pos: " yes", neg: " no"}\n'
        'template: "{sentence} It was [MASK]"\n')
    return path


GOOD_LR_SPACE = """
skeleton: "<start> {sentence} <after:sentence> It was <before:answer> [MASK] <end>"
slots: {min: 1, max: 2}
length: {min: 2, max: 4}
encoder: [none, mlp]
lr: {low: %s, high: %s, log: true}
budget: {steps: 20, eval_every: 5, batch_size: 8, max_length: 64}
reference: {total_length: 4, lr: 0.05, encoder: none, init: vocab}
"""


@pytest.fixture
def space_file(tmp_path) -> Path:
    """A small placement space for the toy task: 20-step trials, two encoders."""
    path = tmp_path / "space.yaml"
    path.write_text(GOOD_LR_SPACE % (1e-3, 5e-2))
    return path


# -- PostgreSQL, for the tests of several workers and of the study lock ---------------------------------------------
def cannot_run(reason):
    """Skip, except where the environment promises everything (.ci/run sets AUTOPLACE_NO_SKIP): fail there."""
    if os.environ.get("AUTOPLACE_NO_SKIP"):
        pytest.fail(f"AUTOPLACE_NO_SKIP is set, yet: {reason}")
    pytest.skip(reason)


def postgres(*args):
    """tests/support/postgres.sh VERB DIR [PORT]."""
    return subprocess.run([str(REPO / "tests" / "support" / "postgres.sh"), *map(str, args)], capture_output=True,
                          text=True)


def start_postgres():
    """A private server on a free port: (its folder, its URL)."""
    folder = Path("/tmp") / f"autoplace-pg-{uuid.uuid4().hex[:8]}"  # short: the socket path has a length limit
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = postgres("start", folder, port)
    if started.returncode == 3:
        cannot_run(started.stderr.strip())
    assert started.returncode == 0, started.stderr
    return folder, started.stdout.strip()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """The CI server (.ci/run exports AUTOPLACE_TEST_POSTGRES), else a private one started here."""
    if os.environ.get("AUTOPLACE_TEST_POSTGRES"):
        yield os.environ["AUTOPLACE_TEST_POSTGRES"]
        return
    folder, url = start_postgres()
    yield url
    postgres("stop", folder)
    shutil.rmtree(folder, ignore_errors=True)


def build_prompt(task_file, backbone, template, encoder="none", **kw):
    """(task, featurizer, model) for a template on a backbone, as a trial builds them."""
    from autoplace.config import PromptConfig
    from autoplace.pipeline import build
    from autoplace.tasks import get_task
    task = get_task(str(task_file))
    return task, *build(task, backbone, PromptConfig(template, encoder=encoder, **kw))
