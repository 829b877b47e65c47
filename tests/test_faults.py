"""Scale-out and faults: PostgreSQL workers, kill -9 and resume, trials that blow up."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from autoplace.cli import main
from conftest import cannot_run, postgres, start_postgres

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
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # several searches on a few cores: no thrashing


class Server:
    """A private PostgreSQL server that a test may kill (pg_ctl stop -m immediate) and restart on the same port."""

    def __init__(self):
        self.folder, self.url = start_postgres()

    def kill(self):
        assert postgres("kill", self.folder).returncode == 0

    def restart(self):
        restarted = postgres("restart", self.folder)
        assert restarted.returncode == 0, restarted.stderr


@pytest.fixture
def own_postgres():
    """Never the shared CI server: this one goes down."""
    server = Server()
    yield server
    postgres("stop", server.folder)
    shutil.rmtree(server.folder, ignore_errors=True)


def space(tmp_path, steps=20, eval_every=5):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE % (steps, eval_every))
    return path


def search_cmd(task, space_file, out, storage, name, n_trials, *extra):
    return [str(AUTOPLACE), "search", "--task", str(task), "--space", str(space_file), "--model", "tiny-gpt2",
            "--out", str(out), "--storage", storage, "--study-name", name, "--n-trials", str(n_trials), *extra]


def storage_of(url):
    from autoplace.study.storage import open_storage
    return open_storage(url)


@pytest.mark.slow
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
        assert ((tmp_path / f"m{i}" / "report.md").is_file()
                and (tmp_path / f"m{i}" / "best" / "template.json").is_file())
        assert main(["export", "--storage", postgres_url, "--study-name", name, "--out", str(tmp_path / f"e{i}")]) == 0


def _default_sigint():
    """A shell's background job (nohup ... &) ignores SIGINT, and its children inherit that; a user's terminal
    does not. The search must see Ctrl-C as a user's terminal sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_and_stop_mid_trial(cmd, url, name, env, stop):
    """Run a search, wait until a trial has finished and the next one is mid-way, then stop(proc); returns
    (proc, storage) once the process has exited."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=_default_sigint)
    storage, _ = wait_mid_trial(url, name, [proc])
    stop(proc)
    proc.wait(timeout=60)
    return proc, storage


def wait_mid_trial(url, name, procs, pids=None, before_step=None):
    """Wait until a trial has finished, another is mid-way (it has reported a dev score) and more are queued, so
    the searches are still busy; returns (storage, the mid-way trial). pids: only trials owned by these count;
    before_step: only trials not yet past this step (so they are still running a moment later)."""
    storage = None
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(0.3)
        for proc in procs:
            if proc.poll() is not None:
                for other in procs:
                    other.kill()
                pytest.fail(f"a search ended before it got mid-trial: {proc.stderr.read()}")
        try:
            storage = storage or storage_of(url)
            trials = optuna.load_study(storage=storage, study_name=name).trials
        except Exception:  # the study or its schema is not there yet
            continue
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.number >= 1]
        running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values and
                   (pids is None or t.system_attrs.get("autoplace_worker", {}).get("pid") in pids) and
                   (before_step is None or max(t.intermediate_values) < before_step)]
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if done and running and waiting:
            return storage, running[0]
    for proc in procs:
        proc.kill()
    pytest.fail("the searches never got mid-trial")


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


def rerun_beside_a_remote_worker(cmd, env, storage, trial_id):
    """Re-run the search while a 'remote worker' keeps the trial's heartbeat fresh; it dies (stops beating) once
    the re-run says it is waiting for that trial, which the re-run must then retry after the grace period."""
    beating = threading.Event()

    def beat():
        while not beating.is_set():
            storage.record_heartbeat(trial_id)
            time.sleep(0.3)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    err = []
    for line in proc.stderr:
        err.append(line)
        if "RUNNING with a recent heartbeat" in line:
            beating.set()
    beating.set()
    out, _ = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "".join(err))


@pytest.mark.slow
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
    if owner == "another host":
        rerun = rerun_beside_a_remote_worker(cmd, env, storage, killed[0]._trial_id)
    else:
        rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)  # at once: no sleep
    assert rerun.returncode == 0, rerun.stderr
    if owner == "another host":
        assert "RUNNING with a recent heartbeat" in rerun.stderr and "waiting up to 2 s" in rerun.stderr
    else:
        assert f"trial(s) {killed[0].number} were left RUNNING by a process that is gone" in rerun.stderr
    trials = assert_resumed_exactly(url, name, before, killed[0].number, 4)
    for number in before:  # prompts still stored and exportable
        assert main(["export", "--storage", url, "--study-name", name, "--trial", str(number),
                     "--out", str(tmp_path / f"again{number}")]) == 0
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == exported_bytes
    if owner == "this host":
        assert trials[killed[0].number].user_attrs["reason"].startswith("worker gone: process ")


@pytest.mark.slow
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
    from autoplace.study import worker
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
    from autoplace.study import worker

    def broken(*args, **kwargs):
        raise RuntimeError("backbone exploded")

    monkeypatch.setattr(worker, "fit", broken)
    assert main(["search", "--task", str(toy_task_file), "--space", str(space(tmp_path)), "--model", "tiny-gpt2",
                 "--out", str(tmp_path / "s"), "--n-trials", "20", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["autoplace: error: every trial so far failed the same way: RuntimeError: backbone exploded"]
    study = optuna.load_study(storage=f"sqlite:///{tmp_path}/s/study.db", study_name="autoplace-toy")
    assert sum(t.state == TrialState.FAIL for t in study.trials) == 3  # stopped early, the rest still queued


def test_every_sampled_trial_failing_alike_stops_even_when_the_references_succeed(monkeypatch, capsys, toy_task_file,
                                                                                  tmp_path):
    from autoplace.study import worker
    real_fit, fits = worker.fit, []

    def fails_after_the_references(run, cfg, callback=None, progress=None):
        fits.append(run.prompt.template)
        if len(fits) > 4:  # the space's 4 reference points come first and train normally
            raise RuntimeError("sampler proposes nonsense")
        return real_fit(run, cfg, callback, progress)

    monkeypatch.setattr(worker, "fit", fails_after_the_references)
    assert main(["search", "--task", str(toy_task_file), "--space", str(space(tmp_path, steps=4, eval_every=2)),
                 "--model", "tiny-gpt2", "--out", str(tmp_path / "s"), "--n-trials", "20", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["autoplace: error: every trial so far failed the same way: RuntimeError: sampler proposes nonsense"]
    study = optuna.load_study(storage=f"sqlite:///{tmp_path}/s/study.db", study_name="autoplace-toy")
    states = [t.state for t in study.trials]
    assert states[:4] == [TrialState.COMPLETE] * 4 and states.count(TrialState.FAIL) == 3  # the rest stay queued


def assert_exactly_n(storage, name, n, before):
    """Exactly n trials COMPLETE (the pruner is off), none left RUNNING or queued, each failed trial retried once,
    and every trial finished before the fault untouched, its stored prompt included."""
    study = optuna.load_study(storage=storage, study_name=name)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == n and TrialState.RUNNING not in states
    assert TrialState.WAITING not in states
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len([t for t in study.trials if "failed_trial" in t.system_attrs]) == len(failed)
    trials = {t.number: t for t in study.trials}
    for number, (value, stored) in before.items():
        assert trials[number].value == value and trials[number].user_attrs["autoplace_artifact"] == stored
    return trials


@pytest.mark.slow
def test_postgres_restart_mid_study_workers_wait_and_finish_exactly_n(own_postgres, toy_task_file, tmp_path):
    """The server is killed mid-trial (pg_ctl stop -m immediate) and is down long enough for heartbeats to go
    stale: both workers wait, retry and finish the study with exactly N trials; a trial whose heartbeat went stale
    meanwhile is retried once, and the worker that was running it gives it up."""
    name, n, url = f"outage-{uuid.uuid4().hex[:8]}", 8, own_postgres.url
    env = {**os.environ, **ONE_THREAD, "AUTOPLACE_HEARTBEAT": "1"}  # stale after 2 s without a heartbeat
    space_file, shared = space(tmp_path, steps=240, eval_every=5), tmp_path / "shared-artifacts"  # caught mid-trial
    procs = [subprocess.Popen(search_cmd(toy_task_file, space_file, tmp_path / f"m{i}", url, name, n,
                                         "--pruner", "none", "--artifacts", str(shared), "--storage-patience", "120"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    storage, _ = wait_mid_trial(url, name, procs)
    before = finished_trials(storage, name)
    own_postgres.kill()
    time.sleep(5)
    own_postgres.restart()
    # a third worker arriving now fails the trials whose heartbeat went stale (most often before their workers'
    # next beat) and queues them again: their workers must give them up, and the count must stay exact
    arriving = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2,
                                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
    study = optuna.load_study(storage=arriving, study_name=name)
    optuna.storages.fail_stale_trials(study)
    stale = [t.number for t in study.trials if t.state == TrialState.FAIL]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "secret-pw" not in out + err and "Traceback" not in err
    shown = url.replace("secret-pw", "***")
    assert any(f"autoplace: storage '{shown}' is unreachable; retrying for up to 120 s" in err.splitlines()
               for _, err in outputs)
    assert any(f"autoplace: storage '{shown}' is back; going on" in err.splitlines() for _, err in outputs)
    trials = assert_exactly_n(storage, name, n, before)
    workers = [w for out, _ in outputs for w in json.loads(out)["workers"]]
    assert sum(w["complete"] for w in workers) == n  # each trial told once
    for number in stale:
        assert [t.state for t in trials.values() if t.system_attrs.get("failed_trial") == number] == [
            TrialState.COMPLETE]
        assert any(f"trial {number} was taken over by another worker" in w["failures"] for w in workers), workers


@pytest.mark.slow
def test_postgres_gone_for_good_stops_in_one_line_and_a_rerun_resumes(own_postgres, toy_task_file, tmp_path):
    """--workers 2 and a 3 s --storage-patience: the server does not come back, so the search stops with one
    line; once it is back, the same command finishes exactly N trials, reclaiming those the workers held."""
    name, n, url = f"gone-{uuid.uuid4().hex[:8]}", 8, own_postgres.url
    env = {**os.environ, **ONE_THREAD, "AUTOPLACE_HEARTBEAT": "1"}
    cmd = search_cmd(toy_task_file, space(tmp_path, steps=60, eval_every=5), tmp_path / "s", url, name, n,
                     "--workers", "2", "--pruner", "none", "--storage-patience", "3")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    storage, _ = wait_mid_trial(url, name, [proc])
    before = finished_trials(storage, name)
    own_postgres.kill()
    killed_at = time.time()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert time.time() - killed_at < 60
    shown = url.replace("secret-pw", "***")
    assert err.strip().splitlines()[-1] == (f"autoplace: error: storage '{shown}' went away and did not come back "
                                            "within 3 s; run the same command again to resume")
    assert "Traceback" not in err and "secret-pw" not in err

    own_postgres.restart()
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["trials"]["complete"] == n, rerun.stderr
    assert_exactly_n(storage, name, n, before)


@pytest.mark.slow
def test_a_full_disk_mid_write_fails_in_one_line_and_keeps_the_older_artifact(toy_task_file, tmp_path):
    """train --overwrite onto a tiny tmpfs with room for half the new weights: exit 2 with one line, the older
    artifact byte for byte, and no temporary folder left beside it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        cannot_run(f"cannot mount a tmpfs here (it needs root, as in CI): {mounted.stderr.strip()}")
    try:
        out = disk / "art"
        train = [str(AUTOPLACE), "train", "--task", str(toy_task_file), "--model", "tiny-gpt2", "--out", str(out),
                 "--template", "[P:4] {sentence} It was [MASK]", "--encoder", "lstm", "--steps", "2",
                 "--eval-every", "2"]
        first = subprocess.run(train, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        weights, page = len(before["prompt.safetensors"]), os.statvfs(disk).f_frsize
        room = weights // 2 // page * page
        assert 0 < room < weights
        stat = os.statvfs(disk)
        (disk / "ballast").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - room))
        assert os.statvfs(disk).f_bavail * page == room  # the new weights start to fit, then the disk is full

        second = subprocess.run(train + ["--overwrite", "--seed", "1"], capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        last = second.stderr.strip().splitlines()[-1]
        assert last == f"autoplace: error: cannot write {out}: No space left on device"
        assert "Traceback" not in second.stderr
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert sorted(os.listdir(disk)) == ["art", "ballast"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.slow
def test_five_workers_one_killed_finish_exactly_n(postgres_url, toy_task_file, tmp_path):
    """5 processes on one PostgreSQL study; one is killed with -9 mid-trial: a surviving worker on this host sees
    the trial's process is gone, fails it and queues it again, so the study still ends with exactly N trials."""
    name, n, steps = f"five-{uuid.uuid4().hex[:8]}", 12, 120  # 2 s trials: time to catch one mid-way
    space_file, shared = space(tmp_path, steps=steps, eval_every=5), tmp_path / "shared-artifacts"
    procs = [subprocess.Popen(search_cmd(toy_task_file, space_file, tmp_path / f"w{i}", postgres_url, name, n,
                                         "--pruner", "none", "--artifacts", str(shared)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **ONE_THREAD}) for i in range(5)]
    storage, victim = wait_mid_trial(postgres_url, name, procs, pids={p.pid for p in procs}, before_step=steps // 2)
    pid = victim.system_attrs["autoplace_worker"]["pid"]
    before = finished_trials(storage, name)
    os.kill(pid, signal.SIGKILL)
    outputs = {p.pid: p.communicate(timeout=600) for p in procs}  # reaps the killed one late: a zombie meanwhile
    for proc in procs:
        assert proc.returncode == (-signal.SIGKILL if proc.pid == pid else 0), outputs[proc.pid][1]
    trials = assert_exactly_n(storage, name, n, before)
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["reason"] == f"worker gone: process {pid} ended without finishing the trial"
    retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    notes = [line for p, (_, err) in outputs.items() if p != pid for line in err.splitlines()
             if "left RUNNING" in line]
    assert notes == [f"autoplace: trial(s) {victim.number} were left RUNNING by a process that is gone; "
                     "marked failed and queued again"]
    by_victim = sum(t.state == TrialState.COMPLETE and t.system_attrs["autoplace_worker"]["pid"] == pid
                    for t in trials.values())
    assert sum(w["complete"] for p, (out, _) in outputs.items() if p != pid
               for w in json.loads(out)["workers"]) == n - by_victim  # each trial told once


def test_storage_calls_wait_out_a_lost_connection_then_give_up_in_one_line(capsys):
    """The retry itself, without a server: a lost connection (even wrapped by Optuna, or hidden behind SQLAlchemy's
    PendingRollbackError) is retried until it answers; a bad query is not; past the patience, one line."""
    import sqlalchemy.exc
    from autoplace.study.storage import StorageGone, patiently
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    answers = [lost, optuna.exceptions.StorageInternalError("commit failed"), "answer"]
    answers[1].__cause__ = lost

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    assert patiently(call, 10, "postgresql://u:***@db/x") == "answer"
    assert capsys.readouterr().err.splitlines() == [
        "autoplace: storage 'postgresql://u:***@db/x' is unreachable; retrying for up to 10 s",
        "autoplace: storage 'postgresql://u:***@db/x' is back; going on"]

    def bad_query():
        raise sqlalchemy.exc.ProgrammingError("SELECT nonsense", {}, Exception("syntax error"))
    with pytest.raises(sqlalchemy.exc.ProgrammingError):
        patiently(bad_query, 10, "x")

    def gone():
        try:
            raise lost
        except sqlalchemy.exc.OperationalError:
            raise sqlalchemy.exc.PendingRollbackError("rollback first") from None
    with pytest.raises(StorageGone, match=r"^storage 'x' went away and did not come back within 0.2 s; run the same "
                                          r"command again to resume$"):
        patiently(gone, 0.2, "x")


def test_a_trial_claimed_but_never_signed_is_queued_again_after_the_grace_period(tmp_path, capsys):
    """The database went away between a claim's two writes (RUNNING, then the owner): no owner, no heartbeat, so
    neither the owner check nor Optuna's heartbeat sees it; past the grace period it is queued again."""
    from autoplace.study.storage import claim, reclaim_orphans
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/study.db", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="unsigned")
    study.enqueue_trial({})
    study.enqueue_trial({})
    unsigned = study.trials[0]
    storage.set_trial_state_values(unsigned._trial_id, TrialState.RUNNING)
    signed = claim(study)
    assert reclaim_orphans(study) == []  # not yet: its worker may be about to sign it
    time.sleep(1.5)
    assert reclaim_orphans(study) == [unsigned.number]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert study.trials[signed.number].system_attrs["autoplace_worker"]["pid"] == os.getpid()
    assert capsys.readouterr().err.strip() == (f"autoplace: trial(s) {unsigned.number} were claimed by a worker that "
                                               "lost the storage before it could sign them; marked failed and queued "
                                               "again")


@pytest.mark.slow
def test_a_dead_workers_trial_is_failed_and_retried_once(monkeypatch, tmp_path, capsys):
    """Heartbeat retry, without a search: a trial owned by a process on this host that is gone is failed and queued
    again at once; one owned by another host once its heartbeat is older than the grace period (the storage that
    open_storage makes retries it). Each retry names the trial it replaces and keeps its parameters."""
    from autoplace.study import storage as storage_module
    from autoplace.study.storage import OWNER_ATTR, claim, reclaim_orphans
    monkeypatch.setattr(storage_module, "HEARTBEAT_SECONDS", 1)  # stale after 2 s without a heartbeat
    storage = storage_module.open_storage(f"sqlite:///{tmp_path}/study.db")
    study = optuna.create_study(storage=storage, study_name="dead")
    for x in (1.0, 2.0):
        study.enqueue_trial({"x": x})
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here, there = claim(study), claim(study)
    storage.set_trial_system_attr(here._trial_id, OWNER_ATTR, {"host": socket.gethostname(), "pid": int(ended.stdout)})
    storage.set_trial_system_attr(there._trial_id, OWNER_ATTR, {"host": "elsewhere", "pid": 1})
    storage.record_heartbeat(there._trial_id)
    assert reclaim_orphans(study) == [here.number]  # its process is gone: at once; the other one may be alive
    assert study.trials[there.number].state == TrialState.RUNNING
    time.sleep(3)
    reclaim_orphans(study)  # now its heartbeat is stale
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.WAITING] * 2
    retries = {t.system_attrs["failed_trial"]: t for t in trials[2:]}
    assert sorted(retries) == [here.number, there.number]
    for failed in trials[:2]:
        assert retries[failed.number].system_attrs["fixed_params"] == failed.system_attrs["fixed_params"]


def _join_with_more(url, name, n_trials, barrier, counts_seen):
    """A worker process joining the study with a larger --n-trials, at the same moment as the others. It pauses
    between counting the queue and topping it up, so that joiners without a lock all count the same 3 trials."""
    import autoplace.study.storage as storage_module
    from autoplace.study.storage import budget_trials, open_storage, open_study
    counted = storage_module.budget_trials

    def count_slowly(study):
        trials = counted(study)
        time.sleep(0.5)
        return trials

    storage_module.budget_trials = count_slowly
    storage = open_storage(url)
    barrier.wait()
    study, _ = open_study(url, storage, name, None, None, lambda s: None, n_trials)
    counts_seen.append(len(budget_trials(study)))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_joiners_asking_for_more_trials_at_once_queue_exactly_n(request, backend, tmp_path):
    """Four workers join a 3-trial study at the same moment, each with --n-trials 8: the queue is topped up under
    the study's lock, so it holds exactly 8 trials, not 3 + 4 x 5."""
    import multiprocessing
    from autoplace.study.storage import budget_trials, open_storage, open_study
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path}/study.db"
    name = f"topup-{uuid.uuid4().hex[:8]}"
    study, created = open_study(url, open_storage(url), name, None, None, lambda s: None, 3)
    assert created and len(budget_trials(study)) == 3
    context = multiprocessing.get_context("fork")
    barrier, seen = context.Barrier(4), context.Manager().list()
    joiners = [context.Process(target=_join_with_more, args=(url, name, 8, barrier, seen)) for _ in range(4)]
    for joiner in joiners:
        joiner.start()
    for joiner in joiners:
        joiner.join(120)
    assert [j.exitcode for j in joiners] == [0, 0, 0, 0]
    study = optuna.load_study(storage=open_storage(url), study_name=name)
    assert len(budget_trials(study)) == 8 and study.user_attrs["n_trials"] == 8
    assert sorted(seen) == [8, 8, 8, 8]  # each joiner, once it had the lock, saw the whole queue
