"""autoplace from Python: `search`, `train` and `load`, the functions the command line calls.

    import autoplace
    found = autoplace.search(task="mr", data_dir="../shared/data/MR_snippets", n_trials=12, out="runs/mr")
    found.winner.evaluate("test")
    model = autoplace.load("runs/mr/best")
    model.predict([{"sentence": "a gripping, funny film"}])  # [{"label": "positive", "probs": {...}}]

Every option has the name of its command-line flag (`--n-trials` is `n_trials`); bad input raises AutoplaceError
with the one line the command line would print.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import outdir
from .config import DEFAULT_MODEL, PRECISION, SEARCH_OUT, TIED, SearchConfig
from .errors import AutoplaceError
from .inputs import read_text

BACKBONE_OPTIONS = ("model", "device", "precision", "trust_remote_code")


@dataclass
class Artifact:
    """An exported prompt (or ensemble) on its backbone, ready to predict and evaluate."""
    path: Path
    meta: dict
    run: object = field(repr=False)  # a runner.PromptRun or an ensemble.Ensemble
    summary: dict = field(default_factory=dict)  # what the command line prints for it

    def predict(self, examples) -> list[dict]:
        """Labels (or tokens, cloze) with their probabilities, for a list of dicts or a datasets.Dataset."""
        from .tasks.base import input_row
        task = self.run.task
        needed = task.input_fields
        rows = []
        for n, example in enumerate(examples, 1):
            if not isinstance(example, dict) or any(f not in example for f in needed):
                raise AutoplaceError(f"example {n}: needs the fields {', '.join(needed)}")
            rows.append(input_row(task, example, f"example {n}"))
        if not rows:
            return []
        return [task.kind.describe(task, scores, self.run.backbone.tokenizer) for scores in self.run.scores(rows)]

    def evaluate(self, split: str = "dev") -> dict:
        return self.run.evaluate(split)


@dataclass
class SearchResult:
    summary: dict   # what `autoplace search` prints
    study: object   # the optuna.Study
    winner: Artifact


def load(path: str | Path, data_dir: str | None = None, model: str | None = None, device: str | None = None,
         precision: str | None = None, trust_remote_code: bool = False) -> Artifact:
    """An exported artifact, in the precision it was scored in unless `precision` says otherwise."""
    from . import artifact
    from .runner import load as rebuild
    recorded = artifact.read_meta(path).get("precision")
    if precision and recorded and precision != recorded:
        from .errors import say
        say(f"scoring in {precision}, not {recorded} as {path} was scored: scores may differ slightly")
    run, meta = rebuild(path, data_dir, model, device, trust_remote_code, precision or recorded or PRECISION)
    return Artifact(Path(path), meta, run)


def train(task: str | None = None, template: str | None = None, out: str | Path | None = None, *,
          data_dir: str | None = None, model: str | None = None, device: str | None = None,
          precision: str | None = None, trust_remote_code: bool = False, steps: int | None = None,
          batch_size: int | None = None, lr: float | None = None, eval_every: int | None = None,
          max_length: int | None = None, seed: int | None = None, restarts: int | None = None,
          encoder: str | None = None, init: str | None = None, init_words: str | None = None,
          verbalizer: dict | None = None, calibrate: bool | None = None, fresh: bool = False,
          overwrite: bool = False) -> Artifact:
    """Train one template's prompt (train trains, dev picks the checkpoint, test is only reported) and export it
    to `out`. `template` is text, a file holding it, or an exported artifact to continue from (an ensemble's
    members each continue); from an artifact, every setting left None is the artifact's (REUSED), the others
    config.py's defaults."""
    from . import artifact, ensemble
    from .tasks import get_task
    if out is None:
        raise AutoplaceError("train needs an out folder")
    outdir.check(out, "artifact", overwrite)
    if task is None:
        if template is None or not artifact.is_artifact(str(template)):
            raise AutoplaceError("train needs --task (or --template DIR of an exported artifact, whose task it takes)")
        recorded = artifact.read_meta(template)
        task = recorded.get("task_file") or recorded["task"]
    task = get_task(task)
    text, source_meta, source_dir = template_source(template, task)
    options = dict(data_dir=data_dir, model=model, device=device, precision=precision,
                   trust_remote_code=trust_remote_code, steps=steps, batch_size=batch_size, lr=lr,
                   eval_every=eval_every, max_length=max_length, seed=seed, restarts=restarts, encoder=encoder,
                   init=init, init_words=init_words, verbalizer=verbalizer, calibrate=calibrate, fresh=fresh)
    if not (source_meta and ensemble.is_ensemble(source_meta)):
        run, summary = _train_one(task, text, source_meta, source_dir, out, **options)
        return Artifact(Path(out), summary.pop("meta"), run, summary)
    with tempfile.TemporaryDirectory() as tmp:
        runs, folders = [], []
        for i, member in enumerate(ensemble.member_dirs(source_dir, source_meta)):
            folders.append(Path(tmp) / f"m{i}")
            member_meta = artifact.read_meta(member)
            runs.append(_train_one(task, member_meta["template"], member_meta, str(member), folders[-1], **options)[0])
        together = ensemble.Ensemble(runs)
        dev, test = together.evaluate("dev"), together.evaluate("test")  # test reported only
        meta = {"template": source_meta["template"], "task": task.name, "task_file": task.file,
                "model": runs[0].backbone.name, "backbone": runs[0].backbone.signature(),
                "precision": runs[0].backbone.precision, "dev": dev, "test": test, "started_from": source_dir}
        ensemble.save(out, folders, meta)
    return Artifact(Path(out), meta, together, {"out": str(out), "ensemble": len(runs), "dev": dev, "test": test})


