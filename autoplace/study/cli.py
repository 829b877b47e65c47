"""`autoplace search | export | report | dashboard`."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .. import outdir
from ..config import CV_TOP, PRUNERS, SEARCH_OUT, TIED, SearchConfig
from ..errors import AutoplaceError


def _count(what: str):
    def parse(text: str) -> int:
        if not text.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {what} (0 or more)")
        return int(text)
    return parse


def _ensemble(text: str) -> int | str:
    if text == TIED:
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of templates (1 or more) nor {TIED!r}")
    return int(text)


def add_commands(sub, common, positive, out_args, tasks_help: str) -> None:
    d = SearchConfig  # every default below is config.py's
    p = sub.add_parser("search", help="search where prompt slots go (Optuna study)")
    p.add_argument("--task", required=True, help=tasks_help)
    p.add_argument("--space", default=None, help="search-space YAML (default: search_spaces/<family>.yaml)")
    p.add_argument("--n-trials", type=positive(int), default=d.n_trials,
                   help="trials in the study, references included")
    p.add_argument("--timeout", type=positive(float), default=None, help="seconds before workers stop claiming trials")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--pruner", choices=PRUNERS, default=d.pruner)
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///OUT/study.db)")
    p.add_argument("--study-name", default=None, help="default: autoplace-<task>")
    p.add_argument("--workers", type=positive(int), default=d.workers, help="worker processes on this machine")
    p.add_argument("--storage-patience", type=positive(float), default=d.storage_patience,
                   help="seconds workers wait for a database server that stops answering before they stop "
                        "(the same command again resumes)")
    p.add_argument("--devices", default=None, help="comma-separated devices to pin workers to, e.g. cuda:0,cuda:1")
    p.add_argument("--steps", type=positive(int), default=None, help="per-trial training steps (overrides the space)")
    p.add_argument("--eval-every", type=positive(int), default=None)
    p.add_argument("--batch-size", type=positive(int), default=None)
    p.add_argument("--max-length", type=positive(int), default=None,
                   help="input tokens per example (overrides the space)")
    p.add_argument("--patience", type=_count("evaluations"), metavar="P", default=None,
                   help="stop a trial once dev has not improved for P evaluations; 0 turns it off (default: the "
                        "space's budget.patience, else off)")
    p.add_argument("--eval-examples", type=_count("examples"), metavar="N", default=None,
                   help="score N dev examples (a fixed choice) at each evaluation during a trial, and the kept "
                        "prompt on all of dev; 0: all of dev each time (default: the space's budget.eval_examples)")
    p.add_argument("--confirm-top", type=int, default=d.confirm_top,
                   help="retrain the k best templates over several seeds")
    p.add_argument("--confirm-seeds", type=positive(int), default=d.confirm_seeds)
    p.add_argument("--select", choices=["dev", "cv"], default=d.select,
                   help=f"cv: judge the top templates (--confirm-top, default {CV_TOP}) by k-fold over train and dev")
    p.add_argument("--folds", type=positive(int), default=d.folds, help="folds for --select cv")
    p.add_argument("--keep-manual-unless-better", action="store_true",
                   help="export the task's own template zero-shot unless the winner's paired 90%% interval against "
                        "it on dev lies above zero")
    p.add_argument("--quiet", action="store_true", help="no line per finished trial, no progress bar")
    p.add_argument("--ensemble", type=_ensemble, default=d.ensemble, metavar="K|tied",
                   help="k > 1: OUT/best averages the top k templates' calibrated probabilities (as PET does); "
                        "tied: the winner and every trial tied with it on dev")
    out_args(p, overwrite=False, default=SEARCH_OUT,
             help="folder for the study, best/, report.md (new or empty; the same command again resumes it)")
    p.add_argument("--artifacts", default=None, help="where trial prompts are stored (default OUT/artifacts; "
                                                     "a shared folder when several machines join one study)")
    common(p)
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser("export", help="export a trial's prompt as an artifact (or a PEFT adapter)")
    _study_args(p, out_args, "artifact (or adapter) folder to write")
    p.add_argument("--trial", type=int, default=None, help="trial number (default: the best)")
    p.add_argument("--format", choices=["autoplace", "peft"], default="autoplace")
    p.add_argument("--ensemble", type=_ensemble, default=d.ensemble, metavar="K|tied",
                   help="k > 1: one artifact of the k best distinct templates, answering together; tied: the best "
                        "trial and every trial tied with it on dev")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("report", help="write report.md, trials.csv and plots for a study")
    _study_args(p, out_args, "folder for report.md, trials.csv and plots (may be the search's own)")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("dashboard", help="browse a search's study in optuna-dashboard")
    p.add_argument("out", type=os.path.expanduser, metavar="OUT", help="the search folder")
    p.add_argument("--storage", default=None, help="the search's storage URL (default: sqlite:///OUT/study.db)")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1", help="127.0.0.1 is this machine only")
    p.set_defaults(handler=cmd_dashboard)


def _study_args(p, out_args, out_help: str) -> None:
    p.add_argument("search", nargs="?", default=None, metavar="SEARCH", type=os.path.expanduser,
                   help="a search's OUT folder, instead of --storage and --study-name")
    p.add_argument("--storage", default=None, help="the study's storage URL (default: SEARCH's study.db)")
    p.add_argument("--study-name", default=None, help="default: the one study in the storage")
    out_args(p, required=True, help=out_help)
    p.add_argument("--artifacts", default=None, help="the artifact store, if it moved (default: where each trial "
                                                     "recorded it)")


SEARCH_OPTIONS = ("model", "data_dir", "timeout", "seed", "pruner", "workers", "steps", "eval_every", "batch_size",
                  "max_length", "patience", "eval_examples", "confirm_top", "confirm_seeds", "select", "folds",
                  "ensemble", "artifacts", "trust_remote_code", "precision", "storage_patience",
                  "keep_manual_unless_better")


def cmd_search(args) -> None:
    from ..api import search
    found = search(args.task, args.space, args.n_trials, args.out, args.storage, args.study_name, args.devices,
                   args.device, progress=False if args.quiet else None,
                   **{name: getattr(args, name) for name in SEARCH_OPTIONS})
    print(json.dumps(found.summary))


def cmd_export(args) -> None:
    import tempfile
    from .. import artifact
    from .trials import load_trial, pick_trial, trial_files
    outdir.check(args.out, "peft" if args.format == "peft" else "artifact", args.overwrite)
    study = _open_study(args)
    if args.ensemble != 1:
        from .trials import ensemble_from_trials
        from .winner import members_of
        if args.format == "peft":
            raise AutoplaceError("--ensemble: a PEFT adapter holds one prompt; export the members one by one")
        members = members_of(study, args.ensemble, lambda t: load_trial(study, t, None, args.artifacts)[0])
        out = ensemble_from_trials(study, members, args.out, args.artifacts, {"dev": None})
        print(json.dumps({"out": str(out), "trials": [t.number for t in members], "format": "ensemble"}))
        return
    trial = pick_trial(study, args.trial)
    if args.format == "peft":
        from ..peft_export import export_peft
        run, _ = load_trial(study, trial, None, args.artifacts)
        out = export_peft(run, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = artifact.install(trial_files(study, trial, Path(tmp), args.artifacts), args.out)
    print(json.dumps({"out": str(out), "trial": trial.number, "template": trial.user_attrs.get("template"),
                      "words": trial.user_attrs.get("words"), "dev": trial.user_attrs.get("dev"),  # as train prints it
                      "format": args.format}))


def cmd_report(args) -> None:
    from .report import write_report
    outdir.check(args.out, "report", args.overwrite)
    study = _open_study(args)
    outdir.claim(args.out, "report")  # a search folder keeps its own marker
    print(json.dumps({"report": str(write_report(study, args.out))}))


def _open_study(args):
    """The study named by a search's OUT folder, or by --storage and --study-name."""
    from .trials import load_existing
    if args.search is None and not (args.storage and args.study_name):
        raise AutoplaceError("name the search: its OUT folder (autoplace export runs/nli ...), or --storage and "
                             "--study-name")
    url = search_storage(args.search, args.storage)
    return load_existing(url, args.study_name or _only_study(url))


