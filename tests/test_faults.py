"""Scale-out and faults: PostgreSQL workers, kill -9 and resume, trials that blow up."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from autoplace.cli import main
from conftest import REPO

SPACE = """
skeleton: "<start> {sentence} <after:sentence> It was <before:answer> [MASK]"
slots: {min: 1, max: 2}
length: {min: 2, max: 4}
encoder: [none, mlp]
lr: {low: 1.0e-3, high: 5.0e-2, log: true}
budget: {steps: %d, eval_every: %d, batch_size: 8, max_length: 64}
reference: {total_length: 4, lr: 0.05, encoder: none, init: vocab}
"""
AUTOPLACE = Path(sys.executable).with_name("autoplace")


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """The CI server (.ci/run exports AUTOPLACE_TEST_POSTGRES), else a private one started here."""
    if os.environ.get("AUTOPLACE_TEST_POSTGRES"):
        yield os.environ["AUTOPLACE_TEST_POSTGRES"]
        return
    folder = Path("/tmp") / f"autoplace-pg-{uuid.uuid4().hex[:8]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = REPO / "tests" / "support" / "postgres.sh"
    started = subprocess.run([str(script), "start", str(folder), str(port)], capture_output=True, text=True)
    if started.returncode == 3:
        pytest.skip(started.stderr.strip())
    assert started.returncode == 0, started.stderr
    yield started.stdout.strip()
    subprocess.run([str(script), "stop", str(folder)], check=False)


def space(tmp_path, steps=20, eval_every=5):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE % (steps, eval_every))
    return path


def search_cmd(task, space_file, out, storage, name, n_trials, *extra):
    return [str(AUTOPLACE), "search", "--task", str(task), "--space", str(space_file), "--model", "tiny-gpt2",
            "--out", str(out), "--storage", storage, "--study-name", name, "--n-trials", str(n_trials), *extra]


def storage_of(url):
    from autoplace.search.storage import open_storage
    return open_storage(url)


def test_two_processes_join_one_postgres_study(postgres_url, toy_task_file, tmp_path):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    space_file, shared = space(tmp_path), tmp_path / "shared-artifacts"
    procs = [subprocess.Popen(search_cmd(toy_task_file, space_file, tmp_path / f"m{i}", postgres_url, name, 8,
                                         "--artifacts", str(shared)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "secret-pw" not in out + err
    study = optuna.load_study(storage=storage_of(postgres_url), study_name=name)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(8))  # exactly N trials, no duplicate numbers
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    summaries = [json.loads(out) for out, _ in outputs]
    assert sum(w["complete"] + w["pruned"] for s in summaries for w in s["workers"]) == 8
    assert all(s["workers"][0]["complete"] + s["workers"][0]["pruned"] > 0 for s in summaries)  # both worked
    for i in range(2):  # report and export work from either side
        assert (tmp_path / f"m{i}" / "report.md").is_file() and (tmp_path / f"m{i}" / "best" / "template.json").is_file()
        assert main(["export", "--storage", postgres_url, "--study-name", name, "--out", str(tmp_path / f"e{i}")]) == 0


def start_and_stop_mid_trial(cmd, url, name, env, stop):
    """Run a search, wait until a trial has finished and the next one is mid-way, then stop(proc); returns
    (proc, storage) once the process has exited."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    storage = None
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(0.3)
        if proc.poll() is not None:
            pytest.fail(f"the search ended before it got mid-trial: {proc.stderr.read()}")
        try:
            storage = storage or storage_of(url)
            trials = optuna.load_study(storage=storage, study_name=name).trials
        except Exception:  # the study or its schema is not there yet
            continue
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.number >= 1]
        running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]
        waiting = [t for t in trials if t.state == TrialState.WAITING]  # so the process is still busy when stopped
        if done and running and waiting:
            break
    else:
        proc.kill()
        pytest.fail("the search never got mid-trial")
    stop(proc)
    proc.wait(timeout=60)
    return proc, storage


def finished_trials(storage, name):
    study = optuna.load_study(storage=storage, study_name=name)
    return {t.number: (t.value, t.user_attrs["autoplace_artifact"]) for t in study.trials
            if t.state == TrialState.COMPLETE}


