import json

import pytest
import torch

from autoplace import artifact
from autoplace.errors import AutoplaceError
from autoplace.config import PromptConfig
from autoplace.runner import export, fit, load, metadata, prepare
from autoplace.tasks import get_task
from autoplace.config import TrainConfig
from autoplace.inference import predict


@pytest.fixture
def trained(tiny, toy_task_file, tmp_path):
    task = get_task(str(toy_task_file))
    run = prepare(task, tiny, PromptConfig("[P:2] {sentence} [P:1] It was [MASK]", encoder="lstm"))
    cfg = TrainConfig(steps=20, lr=3e-2, eval_every=10)
    result = fit(run, cfg, progress=False)
    out = export(tmp_path / "arts" / "art", run, metadata(run, cfg, result, None))
    return run, out


def test_saved_and_loaded_artifact_predicts_identically(trained):
    run, out = trained
    meta = json.loads((out / "template.json").read_text())
    assert meta["format_version"] == artifact.FORMAT_VERSION and meta["template"] == run.prompt.template
    assert meta["backbone"]["hidden_size"] == run.backbone.hidden_size and meta["prompt"]["encoder"] == "lstm"
    loaded, _ = load(out, device="cpu")
    items = run.items("test")
    assert torch.equal(predict(run.model, items), predict(loaded.model, loaded.items("test")))
    assert [p.name for p in out.parent.iterdir()] == ["art"]  # no temporary folders left behind


def test_truncated_or_modified_weights_are_refused(trained):
    _, out = trained
    data = (out / "prompt.safetensors").read_bytes()
    (out / "prompt.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(AutoplaceError, match="does not match the checksum"):
        load(out, device="cpu")


def test_missing_file_and_other_backbone_are_refused(trained, tmp_path):
    run, out = trained
    other = "tiny-bert" if run.backbone.causal else "tiny-gpt2"
    with pytest.raises(AutoplaceError, match=r"was trained on tiny-.* \(vocab_size 4915.\); "
                                             r"backbone tiny-.* has vocab_size"):
        load(out, model=other, device="cpu")
    (out / "template.json").unlink()
    with pytest.raises(AutoplaceError, match="template.json is missing"):
        load(out, device="cpu")


def test_export_replaces_an_older_artifact_whole(trained):
    run, out = trained
    before = (out / "prompt.safetensors").read_bytes()
    with torch.no_grad():
        run.model.encoder.input.add_(1.0)
    export(out, run, {"template": run.prompt.template, "task": "toy", "model": run.backbone.name,
                      "prompt": run.prompt.to_dict()})
    assert (out / "prompt.safetensors").read_bytes() != before
    assert sorted(p.name for p in out.parent.iterdir()) == ["art"]
