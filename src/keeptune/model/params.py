"""Exact LoRA parameter accounting without loading weights (the seed's LoRA targets, and the score's parameter term).

A model is built from its configuration on the meta device (shapes only, no
memory, no weights read) and PEFT's LoRA is applied there: `get_peft_model`
works on meta tensors, so the count is PEFT's own, not a formula that could
drift from what training really adds.
"""
from __future__ import annotations

from pathlib import Path

import torch

from keeptune.core.errors import ModelLoadError
from keeptune.model.load import check_config_json, resolve_model_dir
from keeptune.model.lora import LoraSettings, ParameterCount, apply_lora, count_parameters, resolve_targets

# Built-in architectures (the seed's Llama-3-8B and the embedded SmolLM2-135M), as Llama configurations.
ARCHITECTURES: dict[str, dict] = {
    "llama3-8b": {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
                  "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
                  "tie_word_embeddings": False, "rope_theta": 500000.0, "max_position_embeddings": 8192,
                  "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": 128002},
    "smollm2-135m": {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9,
                     "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
                     "tie_word_embeddings": True},
}
# Llama-3-8B's exact parameter count, and the "8030 M" the contest manual divides by.
LLAMA3_8B_TOTAL = 8_030_261_248
LEADERBOARD_TOTAL = 8.03e9


def architecture_config(name: str):
    """The LlamaConfig of a built-in architecture."""
    from transformers import LlamaConfig

    if name not in ARCHITECTURES:
        raise ModelLoadError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return LlamaConfig(**ARCHITECTURES[name])


def source_config(source: str | Path | None):
    """The configuration of a model directory, a GGUF file, or (None) the embedded default model.

    A directory needs only its config.json; a GGUF file goes through keeptune's
    one-time conversion cache, whose directory holds the config.
    """
    from transformers import AutoConfig

    path = Path(source).expanduser() if source is not None else None
    if path is not None and path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a Hugging Face model directory: it has no config.json")
        check_config_json(path / "config.json")
    else:
        path = resolve_model_dir(source)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as err:  # not JSON, no model_type, an unknown architecture
        raise ModelLoadError(f"{path / 'config.json'}: not a usable model configuration ({err})") from None


def meta_model(config) -> torch.nn.Module:
    """A causal LM of `config` on the meta device: real module shapes, no weights allocated."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def check_targets(source: str | Path | None, targets) -> list[str]:
    """The module names LoRA `targets` select in `source`'s model, from its configuration alone.

    The model is built on the meta device (no weights read; a GGUF source goes
    through the conversion cache once), so a target list that matches nothing is a
    TargetError (listing the Linear modules there are) before any data is built or
    model loaded; a model source keeptune cannot read is a ModelLoadError.
    """
    return resolve_targets(meta_model(source_config(source)), targets)


def lora_accounting(config, settings: LoraSettings) -> tuple[torch.nn.Module, ParameterCount]:
    """The meta-device PEFT model of `config` with LoRA `settings`, and its parameter count (what PEFT trains:
    with lora.init mica, A alone, its B frozen)."""
    model = apply_lora(meta_model(config), settings, meta=True)
    return model, count_parameters(model)


def leaderboard_ratio(count: ParameterCount) -> float | None:
    """trainable / 8.03e9, the leaderboard's convention, for a Llama-3-8B-sized model (else None)."""
    return count.trainable / LEADERBOARD_TOTAL if count.total == LLAMA3_8B_TOTAL else None
