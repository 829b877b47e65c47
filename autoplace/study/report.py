"""report.md, trials.csv and plots from a study: what the search found and what placement did."""
from __future__ import annotations

import contextlib
import statistics
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .storage import counts
from .trials import ranked_trials

PLACEMENTS = ("none", "start-only", "middle-only", "end-only", "mixed")
DEPTH_CLASSES = ("none", "input", "all", "late", "mixed")  # template.depth_class
DEPTH_MARKERS = {"input": "o", "all": "^", "late": "v", "mixed": "P"}


def _fmt(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _metrics(metrics: dict | None) -> str:
    return "–" if not metrics else ", ".join(f"{name} {_fmt(value)}" for name, value in metrics.items())


def screen_table(screen: dict | None) -> list[str]:
    """Every phrasing × label words × calibration the zero-shot screen scored, and why each dropped one was."""
    if not screen:
        return []
    lines = ["## Zero-shot screen", "",
             f"{len(screen['rows'])} candidates scored forward-only on {screen['examples']['train']} train and "
             f"{screen['examples']['dev']} dev examples in {screen['seconds']} s, by "
             f"{screen.get('metric', 'acc')}; the kept ones are the study's `words` choice.", "",
             *_auto_words_lines(screen.get("auto_words", {})),
             "| candidate | template | label words | calibrated | train | dev | kept |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in sorted(screen["rows"], key=lambda r: -(r["both"] if r["both"] is not None else -1)):
        words = ", ".join(f"{label}:{word!r}" for label, word in row["verbalizer"].items())
        template = row["template"].replace("\n", "⏎")
        lines.append(f"| {row['key']} | `{template}` | {words} | {'yes' if row['calibrate'] else 'no'} | "
                     f"{_fmt(row['train'])} | {_fmt(row['dev'])} | "
                     f"{'**kept**' if row['key'] in screen['kept'] else row['reason']} |")
    return lines + ["", *_references_line(screen.get("references")), ""]


def _references_line(chosen: dict | None) -> list[str]:
    """Which kept candidate the placement references are written on, and why (screen.reference_words)."""
    if not chosen:
        return []
    head = f"The reference placements are written on {chosen['key']}"
    if chosen["word"] == "best":
        return [f"{head}, the screen's best and the task's own template and words."]
    if chosen["word"] == "not kept":
        return [f"{head}, the screen's best (the task's own template with its own words was not kept)."]
    lo, hi = chosen["interval"]
    odds = (f"{chosen['difference']:+.3f} on train ∪ dev, {chosen['level']:.0%} paired bootstrap interval "
            f"{lo:+.3f} to {hi:+.3f}")
    if chosen["word"] == "better":
        return [f"{head}, the screen's best: it beats the task's own template and words ({chosen['own']}) by {odds}."]
    return [f"{head}, the task's own template and words: the screen's best ({chosen['best']}) is {chosen['word']} "
            f"with it ({odds}), and a trained prompt's result hangs on its phrasing."]


def _auto_words_lines(auto_words: dict) -> list[str]:
    """How each phrasing's automatic label words were searched: all combinations, or the capped best-first few."""
    lines = []
    for phrasing, searched in auto_words.items():
        every = (f"{searched['per_class']} words per class for {searched['classes']} classes make "
                 f"{searched['combinations']} combinations")
        lines.append(f"Automatic label words ({phrasing}): {every}; " + (
            f"capped: only the {searched['considered']} most probable were considered." if searched["capped"]
            else f"all {searched['considered']} were considered."))
    return lines + [""] if lines else []


def position_table(trials, by: str = "placement") -> list[dict]:
    """Per placement class (the P-tuning paper's table), or per depth class: trials, completed, best and mean dev.
    Trials from before depths were recorded entered at the input."""
    rows = []
    for kind in (PLACEMENTS if by == "placement" else DEPTH_CLASSES):
        group = [t for t in trials if _class_of(t, by) == kind]
        scores = [t.value for t in group if t.state == TrialState.COMPLETE]
        rows.append({by: kind, "trials": len(group), "complete": len(scores),
                     "best_dev": max(scores) if scores else None,
                     "mean_dev": statistics.mean(scores) if scores else None})
    return rows


def _class_of(trial, by: str) -> str:
    if by == "placement":
        return trial.user_attrs.get("placement")
    none = trial.user_attrs.get("placement") == "none"
    return "none" if none else trial.user_attrs.get("depth", "input")


def verdict_lines(verdict: dict | None) -> list[str]:
    """The report's first lines: the winner against the template the user started from, on the same dev examples."""
    if not verdict:
        return []
    if verdict["word"] == "unavailable":
        return [f"**Against your template: no verdict** ({verdict['reason']}).", ""]
    lo, hi = verdict["interval"]
    winner = f" (`{verdict['winner_template'].replace(chr(10), '⏎')}`)" if "winner_template" in verdict else ""
    lines = [f"**Against your template: {verdict['word']}.** The winner{winner} scores {_fmt(verdict['winner'])} "
             f"{verdict['metric']} on dev, the task's own template zero-shot "
             f"(`{verdict['manual_template'].replace(chr(10), '⏎')}`) "
             f"{_fmt(verdict['manual'])}: {verdict['difference']:+.3f}, paired bootstrap "
             f"{verdict['level']:.0%} interval {lo:+.3f} to {hi:+.3f} over {verdict['examples']} dev examples."]
    if verdict["word"] != "better":
        lines.append("The search did not show that it beats the manual template"
                     + ("; OUT/best holds the manual template (--keep-manual-unless-better)."
                        if verdict.get("exported") == "manual" else
                        "; --keep-manual-unless-better would export that template instead."))
    return [" ".join(lines), ""]


def write_report(study: optuna.Study, out: str | Path, top: int = 10) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    complete = ranked_trials(study)
    state_counts = counts(study)
    total_steps = sum(t.user_attrs.get("steps", 0) for t in trials)
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    plots = _plots(study, out)

    lines = [f"# autoplace report: study `{study.study_name}`", ""] + verdict_lines(study.user_attrs.get("verdict"))
    final = study.user_attrs.get("final")
    if final:
        averaged = final.get("averaged")
        lines += ["## Winner", "", f"`{final['template']}`", "",
                  *([f"An ensemble: the stored prompts of trials {', '.join(map(str, averaged))} answer together "
                     "(their calibrated label probabilities averaged).", ""] if averaged else []),
                  f"dev {_metrics(final['dev'])} · **test {_metrics(final['test'])}** (the test split is scored once, "
                  f"for the winner only) · search wall time {final.get('search_seconds', '–')} s", ""]
        if final.get("dev_interval"):
            lo, hi = final["dev_interval"]
            tied = final.get("tied", [])
            lines += [f"Its dev score's 90% bootstrap interval is {_fmt(lo)}–{_fmt(hi)}: "
                      + (f"{len(tied)} other completed trial(s) lie inside it and are tied with it on dev "
                         f"(trials {', '.join(map(str, tied))})." if tied
                         else "no other completed trial lies inside it.")
                      + (" `autoplace export OUT --ensemble tied --out DIR` averages the winner with them (a "
                         "one-answer trial aside), which bets on none of them (benchmarks/selection.py)."
                         if tied and not averaged else ""),
                      ""]
    lines += screen_table(study.user_attrs.get("screen"))
    lines += ["## Top templates", "", "| # | trial | template | words | placement | encoder | init | dev | train s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rank, t in enumerate(complete[:top], 1):
        lines.append(f"| {rank} | {t.number} | `{t.user_attrs.get('template')}` | {_words(t)} | "
                     f"{t.user_attrs.get('placement')} | "
                     f"{t.params.get('encoder', '–')} | {t.params.get('init', '–')} | {_fmt(t.value)}"
                     f"{' (one answer)' if t.user_attrs.get('one_answer') else ''} | "
                     f"{_fmt(t.user_attrs.get('train_seconds'), 1)} |")
    restarted = sum(bool(t.user_attrs.get("restarts")) for t in complete)
    if restarted:
        lines += ["", f"{restarted} completed trial(s) gave one answer to every dev example and were trained again "
                      "from a fresh seed (`budget.restarts`); each keeps the better of its runs by dev."]
    degenerate = sum(bool(t.user_attrs.get("one_answer")) for t in complete)
    if degenerate:
        lines += ["", f"{degenerate} completed trial(s) gave one answer to every dev example, though dev has "
                      "several: they rank below every trial that did not, whatever their score (a metric such as "
                      "F1a rewards answering one way always)."]
    refs = [t for t in trials if "reference" in t.user_attrs and t.state == TrialState.COMPLETE]
    if refs:
        best_ref = max(refs, key=lambda t: (not t.user_attrs.get("one_answer"), t.value))
        gain = complete[0].value - best_ref.value if complete else 0.0
        lines += ["", f"Best reference: {best_ref.user_attrs['reference']} at {_fmt(best_ref.value)}; "
                      f"the search's best is {gain:+.3f} beyond it.", ""]
        lines += ["| reference | template | words | dev |", "| --- | --- | --- | --- |"]
        lines += [f"| {t.user_attrs['reference']} | `{t.user_attrs.get('template')}` | {_words(t)} | {_fmt(t.value)} |"
                  for t in refs]
    lines += ["", "## Position effect", "", "| placement | trials | complete | best dev | mean dev |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['placement']} | {r['trials']} | {r['complete']} | {_fmt(r['best_dev'])} | {_fmt(r['mean_dev'])} |"
              for r in position_table(trials)]
    depths = [r for r in position_table(trials, "depth") if r["trials"]]
    if any(r["depth"] not in ("none", "input") for r in depths):
        lines += ["", "Depth (where in the network the prompts enter: the input, every layer, or one late layer):", "",
                  "| depth | trials | complete | best dev | mean dev |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['depth']} | {r['trials']} | {r['complete']} | {_fmt(r['best_dev'])} | {_fmt(r['mean_dev'])} |"
                  for r in depths]
    if (out / "position_effect.png").is_file():
        lines += ["", "![position effect](position_effect.png)"]
    confirm = study.user_attrs.get("confirm")
    if confirm:
        lines += ["", "## Confirmation over seeds", "", "| trial | template | search dev | seed devs | mean ± std |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {c['trial']} | `{c['template']}` | {_fmt(c['search_dev'])} | "
                  f"{', '.join(_fmt(s) for s in c['seed_devs'])} | {_fmt(c['mean_dev'])} ± {_fmt(c['std_dev'])} |"
                  for c in confirm]
    cv = study.user_attrs.get("cv")
    if cv:
        lines += ["", f"## Cross-validation ({cv['folds']} folds of train and dev)", "",
                  "| trial | template | search dev | fold scores | mean ± std |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {c['trial']} | `{c['template']}` | {_fmt(c['search_dev'])} | "
                  f"{', '.join(_fmt(s) for s in c['fold_scores'])} | {_fmt(c['mean'])} ± {_fmt(c['std'])} |"
                  for c in cv["candidates"]]
    lines += ["", "## Parameter importances", ""]
    importances, why_not = param_importances(study)
    if importances:
        lines += [f"From {len(complete)} completed trials, over the parameters that varied: rough when they are few.",
                  "", "| parameter | importance |", "| --- | --- |"]
        lines += [f"| {name} | {value:.3f} |" for name, value in importances.items()]
    else:
        lines.append(f"Not shown: {why_not}.")
    lines += ["", "## Trials", "",
              f"complete {state_counts['complete']} · pruned {state_counts['pruned']} · failed {state_counts['fail']} "
              f"· running {state_counts['running']} · waiting {state_counts['waiting']} · "
              f"total train steps {total_steps}", ""]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    lines += [f"- trial {t.number} failed: {t.user_attrs.get('reason', 'no reason recorded')}" for t in failed]
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots if p.stem != "position_effect"]
    lines += ["", "Files: `trials.csv` (every trial), `best/` (the winner's artifact). "
                  f"Browse the study live with `autoplace dashboard {out}` (or `optuna-dashboard <storage URL>`).", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


@contextlib.contextmanager
def few_trials_quiet():
    """Optuna warns (several lines each time) that importances from few trials are inaccurate; the report says so
    once instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Some regimes")
        yield


MIN_TRIALS_FOR_IMPORTANCE = 4


def param_importances(study: optuna.Study) -> tuple[dict, str]:
    """(importance per parameter that varied, or {} and why there are none). A parameter that never varied (lr
    when every trial was a reference) has no importance to report, and Optuna would print it as an equal share."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values: dict[str, set] = {}
    for t in complete:
        for name, value in t.params.items():
            values.setdefault(name, set()).add(value)
    varied = sorted(name for name, seen in values.items() if len(seen) > 1)
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, f"{len(complete)} completed trials; importances need {MIN_TRIALS_FOR_IMPORTANCE} or more"
    if not varied:
        return {}, "no parameter varied over the completed trials (they were all references or alike)"
    try:
        with few_trials_quiet():
            return optuna.importance.get_param_importances(study, params=varied), ""
    except (ValueError, RuntimeError) as exc:  # e.g. the varied parameters never appear together
        return {}, f"Optuna could not compute them ({exc})"


def _metric(study: optuna.Study) -> str:
    """The task's metric, that the trials' values are (acc, p@1, f1a_em...)."""
    if study.user_attrs.get("metric"):
        return study.user_attrs["metric"]
    final = study.user_attrs.get("final")  # a study from before the metric was recorded
    for dev in ([final["dev"]] if final and final.get("dev") else []) + [
            t.user_attrs.get("dev") for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]:
        if dev:
            return next(iter(dev))
    return "score"


def _plots(study: optuna.Study, out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = f"dev {_metric(study)}"
    drawings = [("position_effect", _position_effect), ("history", _history), ("curves", _curves),
                ("score_vs_cost", _score_vs_cost)]
    if param_importances(study)[0]:
        drawings.append(("importances", _importances))
    made = []
    for name, draw in drawings:
        try:
            fig, ax = plt.subplots(figsize=(8, 5))
            if draw(study, ax, metric) is False:
                continue
            fig.tight_layout()
            fig.savefig(out / f"{name}.png", dpi=80)
            made.append(out / f"{name}.png")
        finally:
            plt.close("all")
    return made


def _position_effect(study: optuna.Study, ax, metric: str):
    """The P-tuning paper's picture: a column per placement class, every completed trial a point, its marker the
    depth its prompts enter at; the zero-shot references and the winner marked; with --confirm-top, the confirmed
    means and their spread."""
    trials = _complete(study)
    if not trials:
        return False
    final, where = study.user_attrs.get("final") or {}, {}
    for x, placement in enumerate(PLACEMENTS):
        group = [t for t in trials if t.user_attrs.get("placement") == placement]
        for i, t in enumerate(group):
            where[t.number] = (x + 0.25 * ((i * 0.618) % 1 - 0.5), t.value)  # a fixed jitter keeps points apart
    for depth in DEPTH_CLASSES[1:]:  # a trial without a prompt ("none") is drawn as one at the input
        points = [where[t.number] for t in trials if _class_of(t, "depth").replace("none", "input") == depth]
        if points:
            ax.scatter(*zip(*points), alpha=0.7, marker=DEPTH_MARKERS[depth],
                       label="completed trial" if depth == "input" else f"prompts at depth: {depth}")
    zero_shot = [where[t.number] for t in trials if t.user_attrs.get("reference") == "zero-shot"]
    if zero_shot:
        ax.scatter(*zip(*zero_shot), marker="D", s=80, facecolor="none", edgecolor="tab:red", label="zero-shot")
    if final.get("trial") in where:
        ax.scatter(*where[final["trial"]], marker="*", s=300, color="gold", edgecolor="black", label="winner")
    placement_of = {t.number: t.user_attrs.get("placement") for t in trials}
    for i, c in enumerate(study.user_attrs.get("confirm") or []):
        ax.errorbar([PLACEMENTS.index(placement_of.get(c["trial"], "none")) + 0.3], [c["mean_dev"]],
                    yerr=[c["std_dev"]], fmt="s", color="tab:green", capsize=4,
                    label=None if i else "confirmed mean ± std")
    ax.set_xticks(range(len(PLACEMENTS)), PLACEMENTS)
    ax.set_xlabel("where the prompt slots are")
    ax.set_ylabel(metric)
    ax.set_title(f"Position effect: {metric} of every completed trial by placement")
    ax.legend(fontsize="small")


def _complete(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _history(study: optuna.Study, ax, metric: str):
    """Every completed trial's dev score by trial number, by placement class; the best so far; the winner."""
    from matplotlib.ticker import MaxNLocator
    trials = _complete(study)
    if not trials:
        return False
    for placement in PLACEMENTS:
        points = [(t.number, t.value) for t in trials if t.user_attrs.get("placement") == placement]
        if points:
            ax.scatter(*zip(*points), label=placement)
    ordered = sorted(trials, key=lambda t: t.number)
    best = [max(t.value for t in ordered[:i + 1]) for i in range(len(ordered))]
    ax.step([t.number for t in ordered], best, where="post", color="grey", label="best so far")
    final = study.user_attrs.get("final") or {}
    test = ", ".join(f"{k} {v:.3f}" for k, v in (final.get("test") or {}).items())
    winner = next((t for t in trials if t.number == final.get("trial")), None)
    if winner:
        ax.scatter([winner.number], [winner.value], marker="*", s=300, color="gold", edgecolor="black",
                   label=f"winner (test {test})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial" + (f"; winner: trial {winner.number}, test {test}" if winner else ""))
    ax.legend(fontsize="small")


def _words(trial) -> str:
    return trial.user_attrs.get("words") or "–"


def _curves(study: optuna.Study, ax, metric: str, top: int = 5):
    """Dev curves of the top trained trials, labelled with their template: how the prompt learned. A zero-shot
    trial learns nothing (its curve is flat), so it has none."""
    trained = (t for t in _complete(study) if t.intermediate_values and t.user_attrs.get("n_prompt_tokens", 1) > 0)
    trials = sorted(trained, key=lambda t: t.value, reverse=True)[:top]
    if not trials:
        return False
    for t in trials:
        steps = sorted(t.intermediate_values)
        words = f" [{t.user_attrs['words']}]" if t.user_attrs.get("words") else ""
        label = f"#{t.number} {t.user_attrs.get('template', '')}".replace("\n", "⏎")
        label = (label if len(label) + len(words) < 70 else label[:67 - len(words)] + "...") + words
        ax.plot(steps, [t.intermediate_values[s] for s in steps], marker="o", label=label)
    ax.set_xlabel("train step")
    ax.set_ylabel(metric)
    subset = study.user_attrs.get("budget", {}).get("eval_examples")
    ax.set_title(f"{metric} during training, top {len(trials)} trained trials"
                 + (f" (evaluations on {subset} dev examples at most)" if subset else ""))
    ax.legend(fontsize="x-small")


def _importances(study: optuna.Study, ax, metric: str):
    importances = param_importances(study)[0]
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel(f"importance for {metric}")
    ax.set_title("Parameter importances (parameters that varied)")


def _score_vs_cost(study: optuna.Study, ax, metric: str):
    """Dev score against train seconds: cheaper placements that score as well are worth knowing."""
    trials = _complete(study)
    for placement in PLACEMENTS:
        points = [(t.user_attrs.get("train_seconds", 0), t.value) for t in trials
                  if t.user_attrs.get("placement") == placement]
        if points:
            ax.scatter(*zip(*points), label=placement)
    if not trials:
        return False
    ax.set_xlabel("train seconds")
    ax.set_ylabel(metric)
    ax.set_title("Score vs cost per trial")
    ax.legend(fontsize="small")
