"""Search spaces: a YAML skeleton with named places where prompt slots may go, and the ranges to sample.

Sampling is define-by-run: the number of slots picks which `places@k` parameter exists, the chosen places pick
which `length:<place>` parameters exist. The reference placements (zero-shot, start-, middle-, end-only, mixed)
are expressed in the same parameters, so the study can enqueue them and TPE learns from them.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..encoders import ENCODERS, INITS
from ..errors import AutoplaceError
from ..template import Mask, TemplateError, parse, placement_class, validate

MARKER = re.compile(r"<([A-Za-z][A-Za-z0-9_:\-]*)>")
SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
FAMILY = {"rte": "nli", "nli": "nli", "cb": "cb", "boolq": "boolq", "mr": "sentiment", "sentiment": "sentiment"}
REFERENCE_CLASSES = ("start-only", "middle-only", "end-only", "mixed")


@dataclass
class Budget:
    steps: int = 100
    eval_every: int = 10
    batch_size: int = 8
    max_length: int = 256


@dataclass
class Reference:
    total_length: int = 6
    lr: float = 3e-3
    encoder: str = "lstm"
    init: str = "vocab"


@dataclass
class SearchSpace:
    path: str
    skeleton: str
    places: list[str]
    slots: tuple[int, int] = (1, 3)
    length: tuple[int, int] = (2, 8)
    inits: list[str] = field(default_factory=lambda: list(INITS))
    encoders: list[str] = field(default_factory=lambda: list(ENCODERS))
    lr: tuple[float, float, bool] = (1e-4, 3e-2, True)
    budget: Budget = field(default_factory=Budget)
    reference: Reference = field(default_factory=Reference)
    task: str | None = None

    # -- templates -------------------------------------------------------------------------------------------
    @property
    def manual_template(self) -> str:
        """The skeleton with no prompt: the zero-shot reference."""
        return self.render({})

    def render(self, lengths: dict[str, int]) -> str:
        text = MARKER.sub(lambda m: f" [P:{lengths[m.group(1)]}] " if m.group(1) in lengths else " ", self.skeleton)
        return re.sub(r" {2,}", " ", text).strip()

    def usable_places(self, causal: bool) -> list[str]:
        """Places in skeleton order; those after [MASK] only for masked LMs."""
        if not causal:
            return list(self.places)
        mask_at = self.skeleton.index("[MASK]")
        return [p for p in self.places if self.skeleton.index(f"<{p}>") < mask_at]

    def place_class(self, place: str) -> str:
        return placement_class(parse(self.render({place: 1})))

    def check(self, task) -> None:
        """The skeleton's fields must be the task's."""
        try:
            validate(parse(self.manual_template), task.fields, causal=False)
        except TemplateError as exc:
            raise AutoplaceError(f"search space {self.path}: skeleton does not fit task {task.name}: {exc}") from None

    # -- sampling --------------------------------------------------------------------------------------------
    def combos(self, places: list[str], k: int) -> list[str]:
        return ["+".join(c) for c in itertools.combinations(places, k)]

    def sample(self, trial, causal: bool) -> dict:
        """Suggest one configuration; returns template text, encoder, init and lr."""
        if trial.user_attrs.get("reference") == "zero-shot":
            return {"template": self.manual_template, "encoder": "none", "init": "vocab", "lr": self.reference.lr}
        places = self.usable_places(causal)
        k = trial.suggest_int("n_slots", self.slots[0], min(self.slots[1], len(places)))
        chosen = trial.suggest_categorical(f"places@{k}", self.combos(places, k)).split("+")
        lengths = {p: trial.suggest_int(f"length:{p}", *self.length) for p in chosen}
        return {"template": self.render(lengths),
                "init": trial.suggest_categorical("init", self.inits),
                "encoder": trial.suggest_categorical("encoder", self.encoders),
                "lr": trial.suggest_float("lr", self.lr[0], self.lr[1], log=self.lr[2])}

    def references(self, causal: bool) -> list[tuple[str, dict]]:
        """(name, enqueued params): zero-shot, then one placement per class with the same total prompt length."""
        places = self.usable_places(causal)
        by_class: dict[str, list[str]] = {}
        for place in places:
            by_class.setdefault(self.place_class(place), []).append(place)
        picks = {c.removesuffix("-only"): ps for c, ps in by_class.items()}
        plans = {f"{c}-only": picks.get(c, []) for c in ("start", "middle", "end")}
        plans["mixed"] = [ps[0] for c, ps in picks.items()] if len(picks) > 1 else []
        out = [("zero-shot", {})]
        for name in REFERENCE_CLASSES:
            chosen = self._fit_places(plans[name])
            if not chosen:
                continue
            lengths = self._split(self.reference.total_length, len(chosen))
            params = {"n_slots": len(chosen), f"places@{len(chosen)}": "+".join(chosen),
                      **{f"length:{p}": n for p, n in zip(chosen, lengths)},
                      "init": self.reference.init, "encoder": self.reference.encoder, "lr": self.reference.lr}
            out.append((name, params))
        return out

    def _fit_places(self, chosen: list[str]) -> list[str]:
        """At most max-slots places, and few enough that each gets the minimum length."""
        n = min(len(chosen), self.slots[1], max(1, self.reference.total_length // self.length[0]))
        return chosen[:n] if n >= self.slots[0] else []

    def _split(self, total: int, k: int) -> list[int]:
        base, extra = divmod(total, k)
        return [min(self.length[1], max(self.length[0], base + (i < extra))) for i in range(k)]


# -- loading ---------------------------------------------------------------------------------------------------
def default_space_path(task_name: str) -> Path:
    return SPACES_DIR / f"{FAMILY.get(task_name, 'nli')}.yaml"


def _range(spec: dict, key: str, kind, lo_key="min", hi_key="max", bounds=None) -> tuple:
    value = spec.get(key)
    if not isinstance(value, dict) or lo_key not in value or hi_key not in value:
        raise _bad(spec, key, f"must be a mapping with {lo_key} and {hi_key}")
    try:
        lo, hi = kind(value[lo_key]), kind(value[hi_key])
    except (TypeError, ValueError):
        raise _bad(spec, key, f"{lo_key} and {hi_key} must be numbers") from None
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
    out = cls()
    for sub, raw in value.items():
        want = type(getattr(out, sub))
        try:
            converted = want(raw)
        except (TypeError, ValueError):
            raise _bad(spec, f"{key}.{sub}", f"must be a {want.__name__} (got {raw!r})") from None
        if want in (int, float) and converted <= 0:
            raise _bad(spec, f"{key}.{sub}", f"must be positive (got {raw!r})")
        setattr(out, sub, converted)
    return out


KNOWN_KEYS = {"task", "skeleton", "places", "slots", "length", "init", "encoder", "lr", "budget", "reference",
              "description"}


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AutoplaceError(f"search space {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise AutoplaceError(f"search space {path}{f' line {mark.line + 1}' if mark else ''}: not valid YAML ({exc.problem or exc})") from None
    if not isinstance(spec, dict):
        raise AutoplaceError(f"search space {path}: expected a mapping of keys")
    spec["__path__"] = str(path)
    for key in spec:
        if key not in KNOWN_KEYS and key != "__path__":
            raise _bad(spec, key, f"is not a known key ({', '.join(sorted(KNOWN_KEYS))})")
    skeleton = spec.get("skeleton")
    if not isinstance(skeleton, str):
        raise _bad(spec, "skeleton", "is required: the template text with <place> markers")
    markers = MARKER.findall(skeleton)
    if not markers:
        raise _bad(spec, "skeleton", "has no <place> markers, so there is nowhere to put a prompt")
    if len(set(markers)) != len(markers):
        raise _bad(spec, "skeleton", "repeats a <place> marker")
    try:
        template = parse(MARKER.sub(" ", skeleton))
    except TemplateError as exc:
        raise _bad(spec, "skeleton", f"is not a valid template: {exc}") from None
    if not any(isinstance(p, Mask) for p in template.parts):
        raise _bad(spec, "skeleton", "has no [MASK]")
    places = spec.get("places", markers)
    if not isinstance(places, list) or not places or any(p not in markers for p in places):
        raise _bad(spec, "places", f"must list markers of the skeleton ({', '.join(markers)})")
    lr = spec.get("lr", {"low": 1e-4, "high": 3e-2, "log": True})
    low, high = _range({**spec, "lr": lr}, "lr", float, "low", "high")
    space = SearchSpace(
        path=str(path), skeleton=skeleton, places=[m for m in markers if m in places],
        slots=_range(spec, "slots", int) if "slots" in spec else (1, 3),
        length=_range(spec, "length", int, bounds=(1, 64)) if "length" in spec else (2, 8),
        inits=_choices(spec, "init", INITS, list(INITS)), encoders=_choices(spec, "encoder", ENCODERS, list(ENCODERS)),
        lr=(low, high, bool(lr.get("log", True))), budget=_section(spec, "budget", Budget),
        reference=_section(spec, "reference", Reference), task=spec.get("task"))
    if space.reference.encoder not in ENCODERS or space.reference.init not in INITS:
        raise _bad(spec, "reference", f"encoder/init must be one of {ENCODERS} / {INITS}")
    if space.budget.eval_every > space.budget.steps:
        raise _bad(spec, "budget.eval_every", "is larger than budget.steps: no trial would ever be evaluated")
    return space
