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

import ast
import collections.abc
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import yaml

from keeptune.model.lora import LoraSettings


class ConfigError(ValueError):
    """A training configuration keeptune cannot use; the message names where and which field."""


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
RETENTION_METHODS = ("kl", "corda", "replay", "scale")


@dataclass(frozen=True)
class RetentionConfig:
    """Methods that keep the old skills while the new one is learned; each is a switch in `methods`."""

    methods: Sequence[Literal["kl", "corda", "replay", "scale"]] = ()
    """Any of kl, corda, replay, scale (e.g. [kl, scale], or kl,scale on the command line); empty: plain LoRA."""
    kl_weight: float = 0.1
    """kl: lambda of the loss term lambda x KL(base || tuned) at every response token (base: the adapter disabled)."""
    replay_share: float = 0.2
    """replay: the share of the training set made of preservation prompts answered by the base model."""
    scales: Sequence[float] = (0.5, 0.75)
    """scale: each checkpoint is also evaluated with its adapter scaled by each factor; the best passing pair wins."""
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
    """Methods that prevent forgetting while training (kl, corda, replay; scale is the experiment's)."""
    out: str = "runs/train/smollm2-135m-lora"
    """Run directory: checkpoints/, adapter/ (the final adapter), log.jsonl, tensorboard/, config.yaml."""
    resume: bool = False
    """Continue from the last complete checkpoint in `out` (the same as --resume)."""
    overwrite: bool = False
    """Write into `out` even when it exists and keeptune did not make it (the same as --overwrite); nothing there is deleted."""


# --- reading ------------------------------------------------------------------------

def load_config(path: Path | str | None = None, overrides: Sequence[str] = (), root: type = None):
    """The configuration of a YAML file (None: the defaults) with `key=value` overrides applied.

    `root` is the top dataclass (default `Config`; the experiment runner passes its own)."""
    root = root or Config
    tree: dict = {}
    where: dict[str, str] = {}
    if path is not None:
        tree, where = read_yaml(Path(path))
    for word in overrides:
        key, sep, text = word.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {word!r} is not key=value (e.g. train.lr=1e-3)")
        set_word(tree, where, key.strip(), text, f"override {word!r}")
    return validate(build(root, tree, where, "", str(path) if path else "defaults"), where)


