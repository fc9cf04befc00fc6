"""`keeptune params`, `keeptune import` and `keeptune export`: one typed function per command."""
from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path
from typing import Literal, Optional

import torch
import yaml

from keeptune.core.errors import ModelLoadError, OutputError
from keeptune.core.io import atomic_write_json
from keeptune.core.outputs import claim_output, publish_dir, staging_dir
from keeptune.interop.export import mindformers_model_tensors, read_adapter
from keeptune.interop.imports import checkpoint_kind, import_adapter, import_model
from keeptune.interop.mindspore_ckpt import CheckpointFile, write_checkpoint
from keeptune.model.load import DEFAULT_MODEL_NAME, resolve_dtype
from keeptune.model.lora import LoraSettings, print_parameter_groups
from keeptune.model.params import architecture_config, leaderboard_ratio, lora_accounting, source_config


def params(
    model: str | None = None,
    arch: Literal["llama3-8b", "smollm2-135m"] | None = None,
    target: str = "q_proj,v_proj",
    rank: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    names: Literal["hf", "mindformers"] = "hf",
) -> None:
    """Count LoRA's trainable parameters against the model's, exactly, without loading weights.

    The model is built from its configuration on the meta device and PEFT's
    LoRA is applied there. Prints the parameter group with every LoRA matrix
    and its shape, trainable and total parameters, the exact ratio, the score's
    parameter term (1 - ratio) * 0.3 and, for Llama-3-8B, the leaderboard's
    convention trainable / 8.03e9.

    Args:
        model: a Hugging Face model directory (only config.json is read) or a GGUF file; default: the embedded SmolLM2-135M-Instruct.
        arch: a built-in architecture instead of --model: llama3-8b or smollm2-135m.
        target: comma-separated LoRA targets: HF names (q_proj), MindFormers names (wq) or a regular expression (.*wq|.*wv).
        rank: LoRA rank r.
        alpha: LoRA alpha (does not change the count).
        dropout: LoRA dropout (does not change the count).
        names: print parameter names as PEFT has them (hf) or as the seed printed them (mindformers).
    """
    if model is not None and arch is not None:
        raise ModelLoadError("pass --model or --arch, not both")
    config = architecture_config(arch) if arch else source_config(model)
    settings = LoraSettings(targets=target, rank=rank, alpha=alpha, dropout=dropout)
    peft_model, count = lora_accounting(config, settings)
    print(f"model: {arch or model or DEFAULT_MODEL_NAME} (built on the meta device, no weights loaded)")
    print(f"LoRA rank {rank} on {len(peft_model.targeted_module_names)} modules: {target}")
    print_parameter_groups(peft_model, names=names)
    convention = leaderboard_ratio(count)
    if convention is not None:
        print(f"leaderboard convention trainable / 8.03e9: {convention:.6g} (exact: {convention!r})")


def import_checkpoint(
    ckpt: Path,
    out: Optional[Path] = None,
    what: Literal["auto", "model", "adapter"] = "auto",
    config: Optional[str] = None,
    tokenizer: Optional[str] = None,
    model: Optional[str] = None,
    alpha: Optional[float] = None,
    dropout: Optional[float] = None,
    dtype: Optional[str] = None,
    overwrite: bool = False,
) -> Path:
    """Turn a MindFormers checkpoint (.ckpt) into a Hugging Face model directory or a PEFT adapter.

    A full MindFormers Llama checkpoint (model.tok_embeddings.embedding_weight,
    model.layers.N.attention.wq.weight, ...) becomes a model directory (safetensors,
    config.json), named, laid out and typed as MindFormers' own Llama converters do; a
    mindpet LoRA checkpoint (model.layers.N.attention.wq.mindpet_delta_lora_a/_b)
    becomes a PEFT adapter (adapter_config.json, adapter_model.safetensors, keeptune.json).
    Optimizer state and step counters in the file are skipped. The file is read as
    protobuf, tensor by tensor; nothing is unpickled, and a file keeptune cannot parse
    is refused, naming the file and what is wrong, before anything is written.

    Args:
        ckpt: the MindSpore checkpoint file.
        out: output directory; default: CKPT without .ckpt, plus -hf (a model) or -adapter.
        what: model, adapter, or auto (a model when the file holds Llama weights, else an adapter).
        config: the model's configuration: a Hugging Face config.json (or its directory), the MindFormers run YAML (model.model_config; its pet_config gives an adapter's lora_alpha), or llama3-8b. Default for a model: Llama-3-8B's when the shapes are its.
        tokenizer: a Hugging Face tokenizer (directory) to save beside the imported model.
        model: an adapter's base model (e.g. the imported model directory): checked against the adapter's shapes and recorded for eval and merge.
        alpha: an adapter's lora_alpha (the file does not hold it); default: the pet_config of --config.
        dropout: an adapter's lora_dropout; default: the pet_config of --config, else 0.
        dtype: cast floating-point weights to float32, bfloat16 or float16; default: keep the file's.
        overwrite: write into an existing directory keeptune did not make (its files of the same names are replaced).
    """
    ckpt = Path(ckpt)
    with CheckpointFile(ckpt) as file:  # the record framing and every name are read here
        kind = checkpoint_kind(file) if what == "auto" else what
        out = Path(out) if out is not None else ckpt.with_name(ckpt.stem + ("-hf" if kind == "model" else "-adapter"))
        inputs = [p for p in (ckpt, config, tokenizer, model) if p is not None and Path(p).exists()]  # not llama3-8b
        own = claim_output(out, "import", overwrite, inputs=inputs)
        target = Path(os.path.abspath(out))
        tmp = staging_dir(target)
        try:
            if kind == "model":
                import_model(file, tmp, config, dtype)
                if tokenizer is not None:
                    save_tokenizer(tokenizer, tmp)
            else:
                info = import_adapter(file, tmp, config, model, alpha, dropout, dtype)
                atomic_write_json(tmp / "keeptune.json", info)
            publish_dir(tmp, target, "import", own)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    what_it_is = "Hugging Face model" if kind == "model" else "PEFT adapter"
    print(f"keeptune: imported {ckpt} as a {what_it_is}: {out}")
    if kind == "model" and tokenizer is None:
        print("keeptune: no tokenizer was saved with it (--tokenizer DIR adds one); eval and train need one")
    return out


