"""Every setting autoplace has, and its default, in one place.

A Plan (what one prompt is to be) and a Budget (how much it may train) become the configs that build and train it
(PromptConfig, TrainConfig) through `configs`, the one place that does so: a search's trials, its confirmation
retrains, `autoplace train` and the benchmarks cannot drift apart. A search's own settings are a SearchConfig, and
a space's ranges start from the SPACE_* values. The command line's flags, the Python API, derived spaces and the
benchmarks read their defaults from here, and nowhere else writes them.

The learning rate: 3e-3, the value the reference placements (and every fixed row of the placement study) have
trained with; the CLI and the API used 1e-3 before, which no measurement here ever chose.

No torch here: the command line's help reads this module.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

SMOLLM2 = "smollm2-135m"          # the offline backbone's alias (SmolLM2-135M-Instruct from PyPI)
DEFAULT_MODEL = SMOLLM2
LR = 3e-3                         # the references' learning rate, see above
ENCODERS = ("none", "mlp", "lstm")  # prompt encoders (prompt_encoders.py)
ENCODER = "lstm"                  # P-tuning's prompt encoder
INITS = ("vocab", "random")
INIT = "vocab"                    # prompt vectors start as real tokens' embeddings
FILLERS = ("pad", "init")         # what a slot holds below the layer its prompt enters at: the pad token, or the
FILLER = "pad"                    # token its prompt was initialised from (benchmarks/depth_lr.py measured both)
PRUNER = "sha"                    # successive halving, chosen by benchmarks/pruning.py
PRUNERS = ("sha", "median", "hyperband", "wilcoxon", "none")
PRECISION = "auto"                # bf16 on CUDA, fp32 on CPU
PRECISIONS = ("auto", "fp32", "bf16")
SEARCH_OUT = "runs/search"
TIED = "tied"                     # --ensemble tied: the winner and every trial dev cannot tell from it
CV_TOP = 3                        # templates cross-validated when --select cv comes without --confirm-top

# A search space's ranges when its YAML does not give them (and what a derived space writes).
SPACE_SLOTS = (1, 3)              # prompt slots per template
SPACE_LENGTH = (2, 8)             # tokens per slot
SPACE_LR = (1e-4, 3e-2)           # sampled log-uniformly (prompts at the input)
DEPTHS = ("input", "all", "late")  # where in the network a trial's prompts enter: the embeddings, every layer, one
SPACE_DEPTHS = ("input",)         # a space that names no depth keeps its prompts at the input
SPACE_LATE = (0.33, 0.75)         # a late prompt's layer, as fractions of the model's depth
SPACE_DEPTH_LR = {"all": (1e-4, 3e-2), "late": (3e-3, 3e-1)}  # the lr ranges of deeper prompts (depth_lr.py:
# every layer peaked at 3e-3 like the input, a late prompt at 3e-2 to 1e-1: a range per depth, not a step scaled by
# the hidden-state norm, which grows 57-fold by layer 15 of SmolLM2)
RESTARTS = 1                      # a run that gives one answer to all of dev is trained again this often from a fresh
                                  # seed (benchmarks/depth_lr.py: late prompts fall into that on some seeds, not others)
SCREEN_KEEP = 4                   # screened candidates that become the study's `words` choice
SCREEN_EXAMPLES = 256             # at most this many train (and dev) examples in the zero-shot screen
AUTO_WORDS_PER_CLASS = 5          # automatic label words: candidates per class ...
AUTO_WORD_SETS = 3                # ... and combinations kept
AUTO_COMBINATIONS = 100           # ... of at most this many scored (k**classes: 5 words for 10 labels is 9.8M)
DERIVED_EVAL_EXAMPLES = 256       # a derived space scores at most this many dev examples per evaluation
DERIVED_MAX_LENGTH = 256          # a derived space's input budget when no tokenizer measures one


@dataclass(frozen=True)
class Budget:
    """Per trial: optimizer steps, dev evaluation every k steps (a pruning checkpoint), batch size, input tokens,
    patience: stop once dev has not improved for that many evaluations (0: off), eval_examples: how many dev
    examples (a fixed choice) those evaluations score, the kept prompt being scored on all of dev (0: all), and
    restarts: how often a run whose prompt gives one answer to all of dev is trained again from a fresh seed."""
    steps: int = 100
    eval_every: int = 10
    batch_size: int = 8
    max_length: int = 256
    patience: int = 0
    eval_examples: int = 0
    restarts: int = RESTARTS


@dataclass(frozen=True)
class Plan:
    """The choices that make one prompt: the template and how its prompt vectors start, are encoded and learn."""
    template: str
    encoder: str = ENCODER
    init: str = INIT
    lr: float = LR
    init_words: tuple[str, ...] = field(default_factory=tuple)  # vocab init from these words
    verbalizer: dict | None = None  # label -> word; None: the task's own
    calibrate: bool = False         # contextual calibration of the label scores
    filler: str = FILLER            # a slot's token below its prompt's layer


@dataclass
class Reference:
    """The fixed placements every search trains first (zero-shot, start-, middle-, end-only, mixed)."""
    total_length: int = 6
    lr: float = LR
    encoder: str = ENCODER
    init: str = INIT
    # The deep and the late reference's recipe (late: half depth, before the answer), each the best dev mean of
    # benchmarks/depth_lr.py: deep prompts as plain vectors (no encoder) at 3e-2 (70.3, the LSTM at 3e-3 65.5); the
    # late one kept the LSTM at 3e-2 (72.4; plain vectors at 1e-1 72.8 is a tie, one seed on MR and CB)
    lr_all: float = 3e-2
    encoder_all: str = "none"
    lr_late: float = 3e-2
    encoder_late: str = ENCODER


@dataclass
class PromptConfig:
    template: str
    encoder: str = ENCODER
    init: str = INIT
    init_words: list[str] = field(default_factory=list)  # vocab init from these words instead of sampled rows
    seed: int = 0
    max_length: int = Budget.max_length
    verbalizer: dict[str, str] | None = None  # label -> word; None: the task's own
    calibrate: bool = False                   # divide label probabilities by the content-free ones (Zhao et al.)
    filler: str = FILLER                      # a slot's token below the layer its prompt enters at (pad | init)

    def __post_init__(self):
        from .template import unescape
        self.template = unescape(self.template)  # stored and shown with its real newlines

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    steps: int = Budget.steps
    batch_size: int = Budget.batch_size
    lr: float = LR
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = Budget.eval_every
    eval_batch_size: int = 32
    patience: int = 0  # stop once dev has not improved for this many evaluations (0: never)
    eval_examples: int = 0  # dev examples scored at each evaluation (a fixed choice; 0: all); see trainer.train
    restarts: int = RESTARTS  # see runner.fit
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchConfig:
    task: str
    space: str
    out: str
    storage: str
    study_name: str
    model: str = DEFAULT_MODEL
    data_dir: str | None = None
    n_trials: int = 30
    timeout: float | None = None
    seed: int = 0
    pruner: str = PRUNER
    workers: int = 1
    devices: list[str] = field(default_factory=list)
    steps: int | None = None          # the trial budget's overrides (None: the space's)
    eval_every: int | None = None
    batch_size: int | None = None
    max_length: int | None = None
    patience: int | None = None       # stop a trial once dev has not improved for this many evaluations
    eval_examples: int | None = None  # dev examples scored at each evaluation during a trial (0: all)
    confirm_top: int = 0
    confirm_seeds: int = 3
    ensemble: int | str = 1        # > 1: OUT/best averages the top-k templates (PET); TIED: the winner and its
                                   # dev ties (benchmarks/selection.py measured it)
    select: str = "dev"            # "cv": the top templates are judged by k-fold over train ∪ dev
    folds: int = 4
    artifacts: str | None = None   # the Optuna artifact store folder (shared storage when several machines join)
    progress: bool | None = None
    trust_remote_code: bool = False
    precision: str = PRECISION
    storage_patience: float = 300.0  # seconds workers wait for a database server that went away before they stop
    keep_manual_unless_better: bool = False  # export the task's own template unless dev shows the winner beats it

    def to_dict(self) -> dict:
        """As recorded in the study; the storage URL is the caller's to redact."""
        return asdict(self)


def configs(plan: Plan, budget: Budget, seed: int) -> tuple[PromptConfig, TrainConfig]:
    prompt = PromptConfig(template=plan.template, encoder=plan.encoder, init=plan.init,
                          init_words=list(plan.init_words), seed=seed, max_length=budget.max_length,
                          verbalizer=plan.verbalizer, calibrate=plan.calibrate, filler=plan.filler)
    train = TrainConfig(steps=budget.steps, batch_size=budget.batch_size, lr=plan.lr,
                        eval_every=min(budget.eval_every, budget.steps), patience=budget.patience,
                        eval_examples=budget.eval_examples, restarts=budget.restarts, seed=seed)
    return prompt, train