def set_word(tree: dict, where: dict[str, str], key: str, text: str, origin: str) -> None:
    """Put the value of a `key=text` word (read as YAML) at the dotted `key` of `tree`; `where` notes `origin`."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = tree
    for part in key.split(".")[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{origin}: {part!r} is not a section")
    node[key.split(".")[-1]] = value
    where[key] = origin


# Fields that must be at least 1 (max_steps when set).
POSITIVE = ("data.seq_len", "data.length_pool", "train.epochs", "train.max_steps", "train.global_batch",
            "train.micro_batch", "train.checkpoints", "lora.rank", "retention.preservation_samples")
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
}


def _range_text(low: float, low_ok: bool, high: float, high_ok: bool) -> str:
    if high == math.inf:
        return f"{'at least' if low_ok else 'greater than'} {low:g} (and finite)"
    return f"in {'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"


def validate(config, where: dict[str, str]):
    """Values the types allow but training cannot use: each a ConfigError naming where it was set
    (FILE:LINE, the override, or `defaults`) and the field, before any data is read or model loaded.

    Works on any root dataclass with `model`, `lora` and `train` sections (Config, ExperimentConfig)."""
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
    methods = get("retention.methods")
    if methods is not None and len(set(methods)) != len(methods):
        raise ConfigError(f"{at('retention.methods')}: field 'retention.methods' is {list(methods)}; name each "
                          "method once")
    targets = get("lora.targets")
    if targets is not None:
        from keeptune.model.lora import TargetError, check_target_syntax

        try:
            check_target_syntax(targets)
        except TargetError as err:
            raise ConfigError(f"{at('lora.targets')}: field 'lora.targets': {err}") from None
    for dotted in ("model.device", "model.dtype"):
        value = get(dotted)
        if value is None:
            continue
        from keeptune.model.load import ModelLoadError, resolve_device, resolve_dtype

        try:
            resolve_device(value) if dotted == "model.device" else resolve_dtype(value, resolve_device("cpu"))
        except ModelLoadError as err:
            raise ConfigError(f"{at(dotted)}: field {dotted!r}: {err}") from None
    return config


def read_yaml(path: Path) -> tuple[dict, dict[str, str]]:
    """A YAML mapping and, for every dotted key, 'FILE:LINE' where it is written."""
    from keeptune.io import DataError, MalformedLineError, read_text

    try:
        text = read_text(path)  # UTF-8, a BOM allowed
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except MalformedLineError as err:  # not UTF-8
        raise ConfigError(f"{err.path}:{err.line}: {err.reason}") from None
    except DataError as err:  # a directory, unreadable
        raise ConfigError(str(err)) from None
    try:
        tree, root = yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if tree is None:
        return {}, {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a config file is a mapping of sections, not a {type(tree).__name__}")
    where: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        for key_node, value_node in node.value:
            dotted = prefix + str(key_node.value)
            where[dotted] = f"{path}:{key_node.start_mark.line + 1}"
            if isinstance(value_node, yaml.MappingNode):
                walk(value_node, dotted + ".")
            elif isinstance(value_node, yaml.SequenceNode):  # list items: `original[0]`, `original[0].task`
                for i, item in enumerate(value_node.value):
                    where[f"{dotted}[{i}]"] = f"{path}:{item.start_mark.line + 1}"
                    if isinstance(item, yaml.MappingNode):
                        walk(item, f"{dotted}[{i}].")

    walk(root, "")
    return tree, where


def build(cls: type, values: Any, where: dict[str, str], prefix: str, source: str, base: Any = None):
    """`base` (default: `cls()`) with the fields of a mapping replaced, every field type-checked.

    A section keeps the defaults its parent gives it (ExperimentConfig's `train` is not
    TrainConfig's), so overriding one key of a section leaves its other keys alone.
    """
    base = cls() if base is None else base
    location = where.get(prefix.rstrip("."), source)
    if not isinstance(values, dict):
        raise ConfigError(f"{location}: {prefix.rstrip('.')!r} is a section: give it a mapping, not {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        dotted = prefix + str(key)
        if key not in names:
            choices = ", ".join(prefix + n for n in names)
            raise ConfigError(f"{where.get(dotted, source)}: unknown field {dotted!r}; the fields here: {choices}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, value, where, dotted + ".", source, getattr(base, key))
        elif _item_class(hint) is not None:
            kwargs[key] = build_list(_item_class(hint), value, where, dotted, source, getattr(base, key))
        else:
            kwargs[key] = coerce(value, hint, f"{where.get(dotted, source)}: field {dotted!r}")
    return dataclasses.replace(base, **kwargs)


def _item_class(hint: Any) -> type | None:
    """The dataclass of a `list[SomeConfig]` field, else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (list, collections.abc.Sequence) and args and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def build_list(cls: type, values: Any, where: dict[str, str], dotted: str, source: str, base: list) -> list:
    """A list of `cls` sections. An item may be its first field's value alone (`original: [squad-seed]`);
    a mapping instead of a list changes the one item of the default (`original.data=FILE`)."""
    location = where.get(dotted, source)
    if isinstance(values, dict):
        if len(base) != 1:
            raise ConfigError(f"{location}: {dotted!r} holds {len(base)} items: give the whole list")
        return [build(cls, values, where, dotted + ".", source, base[0])]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{location}: field {dotted!r} is a list of one or more sections, not {values!r}")
    first = dataclasses.fields(cls)[0].name
    items = []
    for i, value in enumerate(values):
        value = {first: value} if isinstance(value, str) else value
        items.append(build(cls, value, where, f"{dotted}[{i}].", source, cls()))
    return items


def coerce(value: Any, hint: Any, what: str) -> Any:
    """`value` as type `hint` (int, float, bool, str, Literal, Optional, tuple, Sequence)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(value, inner, what)
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{what} is {value!r}; choose one of {', '.join(map(str, args))}")
    if origin is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(coerce(v, a, what) for a, v in zip(args, value))
        raise ConfigError(f"{what} is {value!r}; expected a list of {len(args)} values, e.g. [0.9, 0.95]")
    if origin is dict:
        if isinstance(value, dict):
            return {coerce(k, args[0], what): coerce(v, args[1], what) for k, v in value.items()}
        raise ConfigError(f"{what} is {value!r}; expected a mapping, e.g. {{area: 100}}")
    if origin in (list, collections.abc.Sequence):
        if isinstance(value, str):  # `q_proj,v_proj` or one regular expression
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            return tuple(coerce(v, args[0], what) for v in value)
        raise ConfigError(f"{what} is {value!r}; expected a list")
    if hint is float and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 1e-3 (no dot) as a string
        except (TypeError, ValueError):
            pass
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{what} is {value!r}; expected {hint.__name__}")


# --- writing and describing -----------------------------------------------------------

def to_dict(config: Any) -> dict:
    """Plain nested dict of a config (tuples as lists), for YAML and JSON."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(dataclasses.asdict(config))


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it), inherited ones included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def parse_words(argv: list[str], prog: str, description: str, examples: str, root: type, resume: bool = True,
                overwrite: bool = False):
    """Parse `[CONFIG] [key=value ...] [--resume] [--overwrite]` (the words jsonargparse cannot read);
    `--help` lists every field of `root` with its default and docstring.
    Returns (config file or None, overrides, whether --resume was given); with `overwrite`, a
    `--overwrite` flag is accepted and becomes the override `overwrite=true` (`root` needs that field)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=examples + "\nconfig fields (section.field=default), each settable as key=value:\n"
                                     + "\n".join(describe(root)))
    parser.add_argument("words", nargs="*", metavar="CONFIG | key=value",
                        help="a YAML config file, then overrides such as train.lr=1e-3")
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    if overwrite:
        parser.add_argument("--overwrite", action="store_true",
                            help="write into an output directory keeptune did not make (nothing there is deleted)")
    args = parser.parse_args(argv)
    files = [w for w in args.words if "=" not in w]
    if len(files) > 1:
        parser.error(f"one config file at most, got {files}")
    words = [w for w in args.words if "=" in w] + (["overwrite=true"] if getattr(args, "overwrite", False) else [])
    return (files[0] if files else None), words, getattr(args, "resume", False)


def describe(cls: type = Config, prefix: str = "", defaults: Any = None) -> list[str]:
    """One help line per field: `section.field = default  docstring`.

    The defaults are those a bare run uses: a section's come from its parent
    (ExperimentConfig's `train` is not TrainConfig's), the same source `build` starts from."""
    lines: list[str] = []
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    defaults = cls() if defaults is None else defaults
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(f"{prefix}{f.name}: {docs.get(f.name, '')}")
            lines += describe(hints[f.name], prefix + f.name + ".", getattr(defaults, f.name))
        else:
            default = yaml.safe_dump(to_dict(defaults)[f.name], default_flow_style=True).strip()
            default = default.removesuffix("\n...").removesuffix(" ...")
            lines.append(f"  {prefix}{f.name}={default}  {docs.get(f.name, '')}")
    return lines
