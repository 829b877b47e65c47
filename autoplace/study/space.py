"""Search spaces: YAML skeletons (phrasings) with named places where prompt slots may go, the label words and
calibrations to consider, and the ranges to sample.

Sampling is define-by-run: the `words` choice (a screened phrasing × label words × calibration, see screen.py)
picks the skeleton; the number of slots picks which `places@k` parameter exists, the chosen places pick which
`length:<place>` parameters exist. With several skeletons those names carry the skeleton (`t1:places@2`), since
each has its own places. The reference placements (zero-shot, start-, middle-, end-only, mixed) are expressed in
the same parameters, so the study can enqueue them and TPE learns from them.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AutoplaceError
from ..config import (AUTO_WORD_SETS, AUTO_WORDS_PER_CLASS, DEPTHS, SCREEN_EXAMPLES, SCREEN_KEEP, SPACE_DEPTH_LR,
                      SPACE_DEPTHS, SPACE_LATE, SPACE_LENGTH, SPACE_LR, SPACE_SLOTS, ENCODERS, INITS, Budget, Plan,
                      Reference)
from ..template import Mask, TemplateError, parse, placement_class, unescape, validate

MARKER = re.compile(r"<([A-Za-z][A-Za-z0-9_:\-]*)>")
FAMILY = {"rte": "nli", "nli": "nli", "cb": "cb", "boolq": "boolq", "mr": "sentiment", "sentiment": "sentiment",
          "copa": "copa", "wic": "wic", "wsc": "wsc", "multirc": "multirc"}
REFERENCE_CLASSES = ("start-only", "middle-only", "end-only", "mixed")
# reference name: (depth, the placement it deepens): deep prompts as P-tuning v2 puts them (a prefix), a late one
# just before the answer, where depth_lr.py found it best (a late prefix replaces what the text attends to)
DEPTH_REFERENCES = {"deep": ("all", "start-only"), "late": ("late", "end-only")}
CALIBRATIONS = ("none", "content_free")


@dataclass(frozen=True)
class Skeleton:
    """One phrasing: template text with <place> markers, and the markers a slot may take."""
    text: str
    places: tuple[str, ...]

    @property
    def manual_template(self) -> str:
        """The skeleton with no prompt: its zero-shot template."""
        return self.render({})

    def render(self, lengths: dict[str, int], at: str = "") -> str:
        """The skeleton with a slot of lengths[place] at each chosen place; `at` is every slot's depth (`@12`)."""
        text = MARKER.sub(lambda m: f" [P:{lengths[m.group(1)]}{at}] " if m.group(1) in lengths else " ", self.text)
        return re.sub(r" *\n *", "\n", re.sub(r" {2,}", " ", text)).strip()

    def usable_places(self, causal: bool) -> list[str]:
        """Places in skeleton order; those after [MASK] only for masked LMs."""
        if not causal:
            return list(self.places)
        mask_at = self.text.index("[MASK]")
        return [p for p in self.places if self.text.index(f"<{p}>") < mask_at]

    def place_class(self, place: str) -> str:
        return placement_class(parse(self.render({place: 1})))


@dataclass(frozen=True)
class Words:
    """A screened candidate: which skeleton, which label words (None: the task's), calibrated or not."""
    key: str
    template: int
    verbalizer: dict | None = None
    calibrate: bool = False

    def to_dict(self) -> dict:
        return {"key": self.key, "template": self.template, "verbalizer": self.verbalizer, "calibrate": self.calibrate}


def words_label(verbalizer: dict | None, calibrate: bool) -> str:
    """A trial's label words and calibration, compactly (`terrible/great, cf`), to show beside its template: trials
    that differ only in their words must not look alike."""
    words = "/".join(str(w).strip() for w in (verbalizer or {}).values())
    return ", ".join(part for part in (words, "cf" if calibrate else "") if part)


