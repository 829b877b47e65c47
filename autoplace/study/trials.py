"""Reading a study back: its trials, their stored prompts (downloaded from the study's artifact store and checked),
a trial rebuilt as a ready prompt, and an ensemble artifact made of stored prompts. Used by export, report and the
search's own winner."""
from __future__ import annotations

import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import TrialState

from .. import artifact, ensemble
from ..errors import AutoplaceError
from ..runner import PromptRun, load, rebuild
from .storage import open_storage, redact
from .opening import ARTIFACT_ATTR


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
            raise AutoplaceError(f"trial {trial.number}: stored {name} cannot be read from {store_dir} "
                                 f"({exc})") from None
    return files


def load_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, data_dir: str | None,
               artifacts: str | None = None, onto=None) -> tuple[PromptRun, dict]:
    """A trial's stored prompt, rebuilt on `onto`'s task and backbone (a worker's Objective) when given, else
    loaded as exported."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = artifact.install(trial_files(study, trial, Path(tmp) / "dl", artifacts), Path(tmp) / "artifact")
        if onto is None:
            return load(folder, data_dir)
        meta = artifact.read_meta(folder)
        return rebuild(folder, meta, artifact.load_weights(folder, meta), onto.task, onto.backbone, data_dir), meta


def ranked_trials(study: optuna.Study) -> list:
    """Completed trials, best first: by dev, but a trial that gave one answer to every dev example (a degenerate
    prompt: MultiRC's F1a rewards answering "right" always) after every trial that did not."""
    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                  key=lambda t: (not t.user_attrs.get("one_answer", False), t.value), reverse=True)


def pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if number is None:
        ranked = ranked_trials(study)
        if not ranked:
            raise AutoplaceError(f"study {study.study_name!r} has no completed trial")
        return ranked[0]
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


def ensemble_from_trials(study, trials: list, out_dir: str | Path, artifacts: str | None, extra: dict) -> Path:
    """An ensemble artifact of some completed trials, from their stored prompts: no retraining."""
    with tempfile.TemporaryDirectory() as tmp:
        folders = []
        for i, trial in enumerate(trials):
            files = trial_files(study, trial, Path(tmp) / f"dl{i}", artifacts)
            folders.append(artifact.install(files, Path(tmp) / ensemble.MEMBER.format(i)))
        first = artifact.read_meta(folders[0])
        meta = {"template": " | ".join(artifact.read_meta(f)["template"] for f in folders), "task": first["task"],
                "task_file": first.get("task_file"), "model": first["model"], "backbone": first.get("backbone"),
                "precision": first.get("precision"), "trials": [t.number for t in trials], **extra}
        return ensemble.save(out_dir, folders, meta)
