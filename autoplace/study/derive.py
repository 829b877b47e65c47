"""A search space for a task that ships none, derived from the task's own template.

A user's task file already says where its fields and its answer are, so it already says where prompts can go: at
the start, after each field, right before the literal text that leads to the answer, and (masked LMs) after the
answer. The ranges are the defaults; the input budget comes from the train split's token lengths, so a short task
does not pay for 256 tokens. The task's own template and words come first, the manual default.
"""
from __future__ import annotations

import re
from dataclasses import asdict

import numpy as np
import yaml

from ..config import (DEPTHS, DERIVED_EVAL_EXAMPLES, DERIVED_MAX_LENGTH, ENCODERS, INITS, SPACE_LENGTH, SPACE_LR,
                      SPACE_SLOTS, Budget, Reference)
from ..errors import AutoplaceError
from ..template import Field, Mask, Slot, Text, parse, render

BOUNDARY = re.compile(r"[?.!;\n](?=[^?.!;\n]*\S[^?.!;\n]*$)")  # the last sentence break with words after it
ATTACHED = re.compile(r"[?.!,;:)\"']*")  # punctuation written right after a field
SLOT_ROOM = SPACE_SLOTS[1] * SPACE_LENGTH[1]  # the most prompt tokens the default ranges place


def skeleton_of(template: str, task_name: str) -> str:
    """The template with <place> markers: <start>, <after:FIELD>, <before:answer>, <end> (right after [MASK]).

    Rendered with no prompt it is the task's own template: punctuation written right after a field or [MASK] stays
    with it, and fields written with nothing between them stay glued (no place between them), since a marker
    renders as a space. [MASK] may come first or in the middle (masked LMs), a field may end the template."""
    parts = [p for p in parse(template).parts if not isinstance(p, Slot)]  # the search places its own prompts
    if not any(isinstance(p, Field) for p in parts):
        raise AutoplaceError(f"task {task_name}: its template {template!r} has no {{field}}, so there is nowhere "
                             "to place a prompt around the input")
    mask_at = next(i for i, p in enumerate(parts) if isinstance(p, Mask))
    seen: dict[str, int] = {}
    out = [" <start> "]

    def attach(i: int) -> str:
        """The punctuation written right after part i ("{hypothesis}?", "[MASK],"), taken off the text after it."""
        follows = parts[i + 1].text if i + 1 < len(parts) and isinstance(parts[i + 1], Text) else ""
        attached = ATTACHED.match(follows).group(0)
        if attached:
            parts[i + 1] = Text(follows[len(attached):])
        return attached

    for i, part in enumerate(parts):
        if isinstance(part, Field):
            seen[part.name] = seen.get(part.name, 0) + 1
            suffix = "" if seen[part.name] == 1 else f"-{seen[part.name]}"
            out.append(f"{{{part.name}}}{attach(i)}")
            if not (i + 1 < len(parts) and isinstance(parts[i + 1], Field)):  # "{a}{b}": one place, after both
                out.append(f" <after:{part.name}{suffix}> ")
        elif isinstance(part, Text) and i == mask_at - 1 and part.text.strip():
            out += _lead_in(part.text)
        elif isinstance(part, Text):
            out.append(part.text)
        elif isinstance(part, Mask):
            last = next(x for x in reversed(out) if x.strip())
            if " <before:answer> " not in out and not last.startswith((" <after:", " <start>")):
                out.append(" <before:answer> ")
            out += [f"[MASK]{attach(i)}", " <end> "]
    return re.sub(r" *\n *", "\n", re.sub(r" {2,}", " ", "".join(out))).strip()


def _lead_in(text: str) -> list[str]:
    """The text before [MASK], with <before:answer> before the words that lead to the answer ("Answer:"), or right
    before [MASK] when all of it leads there."""
    match = None
    for match in BOUNDARY.finditer(text):
        pass
    head, lead = (text[:match.end()], text[match.end():]) if match else ("", text)
    return [head, " <before:answer> ", lead] if head.strip() else [text, " <before:answer> "]


def budget_length(task, tokenizer, data_dir: str | None, template: str) -> int:
    """Input tokens per example: the train split's 95th percentile with this template, plus room for prompts,
    rounded up to a multiple of 16."""
    parsed = parse(template)
    examples = task.load_split("train", data_dir)
    lengths = [len(tokenizer(render(parsed, ex), add_special_tokens=True).input_ids) for ex in examples]
    needed = int(np.percentile(lengths, 95)) + SLOT_ROOM + 2
    return int(min(512, max(32, -(-needed // 16) * 16)))


def derived_space(task, tokenizer=None, data_dir: str | None = None) -> str:
    """The space as commented YAML, ready to save, edit and pass back with --space."""
    skeleton = skeleton_of(task.template, task.name)
    length = (budget_length(task, tokenizer, data_dir, task.template) if tokenizer is not None
              else DERIVED_MAX_LENGTH)
    budget = Budget()
    spec = {"task": task.name, "templates": [skeleton], "slots": dict(zip(("min", "max"), SPACE_SLOTS)),
            "length": dict(zip(("min", "max"), SPACE_LENGTH)), "init": list(INITS), "encoder": list(ENCODERS),
            "lr": {"low": SPACE_LR[0], "high": SPACE_LR[1], "log": True}, "depth": list(DEPTHS),
            "budget": {"steps": budget.steps, "eval_every": budget.eval_every, "batch_size": budget.batch_size,
                       "max_length": length, "eval_examples": DERIVED_EVAL_EXAMPLES},
            "reference": asdict(Reference())}
    if task.kind.needs_verbalizer:
        spec["verbalizers"] = [dict(task.verbalizer)]
        spec["calibrate"] = ["none", "content_free"]
    header = (f"# Search space derived from task {task.name}'s template {task.template!r}.\n"
              "# Places: <start>, <after:FIELD> after each field, <before:answer> before the words that lead to the\n"
              "# answer, <end> after [MASK] (masked LMs only). Add phrasings under `templates:` and label words under\n"
              "# `verbalizers:` (or `auto`); the first of each is the task's own. depth: where prompts enter (the\n"
              "# embeddings, every layer, or one late layer). max_length: the train split's 95th\n"
              "# percentile of tokens with this template, plus room for prompts. eval_examples: a larger dev split is\n"
              f"# scored on a fixed {DERIVED_EVAL_EXAMPLES} of its examples during a trial, and all of it for the "
              "kept prompt. Schema:\n"
              "# search_spaces/README.md.\n")
    return header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120)
