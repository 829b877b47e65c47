"""From (task, backbone, prompt config) to a ready PromptedModel and the featurizer that feeds it."""
from __future__ import annotations

import torch

from .backbones import Backbone
from .calibration import content_free_examples
from .config import FILLERS, PromptConfig
from .prompt_encoders import PromptEncoder, init_token_ids, init_vectors
from .featurize import Featurizer
from .errors import AutoplaceError
from .model import PromptedModel
from .tasks import Task
from .injection import Injector, rows_per_layer
from .template import Template, check_depth, parse, validate


def parse_for(task: Task, backbone: Backbone, text: str) -> Template:
    return validate(parse(text), task.fields, backbone.causal)


def check_words(task: Task, cfg) -> Task:
    """The task read through the config's label words (checked against its labels); calibration needs words."""
    if (cfg.calibrate or cfg.verbalizer) and not task.kind.needs_verbalizer:
        raise AutoplaceError(f"label words and calibration need a task with labels; {task.name} is a "
                             f"{task.kind.name} task")
    return task.with_words(cfg.verbalizer) if cfg.verbalizer else task


def build(task: Task, backbone: Backbone, cfg: PromptConfig) -> tuple[Featurizer, PromptedModel]:
    task = check_words(task, cfg)
    template = parse_for(task, backbone, cfg.template)
    n_layers = backbone.n_layers if any(depth != 0 for depth in template.depths) else 1
    check_depth(template, n_layers, backbone.name)
    featurizer = Featurizer(template, task, backbone, cfg.max_length)
    word_ids = [i for w in cfg.init_words for i in featurizer.tokens(" " + w.strip())]
    ids = init_token_ids(backbone, template.n_prompt_tokens, cfg.init, cfg.seed, word_ids,
                         backbone.tokenizer.all_special_ids)
    if cfg.filler not in FILLERS:
        raise AutoplaceError(f"unknown filler {cfg.filler!r} (use {', '.join(FILLERS)})")
    if cfg.filler == "init":  # below its layer a slot holds the token its prompt starts from
        featurizer.filler_ids = ids.tolist()
    rows = rows_per_layer(template, n_layers)
    vectors = init_vectors(backbone, rows, cfg.init, cfg.seed, ids)
    with torch.random.fork_rng(devices=[]):  # the encoder's layers depend on the seed, not on what ran before
        torch.manual_seed(cfg.seed)
        encoder = PromptEncoder(vectors, cfg.encoder if template.n_prompt_tokens else "none")
    model = PromptedModel(backbone, encoder, task.kind.scored_rows(featurizer.label_ids),
                          answer_scoring=task.answer_scoring,
                          injector=Injector(rows, template.n_prompt_tokens, n_layers)).to(backbone.device)
    if cfg.calibrate:  # p_cf itself is computed once the prompt's weights are in place (runner.prepare)
        model.content_free = featurizer.encode_all(content_free_examples(task))
    return featurizer, model
