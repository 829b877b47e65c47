"""`autoplace` command line: one small function per command; user errors print one line and exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from . import outdir
from .config import DEFAULT_MODEL, ENCODER, ENCODERS, INIT, INITS, PRECISION, PRECISIONS, Budget, TrainConfig
from .errors import AutoplaceError
from .inputs import json_lines

EXIT_USAGE = 2
MAX_LENGTH = Budget.max_length
TASKS_HELP = ("a built-in task (rte|nli, cb, boolq, copa, wic, wsc, multirc, mr|sentiment; `autoplace tasks` lists "
              "them) or a task .yaml")
TEMPLATE_SYNTAX = ("template syntax: {field} a field's text; [P:n] n trained prompt tokens at the input; [P:n@k] "
                   "at layer k's input instead; [P:n@all] a fresh vector at every layer; [MASK] the answer")


class _Defaults(argparse.HelpFormatter):
    """--help shows each flag's default (those of config.py), except where there is none or it is off."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)".strip()


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Defaults)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, no usage dump
        raise AutoplaceError(f"{self.prog}: {message}")


def _positive(kind, zero_allowed: bool = False):
    def check(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value < 0 if zero_allowed else value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be {'0 or more' if zero_allowed else 'positive'}")
        return value
    return check


def _common(p: argparse.ArgumentParser, model_default: str | None = DEFAULT_MODEL,
            precision_default: str | None = PRECISION) -> None:
    p.add_argument("--data-dir", default=None, help="folder with the task's data files (or set AUTOPLACE_DATA_DIR)")
    p.add_argument("--model", default=model_default, help="smollm2-135m (offline default), tiny-gpt2, tiny-bert, "
                                                          "a hub id or a local folder")
    p.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when present)")
    p.add_argument("--precision", choices=PRECISIONS, default=precision_default,
                   help="the frozen forward's precision (auto: bf16 on CUDA, fp32 on CPU; bf16 is faster on CPUs "
                        "with bf16 instructions, but its scores differ from fp32's)"
                        + ("" if precision_default else "; default: the artifact's"))
    p.add_argument("--trust-remote-code", action="store_true", help="allow a hub model's own code to run")


def _out_args(p: argparse.ArgumentParser, flag: str = "--out", overwrite: bool = True, **kwargs) -> None:
    """An output path (`~` expanded even when quoted) and, where it can replace something, --overwrite."""
    p.add_argument(flag, type=os.path.expanduser, **kwargs)
    if overwrite:
        p.add_argument("--overwrite", action="store_true",
                       help=f"replace what {flag} holds, if autoplace wrote it (a folder with other files is refused)")


