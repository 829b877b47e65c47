"""From (task, backbone, prompt config) to a ready PromptedModel and the featurizer that feeds it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .backbones import Backbone
from .encoders import PromptEncoder, init_vectors
from .encoding import Featurizer
from .model import PromptedModel
from .tasks import Task
from .template import Template, parse, validate


@dataclass
class PromptConfig:
    template: str
    encoder: str = "lstm"
    init: str = "vocab"
    init_words: list[str] = field(default_factory=list)  # vocab init from these words instead of sampled rows
    seed: int = 0
    max_length: int = 256

    def to_dict(self) -> dict:
        return asdict(self)


def parse_for(task: Task, backbone: Backbone, text: str) -> Template:
    return validate(parse(text), task.fields, backbone.causal)


def build(task: Task, backbone: Backbone, cfg: PromptConfig) -> tuple[Featurizer, PromptedModel]:
    template = parse_for(task, backbone, cfg.template)
    featurizer = Featurizer(template, task, backbone.tokenizer, backbone.causal, cfg.max_length)
    word_ids = [i for w in cfg.init_words for i in featurizer.tokens(" " + w.strip())]
    vectors = init_vectors(backbone.embeddings.weight, template.n_prompt_tokens, cfg.init, cfg.seed, word_ids,
                           backbone.tokenizer.all_special_ids)
    with torch.random.fork_rng(devices=[]):  # the encoder's layers depend on the seed, not on what ran before
        torch.manual_seed(cfg.seed)
        encoder = PromptEncoder(vectors, cfg.encoder if template.n_prompt_tokens else "none")
    label_ids = None if task.kind == "cloze" else featurizer.label_ids
    model = PromptedModel(backbone, encoder, label_ids).to(backbone.device)
    return featurizer, model
