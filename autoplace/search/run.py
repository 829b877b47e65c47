"""`autoplace search` end to end: workers spend the budget, the top templates are confirmed over seeds, the
winner alone is scored on the test split, exported to OUT/best and reported."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import TrialState

from .. import artifact
from ..backbones import is_causal
from ..errors import AutoplaceError
from ..pipeline import PromptConfig
from ..runner import Prompted, export, fit, load, metadata, prepare, rebuild
from ..trainer import TrainConfig
from .lifecycle import say
from .space import load_space
from .storage import open_storage, redact
from .study import ARTIFACT_ATTR, SearchConfig, counts, open_study
from .worker import Objective, work


def search(cfg: SearchConfig, task=None) -> dict:
    """task: a Task object to use instead of resolving cfg.task (in-process callers, e.g. benchmarks on subsets)."""
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    start = time.time()
    if cfg.workers == 1:
        work_done = [work(cfg, 0, task)]
    else:
        from joblib import Parallel, delayed
        open_study(cfg, load_space(cfg.space), is_causal(cfg.model, cfg.trust_remote_code))  # create before forking
        work_done = Parallel(n_jobs=cfg.workers, backend="loky")(delayed(work)(cfg, i) for i in range(cfg.workers))
    search_seconds = time.time() - start
    study = optuna.load_study(storage=open_storage(cfg.storage), study_name=cfg.study_name)
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        raise AutoplaceError(f"study {cfg.study_name!r} has no completed trial; nothing to export "
                             f"(trial states: {counts(study)})")
    n_trials, done, running = study.user_attrs["n_trials"], _done(study), counts(study)["running"]
    if running:  # only live workers elsewhere still hold trials: report what is done, say so
        say(f"{done} of {n_trials} trials are done; {running} still RUNNING in other live workers, so this winner "
            "and report cover the done ones (run the command again later to include them)")
    objective = Objective(cfg, cfg.devices[0] if cfg.devices else None, task)
    run, meta = choose_winner(cfg, study, objective)
    meta["test"] = run.evaluate("test")  # the only time the test split is read
    best = export(Path(cfg.out) / "best", run, meta)
    study.set_user_attr("final", {"template": meta["template"], "trial": meta.get("trial"), "dev": meta["dev"],
                                  "test": meta["test"], "search_seconds": round(search_seconds, 1)})
    from .report import write_report
    report = write_report(study, cfg.out)
    return {"out": cfg.out, "best": str(best), "report": str(report), "template": meta["template"],
            "dev": meta["dev"], "test": meta["test"], "search_seconds": round(search_seconds, 1),
            "trials": counts(study), "done": f"{done} of {n_trials}", "workers": work_done,
            "storage": redact(cfg.storage)}


def _done(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def choose_winner(cfg: SearchConfig, study: optuna.Study, objective: Objective) -> tuple[Prompted, dict]:
    """The best trial by dev; with --confirm-top k, the best of k templates by mean dev over --confirm-seeds runs."""
    ranked = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
                    key=lambda t: t.value, reverse=True)
    if cfg.confirm_top <= 0:
        return load_trial(study, ranked[0], objective.cfg.data_dir, onto=objective)
    candidates, seen = [], set()
    for trial in ranked:
        key = (trial.user_attrs["template"], trial.params.get("encoder"), trial.params.get("init"))
        if key not in seen:
            seen.add(key)
            candidates.append(trial)
        if len(candidates) == cfg.confirm_top:
            break
    confirmed = []
    for trial in candidates:
        runs = [retrain(cfg, objective, trial, cfg.seed + 1 + i) for i in range(cfg.confirm_seeds)]
        scores = [r[2] for r in runs]
        confirmed.append({"trial": trial.number, "template": trial.user_attrs["template"], "search_dev": trial.value,
                          "seed_devs": scores, "mean_dev": statistics.mean(scores),
                          "std_dev": statistics.pstdev(scores), "runs": runs})
    winner = max(confirmed, key=lambda c: (c["mean_dev"], c["search_dev"]))
    study.set_user_attr("confirm", [{k: v for k, v in c.items() if k != "runs"} for c in confirmed])
    run, meta, _ = max(winner["runs"], key=lambda r: r[2])  # dev selects among the winner's seeds too
    meta["confirm"] = {"seeds": cfg.confirm_seeds, "mean_dev": winner["mean_dev"], "std_dev": winner["std_dev"]}
    return run, meta


def retrain(cfg: SearchConfig, objective: Objective, trial: optuna.trial.FrozenTrial, seed: int):
    params, budget = trial.params, objective.budget
    prompt = PromptConfig(template=trial.user_attrs["template"], encoder=params.get("encoder", "none"),
                          init=params.get("init", "vocab"), seed=seed, max_length=budget["max_length"])
    train_cfg = TrainConfig(steps=budget["steps"], batch_size=budget["batch_size"],
                            lr=params.get("lr", objective.space.reference.lr), eval_every=budget["eval_every"],
                            seed=seed)
    run = prepare(objective.task, objective.backbone, prompt, cfg.data_dir)
    result = fit(run, train_cfg, progress=False)
    meta = metadata(run, train_cfg, result, None,
                    {"study": cfg.study_name, "trial": trial.number, "confirm_seed": seed})
    return run, meta, result.dev[objective.task.primary_metric]


def trial_files(study: optuna.Study, trial: optuna.trial.FrozenTrial, folder: Path,
                artifacts: str | None = None) -> dict[str, Path]:
    """Download a trial's stored artifact files from the study's artifact store."""
    stored = trial.user_attrs.get(ARTIFACT_ATTR)
    if trial.state != TrialState.COMPLETE or not stored:
        raise AutoplaceError(f"trial {trial.number} is {trial.state.name.lower()} and has no stored prompt "
                             "(only completed trials keep theirs)")
    store_dir, ids = artifacts or stored["store"], stored["ids"]
    if not store_dir or not Path(store_dir).is_dir():
        raise AutoplaceError(f"artifact store {store_dir} not found (pass --artifacts DIR)")
    store = FileSystemArtifactStore(store_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, artifact_id in ids.items():
        files[name] = folder / name
        try:
            download_artifact(artifact_store=store, file_path=str(files[name]), artifact_id=artifact_id)
        except Exception as exc:  # ArtifactNotFound and OS errors
            raise AutoplaceError(f"trial {trial.number}: stored {name} cannot be read from {store_dir} ({exc})") from None
    return files


def load_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, data_dir: str | None,
               artifacts: str | None = None, onto: Objective | None = None) -> tuple[Prompted, dict]:
    """A trial's stored prompt, rebuilt on `onto`'s task and backbone when given (else loaded as exported)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = artifact.install(trial_files(study, trial, Path(tmp) / "dl", artifacts), Path(tmp) / "artifact")
        if onto is None:
            return load(folder, data_dir)
        meta = artifact.read_meta(folder)
        return rebuild(folder, meta, artifact.load_weights(folder, meta), onto.task, onto.backbone, data_dir), meta


def pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if number is None:
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise AutoplaceError(f"study {study.study_name!r} has no completed trial")
        return max(complete, key=lambda t: t.value)
    for trial in trials:
        if trial.number == number:
            return trial
    raise AutoplaceError(f"study {study.study_name!r} has no trial {number} (it has 0-{len(trials) - 1})")


def load_existing(storage: str, study_name: str) -> optuna.Study:
    store = open_storage(storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(store)]
    if study_name not in names:
        raise AutoplaceError(f"storage {redact(storage)!r} has no study {study_name!r} "
                             f"(it has: {', '.join(names) or 'none'})")
    return optuna.load_study(storage=store, study_name=study_name)
