"""The Llama configuration of a MindFormers checkpoint, and the weight shapes it gives.

`keeptune import --config` takes a Hugging Face config.json (or its directory), a
MindFormers run YAML (its `model.model_config`, with MindFormers' defaults for what it
leaves out, and its `pet_config`, which holds an adapter's lora_alpha), or `llama3-8b`.
Without one, weights with Llama-3-8B's shapes get its published configuration; a
checkpoint alone cannot tell the number of attention heads of any other model.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from keeptune.core.config import parse_yaml
from keeptune.core.errors import ConfigError, ModelLoadError
from keeptune.core.io import read_text
from keeptune.model.load import check_config_json
from keeptune.model.params import ARCHITECTURES, meta_model

# Llama-3-8B as Meta publishes it: params' shapes plus the norm epsilon (1e-5), which counting does not need.
LLAMA3_8B = {**ARCHITECTURES["llama3-8b"], "rms_norm_eps": 1e-5}


def read_config(source: str | Path | None):
    """(LlamaConfig or None, pet_config) from --config: a config.json or its directory, a MindFormers YAML,
    or `llama3-8b`; (None, {}) for None."""
    from transformers import LlamaConfig  # about a second to import: paid by import and export, not by every command

    if source is None:
        return None, {}
    if str(source) == "llama3-8b":
        return LlamaConfig(**LLAMA3_8B), {}
    path = Path(source).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return yaml_config(path)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ModelLoadError(f"--config {source}: no such file; give a Hugging Face config.json (or its directory), "
                             "a MindFormers run YAML, or llama3-8b")
    values = check_config_json(file)
    if values["model_type"] != "llama":
        raise ModelLoadError(f"{file}: model_type is {values['model_type']!r}; MindFormers' Llama checkpoints need "
                             "a llama configuration")
    try:
        return LlamaConfig.from_dict(values), {}
    except (TypeError, ValueError) as err:
        raise ModelLoadError(f"{file}: not a usable Llama configuration ({err})") from None


def yaml_config(path: Path):
    """(LlamaConfig, pet_config dict) of a MindFormers run YAML (model.model_config, MindFormers' defaults)."""
    model_config = _model_config(path)
    _check_supported(model_config, path)
    config = _llama_config(model_config, path)
    pet = model_config.get("pet_config") or {}
    return config, pet if isinstance(pet, dict) else {}


def _model_config(path: Path) -> dict:
    """The `model.model_config` mapping of a MindFormers run YAML."""
    try:  # a key written twice is MindFormers' to judge: its loader, as PyYAML, keeps the last
        data = parse_yaml(read_text(path), path, repeats=True)[0]
    except yaml.YAMLError as err:
        raise ModelLoadError(f"{path}: not valid YAML ({err})") from None
    except ConfigError as err:  # aliases that expand without bound
        raise ModelLoadError(str(err)) from None
    model_config = ((data or {}).get("model") or {}).get("model_config") if isinstance(data, dict) else None
    if not isinstance(model_config, dict):
        raise ModelLoadError(f"{path}: not a MindFormers run configuration: it has no model.model_config mapping")
    return model_config


def _check_supported(model_config: dict, path: Path) -> None:
    """ModelLoadError for a model_config a Hugging Face Llama cannot reproduce."""
    kind = str(model_config.get("type", "LlamaConfig"))
    if kind != "LlamaConfig":
        raise ModelLoadError(f"{path}: model.model_config.type is {kind}; keeptune imports MindFormers' LlamaConfig")
    extend = model_config.get("extend_method", "None")
    if extend not in (None, "None"):
        raise ModelLoadError(f"{path}: extend_method {extend} (rotary scaling) is not supported by keeptune import; "
                             "pass the Hugging Face config.json of the model as --config instead")
    if bool(model_config.get("qkv_has_bias", False)) != bool(model_config.get("attn_proj_has_bias", False)):
        raise ModelLoadError(f"{path}: qkv_has_bias and attn_proj_has_bias differ; a Hugging Face Llama has "
                             "biases on all four attention projections or on none")


def _llama_config(model_config: dict, path: Path):
    """The LlamaConfig of a MindFormers model_config, with MindFormers' defaults for what it leaves out."""
    from transformers import LlamaConfig  # about a second to import: paid by import and export, not by every command

    heads = model_config.get("num_heads", 32)
    try:
        return LlamaConfig(
            num_hidden_layers=model_config.get("num_layers", 32), hidden_size=model_config.get("hidden_size", 4096),
            num_attention_heads=heads, num_key_value_heads=model_config.get("n_kv_heads") or heads,
            intermediate_size=model_config.get("intermediate_size") or _mindformers_intermediate(model_config),
            vocab_size=model_config.get("vocab_size", 32000), rms_norm_eps=model_config.get("rms_norm_eps", 1e-5),
            rope_theta=float(model_config.get("theta", 10000.0)),
            max_position_embeddings=model_config.get("max_position_embedding") or model_config.get("seq_length",
                                                                                                     2048),
            bos_token_id=model_config.get("bos_token_id", 1), eos_token_id=model_config.get("eos_token_id", 2),
            pad_token_id=model_config.get("pad_token_id", 0),
            tie_word_embeddings=bool(model_config.get("tie_word_embeddings", False)),
            attention_bias=bool(model_config.get("qkv_has_bias", False)))
    except (TypeError, ValueError) as err:
        raise ModelLoadError(f"{path}: model.model_config is not a usable Llama configuration ({err})") from None


def _mindformers_intermediate(model_config: dict) -> int:
    """The FFN width a MindFormers Llama computes when its YAML has no intermediate_size (LlamaFeedForward)."""
    hidden = model_config.get("hidden_size", 4096)
    width = 4 * hidden
    if model_config.get("ffn_dim_multiplier") is not None:
        width = int((model_config["ffn_dim_multiplier"] + 0.01) * width)
    width = int(2 * width / 3)
    multiple = model_config.get("multiple_of", 256)
    return multiple * ((width + multiple - 1) // multiple)


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """Hugging Face name -> shape of every weight a Llama of `config` saves (built on the meta device)."""
    shapes = {name: tuple(t.shape) for name, t in meta_model(config).state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def shape_differences(expected: dict, found: dict) -> list[str]:
    """What keeps `found` (name -> shape) from being `expected`: missing, unexpected and misshaped weights."""
    problems = [f"no {name}" for name in expected if name not in found]
    problems += [f"{name} is not a weight of this configuration" for name in found if name not in expected]
    problems += [f"{name} has shape {list(found[name])}, the configuration gives {list(expected[name])}"
                 for name in expected if name in found and tuple(found[name]) != expected[name]]
    return problems


def infer_config(shapes: dict[str, tuple[int, ...]], ckpt: Path):
    """The configuration of weights imported without --config: Llama-3-8B's, recognized by its shapes."""
    from transformers import LlamaConfig  # about a second to import: paid by import and export, not by every command

    llama3 = LlamaConfig(**LLAMA3_8B)
    if not shape_differences(expected_shapes(llama3), shapes):
        print("keeptune: the weights have Llama-3-8B's shapes: using its published configuration")
        return llama3
    embed = shapes.get("model.embed_tokens.weight")
    raise ModelLoadError(f"{ckpt}: the weights do not tell the number of attention heads (hidden size "
                         f"{embed[1] if embed else '?'}): pass --config with the model's config.json, the "
                         "MindFormers run YAML it was trained with, or llama3-8b")