def _verbalizer(text: str) -> dict:
    try:
        words = json.loads(text)
    except ValueError:
        words = None
    if not isinstance(words, dict) or not all(isinstance(w, str) for w in words.values()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object of label -> word")
    return words


def _train_args(p: argparse.ArgumentParser) -> None:
    """Unset flags take config.py's default, or with --template DIR the artifact's where api.REUSED says so."""
    from .api import REUSED
    defaults = TrainConfig()
    for flag, kind, default in (("--steps", int, defaults.steps), ("--batch-size", int, defaults.batch_size),
                                ("--lr", float, defaults.lr), ("--eval-every", int, defaults.eval_every),
                                ("--max-length", int, MAX_LENGTH)):
        reused = flag[2:].replace("-", "_") in REUSED
        p.add_argument(flag, type=_positive(kind), default=None,
                       help=f"default: {default:g}" + (", or the artifact's" if reused else ""))
    p.add_argument("--seed", type=int, default=None, help=f"default: {defaults.seed}")
    p.add_argument("--restarts", type=_positive(int, zero_allowed=True), default=None,
                   help=f"train a prompt that gives one answer to all of dev again from a fresh seed, up to this "
                        f"often; 0: never (default: {defaults.restarts})")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = _Parser(prog="autoplace", description="Search where soft-prompt tokens go in a frozen LM's input.")
    parser.add_argument("--version", action="version", version=f"autoplace {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("tasks", help="list tasks and their default templates")

    p = sub.add_parser("train", help="train one template's prompt and export it")
    p.add_argument("--task", default=None, help=f"{TASKS_HELP} (default: --template DIR's task)")
    p.add_argument("--template", default=None, help="template text, a file holding it, or an exported DIR; "
                   + TEMPLATE_SYNTAX)
    p.add_argument("--encoder", choices=ENCODERS, default=None, help=f"default: {ENCODER}, or the artifact's")
    p.add_argument("--init", choices=INITS, default=None, help=f"default: {INIT}, or the artifact's")
    p.add_argument("--init-words", default=None, help="comma-separated words for vocab init")
    p.add_argument("--verbalizer", default=None, type=_verbalizer,
                   help='label words as JSON, e.g. \'{"pos": " great", "neg": " terrible"}\' (default: the task\'s)')
    p.add_argument("--calibrate", action="store_true", default=None,
                   help="contextual calibration: divide label probabilities by those of content-free inputs")
    p.add_argument("--fresh", action="store_true", help="with --template DIR: start from scratch, not its weights")
    _out_args(p, required=True, help="artifact folder to write (new or empty; an older artifact needs --overwrite)")
    _common(p, model_default=None, precision_default=None)
    _train_args(p)

    p = sub.add_parser("eval", help="score an exported prompt on a split")
    p.add_argument("artifact")
    p.add_argument("--split", choices=["dev", "test", "train"], default="dev")
    _common(p, model_default=None, precision_default=None)

    p = sub.add_parser("predict", help="predict labels for a jsonl file")
    p.add_argument("artifact")
    p.add_argument("--input", required=True)
    _out_args(p, "--output", default=None, help="file to write (default: stdout; an existing file needs --overwrite)")
    p.add_argument("--echo", action="store_true", help="copy each input line's fields into its output line")
    _common(p, model_default=None, precision_default=None)

    p = sub.add_parser("space", help="print (or write) the search space a search of a task would use, to edit")
    p.add_argument("--task", required=True, help=TASKS_HELP)
    p.add_argument("--model", default=DEFAULT_MODEL, help="whose tokenizer measures the input budget")
    p.add_argument("--data-dir", default=None)
    _out_args(p, "--out", default=None, help="YAML file to write (default: stdout)")

    from .study.cli import add_commands
    add_commands(sub, _common, _positive, _out_args, TASKS_HELP)
    return parser


def cmd_tasks(args) -> None:
    from .tasks import get_task, task_names
    from .tasks.builtin import ALIASES
    for name in task_names():
        task = get_task(name)
        alias = f" (alias of {task.name})" if name in ALIASES else ""
        answers = (f"answers: one of the fields {', '.join(task.choices)}" if task.kind.needs_choices
                   else f"labels: {json.dumps(task.verbalizer)}" if task.kind.needs_verbalizer else
                   f"answers: the field {task.kind.answer_column(task)}")
        scoring = "" if task.answer_scoring == "first_token" else f" (scored whole: {task.answer_scoring})"
        print(f"{name}{alias}: {task.description}\n    template: {task.template}\n    {answers}{scoring}\n"
              f"    metrics: {', '.join(task.metrics if task.kind.needs_verbalizer else task.kind.metrics)} "
              f"(dev selects by {task.primary_metric})")
    print(f"\n{TEMPLATE_SYNTAX}")


def cmd_space(args) -> None:
    from .api import space_text
    from .tasks import get_task
    text = space_text(get_task(args.task), args.model, args.data_dir)
    if args.out is None:
        sys.stdout.write(text)
        return
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise AutoplaceError(f"--out {args.out}: folder {os.path.dirname(os.path.abspath(args.out))} does not exist")
    outdir.check_file(args.out, args.overwrite, "--out")
    _write_output(args.out, text)


def cmd_train(args) -> None:
    from . import api
    trained = api.train(args.task, args.template, args.out, **_options(args, TRAIN_OPTIONS))
    print(json.dumps(trained.summary))


TRAIN_OPTIONS = ("data_dir", "model", "device", "precision", "trust_remote_code", "steps", "batch_size", "lr",
                 "eval_every", "max_length", "seed", "restarts", "encoder", "init", "init_words", "verbalizer",
                 "calibrate", "fresh", "overwrite")
LOAD_OPTIONS = ("data_dir", "model", "device", "precision", "trust_remote_code")


def _options(args, names: tuple[str, ...]) -> dict:
    return {name: getattr(args, name) for name in names}


def cmd_eval(args) -> None:
    from . import api
    loaded = api.load(args.artifact, **_options(args, LOAD_OPTIONS))
    print(json.dumps({"artifact": args.artifact, "split": args.split, "template": loaded.meta["template"],
                      **loaded.evaluate(args.split)}))


def cmd_predict(args) -> None:
    from . import api, artifact
    from .tasks import get_task
    if args.output is not None:
        outdir.check_file(args.output, args.overwrite)
    meta = artifact.read_meta(args.artifact)
    task = get_task(meta.get("task_file") or meta["task"])
    numbered = _read_jsonl(args.input, task)  # bad input fails before the model loads
    if not numbered:
        _write_output(args.output, "")
        print(f"autoplace: input {args.input} has no examples; the output is empty", file=sys.stderr)
        return
    answers = api.load(args.artifact, **_options(args, LOAD_OPTIONS)).predict([ex for _, _, ex in numbered])
    lines = [{"id": key, **({"input": raw} if args.echo else {}), **answer}
             for (key, raw, _), answer in zip(numbered, answers)]
    _write_output(args.output, "".join(json.dumps(line) + "\n" for line in lines))


def _write_output(path: str | None, text: str) -> None:
    """stdout, or the file written whole through a temporary sibling: a crash leaves no half-written output."""
    if path is None:
        sys.stdout.write(text)
        return
    out = Path(path)
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, out)
    except OSError as exc:
        raise AutoplaceError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _read_jsonl(path: str, task) -> list[tuple]:
    """(id, the input line's object, the example) per line: each line a JSON object with the task's fields as text
    (labels are ignored). The id is the line's own `id` or `idx` field, else its line number."""
    from .tasks.base import input_row
    examples = []
    for n, row in json_lines(path, "input"):
        missing = [f for f in task.input_fields if f not in row]
        if missing:
            raise AutoplaceError(f"input {path} line {n}: field {missing[0]!r} missing")
        key = row.get("id", row.get("idx", n))
        examples.append((key, row, input_row(task, row, f"input {path} line {n}")))
    return examples


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler = globals().get(f"cmd_{args.command}") or args.handler
        handler(args)
    except AutoplaceError as exc:
        print(f"autoplace: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM during a search (study.worker.Interrupted)
        print(f"autoplace: {str(exc) or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_status", 130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
