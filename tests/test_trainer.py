"""The training loop: dev selects, callbacks and pruning, patience, seeds, a frozen backbone."""
import dataclasses
import json

import pytest
import torch

from autoplace.config import TrainConfig
from autoplace.inference import predict
from autoplace.trainer import dev_steps, train
from conftest import build_prompt

DEV_STEPS, DEV_SCORES = [2, 4, 6, 8, 10], [0.5, 0.75, 0.875, 0.625, 0.5]  # dev rises, peaks at step 6, then falls


def test_callback_can_stop_training(tiny_gpt2, toy_task_file):
    task, feat, model = build_prompt(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [MASK]")
    items = feat.encode_all(task.load_split("train"))
    seen = []
    result = train(model, task, items, items, TrainConfig(steps=50, eval_every=5),
                   callback=lambda step, score: seen.append(step) or step < 10, progress=False)
    assert seen == [5, 10] and result.stopped_early and result.steps_done == 10


def test_dev_is_scored_every_eval_every_steps_and_at_the_last():
    assert dev_steps(12, 3) == [3, 6, 9, 12]
    assert dev_steps(12, 5) == [5, 10, 12]
    assert dev_steps(4, 4) == [4]


def test_callback_sees_every_dev_step_when_nothing_stops_it(tiny_gpt2, toy_task_file):
    task, feat, model = build_prompt(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [MASK]")
    items = feat.encode_all(task.load_split("train"))
    seen = []
    result = train(model, task, items, items, TrainConfig(steps=12, eval_every=5),
                   callback=lambda step, score: seen.append(step) or True, progress=False)
    assert seen == [5, 10, 12] == [step for step, _ in result.history] and not result.stopped_early


def test_template_without_slots_is_scored_zero_shot(tiny_gpt2, toy_task_file):
    task, feat, model = build_prompt(toy_task_file, tiny_gpt2, "{sentence} It was [MASK]", encoder="lstm")
    items = feat.encode_all(task.load_split("dev"))
    result = train(model, task, items, items, TrainConfig(steps=10), progress=False)
    by_hand = sum(int(s.argmax()) == item.label for s, item in zip(predict(model, items), items)) / len(items)
    assert result.steps_done == 0 and result.dev["acc"] == pytest.approx(by_hand)


@pytest.mark.parametrize("calibrate", [False, True], ids=["raw", "calibrated"])
def test_dev_selects_the_kept_prompt_when_dev_rises_then_falls(tiny_gpt2, toy_task_file, monkeypatch, calibrate):
    """Dev selects: with dev scores that rise and then fall, training keeps the prompt of the best dev step (not the
    last one), reports that step and its score, and a calibrated prompt divides by the content-free prior of the
    prompt it kept. The dev scores are scripted; the prompt is really trained, and snapshotted at every dev step."""
    from autoplace import trainer
    from autoplace.inference import refresh_calibration
    task, feat, model = build_prompt(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [P:2] [MASK]", encoder="mlp",
                               calibrate=calibrate)
    refresh_calibration(model)
    items = feat.encode_all(task.load_split("train"))
    scripted, snapshots = iter(DEV_SCORES), []

    def scripted_dev(model, task, items, batch_size=32):
        snapshots.append({k: v.detach().clone() for k, v in model.encoder.state_dict().items()})
        return {task.primary_metric: next(scripted)}, []

    monkeypatch.setattr(trainer, "evaluate", scripted_dev)
    result = train(model, task, items, items, TrainConfig(steps=10, eval_every=2, lr=0.05), progress=False)
    assert result.history == list(zip(DEV_STEPS, DEV_SCORES)) and result.steps_done == 10
    assert result.best_step == 6 and result.dev == {task.primary_metric: 0.875}
    kept, best, last = model.encoder.state_dict(), snapshots[DEV_STEPS.index(6)], snapshots[-1]
    assert all(torch.equal(kept[k], best[k]) for k in kept)  # the prompt as it was at step 6, bit for bit
    assert not all(torch.equal(best[k], last[k]) for k in best)  # and it kept moving after step 6
    if calibrate:
        prior = predict(model, model.content_free, calibrated=False).softmax(-1).mean(0).log()
        torch.testing.assert_close(model.log_prior, prior)


def test_the_optimizer_holds_the_prompt_and_nothing_of_the_backbone(tiny_gpt2, toy_task_file, monkeypatch):
    """The backbone is frozen: the optimizer is given the prompt's parameters only, so it keeps no state on the
    backbone's."""
    optimizers, real = [], torch.optim.AdamW

    def spy(*args, **kwargs):
        optimizers.append(real(*args, **kwargs))
        return optimizers[-1]

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    task, feat, model = build_prompt(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [MASK]", encoder="mlp")
    items = feat.encode_all(task.load_split("train"))
    train(model, task, items, items[:8], TrainConfig(steps=3, eval_every=3), progress=False)
    (optimizer,) = optimizers
    prompt = {id(p) for p in model.encoder.parameters()}
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == prompt and optimizer.state and {id(p) for p in optimizer.state} <= prompt
    assert not held & {id(p) for p in tiny_gpt2.model.parameters()}


def test_two_runs_of_one_seed_give_the_same_prompt(tiny_gpt2, toy_task_file):
    """A seed reproduces a run: the starting vectors, the encoder's layers and the batch order all follow it, so two
    runs of one seed give the same losses and the same prompt, bit for bit, whatever ran before them."""
    runs = []
    for _ in range(2):
        torch.rand(1000)  # the global random state differs between the two runs
        task, feat, model = build_prompt(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [P:2] [MASK]",
                                         encoder="lstm", seed=5)
        items = feat.encode_all(task.load_split("train"))
        result = train(model, task, items, items[:8], TrainConfig(steps=8, batch_size=4, eval_every=4, lr=0.05,
                                                                  seed=5), progress=False)
        runs.append((result.losses, model.encoder.state_dict()))
    (losses, first), (again_losses, again) = runs
    assert losses == again_losses and all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("patience, stops_at", [(1, 8), (2, 10), (3, 12), (0, 12)])
def test_patience_stops_once_dev_has_not_improved_for_that_many_evaluations(tiny_gpt2, toy_task_file, monkeypatch,
                                                                           patience, stops_at):
    """Scripted dev (0.5, 0.75, 0.875, 0.625, 0.5, 0.4): best at step 6, then no better. Patience p stops p
    evaluations later, keeps the best prompt, and is not a pruned run; 0 trains every step, and so does a patience
    that runs out at the last step anyway (that run was not cut short)."""
    from autoplace import trainer
    task, feat, model = build_prompt(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [MASK]", encoder="mlp")
    items = feat.encode_all(task.load_split("train"))
    scripted = iter(DEV_SCORES + [0.4])
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: ({task.primary_metric: next(scripted)}, []))
    result = train(model, task, items, items, TrainConfig(steps=12, eval_every=2, lr=0.05, patience=patience),
                   progress=False)
    assert result.steps_done == stops_at and result.best_step == 6 and result.dev[task.primary_metric] == 0.875
    assert result.out_of_patience == (stops_at < 12) and not result.stopped_early


def test_evaluations_during_training_score_a_fixed_dev_subset_and_the_kept_prompt_all_of_dev(tiny_gpt2, toy_task_file,
                                                                                             monkeypatch):
    """eval_examples=6: every evaluation during training scores the same 6 dev examples, whatever the run's seed;
    the kept prompt of a finished run is then scored once on all of dev, and that is its dev score. A run that its
    callback stopped (a pruned trial) is not scored again."""
    from autoplace import trainer
    real, scored = trainer.evaluate, []

    def recording(model, task, items, batch_size=32):
        scored.append([id(item) for item in items])
        return real(model, task, items, batch_size)

    monkeypatch.setattr(trainer, "evaluate", recording)
    task, feat, model = build_prompt(toy_task_file, tiny_gpt2, "[P:2] {sentence} It was [MASK]", encoder="mlp")
    items, dev = (feat.encode_all(task.load_split(split)) for split in ("train", "dev"))
    subsets = []
    for seed in (0, 1):
        scored.clear()
        result = train(model, task, items, dev, TrainConfig(steps=6, eval_every=2, lr=0.05, eval_examples=6,
                                                            seed=seed), progress=False)
        assert [len(s) for s in scored] == [6, 6, 6, len(dev)] == [6, 6, 6, 16]
        assert scored[0] == scored[1] == scored[2] and set(scored[0]) < {id(item) for item in dev}
        assert result.dev == real(model, task, dev)[0]  # the kept prompt on all of dev
        subsets.append(scored[0])
    assert subsets[0] == subsets[1]
    scored.clear()
    stopped = train(model, task, items, dev, TrainConfig(steps=6, eval_every=2, eval_examples=6), progress=False,
                    callback=lambda step, score: False)
    assert stopped.stopped_early and [len(s) for s in scored] == [6]
    grouped = [dataclasses.replace(item, group=f"q{i // 4}") for i, item in enumerate(dev)]  # 4 questions of 4 options
    scored.clear()
    train(model, task, items, grouped, TrainConfig(steps=2, eval_every=2, eval_examples=6), progress=False)
    kept = {item.group for item in grouped if id(item) in scored[0]}
    assert len(kept) == 1 and len(scored[0]) == 4  # one whole question: two would be 8 options, more than 6


# -- restarts: a run whose prompt gives one answer to all of dev is trained again from a fresh seed ------------------
def one_answer_on(seeds, dev_of=None):
    """The real training loop, but the runs of these seeds are made to give one answer to all of dev (at the dev
    score dev_of(seed) when given) and those of other seeds two: which seeds fall over is scripted, so the test
    does not hang on where a tiny model's training happens to land on this CPU."""
    from autoplace import trainer

    def train(model, task, train_items, dev_items, cfg, callback=None, progress=None):
        result = trainer.train(model, task, train_items, dev_items, cfg, callback, progress)
        train.seconds.append(result.train_seconds)
        n = len(result.predictions)
        if cfg.seed not in seeds:
            return dataclasses.replace(result, predictions=[i % 2 for i in range(n)])
        dev = {**result.dev, task.primary_metric: dev_of(cfg.seed)} if dev_of else result.dev
        return dataclasses.replace(result, predictions=[0] * n, dev=dev)
    train.seconds = []
    return train


def late_run(tiny_gpt2, toy_task_file, **prompt):
    from autoplace.config import PromptConfig
    from autoplace.runner import prepare
    from autoplace.tasks import get_task
    return prepare(get_task(str(toy_task_file)), tiny_gpt2,
                   PromptConfig("{sentence} It was [P:2@1] [MASK]", encoder="mlp", filler="init", **prompt))


RESTART_CFG = TrainConfig(steps=6, eval_every=3, lr=0.05, restarts=1, seed=0)


def test_a_one_answer_run_is_trained_again_from_a_fresh_seed_and_exports_the_prompt_it_kept(
        tiny_gpt2, toy_task_file, monkeypatch, tmp_path):
    """The restart is a real run of another seed: the same dev, weights and filler as training that seed directly;
    its artifact names that seed and loads back to the same dev score (the init filler moved with the seed)."""
    from autoplace import runner
    run = late_run(tiny_gpt2, toy_task_file)
    first_model, first_filler = run.model, list(run.featurizer.filler_ids)
    monkeypatch.setattr(runner, "train", scripted := one_answer_on({0}))
    result = runner.fit(run, RESTART_CFG, progress=False)
    assert len(scripted.seconds) == 2 and result.train_seconds == pytest.approx(sum(scripted.seconds))  # both cost
    assert (result.restarts, result.seed, run.prompt.seed) == (1, runner.RESTART_SEED, runner.RESTART_SEED)
    assert run.model is not first_model and not result.one_answer
    assert run.featurizer.filler_ids != first_filler  # the init tokens of the new seed, below the prompt's layer

    direct = late_run(tiny_gpt2, toy_task_file, seed=runner.RESTART_SEED)
    by_hand = runner.fit(direct, dataclasses.replace(RESTART_CFG, seed=runner.RESTART_SEED, restarts=0))
    assert result.dev == by_hand.dev and direct.featurizer.filler_ids == run.featurizer.filler_ids
    assert result.history == by_hand.history and result.losses == by_hand.losses
    for name, weight in run.model.encoder.state_dict().items():
        assert torch.equal(weight, direct.model.encoder.state_dict()[name]), name

    meta = runner.metadata(run, RESTART_CFG, result, None)
    assert (meta["train"]["seed"], meta["prompt"]["seed"], meta["restarts"]) == (runner.RESTART_SEED,) * 2 + (1,)
    loaded, _ = runner.load(runner.export(tmp_path / "kept", run, meta))
    assert loaded.evaluate("dev")["acc"] == pytest.approx(result.dev["acc"])


@pytest.mark.parametrize("restarts, first_dev, again_dev, kept_seed", [
    (0, 0.5, 0.9, 0),                       # restarts off: the one-answer run stays
    (1, 0.75, 0.5, 0),                      # both one answer: dev keeps the better, the first
    (1, 0.5, 0.75, 1000),                   # both one answer: the restart (seed + 1000) scored better
    (2, 0.5, 0.5, 0),                       # ties keep the first; two restarts tried, neither better
])
def test_restarts_keep_the_better_run_by_dev(tiny_gpt2, toy_task_file, monkeypatch, restarts, first_dev, again_dev,
                                             kept_seed):
    from autoplace import runner
    run = late_run(tiny_gpt2, toy_task_file)
    first_model = run.model
    devs = {0: first_dev, 1000: again_dev, 2000: again_dev}
    monkeypatch.setattr(runner, "train", one_answer_on(set(devs), devs.get))
    result = runner.fit(run, dataclasses.replace(RESTART_CFG, restarts=restarts), progress=False)
    assert (result.restarts, result.seed, result.dev["acc"]) == (restarts, kept_seed, devs[kept_seed])
    assert (run.model is first_model) == (kept_seed == 0) and run.prompt.seed == kept_seed and result.one_answer


def test_a_pruned_or_healthy_run_is_not_restarted_and_a_restart_does_not_report_to_the_pruner(
        tiny_gpt2, toy_task_file, monkeypatch):
    from autoplace import runner
    monkeypatch.setattr(runner, "train", one_answer_on({0}))
    seen = []
    stopped = runner.fit(late_run(tiny_gpt2, toy_task_file), RESTART_CFG, lambda step, _: seen.append(step) and False)
    assert stopped.stopped_early and stopped.restarts == 0 and seen == [3]
    seen.clear()
    restarted = runner.fit(late_run(tiny_gpt2, toy_task_file), RESTART_CFG, lambda step, _: seen.append(step) or True)
    assert restarted.restarts == 1 and seen == [3, 6]  # the first run's dev steps only
    healthy = runner.fit(late_run(tiny_gpt2, toy_task_file, seed=5), dataclasses.replace(RESTART_CFG, seed=5))
    assert healthy.restarts == 0 and healthy.seed == 5


@pytest.mark.parametrize("flag, restarts", [([], 1), (["--restarts", "0"], 0), (["--restarts", "2"], 2)])
def test_autoplace_train_restarts_flag_sets_how_often_a_one_answer_run_trains_again(
        toy_task_file, tmp_path, monkeypatch, capsys, flag, restarts):
    from autoplace import runner
    from autoplace.cli import main
    monkeypatch.setattr(runner, "train", one_answer_on({0, 1000, 2000}))  # every seed falls over
    out = tmp_path / "art"
    assert main(["train", "--task", str(toy_task_file), "--model", "tiny-gpt2", "--template",
                 "[P:2] {sentence} It was [MASK]", "--steps", "2", "--eval-every", "1", "--out", str(out), *flag]) == 0
    meta = json.loads((out / "template.json").read_text())
    assert json.loads(capsys.readouterr().out)["restarts"] == meta["restarts"] == restarts
    assert meta["train"]["restarts"] == restarts