def save_tokenizer(source: str, folder: Path) -> None:
    """Save the tokenizer AutoTokenizer loads from `source` into `folder`."""
    from transformers import AutoTokenizer  # seconds to import: paid by `import --tokenizer` only

    try:
        AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"--tokenizer {source}: cannot load a Hugging Face tokenizer there "
                             f"({type(err).__name__}: {err})") from None


def export(
    source: Path,
    format: Literal["mindformers"] = "mindformers",
    out: Optional[Path] = None,
    merged: bool = False,
    model: Optional[str] = None,
    dtype: Optional[str] = None,
    overwrite: bool = False,
) -> Path:
    """Write a PEFT adapter or a model as a MindFormers checkpoint (.ckpt) that MindSpore loads.

    An adapter (from keeptune train, or a run's best/adapter) becomes mindpet LoRA
    parameters with the seed's names (model.layers.N.attention.wq.mindpet_delta_lora_a,
    rank x in, and _lora_b, out x rank: the names `keeptune params --names mindformers`
    prints) and prints the pet_config MindFormers needs for them; a PEFT scaling other than
    lora_alpha / rank (rsLoRA, alpha_pattern) is folded into B, so mindpet's alpha / rank
    gives the same output. With --merged, the adapter is merged into its base model and the
    whole model is written as a MindFormers Llama checkpoint; a model directory (or GGUF
    file) as SOURCE is written whole the same way. Tensors are written one at a time.

    Args:
        source: an adapter directory, or a Hugging Face Llama model directory or GGUF file.
        format: the checkpoint format: mindformers (MindSpore .ckpt, MindFormers/mindpet names).
        out: the .ckpt file to write; default: SOURCE plus -mindformers.ckpt (-merged-mindformers.ckpt).
        merged: merge the adapter into its base model and write the full model.
        model: the adapter's base model; default: the one recorded in its keeptune.json.
        dtype: float32, bfloat16 or float16; default: keep the source's dtypes.
        overwrite: replace an existing OUT file.
    """
    source = Path(source)
    is_adapter = (source / "adapter_config.json").is_file()
    if merged and not is_adapter:
        raise ModelLoadError(f"{source} is not a PEFT adapter directory (no adapter_config.json): --merged merges "
                             "an adapter into its base model")
    stem = source.with_suffix("") if source.is_file() else source
    out = Path(out) if out is not None else Path(f"{stem}{'-merged' if merged else ''}-mindformers.ckpt")
    if out.is_dir() or (out.exists() and not overwrite):
        raise OutputError(f"{out}: {'is a directory' if out.is_dir() else 'exists'}; choose another --out"
                          + ("" if out.is_dir() else " or pass --overwrite"))
    cast = resolve_dtype(dtype, torch.device("cpu")) if dtype is not None else None
    if is_adapter:
        adapter, base = read_adapter(source, model)  # every check before a byte is written
        tensors = mindformers_model_tensors(base, adapter, cast) if merged else adapter.tensors(cast)
    else:
        adapter, tensors = None, mindformers_model_tensors(source, None, cast)
    count = write_checkpoint(out, tensors)
    kind = "merged model" if merged else "mindpet LoRA adapter" if is_adapter else "model"
    print(f"keeptune: wrote the {kind} {source} as a MindFormers checkpoint: {out} ({count} parameters)")
    if adapter is not None and not merged:
        print("keeptune: MindFormers applies it with this pet_config under model.model_config (lora_alpha / "
              "lora_rank is the scaling the weights were exported for):")
        print(textwrap.indent(yaml.safe_dump({"pet_config": adapter.pet_config()}, sort_keys=False), "  "), end="")
    return out
