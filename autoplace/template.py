"""The template language: ``{field}`` text, ``[P:n]`` prompt slots, ``[MASK]`` answer, literal text.

A slot may name its depth in the network: ``[P:n]`` (or ``[P:n@0]``) enters at the input embeddings, ``[P:n@k]``
replaces the hidden states at layer k's input (below it the slot holds a filler token), ``[P:n@all]`` gets a fresh
vector at every layer's input (deep prompts). Parsing keeps the column of every part so that errors can point at it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Union

from .errors import AutoplaceError

MAX_SLOT_LENGTH = 64
_TOKEN = re.compile(r"\{([^{}]*)\}|\[P(?::([^\]@]*))?(?:@([^\]]*))?\]|\[MASK\]")
ALL_LAYERS = "all"  # a slot's depth: a layer index, or every layer


class TemplateError(AutoplaceError):
    pass


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Field:
    name: str
    column: int


@dataclass(frozen=True)
class Slot:
    length: int
    index: int  # slots are numbered left to right
    column: int
    depth: int | str = 0  # the layer whose input it replaces (0: the embeddings), or ALL_LAYERS

    def layers(self, n_layers: int) -> range:
        """The layers whose input this slot's vectors replace."""
        return range(n_layers) if self.depth == ALL_LAYERS else range(self.depth, self.depth + 1)


@dataclass(frozen=True)
class Mask:
    column: int


Part = Union[Text, Field, Slot, Mask]


@dataclass(frozen=True)
class Template:
    text: str
    parts: tuple[Part, ...]

    @property
    def slots(self) -> list[Slot]:
        return [p for p in self.parts if isinstance(p, Slot)]

    @property
    def fields(self) -> list[str]:
        return [p.name for p in self.parts if isinstance(p, Field)]

    @property
    def n_prompt_tokens(self) -> int:
        return sum(s.length for s in self.slots)

    @property
    def depths(self) -> list[int | str]:
        """Each slot's depth, left to right."""
        return [s.depth for s in self.slots]

    def __str__(self) -> str:
        return self.text


def _error(text: str, column: int, problem: str) -> TemplateError:
    return TemplateError(f"template column {column + 1}: {problem} (in {text!r})")


def parse(text: str) -> Template:
    """Parse template text into parts; raise TemplateError naming the problem and its column. A written ``\\n``
    (as typed on a command line or in single-quoted YAML) is a newline."""
    text = unescape(text) if isinstance(text, str) else text
    if not text or not text.strip():
        raise TemplateError("template is empty")
    parts: list[Part] = []
    pos = 0
    n_slots = 0
    for match in _TOKEN.finditer(text):
        _literal(text, pos, match.start(), parts)
        column = match.start()
        token = match.group(0)
        if token == "[MASK]":
            parts.append(Mask(column))
        elif token.startswith("{"):
            name = match.group(1).strip()
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise _error(text, column, f"bad field name {match.group(1)!r}")
            parts.append(Field(name, column))
        else:
            raw = match.group(2)
            try:
                length = 1 if raw is None else int(raw)
            except ValueError:
                raise _error(text, column, f"slot length {raw!r} is not a number") from None
            if not 1 <= length <= MAX_SLOT_LENGTH:
                raise _error(text, column, f"slot length {length} is outside 1-{MAX_SLOT_LENGTH}")
            parts.append(Slot(length, n_slots, column, _depth(text, column, match.group(3))))
            n_slots += 1
        pos = match.end()
    _literal(text, pos, len(text), parts)
    masks = [p for p in parts if isinstance(p, Mask)]
    if not masks:
        raise TemplateError(f"template has no [MASK] (in {text!r})")
    if len(masks) > 1:
        raise _error(text, masks[1].column, "template has a second [MASK]; exactly one is allowed")
    return Template(text, tuple(parts))


def _depth(text: str, column: int, raw: str | None) -> int | str:
    if raw is None:
        return 0
    if raw.strip() == ALL_LAYERS:
        return ALL_LAYERS
    if not raw.strip().isdigit():
        raise _error(text, column, f"slot depth {raw!r} is not a layer number or 'all' (as in [P:4@12], [P:4@all])")
    return int(raw)


