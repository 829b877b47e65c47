"""Examples -> token ids + slot ids + answer position, tokenized once; batches with dynamic padding.

Whole-answer scoring (a task's `answer_scoring: full | mean`): an example becomes one row per candidate answer (label
word or choice text), and the candidate's tokens are read at the answer position and after it. A causal LM sees the
candidate's tokens but its last appended after the answer position (teacher forcing); a masked LM gets one [MASK]
per candidate token in place of the one [MASK] (PET). Either way, position answer + j predicts token j.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import Budget
from .errors import AutoplaceError
from .tasks import Task
from .template import Mask, Slot, Template, segments

NO_SLOT = -1


@dataclass
class Encoded:
    input_ids: list[int]
    slot_ids: list[int]    # per position: index of the prompt token there, or NO_SLOT
    answer: int            # position whose hidden state is scored
    label: int             # label index (classification, choice) or first target token id (cloze)
    targets: list[int]     # cloze: first token ids of every acceptable answer
    candidates: list["Candidate | None"] = field(default_factory=list)  # whole answers: a row per candidate
    group: object = None   # the question an answer option belongs to (MultiRC's exact match)


@dataclass
class Candidate:
    input_ids: list[int]
    slot_ids: list[int]
    tokens: list[int]      # the answer's tokens, predicted at answer, answer + 1, ...


class Featurizer:
    """Turns a task's examples into model inputs for one template on one backbone."""

    def __init__(self, template: Template, task: Task, backbone, max_length: int = Budget.max_length):
        self.template, self.task, self.max_length = template, task, max_length
        self.tokenizer, self.causal = tokenizer, causal = backbone.tokenizer, backbone.causal
        self._cache = backbone.caches.tokens  # text -> ids, shared by every template on this backbone
        self.filler_ids: list[int] | None = None  # per prompt token, its token below its layer (None: the pad)
        probe = tokenizer("x").input_ids
        bare = tokenizer("x", add_special_tokens=False).input_ids
        at = _find(probe, bare)
        self.prefix, self.suffix = (probe[:at], probe[at + len(bare):]) if at >= 0 else ([], [])
        if causal:
            self.suffix = []  # nothing may follow the answer position of a causal LM
        elif tokenizer.mask_token_id is None:
            raise AutoplaceError("this masked LM's tokenizer has no mask token")
        self.label_ids = [self.first_token(word, f"label word {word!r}") for word in task.verbalizer.values()]
        if task.scores_whole_answers:
            words = [tuple(self.tokens(w)) for w in task.verbalizer.values()]
            if len(set(words)) != len(words):
                raise AutoplaceError(f"task {task.name}: label words {list(task.verbalizer.values())} tokenize "
                                     "alike; each label needs its own words")
        elif len(set(self.label_ids)) != len(self.label_ids):
            raise AutoplaceError(f"task {task.name}: label words {list(task.verbalizer.values())} share a first token; "
                                 "each label must start with a different token (or set answer_scoring: full)")
        fixed = len(self.prefix) + len(self.suffix) + template.n_prompt_tokens + 1
        if fixed >= max_length:
            raise AutoplaceError(f"max length {max_length} leaves no room for text after {fixed} fixed tokens")

    def tokens(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self.tokenizer(text, add_special_tokens=False).input_ids
        return self._cache[text]

    def first_token(self, word: str, what: str) -> int:
        """Multi-token label words are scored by their first token (as PET and P-tuning's LAMA do)."""
        ids = self.tokens(word)
        if not ids:
            raise AutoplaceError(f"{what} tokenizes to nothing")
        return ids[0]

    def encode(self, example: dict) -> Encoded:
        answers = self._answers(example) if self.task.scores_whole_answers else []
        pieces = segments(self.template, example)
        texts = [self.tokens(p) if isinstance(p, str) else list(self.tokens(p[2])) if isinstance(p, tuple) else []
                 for p in pieces]  # field ids are copied: truncation shortens them
        self._truncate(pieces, texts, max((len(a) - 1 for a in answers if a), default=0))
        ids, slots, answer, next_slot = list(self.prefix), [NO_SLOT] * len(self.prefix), -1, 0
        for piece, toks in zip(pieces, texts):
            if isinstance(piece, Slot):
                ids += (self.filler_ids[next_slot:next_slot + piece.length] if self.filler_ids
                        else [self.tokenizer.pad_token_id] * piece.length)
                slots += range(next_slot, next_slot + piece.length)
                next_slot += piece.length
            elif isinstance(piece, Mask):
                if self.causal:
                    answer = len(ids) - 1
                else:
                    answer = len(ids)
                    ids.append(self.tokenizer.mask_token_id)
                    slots.append(NO_SLOT)
            else:
                ids += toks
                slots += [NO_SLOT] * len(toks)
        ids += self.suffix
        slots += [NO_SLOT] * len(self.suffix)
        if answer < 0:
            raise AutoplaceError("a causal model needs some input before [MASK]")
        return Encoded(ids, slots, answer, *self.task.kind.encode_answer(self.task, example, self.first_token),
                       [a and self._candidate(ids, slots, answer, a) for a in answers],
                       example.get(self.task.group_field) if self.task.group_field else None)

    def _answers(self, example: dict) -> list[list[int] | None]:
        answers = []
        for text in self.task.kind.candidate_texts(self.task, example):
            if text is None:  # a choice example with fewer candidates than fields
                answers.append(None)
                continue
            tokens = self.tokens(text)
            if not tokens:
                raise AutoplaceError(f"task {self.task.name}: the answer {text!r} tokenizes to nothing")
            answers.append(tokens)
        return answers

    def _candidate(self, ids: list[int], slots: list[int], answer: int, tokens: list[int]) -> Candidate:
        """The example's row for one answer: its tokens after the answer position (causal, all but the last), or
        one [MASK] per token in place of the [MASK] (masked LM)."""
        if self.causal:
            return Candidate(ids + tokens[:-1], slots + [NO_SLOT] * (len(tokens) - 1), tokens)
        masks = [self.tokenizer.mask_token_id] * len(tokens)
        return Candidate(ids[:answer] + masks + ids[answer + 1:],
                         slots[:answer] + [NO_SLOT] * len(tokens) + slots[answer + 1:], tokens)

    def _truncate(self, pieces: list, texts: list, answer_tokens: int = 0) -> None:
        """Shorten text fields only, longest first; prompts, literals, [MASK] and the answer's tokens (whole-answer
        scoring) always survive."""
        fields = [i for i, p in enumerate(pieces) if isinstance(p, tuple)]
        total = len(self.prefix) + len(self.suffix) + answer_tokens + sum(
            p.length if isinstance(p, Slot) else (0 if self.causal else 1) if isinstance(p, Mask) else len(t)
            for p, t in zip(pieces, texts))
        excess = total - self.max_length
        while excess > 0:
            longest = max(fields, key=lambda i: len(texts[i]), default=None)
            if longest is None or not texts[longest]:
                if answer_tokens:
                    how = "one [MASK] per token" if not self.causal else "its tokens after the answer position"
                    raise AutoplaceError(f"an answer of {answer_tokens + 1} tokens cannot be scored within max length "
                                         f"{self.max_length}: a {'causal' if self.causal else 'masked'} LM needs "
                                         f"{how}; raise --max-length or shorten the answers")
                raise AutoplaceError(f"template literals and prompts alone exceed max length {self.max_length}")
            lengths = sorted((len(texts[i]) for i in fields), reverse=True)
            cut = min(excess, max(1, lengths[0] - (lengths[1] if len(lengths) > 1 else 0)))
            del texts[longest][len(texts[longest]) - cut:]
            excess -= cut

    def encode_all(self, dataset) -> list[Encoded]:
        return [self.encode(example) for example in dataset]


def collate(items: list[Encoded], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example; the answer position is gathered, not assumed last."""
    if any(it.candidates for it in items):  # whole-answer scoring
        return collate_candidates(items, pad_id, device)
    width = max(len(it.input_ids) for it in items)
    n_targets = max(1, max(len(it.targets) for it in items))
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    slots = torch.full((len(items), width), NO_SLOT, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    targets = torch.full((len(items), n_targets), -1, dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it.input_ids)
        ids[row, :n] = torch.tensor(it.input_ids)
        slots[row, :n] = torch.tensor(it.slot_ids)
        mask[row, :n] = 1
        targets[row, :len(it.targets)] = torch.tensor(it.targets, dtype=torch.long)
    batch = {"input_ids": ids, "slot_ids": slots, "attention_mask": mask,
             "answer": torch.tensor([it.answer for it in items]), "label": torch.tensor([it.label for it in items]),
             "targets": targets}
    return {k: v.to(device) for k, v in batch.items()}


def collate_candidates(items: list[Encoded], pad_id: int, device: torch.device | str = "cpu") -> dict:
    """One row per (example, candidate); `candidate_index` maps each example's candidates to rows (-1: none), and
    `candidate_tokens` holds each row's answer tokens (-1 pads)."""
    rows = [(b, k, c) for b, it in enumerate(items) for k, c in enumerate(it.candidates) if c is not None]
    width, longest = max(len(c.input_ids) for *_, c in rows), max(len(c.tokens) for *_, c in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    slots = torch.full((len(rows), width), NO_SLOT, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    tokens = torch.full((len(rows), longest), -1, dtype=torch.long)
    index = torch.full((len(items), max(len(it.candidates) for it in items)), -1, dtype=torch.long)
    for r, (b, k, c) in enumerate(rows):
        n = len(c.input_ids)
        ids[r, :n], slots[r, :n], mask[r, :n] = torch.tensor(c.input_ids), torch.tensor(c.slot_ids), 1
        tokens[r, :len(c.tokens)] = torch.tensor(c.tokens)
        index[b, k] = r
    batch = {"input_ids": ids, "slot_ids": slots, "attention_mask": mask,
             "answer": torch.tensor([items[b].answer for b, *_ in rows]),
             "label": torch.tensor([it.label for it in items]), "candidate_tokens": tokens, "candidate_index": index}
    return {k: v.to(device) for k, v in batch.items()}


def _find(haystack: list[int], needle: list[int]) -> int:
    for i in range(len(haystack) - len(needle) + 1):
        if haystack[i:i + len(needle)] == needle:
            return i
    return -1