def assert_resumed_exactly(url, name, before, stopped, n_trials):
    """Finished work intact; the stopped trial failed with a retry that completed; exactly N complete."""
    study = optuna.load_study(storage=storage_of(url), study_name=name)
    trials = {t.number: t for t in study.trials}
    for number, (value, stored) in before.items():
        assert trials[number].value == value and trials[number].user_attrs["autoplace_artifact"] == stored
    assert trials[stopped].state == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == stopped]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == n_trials and TrialState.RUNNING not in states
    assert TrialState.WAITING not in states
    return trials


@pytest.mark.parametrize("backend,owner", [("sqlite", "this host"), ("sqlite", "another host"),
                                           ("postgresql", "this host")])
def test_kill_9_mid_trial_then_an_immediate_rerun_finishes_the_study(request, backend, owner, toy_task_file, tmp_path):
    """kill -9 leaves a RUNNING trial. On this host the re-run sees its process is gone and retries it at once;
    a trial owned by another host is retried once its heartbeat has gone stale, which the re-run waits out."""
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path}/study.db"
    name = f"kill-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "AUTOPLACE_HEARTBEAT": "1"}  # stale after 2 s without a heartbeat
    cmd = search_cmd(toy_task_file, space(tmp_path, steps=200, eval_every=50), tmp_path / "s", url, name, 4,
                     "--pruner", "none")
    _, storage = start_and_stop_mid_trial(cmd, url, name, env, lambda p: os.killpg(p.pid, signal.SIGKILL))
    before = finished_trials(storage, name)
    study = optuna.load_study(storage=storage, study_name=name)
    killed = [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    if owner == "another host":
        storage.set_trial_system_attr(killed[0]._trial_id, "autoplace_worker", {"host": "elsewhere", "pid": 1})
    exported = tmp_path / "exported"
    assert main(["export", "--storage", url, "--study-name", name, "--trial", str(min(before)),
                 "--out", str(exported)]) == 0
    exported_bytes = {p.name: p.read_bytes() for p in exported.iterdir()}
    if owner == "another host":  # a remote worker that beat just now, then died; judged with a 20 s grace period
        storage.record_heartbeat(killed[0]._trial_id)
        env["AUTOPLACE_HEARTBEAT"] = "10"

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)  # at once: no sleep
    assert rerun.returncode == 0, rerun.stderr
    if owner == "another host":
        assert "RUNNING with a recent heartbeat" in rerun.stderr and "waiting up to 20 s" in rerun.stderr
    else:
        assert f"trial(s) {killed[0].number} were left RUNNING by a process that is gone" in rerun.stderr
    trials = assert_resumed_exactly(url, name, before, killed[0].number, 4)
    for number in before:  # prompts still stored and exportable
        assert main(["export", "--storage", url, "--study-name", name, "--trial", str(number),
                     "--out", str(tmp_path / f"again{number}")]) == 0
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == exported_bytes
    if owner == "this host":
        assert trials[killed[0].number].user_attrs["reason"].startswith("worker gone: process ")


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_mid_trial_requeues_it_and_a_rerun_finishes_exactly_n(sig, status, toy_task_file, tmp_path):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM: the running trial is marked failed and queued again before the
    process exits, so the re-run, with the heartbeat still fresh, finishes exactly N trials."""
    url, name = f"sqlite:///{tmp_path}/study.db", "interrupt"
    cmd = search_cmd(toy_task_file, space(tmp_path, steps=200, eval_every=50), tmp_path / "s", url, name, 4,
                     "--pruner", "none")
    proc, storage = start_and_stop_mid_trial(cmd, url, name, dict(os.environ), lambda p: p.send_signal(sig))
    err = proc.stderr.read().strip().splitlines()
    assert proc.returncode == status
    study = optuna.load_study(storage=storage, study_name=name)
    stopped = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(stopped) == 1 and stopped[0].user_attrs["reason"] == f"interrupted by {sig.name}"
    assert err[-1] == (f"autoplace: interrupted ({sig.name}): trial {stopped[0].number} was marked failed and "
                       "queued again; run the same command again to resume")
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    before = finished_trials(storage, name)

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["trials"]["complete"] == 4
    assert_resumed_exactly(url, name, before, stopped[0].number, 4)


def test_blown_up_trials_fail_alone_and_the_study_goes_on(monkeypatch, capsys, toy_task_file, tmp_path):
    """Injected faults: a NaN loss (real, through the trainer), a CUDA OOM and a bug each fail one trial."""
    from autoplace.model import PromptedModel
    from autoplace.search import worker
    real_score, real_fit = PromptedModel.score, worker.fit
    plan = {1: "nan", 2: "oom", 3: "bug"}
    current = {}

    def score(self, at_answer):
        out = real_score(self, at_answer)
        return out * float("nan") if current.get("fault") == "nan" else out

    def fit(run, cfg, callback=None, progress=None):
        trial_number = len([e for e in events if e == "fit"])
        events.append("fit")
        current["fault"] = plan.get(trial_number)
        if current["fault"] == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if current["fault"] == "bug":
            raise ZeroDivisionError("division by zero")
        return real_fit(run, cfg, callback, progress)

    events = []
    monkeypatch.setattr(PromptedModel, "score", score)
    monkeypatch.setattr(worker, "fit", fit)
    out = tmp_path / "s"
    assert main(["search", "--task", str(toy_task_file), "--space", str(space(tmp_path)), "--model", "tiny-gpt2",
                 "--out", str(out), "--n-trials", "6", "--pruner", "none"]) == 0
    study = optuna.load_study(storage=f"sqlite:///{out}/study.db", study_name="autoplace-toy")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 3 and states.count(TrialState.COMPLETE) == 3
    reasons = {t.number: t.user_attrs["reason"] for t in study.trials if t.state == TrialState.FAIL}
    assert reasons[1].startswith("non-finite loss: loss is nan at step 1")
    assert reasons[2] == "CUDA out of memory"
    assert reasons[3].startswith("ZeroDivisionError") and "traceback" in study.trials[3].user_attrs
    assert "trial 2 failed: CUDA out of memory" in (out / "report.md").read_text()


def test_every_trial_failing_alike_stops_with_one_line(monkeypatch, capsys, toy_task_file, tmp_path):
    from autoplace.search import worker

    def broken(*args, **kwargs):
        raise RuntimeError("backbone exploded")

    monkeypatch.setattr(worker, "fit", broken)
    assert main(["search", "--task", str(toy_task_file), "--space", str(space(tmp_path)), "--model", "tiny-gpt2",
                 "--out", str(tmp_path / "s"), "--n-trials", "20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["autoplace: error: every trial so far failed the same way: RuntimeError: backbone exploded"]
    study = optuna.load_study(storage=f"sqlite:///{tmp_path}/s/study.db", study_name="autoplace-toy")
    assert sum(t.state == TrialState.FAIL for t in study.trials) == 3  # stopped early, the rest still queued


def test_every_sampled_trial_failing_alike_stops_even_when_the_references_succeed(monkeypatch, capsys, toy_task_file,
                                                                                  tmp_path):
    from autoplace.search import worker
    real_fit, fits = worker.fit, []

    def fails_after_the_references(run, cfg, callback=None, progress=None):
        fits.append(run.prompt.template)
        if len(fits) > 4:  # the space's 4 reference points come first and train normally
            raise RuntimeError("sampler proposes nonsense")
        return real_fit(run, cfg, callback, progress)

    monkeypatch.setattr(worker, "fit", fails_after_the_references)
    assert main(["search", "--task", str(toy_task_file), "--space", str(space(tmp_path, steps=4, eval_every=2)),
                 "--model", "tiny-gpt2", "--out", str(tmp_path / "s"), "--n-trials", "20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["autoplace: error: every trial so far failed the same way: RuntimeError: sampler proposes nonsense"]
    study = optuna.load_study(storage=f"sqlite:///{tmp_path}/s/study.db", study_name="autoplace-toy")
    states = [t.state for t in study.trials]
    assert states[:4] == [TrialState.COMPLETE] * 4 and states.count(TrialState.FAIL) == 3  # the rest stay queued