def check_depth(template: Template, n_layers: int, model: str) -> Template:
    """A slot deeper than the model is refused, naming the model's depth."""
    for slot in template.slots:
        if slot.depth != ALL_LAYERS and slot.depth >= n_layers:
            raise _error(template.text, slot.column, f"slot depth @{slot.depth} is beyond {model}'s {n_layers} "
                                                     f"layers (use @0 to @{n_layers - 1}, or @all)")
    return template


def zero_shot(text: str) -> str:
    """The template with every prompt slot taken out: what the model reads with nothing trained."""
    return re.sub(r" ?\[P(?::[^\]]*)?\] ?", " ", text).strip()


def unescape(text: str) -> str:
    """A written \\n (a command line, single-quoted YAML) means a newline in a template."""
    return text.replace("\\n", "\n")


def _literal(text: str, start: int, end: int, parts: list[Part]) -> None:
    chunk = text[start:end]
    for bad in ("{", "}"):
        if bad in chunk:
            raise _error(text, start + chunk.index(bad), f"unbalanced brace {bad!r}")
    if chunk:
        parts.append(Text(chunk))


def validate(template: Template, fields: Iterable[str], causal: bool) -> Template:
    """Check a parsed template against a task's fields and the backbone kind."""
    known = list(fields)
    for part in template.parts:
        if isinstance(part, Field) and part.name not in known:
            raise _error(template.text, part.column,
                         f"unknown field {{{part.name}}}; this task has {', '.join('{%s}' % f for f in known)}")
    if causal:
        mask_at = next(i for i, p in enumerate(template.parts) if isinstance(p, Mask))
        after = template.parts[mask_at + 1:]
        if any(not (isinstance(p, Text) and not p.text.strip()) for p in after):
            raise _error(template.text, template.parts[mask_at].column,
                         "[MASK] must end the template for a causal model (it reads the next token)")
    return template


def render(template: Template, example: dict) -> str:
    """Human-readable rendering of one example, slots shown as [P]*n."""
    out = []
    for part in template.parts:
        if isinstance(part, Text):
            out.append(part.text)
        elif isinstance(part, Field):
            out.append(str(example[part.name]))
        elif isinstance(part, Slot):
            out.append(("[P]" if part.depth == 0 else f"[P@{part.depth}]") * part.length)
        else:
            out.append("[MASK]")
    return "".join(out)


def segments(template: Template, example: dict) -> list[Union[str, Slot, Mask, tuple]]:
    """The pieces to tokenize, with whitespace placed where BPE tokenizers expect it.

    Trailing whitespace of a literal moves onto the following field (so " word" stays one token);
    whitespace right before [MASK] is dropped (label words carry their own leading space);
    whitespace-only literals between slots vanish. Fields come back as ("field", name, text).
    """
    out: list = []
    carry = ""
    for part in template.parts:
        if isinstance(part, Text):
            body = part.text.rstrip()
            carry_next = part.text[len(body):]
            if body:
                out.append(carry + body)
            carry = carry_next if body else carry + part.text
        elif isinstance(part, Field):
            value = str(example[part.name]).strip()
            out.append(("field", part.name, carry + value if out else value))
            carry = ""
        else:
            carry = ""
            out.append(part)
    return out


def placement_class(template: Template) -> str:
    """none / start-only / middle-only / end-only / mixed, the grouping of the P-tuning paper's table.

    start: before any text; end: after the last field (before or after the answer); middle: in between.
    """
    parts = template.parts
    content = [i for i, p in enumerate(parts)
               if isinstance(p, (Field, Mask)) or (isinstance(p, Text) and p.text.strip())]
    fields = [i for i, p in enumerate(parts) if isinstance(p, Field)] or content[:1]
    kinds = set()
    for i, part in enumerate(parts):
        if isinstance(part, Slot):
            kinds.add("start" if i < content[0] else "end" if i > fields[-1] else "middle")
    if not kinds:
        return "none"
    return f"{kinds.pop()}-only" if len(kinds) == 1 else "mixed"


def depth_class(template: Template) -> str:
    """input / all / late / mixed: where in the network a template's prompts enter (none: it has no prompt)."""
    kinds = {"input" if d == 0 else "all" if d == ALL_LAYERS else "late" for d in template.depths}
    return "none" if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"