def _train_one(task, text: str, source_meta: dict | None, source_dir: str | None, out, *, data_dir, model, device,
               precision, trust_remote_code, steps, batch_size, lr, eval_every, max_length, seed, restarts, encoder,
               init, init_words, verbalizer, calibrate, fresh) -> tuple:
    """Train, test (reported only) and export one prompt; (the run, its summary with its metadata under "meta")."""
    from . import artifact
    from .backbones import load_backbone
    from .config import FILLER, Budget, Plan, configs
    from .pipeline import check_words
    from .runner import export, fit, metadata, prepare
    previous = (source_meta or {}).get("prompt", {})
    s = reused_settings(source_meta, source_dir, dict(steps=steps, batch_size=batch_size, lr=lr, eval_every=eval_every,
                                                      max_length=max_length, seed=seed, restarts=restarts,
                                                      encoder=encoder, init=init))
    words = (tuple(w for w in init_words.split(",") if w.strip()) if isinstance(init_words, str)
             else tuple(init_words or ()))
    plan = Plan(text, encoder=s["encoder"], init=s["init"], lr=s["lr"], init_words=words,
                verbalizer=verbalizer or previous.get("verbalizer"),
                calibrate=previous.get("calibrate", False) if calibrate is None else calibrate,
                filler=previous.get("filler", FILLER))  # a continued prompt keeps the filler it was trained with
    check_words(task, plan)  # bad label words fail before the backbone loads
    prompt, cfg = configs(plan, Budget(s["steps"], s["eval_every"], s["batch_size"], s["max_length"],
                                         restarts=s["restarts"]), s["seed"])
    backbone = load_backbone(model or (source_meta or {}).get("model") or DEFAULT_MODEL, device, trust_remote_code,
                             precision or (source_meta or {}).get("precision") or PRECISION)
    init_state = None
    if source_meta and not fresh:
        artifact.check_backbone(source_dir, source_meta, backbone.signature())
        init_state = artifact.load_weights(source_dir, source_meta)
    run = prepare(task, backbone, prompt, data_dir, init_state)
    result = fit(run, cfg)
    if not run.model.encoder.n_tokens:  # said once the data has loaded, so bad input still gets its one line
        from .errors import say
        say(f"template {prompt.template!r} has no [P] slot: nothing to train, it is scored zero-shot")
    test = run.evaluate("test")  # reported only; nothing is chosen on it
    meta = metadata(run, cfg, result, test, {"started_from": source_dir if init_state else None})
    export(out, run, meta)
    return run, {"out": str(out), "template": prompt.template, "dev": result.dev, "test": test,
                 "steps": result.steps_done, "restarts": result.restarts,
                 "train_seconds": round(result.train_seconds, 2),
                 "seconds_per_step": round(result.train_seconds / max(result.steps_done, 1), 4), "meta": meta}


REUSED = {"max_length": ("prompt", "max_length"), "lr": ("train", "lr"), "batch_size": ("train", "batch_size"),
          "encoder": ("prompt", "encoder"), "init": ("prompt", "init")}  # what train takes from --template DIR


def reused_settings(source_meta: dict | None, source_dir: str | None, given: dict) -> dict:
    """Each training setting: as given, else the artifact's (REUSED ones), else config.py's default; one line says
    what came from the artifact, so a continued prompt trains as it was trained unless a flag says otherwise."""
    from .config import ENCODER, INIT, Budget, TrainConfig
    trained = ("steps", "batch_size", "lr", "eval_every", "seed", "restarts")
    defaults = {**{k: getattr(TrainConfig, k) for k in trained},
                "max_length": Budget.max_length, "encoder": ENCODER, "init": INIT}
    settings, taken = {}, []
    for name, value in given.items():
        section, key = REUSED.get(name, (None, None))
        recorded = (source_meta or {}).get(section, {}).get(key) if section else None
        if value is None and recorded is not None:
            value = recorded
            taken.append(f"{name} {recorded:g}" if isinstance(recorded, float) else f"{name} {recorded}")
        settings[name] = defaults[name] if value is None else value
    if taken:
        from .errors import say
        say(f"from {source_dir}: task {source_meta.get('task')}, {', '.join(taken)} (a flag overrides any of them)")
    return settings


