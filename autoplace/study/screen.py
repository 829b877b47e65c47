"""The zero-shot screen: every phrasing × label words × calibration, scored forward-only on train and dev before
the study starts, so the study spends its trials on the few words worth training.

On SmolLM2 the words move accuracy more than the slots' places do (MR: 52.6 to 74.8 zero-shot), and no phrasing
is best everywhere, so the search must see them. Scoring them all with training would cost a study per
candidate; scoring them zero-shot costs one forward pass per phrasing: the answer position's vocabulary logits are
computed once, and every set of label words (listed, or found automatically as LM-BFF does) and both calibrations
are read off them. The best `screen.keep` become the study's categorical `words` choice.

Only train and dev are read; the held-out split is never touched here.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import asdict, dataclass

import torch

from ..calibration import apply, content_free_examples
from ..config import AUTO_COMBINATIONS
from ..prompt_encoders import PromptEncoder
from ..featurize import Featurizer
from ..tasks.base import fixed_rows
from ..tasks.kinds import Cloze
from ..errors import AutoplaceError, say
from ..model import PromptedModel
from ..pipeline import parse_for
from ..template import TemplateError, zero_shot
from ..inference import predict
from .space import SearchSpace, Words
from .bootstrap import compare


@dataclass
class Answer:
    """What scoring a prediction needs of an example: its answer, and its question (MultiRC's exact match)."""
    label: int
    group: object = None
    targets: list = ()  # cloze: every acceptable token


@dataclass
class Row:
    """One candidate as the report shows it: scores, or the reason it was dropped."""
    key: str
    template: str
    verbalizer: dict
    calibrate: bool
    train: float | None = None
    dev: float | None = None
    both: float | None = None  # the task's metric over train and dev together: what ranks the candidates
    reason: str | None = None


def screen(space: SearchSpace, task, backbone, data_dir: str | None, quiet: bool = True) -> tuple[list[Words], dict]:
    """(the kept candidates, best first; the screen's record for the study and its report). Unless quiet, a line per
    phrasing says how far it got: the screen can take minutes, before the first trial."""
    start = time.perf_counter()
    train, dev = (_subset(task.load_split(split, data_dir), space.screen_examples, task.group_field)
                  for split in ("train", "dev"))
    rows: list[Row] = []
    predictions: dict[str, tuple[list, list]] = {}  # candidate -> (its answers on train ∪ dev, the true ones)
    auto_words: dict[str, dict] = {}  # per phrasing: how many automatic combinations there were and were scored
    n = len(space.skeletons)
    if not quiet:
        say(f"zero-shot screen: {n} phrasing(s) x label words x calibration on {len(train)} train and {len(dev)} dev "
            f"examples, at {space.budget.max_length} tokens")
    for t, skeleton in enumerate(space.skeletons):
        found, searched = _screen_skeleton(space, t, skeleton.manual_template, task, backbone, train, dev,
                                           predictions)
        rows += found
        if searched:
            auto_words[f"t{t}"] = searched
        if not quiet:
            spent = time.perf_counter() - start
            left = spent / (t + 1) * (n - t - 1)
            say(f"zero-shot screen: phrasing {t + 1} of {n} scored, {len(rows)} candidates so far, {spent:.0f} s"
                + (f", ETA {left:.0f} s" if t + 1 < n else ""))
    usable = sorted((r for r in rows if r.reason is None), key=lambda r: -r.both)  # stable: listed order breaks ties
    if not usable:
        raise AutoplaceError(f"the zero-shot screen dropped every candidate; the first: {rows[0].key} "
                             f"({rows[0].reason})")
    kept = usable[:space.screen_keep]
    for row in usable[space.screen_keep:]:
        row.reason = f"below the best {space.screen_keep} (keep {space.screen_keep})"
    words = [Words(r.key, int(r.key.split(".")[0][1:]), r.verbalizer, r.calibrate) for r in kept]
    record = {"seconds": round(time.perf_counter() - start, 2), "examples": {"train": len(train), "dev": len(dev)},
              "metric": task.primary_metric, "kept": [w.key for w in words], "rows": [asdict(r) for r in rows]}
    record["references"] = reference_words(kept, predictions, task)
    if auto_words:
        record["auto_words"] = auto_words
    return words, record


def reference_words(kept: list[Row], predictions: dict, task, level: float = 0.9) -> dict:
    """Which kept candidate the placement references are written on: the task's own template with its own words,
    unless the screen's best beats it on train ∪ dev by a paired bootstrap (the test the verdict puts a winner to).
    One score on a few dozen examples ranks phrasings by noise, while a trained prompt's result hangs on its
    phrasing (CB: the screen's best was tied with the task's template; the middle-only prompt scored
    70.2 on test on the template, 56.5 on the other phrasing)."""
    best = kept[0]
    own = next((r for r in kept if r.template == zero_shot(task.template) and not r.calibrate
                and r.verbalizer == dict(task.verbalizer or {})), None)
    if own is None or own is best:
        return {"key": best.key, "best": best.key, "own": own.key if own else None,
                "word": "best" if own else "not kept"}
    (ours, items), (theirs, _) = predictions[best.key], predictions[own.key]
    lo, hi, word = compare(task, items, ours, theirs, level)
    return {"key": best.key if word == "better" else own.key, "best": best.key, "own": own.key, "word": word,
            "difference": best.both - own.both, "interval": [lo, hi], "level": level}


def _screen_skeleton(space, t: int, template: str, task, backbone, train, dev,
                     predictions: dict) -> tuple[list[Row], dict | None]:
    """(the phrasing's candidate rows, how its automatic label words were searched or None); each scored row's
    answers on train ∪ dev go into predictions."""
    try:
        parsed = parse_for(task, backbone, template)
    except TemplateError as exc:  # e.g. a phrasing whose [MASK] is not last, on a causal model
        return [Row(f"t{t}.*", template, {}, False, reason=str(exc))], None
    splits = {"train": train, "dev": dev, "content_free": content_free_examples(task)}
    first = None if task.scores_whole_answers and not space.auto_verbalizers else \
        _FirstTokens(parsed, task, backbone, space, splits)  # the first tokens' scores; auto words come from them
    token_of = first.featurizer.first_token if first else None  # cloze answers are token ids
    answers = {"train": _answers(task, train, token_of), "dev": _answers(task, dev, token_of)}
    answers["both"] = answers["train"] + answers["dev"]
    reader = _WholeAnswers(parsed, backbone, space, splits) if task.scores_whole_answers else first
    candidates = [(f"v{i}", words) for i, words in enumerate(space.verbalizers or [task.verbalizer])]
    searched = None
    if space.auto_verbalizers:
        labels = torch.tensor([a.label for a in answers["train"]])
        found, searched = auto_verbalizers(first.logits["train"], labels, task, first.featurizer, space.auto_k,
                                           space.auto_n)
        candidates += [(f"a{i}", words) for i, words in enumerate(found)]
    rows = []
    for name, words in candidates:
        worded = task.with_words(words) if task.kind.needs_verbalizer else task
        scores, reason = reader.scores(worded)
        for calibration in space.calibrations:
            calibrate = calibration == "content_free"
            row = Row(f"t{t}.{name}.{'cf' if calibrate else 'raw'}", template, worded.verbalizer, calibrate,
                      reason=reason)
            if reason is None:
                prior = scores["content_free"].softmax(-1).mean(0).log() if calibrate else None
                predicted = {split: apply(scores[split], prior).argmax(-1).tolist() for split in ("train", "dev")}
                predicted["both"] = predicted["train"] + predicted["dev"]
                row.train, row.dev, row.both = (worded.score(predicted[s], answers[s])[task.primary_metric]
                                                for s in ("train", "dev", "both"))
                predictions[row.key] = predicted["both"], answers["both"]
            rows.append(row)
    return rows, searched


def _answers(task, split, token_of) -> list[Answer]:
    answers = []
    for example in split:
        label, targets = task.kind.encode_answer(task, example, token_of)
        answers.append(Answer(label, example.get(task.group_field) if task.group_field else None, targets))
    return answers


def _bare_model(backbone, task, label_ids=None) -> PromptedModel:
    """The backbone with no prompt: what a phrasing scores zero-shot."""
    encoder = PromptEncoder(backbone.embeddings.weight.new_zeros(0, backbone.hidden_size), "none")
    return PromptedModel(backbone, encoder, label_ids, answer_scoring=task.answer_scoring).to(backbone.device)


class _FirstTokens:
    """One forward per phrasing: the answer position's vocabulary logits, from which every set of words is read.
    Whole-answer tasks run it too: for the answers' indices, and for automatic words (single tokens anyway)."""

    def __init__(self, template, task, backbone, space, splits):
        bare = dataclasses.replace(task, kind=Cloze(), answer_scoring="first_token", verbalizer={}) \
            if task.scores_whole_answers else task  # the answer position's whole vocabulary, no candidates
        self.featurizer = Featurizer(template, bare, backbone, space.budget.max_length)
        model = _bare_model(backbone, bare)
        self.logits = {name: predict(model, self.featurizer.encode_all(split)) for name, split in splits.items()}

    def scores(self, task) -> tuple[dict, str | None]:
        if not task.kind.needs_verbalizer:  # cloze: the whole vocabulary is the answer set
            return self.logits, None
        ids, reason = label_rows(self.featurizer, task)
        return ({name: logits[:, ids] for name, logits in self.logits.items()} if reason is None else {}), reason


class _WholeAnswers:
    """Whole-answer scoring: one forward per phrasing and set of words (each answer's tokens are read in place)."""

    def __init__(self, template, backbone, space, splits):
        self.template, self.backbone, self.splits, self.max_length = template, backbone, splits, space.budget.max_length

    def scores(self, task) -> tuple[dict, str | None]:
        try:
            featurizer = Featurizer(self.template, task, self.backbone, self.max_length)
            model = _bare_model(self.backbone, task)
            return {name: predict(model, featurizer.encode_all(split)) for name, split in self.splits.items()
                    if name != "content_free" or task.kind.needs_verbalizer}, None
        except AutoplaceError as exc:  # e.g. two labels' words tokenize alike
            return {}, str(exc)


def label_rows(featurizer: Featurizer, task) -> tuple[list[int], str | None]:
    """The LM-head rows of the label words' first tokens, or why these words cannot work."""
    ids = []
    for label, word in task.verbalizer.items():
        tokens = featurizer.tokens(word)
        if not tokens:
            return [], f"the word {word!r} for {label} tokenizes to nothing"
        if tokens[0] in ids:
            other = task.labels[ids.index(tokens[0])]
            return [], (f"labels {other} and {label} share the first token "
                        f"{featurizer.tokenizer.decode([tokens[0]])!r}")
        ids.append(tokens[0])
    return ids, None


def auto_verbalizers(logits: torch.Tensor, labels: torch.Tensor, task, featurizer: Featurizer, k: int,
                     n: int, most: int = AUTO_COMBINATIONS) -> tuple[list[dict], dict]:
    """LM-BFF's automatic label words on the frozen model: per class, the k whole-word tokens most probable at
    the answer over that class's train examples; the n combinations with the best zero-shot train accuracy.

    There are k**classes combinations (5 words for 10 labels: 9.8 million), so at most `most` are scored: all of
    them when they are that few, else the most probable ones (summed per-class log-probability, a beam), as LM-BFF
    prunes its search. Returns (the label words, how they were searched: the record says whether it capped)."""
    log_probs = logits.float().log_softmax(-1)
    whole = whole_word_tokens(featurizer, logits.shape[-1])
    per_class, per_class_scores = [], []
    for c in range(len(task.labels)):
        mine = log_probs[labels == c]
        if not len(mine):
            return [], {}  # a class absent from train: nothing to learn its word from
        best = mine.mean(0).masked_fill(~whole, float("-inf")).topk(k)
        per_class.append(best.indices.tolist())
        per_class_scores.append(best.values.tolist())
    total = math.prod(len(words) for words in per_class)
    combos = list(itertools.product(*per_class)) if total <= most else _beam(per_class, per_class_scores, most)
    scored = [(_train_accuracy(logits, labels, combo), combo) for combo in combos if len(set(combo)) == len(combo)]
    scored.sort(key=lambda pair: -pair[0])
    decode = featurizer.tokenizer.decode
    searched = {"per_class": k, "classes": len(per_class), "combinations": total, "considered": len(combos),
                "scored": len(scored), "capped": total > most}
    return [{label: decode([token]) for label, token in zip(task.labels, combo)} for _, combo in scored[:n]], searched


def _train_accuracy(logits: torch.Tensor, labels: torch.Tensor, combo: tuple[int, ...]) -> float:
    """Zero-shot train accuracy with these tokens as the label words."""
    return float((logits[:, list(combo)].argmax(-1) == labels).float().mean())


def _beam(per_class: list[list[int]], scores: list[list[float]], most: int) -> list[tuple[int, ...]]:
    """At most `most` combinations (a different token per class) of high summed score, best first: a beam over the
    classes, keeping the `most` best partial combinations after each, so the work is classes x most x k."""
    beam: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
    for tokens, token_scores in zip(per_class, scores):
        grown = [(total + score, combo + (token,)) for total, combo in beam
                 for token, score in zip(tokens, token_scores) if token not in combo]
        beam = sorted(grown, key=lambda pair: -pair[0])[:most]  # stable: ties keep the per-class ranking's order
    return [combo for _, combo in beam]


def whole_word_tokens(featurizer: Featurizer, size: int) -> torch.Tensor:
    """Tokens that are a whole word with its leading space (" great"), and tokenize back to themselves."""
    vocab = featurizer.tokenizer.convert_ids_to_tokens(list(range(min(size, len(featurizer.tokenizer)))))
    mask = torch.zeros(size, dtype=torch.bool)
    for token_id, piece in enumerate(vocab):
        if piece and piece[0] in "Ġ▁" and piece[1:].isalpha() and len(piece) > 2:
            mask[token_id] = featurizer.tokens(featurizer.tokenizer.decode([token_id]))[:1] == [token_id]
    return mask


def _subset(split, n: int, group_field: str | None = None):
    """At most n examples, a fixed seeded choice, so the screen's cost does not grow with a large train split. A
    grouped task (MultiRC) keeps whole questions, so exact match sees every option of a question it scores."""
    if len(split) <= n:
        return split
    return split.select(fixed_rows(len(split), n, split[group_field] if group_field else None))