def search_storage(folder: str | None, storage: str | None) -> str:
    """The storage URL of a search folder (its study.db) unless one is given; never creates an empty database."""
    from .storage import default_url, redact
    url = storage or default_url(folder)
    if url.startswith("sqlite:///") and not Path(url.split(":///", 1)[1]).is_file():
        raise AutoplaceError(f"storage {redact(url)!r}: no such database file" if storage else
                             f"{folder} holds no study (no study.db); for a search stored elsewhere, "
                             "pass --storage URL")
    return url


def _only_study(url: str) -> str:
    from .storage import open_storage, redact
    names = [s.study_name for s in open_storage(url).get_all_studies()]
    if len(names) != 1:
        raise AutoplaceError(f"storage {redact(url)!r} holds {len(names)} studies ({', '.join(names) or 'none'}): "
                             "pass --study-name")
    return names[0]


def cmd_dashboard(args) -> None:
    """Serve optuna-dashboard on the search's storage until Ctrl-C (threaded wsgiref, as optuna-dashboard's own CLI)."""
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
    from .storage import open_storage, redact
    url = search_storage(args.out, args.storage)
    storage = open_storage(url)
    names = [s.study_name for s in storage.get_all_studies()]
    if not names:
        raise AutoplaceError(f"storage {redact(url)!r} holds no study")
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise AutoplaceError("optuna-dashboard is not installed: pip install 'autoplace[dashboard]'") from None

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in args.host else socket.AF_INET

    class Quiet(WSGIRequestHandler):
        def log_message(self, *_):
            pass

    try:
        httpd = make_server(args.host, args.port, wsgi(storage), server_class=Server, handler_class=Quiet)
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise AutoplaceError(f"cannot serve on {args.host}:{args.port}: {reason}") from None
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"optuna-dashboard for {', '.join(names)} ({redact(url)}): http://{host}:{httpd.server_port}/dashboard/ "
          "(Ctrl-C stops it)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