def template_source(arg: str | None, task) -> tuple[str, dict | None, str | None]:
    """(template text, artifact meta or None, artifact path or None) from a template argument."""
    from . import artifact
    if arg is None:
        return task.template, None, None
    arg = str(arg)
    if artifact.is_artifact(arg):
        meta = artifact.read_meta(arg)
        return meta["template"], meta, arg
    if os.path.isdir(arg):
        raise AutoplaceError(f"--template {arg}: folder has no {artifact.META_FILE}")
    if os.path.isfile(arg):  # os.path checks never raise: text too long to be a path is template text
        return read_text(arg, "template file").strip(), None, None
    return arg, None, None


def search(task: str, space: str | None = None, n_trials: int = SearchConfig.n_trials, out: str | Path = SEARCH_OUT,
           storage: str | None = None, study_name: str | None = None, devices=None, device: str | None = None,
           **options) -> SearchResult:
    """Search where prompt slots go, and which words, for a task; every other option is a SearchConfig field
    (model, data_dir, steps, pruner, workers, confirm_top, select, ensemble, ...)."""
    import optuna
    from .backbones import resolve_device
    from .study.run import search as run_search
    from .study.space import default_space_path, load_space
    from .study.storage import default_url, open_storage
    from .tasks import get_task
    out = str(out)
    outdir.check(out, "search")  # a search resumes in its own folder and refuses any other
    the_task = get_task(task)
    derived = None
    if space is None and default_space_path(the_task.name) is None:  # the user's own task: derive its space
        space, derived = str(Path(out) / "space.yaml"), space_text(the_task, options.get("model") or DEFAULT_MODEL,
                                                                   options.get("data_dir"))
    space = str(space or default_space_path(the_task.name))
    if derived is not None and not Path(space).is_file():  # a resumed search keeps the space it started with
        load_space_text(derived, space).check(the_task)
    else:
        load_space(space).check(the_task)  # a bad space fails here, before any model loads or file is written
    for split in ("train", "dev"):  # every split the search will read, before it starts
        the_task.load_split(split, options.get("data_dir"))
    the_task.check_split("test", options.get("data_dir"))  # read and checked, not kept: it is scored once, at the end
    name = study_name or f"autoplace-{re.sub(r'[^A-Za-z0-9_-]', '-', Path(the_task.name).stem)}"
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    devices = [resolve_device(d) for d in devices or ([device] if device else [])]
    cfg = SearchConfig(task=task, space=space, out=out, storage=storage or default_url(out), study_name=name,
                       n_trials=n_trials, devices=devices, **options)
    _check_choice(cfg, the_task)
    open_storage(cfg.storage)  # a bad URL fails before OUT is created
    outdir.claim(out, "search")
    if derived is not None and not Path(space).is_file():
        Path(space).write_text(derived, encoding="utf-8")
    summary = run_search(cfg)
    study = optuna.load_study(storage=open_storage(cfg.storage), study_name=cfg.study_name)
    # the winner in the precision its trials ran in (the artifact records it; "auto" would re-resolve it)
    return SearchResult(summary, study, load(summary["best"], cfg.data_dir, cfg.model, cfg.devices[0] if cfg.devices
                                             else None, None, cfg.trust_remote_code))


def space_text(task, model: str = DEFAULT_MODEL, data_dir: str | None = None) -> str:
    """The space a search of this task uses unless told otherwise, as YAML: the shipped file of a built-in task,
    else one derived from the task's template (its budget measured with the backbone's tokenizer)."""
    from .backbones import load_tokenizer
    from .study.derive import derived_space
    from .study.space import default_space_path
    shipped = default_space_path(task.name)
    if shipped is not None:
        return shipped.read_text(encoding="utf-8")
    return derived_space(task, load_tokenizer(model), data_dir)


def load_space_text(text: str, where: str):
    """A space from YAML text (checked exactly as a file would be), named after where it will be saved."""
    from .study.space import load_space
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_text(text, encoding="utf-8")
        space = load_space(path)
    space.path = where
    return space


def _check_choice(cfg, task) -> None:
    """The final choice's settings fail before the search, not after it."""
    if cfg.confirm_top < 0:
        raise AutoplaceError("--confirm-top must be 0 or more")
    if cfg.ensemble != TIED and not (isinstance(cfg.ensemble, int) and cfg.ensemble >= 1):
        raise AutoplaceError(f"--ensemble {cfg.ensemble!r}: give a number of templates (1 or more) or {TIED!r}")
    if cfg.ensemble != TIED and cfg.ensemble > cfg.n_trials:
        raise AutoplaceError(f"--ensemble {cfg.ensemble} is larger than --n-trials {cfg.n_trials}")
    if cfg.select == "cv":
        pooled = sum(len(task.load_split(split, cfg.data_dir)) for split in ("train", "dev"))
        if cfg.folds < 2 or pooled < cfg.folds:
            raise AutoplaceError(f"--select cv needs 2 or more folds, and at least as many examples in train and dev "
                                 f"together ({task.name} has {pooled}; --folds {cfg.folds})")
