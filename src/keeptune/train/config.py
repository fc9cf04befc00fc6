"""Training configuration: typed dataclasses, one docstring per field, read from
YAML and changed on the command line with `section.field=value` words (torchtune
style):

    keeptune train configs/smollm2-135m/lora.yaml train.lr=1e-3 lora.rank=16

An override's value is read as YAML (`lora.targets=[wq,wv]`, `model.source=null`).
The defaults are configs/smollm2-135m/lora.yaml's values, on the embedded default
model. Unknown fields and wrong types are `ConfigError`s naming the file, the
line and the field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Sequence

from keeptune.core import config as config_engine
from keeptune.core.errors import ConfigError, ModelLoadError, TargetError
from keeptune.model.load import resolve_device, resolve_dtype
from keeptune.model.lora import LoraSettings, check_target_syntax


@dataclass(frozen=True)
class ModelConfig:
    """The base model."""

    source: Optional[str] = None
    """Hugging Face model directory or GGUF file; null: the embedded SmolLM2-135M-Instruct."""
    dtype: str = "auto"
    """Frozen base weights: float32, bfloat16 or float16; auto: float32 on CPU, bfloat16 on GPU."""
    device: str = "auto"
    """cpu, cuda or cuda:N; auto: CUDA when available (under torchrun: the local rank's GPU)."""


@dataclass(frozen=True)
class LoraConfig(LoraSettings):
    """LoRA adapter settings (keeptune.model.lora.LoraSettings) and how to print them."""

    names: Literal["hf", "mindformers"] = "hf"
    """Parameter names printed at start: PEFT's (hf) or the seed's (mindformers: ...wq.mindpet_delta_lora_a)."""


@dataclass(frozen=True)
class DataConfig:
    """Training data and how a conversation becomes a token sequence."""

    path: str = "out/math/train-conversations.jsonl"
    """Conversation records, JSON lines (what `keeptune data build` writes by default)."""
    format: Literal["plain", "vicuna", "chat"] = "plain"
    """plain: prompt + answer + EOS; vicuna: BOS + the seed's Vicuna template + EOS; chat: the chat template."""
    seq_len: int = 256
    """Predicted positions per sample: at most seq_len + 1 tokens (the seed's 257-token rows); longer ones are cut."""
    add_bos: Optional[bool] = None
    """Put BOS first; null: only for vicuna (plain matches keeptune's evaluation, which encodes prompts without BOS)."""
    prompt: Optional[Literal["alpaca", "math", "none"]] = None
    """Prompt name recorded with the adapter for evaluation (alpaca, math, none); null: detected from the records."""
    group_by_length: bool = True
    """Sort each global batch by length before cutting it into micro-batches: less padding, the same gradient."""
    length_pool: int = 8
    """Global batches pooled and sorted by length before batching (less padding); 1: random batches."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, batching and checkpoints."""

    epochs: int = 1
    """Passes over the data (each reshuffled); a partial last global batch is dropped."""
    max_steps: Optional[int] = 300
    """Stop after this many optimizer steps if fewer than epochs x steps per epoch; null: no cap."""
    global_batch: int = 8
    """Samples per optimizer step = micro_batch x gradient accumulation x world size."""
    micro_batch: int = 4
    """Samples per forward/backward pass on one device."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.0
    """Weight decay of the one parameter group "decay" (every LoRA A/B matrix)."""
    warmup_ratio: float = 0.03
    """Share of the steps with linear warm-up (rounded up) before the cosine decay to 0."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0: no clipping."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Compute: bf16 (autocast; LoRA weights stay float32) or fp32; auto: bf16 on GPUs and CPUs with native bf16."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more time."""
    seed: int = 0
    """Seed of LoRA's initialisation, the data order and dropout; on CPU a run is repeatable bit for bit."""
    checkpoints: int = 5
    """Evenly spaced checkpoints: at steps round(k x total / N), k = 1..N (the last at the final step)."""


# The retention methods (docs/retention.md): each prevents forgetting in its own way, and they combine.
# Their settings are a section of the training config (Config.retention, shared by the experiment's config), so
# they are declared here with the rest of the schema; keeptune.retention implements the methods (kl and corda
# plug into the loop through keeptune.train.methods).
RETENTION_METHODS = ("kl", "corda", "replay", "scale", "intruders")


@dataclass(frozen=True)
class RetentionConfig:
    """Methods that keep the old skills while the new one is learned; each is a switch in `methods`."""

    methods: Sequence[Literal["kl", "corda", "replay", "scale", "intruders"]] = ()
    """Any of kl, corda, replay, scale, intruders (e.g. [kl, scale]; kl,scale on a command line); empty: plain LoRA."""
    kl_weight: float = 0.1
    """kl: lambda of the loss term lambda x KL(base || tuned) at every response token (base: the adapter disabled)."""
    replay_share: float = 0.2
    """replay: the share of the training set made of preservation prompts answered by the base model."""
    scales: Sequence[float] = (0.5, 0.75)
    """scale: each checkpoint is also evaluated with its adapter scaled by each factor; the best passing pair wins."""
    intruder_lambdas: Sequence[float] = (0.75, 0.5)
    """intruders: each checkpoint is also evaluated with its intruder dimensions kept at each share (0: removed)."""
    intruder_top_k: int = 10
    """intruders: how many top singular directions of W + dW per adapted layer may be intruders (PEFT's top_k)."""
    intruder_epsilon: float = 0.5
    """intruders: a direction is an intruder when its |cosine| with every singular vector of W is below this."""
    preservation: Optional[str] = None
    """corda and replay: a SQuAD-format file or http(s) address, or a task spec; null: the offline default."""
    preservation_samples: int = 256
    """corda and replay: preservation samples used (CorDA's covariance prompts; replay records)."""
    allow_overlap: bool = False
    """Accept preservation samples that share a passage with a task the gate evaluates (refused by default)."""


@dataclass(frozen=True)
class DistributedConfig:
    """More than one device, under `torchrun --nproc_per_node K` (ignored in a single process)."""

    strategy: Literal["ddp", "fsdp"] = "ddp"
    """ddp: a model copy per device; fsdp: shard the model (FSDP2) when it does not fit one device."""
    backend: str = "auto"
    """torch.distributed backend; auto: nccl on GPU, gloo on CPU."""


@dataclass(frozen=True)
class Config:
    """A LoRA fine-tuning run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapter settings."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation, schedule, batching and checkpoints."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Multi-device settings."""
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    """Methods that prevent forgetting (kl, corda, replay while training; the experiment's scale, intruders after)."""
    out: str = "runs/train/smollm2-135m-lora"
    """Run directory: checkpoints/, adapter/ (the final adapter), log.jsonl, tensorboard/, config.yaml."""
    resume: bool = False
    """Continue from the last complete checkpoint in `out` (the same as --resume)."""
    overwrite: bool = False
    """Write into `out` even when it exists and keeptune did not make it (the same as --overwrite); nothing there is deleted."""


# --- reading ------------------------------------------------------------------------

def load_config(path: Path | str | None = None, overrides: Sequence[str] = (), root: type = None):
    """The configuration of a YAML file (None: the defaults) with `key=value` overrides applied, validated.

    `root` is the top dataclass (default `Config`; the experiment runner passes its own)."""
    return config_engine.load_config(path, overrides, root or Config, check=validate)


# Fields that must be at least 1 (max_steps when set); the experiment's new_task ones where the root has them.
POSITIVE = ("data.seq_len", "data.length_pool", "train.epochs", "train.max_steps", "train.global_batch",
            "train.micro_batch", "train.checkpoints", "lora.rank", "retention.preservation_samples",
            "retention.intruder_top_k", "new_task.n", "new_task.eval_n", "new_task.seq_len", "new_task.max_new_tokens")
# Numbers with a range: (lowest, whether the lowest is allowed, highest, whether the highest is allowed).
RANGES = {
    "train.lr": (0.0, False, math.inf, False),
    "train.eps": (0.0, False, math.inf, False),
    "train.weight_decay": (0.0, True, math.inf, False),
    "train.warmup_ratio": (0.0, True, 1.0, True),
    "train.grad_clip": (0.0, True, math.inf, False),
    "lora.alpha": (0.0, False, math.inf, False),
    "lora.dropout": (0.0, True, 1.0, False),
    "retention.kl_weight": (0.0, False, math.inf, False),
    "retention.replay_share": (0.0, False, 1.0, False),
    "retention.intruder_epsilon": (0.0, False, 1.0, True),
}


def _range_text(low: float, low_ok: bool, high: float, high_ok: bool) -> str:
    if high == math.inf:
        return f"{'at least' if low_ok else 'greater than'} {low:g} (and finite)"
    return f"in {'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"


def validate(config, where: dict[str, str]):
    """Values the types allow but training cannot use: each a ConfigError naming where it was set
    (FILE:LINE, the override, or `defaults`) and the field, before any data is read or model loaded.

    Works on any root dataclass with `model`, `lora` and `train` sections (Config, ExperimentConfig); a root
    with a `validate(at)` method checks its own sections there."""
    def at(*fields: str) -> str:
        """Where the first of `fields` that was set was set (a combination names what was changed)."""
        for dotted in fields:
            found = where.get(dotted) or where.get(dotted.rsplit(".", 1)[0])
            if found:
                return found
        return "defaults"

    def get(dotted: str):
        section, name = dotted.split(".")
        return getattr(getattr(config, section, None), name, None)

    for dotted in POSITIVE:
        value = get(dotted)
        if value is not None and value < 1:
            raise ConfigError(f"{at(dotted)}: field {dotted!r} is {value}; it must be at least 1")
    for dotted, (low, low_ok, high, high_ok) in RANGES.items():
        value = get(dotted)
        if value is None:
            continue
        inside = math.isfinite(value) and (value >= low if low_ok else value > low) and (
            value <= high if high_ok else value < high)
        if not inside:
            raise ConfigError(f"{at(dotted)}: field {dotted!r} is {value!r}; it must be "
                              f"{_range_text(low, low_ok, high, high_ok)}")
    betas = get("train.betas")
    if betas is not None and not all(math.isfinite(b) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"{at('train.betas')}: field 'train.betas' is {list(betas)}; each must be in [0, 1)")
    global_batch, micro_batch = get("train.global_batch"), get("train.micro_batch")
    if global_batch is not None and micro_batch is not None and global_batch % micro_batch:
        raise ConfigError(f"{at('train.global_batch', 'train.micro_batch')}: field 'train.global_batch' is "
                          f"{global_batch}; it must be a "
                          f"multiple of train.micro_batch ({micro_batch}): global batch = micro-batch x gradient "
                          "accumulation x number of devices")
    scales = get("retention.scales")
    if scales is not None and not all(math.isfinite(x) and x >= 0 for x in scales):
        raise ConfigError(f"{at('retention.scales')}: field 'retention.scales' is {list(scales)}; each factor must "
                          "be at least 0 (and finite): 0 is the base model, 1 the adapter as trained")
    lambdas = get("retention.intruder_lambdas")
    if lambdas is not None and not all(math.isfinite(x) and 0 <= x <= 1 for x in lambdas):
        raise ConfigError(f"{at('retention.intruder_lambdas')}: field 'retention.intruder_lambdas' is "
                          f"{list(lambdas)}; each must be in [0, 1]: the share of every intruder dimension kept (1: "
                          "the adapter as trained, 0: intruders removed)")
    methods = get("retention.methods")
    if methods is not None and "corda" in methods and get("lora.init") == "mica":
        raise ConfigError(f"{at('lora.init', 'retention.methods')}: field 'lora.init' is 'mica' and "
                          "'retention.methods' has corda: both initialise the adapter; choose one")
    if methods is not None and "corda" in methods and "intruders" in methods:
        raise ConfigError(f"{at('retention.methods')}: field 'retention.methods' is {list(methods)}: intruders does "
                          "not combine with corda: CorDA rewrites the base weights, so PEFT's reduction would look "
                          "for intruders against CorDA's residual, not the base model's singular vectors; drop one")
    if methods is not None and len(set(methods)) != len(methods):
        raise ConfigError(f"{at('retention.methods')}: field 'retention.methods' is {list(methods)}; name each "
                          "method once")
    targets = get("lora.targets")
    if targets is not None:
        try:
            check_target_syntax(targets)
        except TargetError as err:
            raise ConfigError(f"{at('lora.targets')}: field 'lora.targets': {err}") from None
    for dotted in ("model.device", "model.dtype"):
        value = get(dotted)
        if value is None:
            continue
        try:
            resolve_device(value) if dotted == "model.device" else resolve_dtype(value, resolve_device("cpu"))
        except ModelLoadError as err:
            raise ConfigError(f"{at(dotted)}: field {dotted!r}: {err}") from None
    own = getattr(config, "validate", None)  # a root's checks of its own sections (ExperimentConfig's new_task)
    if own is not None:
        own(at)
    return config


# --- writing and describing -----------------------------------------------------------