@dataclass
class SearchSpace:
    path: str
    skeletons: list[Skeleton]
    slots: tuple[int, int] = SPACE_SLOTS
    length: tuple[int, int] = SPACE_LENGTH
    inits: list[str] = field(default_factory=lambda: list(INITS))
    encoders: list[str] = field(default_factory=lambda: list(ENCODERS))
    lr: tuple[float, float, bool] = (*SPACE_LR, True)
    depths: list[str] = field(default_factory=lambda: list(SPACE_DEPTHS))
    late: tuple[float, float] = SPACE_LATE  # a late prompt's layer range, as fractions of the model's depth
    depth_lr: dict = field(default_factory=lambda: {d: (*r, True) for d, r in SPACE_DEPTH_LR.items()})
    n_layers: int = 0  # the backbone's, set per study where a prompt may enter below the input
    budget: Budget = field(default_factory=Budget)
    reference: Reference = field(default_factory=Reference)
    task: str | None = None
    verbalizers: list[dict] | None = None   # candidate label -> word maps; None: the task's own only
    auto_verbalizers: bool = False          # add LM-BFF-style automatic label words (screen.py)
    calibrations: tuple[str, ...] = ("none",)
    screen_keep: int = SCREEN_KEEP          # screened candidates that become the study's `words` choice
    screen_examples: int = SCREEN_EXAMPLES  # at most this many train (and dev) examples in the screen
    auto_k: int = AUTO_WORDS_PER_CLASS      # automatic label words: candidates per class ...
    auto_n: int = AUTO_WORD_SETS            # ... and combinations kept
    words: dict[str, Words] = field(default_factory=dict)  # the screen's survivors, best first (set per study)
    reference_words: str | None = None  # the survivor the placement references are written on (None: the best)

    # -- the first skeleton, the manual default ----------------------------------------------------------------
    @property
    def skeleton(self) -> str:
        return self.skeletons[0].text

    @property
    def manual_template(self) -> str:
        return self.skeletons[0].manual_template

    def render(self, lengths: dict[str, int]) -> str:
        return self.skeletons[0].render(lengths)

    def needs_screen(self) -> bool:
        """Whether there is more than one phrasing, set of label words or calibration to choose among."""
        return (len(self.skeletons) > 1 or len(self.verbalizers or ()) > 1 or self.auto_verbalizers
                or len(self.calibrations) > 1 or self.calibrations != ("none",))

    def check(self, task) -> None:
        """Every skeleton's fields must be the task's; every verbalizer must name exactly the task's labels."""
        for i, skeleton in enumerate(self.skeletons):
            try:
                validate(parse(skeleton.manual_template), task.fields, causal=False)
            except TemplateError as exc:
                which = "skeleton" if len(self.skeletons) == 1 else f"template {i + 1}"
                raise AutoplaceError(f"search space {self.path}: {which} does not fit task {task.name}: "
                                     f"{exc}") from None
        if (self.verbalizers or self.auto_verbalizers or "content_free" in self.calibrations) \
                and not task.kind.needs_verbalizer:
            raise AutoplaceError(f"search space {self.path}: verbalizers and calibration need label words, and "
                                 f"task {task.name} is a {task.kind.name} task, without label words")
        for words in self.verbalizers or ():
            try:
                task.with_words(words)
            except AutoplaceError as exc:
                raise AutoplaceError(f"search space {self.path}: {exc}") from None

    # -- sampling --------------------------------------------------------------------------------------------
    def combos(self, places: list[str], k: int) -> list[str]:
        return ["+".join(c) for c in itertools.combinations(places, k)]

    def _name(self, t: int, name: str) -> str:
        """A placement parameter's name: bare with one skeleton, else prefixed by the skeleton's number."""
        return name if len(self.skeletons) == 1 else f"t{t}:{name}"

    def pick_words(self, trial) -> Words | None:
        if len(self.words) > 1:
            return self.words[trial.suggest_categorical("words", list(self.words))]
        return next(iter(self.words.values()), None)

    def sample(self, trial, causal: bool) -> Plan:
        """Suggest one plan (define-by-run); a trial with its parameters already set gets the same plan back."""
        words = self.pick_words(trial)
        t = words.template if words else 0
        said = {"verbalizer": words.verbalizer, "calibrate": words.calibrate} if words else {}
        skeleton = self.skeletons[t]
        if trial.user_attrs.get("reference") == "zero-shot":
            return Plan(skeleton.manual_template, encoder="none", init="vocab", lr=self.reference.lr, **said)
        places = skeleton.usable_places(causal)
        k = trial.suggest_int(self._name(t, "n_slots"), self.slots[0], min(self.slots[1], len(places)))
        chosen = trial.suggest_categorical(self._name(t, f"places@{k}"), self.combos(places, k)).split("+")
        lengths = {p: trial.suggest_int(self._name(t, f"length:{p}"), *self.length) for p in chosen}
        depth = trial.suggest_categorical("depth", self.depths) if len(self.depths) > 1 else self.depths[0]
        at = f"@{trial.suggest_int('late_layer', *self.late_layers())}" if depth == "late" else \
            "@all" if depth == "all" else ""
        low, high, log = self.lr if depth == "input" else self.depth_lr[depth]
        return Plan(skeleton.render(lengths, at), init=trial.suggest_categorical("init", self.inits),
                    encoder=trial.suggest_categorical("encoder", self.encoders),
                    lr=trial.suggest_float("lr" if depth == "input" else f"lr@{depth}", low, high, log=log), **said)

    @property
    def needs_layers(self) -> bool:
        """Whether sampling needs the model's number of layers (set n_layers first)."""
        return any(depth != "input" for depth in self.depths)

    def late_layers(self) -> tuple[int, int]:
        """The layers a late prompt may enter at: the space's fractions of the model's depth (at least layer 1)."""
        if not self.n_layers:
            raise AutoplaceError(f"search space {self.path}: a late depth needs the model's number of layers")
        low = max(1, round(self.late[0] * self.n_layers))
        return low, max(low, min(self.n_layers - 1, round(self.late[1] * self.n_layers)))

    def plan_of(self, trial, causal: bool) -> Plan:
        """The plan a finished trial ran, rebuilt from its stored parameters through `sample` itself."""
        import optuna
        fixed = optuna.trial.FixedTrial(dict(trial.params), trial.number)
        for key, value in trial.user_attrs.items():
            fixed.set_user_attr(key, value)
        return self.sample(fixed, causal)

    def references(self, causal: bool) -> list[tuple[str, dict]]:
        """(name, enqueued params): zero-shot with each screened set of words, then one placement per class, with
        the same total prompt length, on the screen's chosen words (`reference_words`, else its best); where the
        space searches depth, the deep and late ones come right after the first placement."""
        word_keys = list(self.words) if len(self.words) > 1 else [None]  # one candidate: no `words` parameter
        out = [("zero-shot", {"words": key} if key else {}) for key in word_keys]
        words = self.words.get(self.reference_words) or next(iter(self.words.values()), None)
        t = words.template if words else 0  # its skeleton carries the placements
        skeleton = self.skeletons[t]
        by_class: dict[str, list[str]] = {}
        for place in skeleton.usable_places(causal):
            by_class.setdefault(skeleton.place_class(place), []).append(place)
        picks = {c.removesuffix("-only"): ps for c, ps in by_class.items()}
        plans = {f"{c}-only": picks.get(c, []) for c in ("start", "middle", "end")}
        plans["mixed"] = [ps[0] for c, ps in picks.items()] if len(picks) > 1 else []
        placements = []
        for name in REFERENCE_CLASSES:
            chosen = self._fit_places(plans[name])
            if not chosen:
                continue
            lengths = self._split(self.reference.total_length, len(chosen))
            params = {**({"words": words.key} if word_keys[0] else {}),
                      self._name(t, "n_slots"): len(chosen),
                      self._name(t, f"places@{len(chosen)}"): "+".join(chosen),
                      **{self._name(t, f"length:{p}"): n for p, n in zip(chosen, lengths)},
                      "init": self.reference.init, "encoder": self._encoder(self.reference.encoder)}
            placements.append((name, params))
        at_input = [] if "input" not in self.depths else [
            (name, {**params, **({"depth": "input"} if len(self.depths) > 1 else {}), "lr": self.reference.lr})
            for name, params in placements]
        deeper = []
        for name, (depth, placement) in DEPTH_REFERENCES.items():
            if not placements or depth not in self.depths:
                continue
            params = dict(placements).get(placement, placements[0][1])  # else the first placement there is
            lr, encoder = ((self.reference.lr_all, self.reference.encoder_all) if depth == "all"
                           else (self.reference.lr_late, self.reference.encoder_late))
            params = {**params, "encoder": self._encoder(encoder)}
            if depth == "late":
                low, high = self.late_layers()
                params = {**params, "late_layer": min(max(self.n_layers // 2, low), high)}
            deeper.append((name, {**params, **({"depth": depth} if len(self.depths) > 1 else {}), f"lr@{depth}": lr}))
        return out + at_input[:1] + deeper + at_input[1:]  # depth before the other places: a short search gets both

    def _encoder(self, wanted: str) -> str:
        """A reference's encoder, or the space's first where the space does not offer it (a trial's params must lie
        in its space: Optuna refuses an enqueued category the space lacks)."""
        return wanted if wanted in self.encoders else self.encoders[0]

    def _fit_places(self, chosen: list[str]) -> list[str]:
        """At most max-slots places, and few enough that each gets the minimum length."""
        n = min(len(chosen), self.slots[1], max(1, self.reference.total_length // self.length[0]))
        return chosen[:n] if n >= self.slots[0] else []

    def _split(self, total: int, k: int) -> list[int]:
        base, extra = divmod(total, k)
        return [min(self.length[1], max(self.length[0], base + (i < extra))) for i in range(k)]


# -- loading ---------------------------------------------------------------------------------------------------
def default_space_path(task_name: str) -> Path | None:
    """A built-in task's shipped space; None for any other task (its space is derived from its template)."""
    return shipped_spaces() / f"{FAMILY[task_name]}.yaml" if task_name in FAMILY else None


def shipped_spaces() -> Path:
    """The built-in spaces: the checkout's search_spaces/, which the build maps into the package (a wheel has them)."""
    from importlib.resources import files
    try:
        return Path(str(files("autoplace.search_spaces")))
    except ModuleNotFoundError:  # a checkout on PYTHONPATH, not installed (the GPU check runs so)
        return Path(__file__).resolve().parents[2] / "search_spaces"


def _range(spec: dict, key: str, kind, lo_key="min", hi_key="max", bounds=None) -> tuple:
    value = spec.get(key)
    if not isinstance(value, dict) or lo_key not in value or hi_key not in value:
        raise _bad(spec, key, f"must be a mapping with {lo_key} and {hi_key}")
    try:
        lo, hi = kind(value[lo_key]), kind(value[hi_key])
    except (TypeError, ValueError, OverflowError):
        raise _bad(spec, key, f"{lo_key} and {hi_key} must be finite numbers") from None
    if not all(math.isfinite(v) for v in (lo, hi)):
        raise _bad(spec, key, f"{lo_key} and {hi_key} must be finite numbers")
    if lo > hi or lo <= 0:
        raise _bad(spec, key, f"needs 0 < {lo_key} <= {hi_key} (got {lo}, {hi})")
    if bounds and (lo < bounds[0] or hi > bounds[1]):
        raise _bad(spec, key, f"must stay within {bounds[0]}-{bounds[1]} (got {lo}-{hi})")
    return lo, hi


def _bad(spec: dict, key: str, problem: str) -> AutoplaceError:
    return AutoplaceError(f"search space {spec['__path__']}: key {key!r} {problem}")


def _choices(spec: dict, key: str, allowed: tuple[str, ...], default: list[str]) -> list[str]:
    value = spec.get(key, default)
    if not isinstance(value, list) or not value or any(v not in allowed for v in value):
        raise _bad(spec, key, f"must be a non-empty list of {', '.join(allowed)} (got {value!r})")
    return value


def _section(spec: dict, key: str, cls):
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise _bad(spec, key, "must be a mapping")
    names = set(cls.__dataclass_fields__)
    for sub in value:
        if sub not in names:
            raise _bad(spec, f"{key}.{sub}", f"is not a known key ({', '.join(sorted(names))})")
    defaults, values = cls(), {}
    for sub, raw in value.items():
        want = type(getattr(defaults, sub))
        try:
            values[sub] = want(raw)
        except (TypeError, ValueError):
            raise _bad(spec, f"{key}.{sub}", f"must be a {want.__name__} (got {raw!r})") from None
        zero_ok = sub in ZERO_MEANS_OFF
        if want in (int, float) and (values[sub] < 0 if zero_ok else values[sub] <= 0):
            raise _bad(spec, f"{key}.{sub}", f"must be {'0 or more' if zero_ok else 'positive'} (got {raw!r})")
    return cls(**values)


KNOWN_KEYS = {"task", "skeleton", "templates", "places", "slots", "length", "init", "encoder", "lr", "budget",
              "reference", "description", "verbalizers", "calibrate", "screen", "auto_verbalizer", "depth",
              "late_layers", "depth_lr"}
ZERO_MEANS_OFF = {"patience", "eval_examples", "restarts"}  # budget keys for which 0 means "not used"
SCREEN_KEYS = {"keep": SCREEN_KEEP, "examples": SCREEN_EXAMPLES}
AUTO_KEYS = {"k": AUTO_WORDS_PER_CLASS, "n": AUTO_WORD_SETS}


def _skeleton(spec: dict, key: str, text) -> Skeleton:
    if not isinstance(text, str):
        raise _bad(spec, key, "must be template text with <place> markers")
    text = unescape(text)
    markers = MARKER.findall(text)
    if not markers:
        raise _bad(spec, key, "has no <place> markers, so there is nowhere to put a prompt")
    if len(set(markers)) != len(markers):
        raise _bad(spec, key, "repeats a <place> marker")
    try:
        template = parse(MARKER.sub(" ", text))
    except TemplateError as exc:
        raise _bad(spec, key, f"is not a valid template: {exc}") from None
    if not any(isinstance(p, Mask) for p in template.parts):
        raise _bad(spec, key, "has no [MASK]")
    places = spec.get("places", markers)
    if not isinstance(places, list) or not places or not any(p in markers for p in places):
        raise _bad(spec, "places", f"must list markers of the skeleton ({', '.join(markers)})")
    return Skeleton(text, tuple(m for m in markers if m in places))


def _skeletons(spec: dict) -> list[Skeleton]:
    if ("skeleton" in spec) == ("templates" in spec):
        raise _bad(spec, "templates", "or 'skeleton' is required (one of them): template text with <place> markers")
    if "skeleton" in spec:
        return [_skeleton(spec, "skeleton", spec["skeleton"])]
    texts = spec["templates"]
    if not isinstance(texts, list) or not texts:
        raise _bad(spec, "templates", "must be a non-empty list of skeletons (the first is the manual default)")
    return [_skeleton(spec, f"templates[{i + 1}]", text) for i, text in enumerate(texts)]


def _verbalizers(spec: dict) -> tuple[list[dict] | None, bool]:
    """(listed label -> word maps or None, whether automatic ones are wanted)."""
    value = spec.get("verbalizers")
    if value is None:
        return None, False
    if value == "auto":
        return None, True
    if not isinstance(value, list) or not value:
        raise _bad(spec, "verbalizers", "must be a non-empty list of label -> word maps (and/or auto), or auto")
    maps = [v for v in value if v != "auto"]
    for i, words in enumerate(maps):
        if not isinstance(words, dict) or len(words) < 2 or not all(isinstance(w, str) and w.strip()
                                                                     for w in words.values()):
            raise _bad(spec, f"verbalizers[{i + 1}]", "must map every label to a word")
    return [{str(k).lower() if isinstance(k, bool) else str(k): w for k, w in m.items()} for m in maps] or None, \
        "auto" in value


def _counts(spec: dict, key: str, defaults: dict) -> dict:
    value = spec.get(key, {})
    if not isinstance(value, dict) or any(k not in defaults for k in value):
        raise _bad(spec, key, f"must be a mapping of {', '.join(defaults)}")
    out = {**defaults, **value}
    for k, v in out.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise _bad(spec, f"{key}.{k}", f"must be a positive whole number (got {v!r})")
    return out


def _depth_lr(spec: dict) -> dict:
    """Each deeper depth's lr range: the space's `depth_lr: {all: {low, high}, late: {...}}`, else config's."""
    given = spec.get("depth_lr", {})
    if not isinstance(given, dict) or any(d not in SPACE_DEPTH_LR for d in given):
        raise _bad(spec, "depth_lr", f"must map {' and/or '.join(SPACE_DEPTH_LR)} to an lr range {{low, high}}")
    out = {}
    for depth, (low, high) in SPACE_DEPTH_LR.items():
        value = given.get(depth, {"low": low, "high": high})
        out[depth] = (*_range({**spec, f"depth_lr.{depth}": value}, f"depth_lr.{depth}", float, "low", "high"),
                      bool(value.get("log", True)) if isinstance(value, dict) else True)
    return out


def load_space(path: str | Path) -> SearchSpace:
    from ..inputs import read_yaml
    path = Path(path)
    spec = read_yaml(path, "search space")
    if not isinstance(spec, dict):
        raise AutoplaceError(f"search space {path}: expected a mapping of keys")
    spec["__path__"] = str(path)
    for key in spec:
        if key not in KNOWN_KEYS and key != "__path__":
            raise _bad(spec, key, f"is not a known key ({', '.join(sorted(KNOWN_KEYS))})")
        for sub, value in (spec[key].items() if isinstance(spec[key], dict) else [(None, spec[key])]):
            if isinstance(value, (int, float)) and not -1e300 < value < 1e300:  # inf, nan, or beyond a float
                raise _bad(spec, f"{key}.{sub}" if sub is not None else key, "must be a finite number")
    skeletons = _skeletons(spec)
    verbalizers, auto = _verbalizers(spec)
    screen, auto_counts = _counts(spec, "screen", SCREEN_KEYS), _counts(spec, "auto_verbalizer", AUTO_KEYS)
    lr = spec.get("lr", {"low": SPACE_LR[0], "high": SPACE_LR[1], "log": True})
    low, high = _range({**spec, "lr": lr}, "lr", float, "low", "high")
    depths = _choices(spec, "depth", DEPTHS, list(SPACE_DEPTHS))
    space = SearchSpace(
        path=str(path), skeletons=skeletons,
        slots=_range(spec, "slots", int) if "slots" in spec else SPACE_SLOTS,
        length=_range(spec, "length", int, bounds=(1, 64)) if "length" in spec else SPACE_LENGTH,
        inits=_choices(spec, "init", INITS, list(INITS)), encoders=_choices(spec, "encoder", ENCODERS, list(ENCODERS)),
        lr=(low, high, bool(lr.get("log", True))), budget=_section(spec, "budget", Budget),
        reference=_section(spec, "reference", Reference), task=spec.get("task"),
        verbalizers=verbalizers, auto_verbalizers=auto,
        calibrations=tuple(_choices(spec, "calibrate", CALIBRATIONS, ["none"])),
        screen_keep=screen["keep"], screen_examples=screen["examples"], auto_k=auto_counts["k"],
        auto_n=auto_counts["n"], depths=depths,
        late=_range(spec, "late_layers", float, bounds=(0, 1)) if "late_layers" in spec else SPACE_LATE,
        depth_lr=_depth_lr(spec))
    encoders = (space.reference.encoder, space.reference.encoder_all, space.reference.encoder_late)
    if not set(encoders) <= set(ENCODERS) or space.reference.init not in INITS:
        raise _bad(spec, "reference", f"encoder/init must be one of {ENCODERS} / {INITS}")
    if space.budget.eval_every > space.budget.steps:
        raise _bad(spec, "budget.eval_every", "is larger than budget.steps: no trial would ever be evaluated")
    return space
