"""Llama weights between Hugging Face and MindFormers, LoRA between PEFT and mindpet.

Names follow MindFormers' own Llama converters (mindformers 2.1.0,
models/llama/convert_weight.py `name_replace` for Hugging Face -> MindFormers and
convert_reversed.py for the way back): `model.embed_tokens.weight` <->
`model.tok_embeddings.embedding_weight`, `self_attn.q_proj` <-> `attention.wq` (k, v, o
alike), `mlp.gate_proj/down_proj/up_proj` <-> `feed_forward.w1/w2/w3`,
`input_layernorm` <-> `attention_norm`, `post_attention_layernorm` <-> `ffn_norm`,
`model.norm` <-> `model.norm_out`, `lm_head.weight` unchanged. The projection names are
keeptune's one mapping in `keeptune.model.lora` (the one `keeptune params --names
mindformers` prints); this module adds the embedding and norms around it.

Layouts and dtypes: both converters copy every tensor as it is (a MindFormers `Linear`
stores its weight out x in, as torch does) and keep its dtype unless one is asked for.
Neither permutes wq/wk: MindFormers' rotary embedding rotates halves
(`FreqsMgr` builds concat(freqs, freqs), `rotate_half` swaps the halves), as Hugging
Face's does. Only the converter from Meta's original `.pth` files permutes wq/wk (Meta
rotates interleaved pairs), and `convert_to_new_ckpt` permutes checkpoints of MindFormers
before it switched to halves: such a file must go through that script first; its weights
cannot tell.

mindpet's LoRA (mindpet/delta/lora.py, `LoRADense`): `mindpet_delta_lora_a` is rank x in,
`mindpet_delta_lora_b` out x rank, and the output is x W^T + (x A^T B^T) * alpha / rank,
PEFT's plain LoRA. The file holds no alpha: MindFormers' `pet_config` (lora_rank,
lora_alpha) does, so an export prints the pet_config to use, and a PEFT scaling that is not
alpha / rank (rsLoRA, alpha_pattern) is folded into B.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from keeptune.core.errors import ModelLoadError
from keeptune.interop.mindspore_ckpt import CheckpointError, CheckpointFile
from keeptune.model.load import (
    check_config_json,
    check_model_dir,
    check_safetensors,
    resolve_dtype,
    resolve_model_dir,
)
from keeptune.model.lora import MINDFORMERS_BLOCK, MINDFORMERS_TO_HF, mindformers_lora_name, mindformers_name
from keeptune.model.params import ARCHITECTURES, meta_model, source_config

# Names outside the decoder layers, and the layers' norms (convert_weight.py, name_replace).
OUTER_NAMES = {"model.embed_tokens.weight": "model.tok_embeddings.embedding_weight",
               "model.norm.weight": "model.norm_out.weight", "lm_head.weight": "lm_head.weight"}
NORM_NAMES = {"input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm"}
HF_BLOCKS = {"attention": "self_attn", "feed_forward": "mlp"}
MINDPET = re.compile(r"(model\.layers\.\d+\.\w+\.\w+)\.(?:mindpet|tk)_delta_lora_([ab])")  # tk_: older mindpet
# Llama-3-8B as Meta publishes it: params' shapes plus the norm epsilon (1e-5), which counting does not need.
LLAMA3_8B = {**ARCHITECTURES["llama3-8b"], "rms_norm_eps": 1e-5}
SHARD_BYTES = 2 * 1024 ** 3
ADAPTER_WEIGHTS = "adapter_model.safetensors"


# --- names ------------------------------------------------------------------------------

def mindformers_weight_name(hf_name: str) -> str | None:
    """The MindFormers name of a Hugging Face Llama weight; None for a name that is not one."""
    if hf_name in OUTER_NAMES:
        return OUTER_NAMES[hf_name]
    match = re.fullmatch(r"(model\.layers\.\d+)\.(\w+)\.weight", hf_name)
    if match and match.group(2) in NORM_NAMES:
        return f"{match.group(1)}.{NORM_NAMES[match.group(2)]}.weight"
    match = re.fullmatch(r"(model\.layers\.\d+\.(?:self_attn|mlp)\.\w+)\.(weight|bias)", hf_name)
    if match and mindformers_name(match.group(1)) != match.group(1):
        return f"{mindformers_name(match.group(1))}.{match.group(2)}"
    return None


def hf_weight_name(mf_name: str) -> str | None:
    """The Hugging Face name of a MindFormers Llama weight (the inverse of `mindformers_weight_name`); else None."""
    inverse = {mf: hf for hf, mf in OUTER_NAMES.items()}
    candidate = inverse.get(mf_name)
    if candidate is None:
        match = re.fullmatch(r"(model\.layers\.\d+)\.(\w+)\.weight", mf_name)
        norms = {mf: hf for hf, mf in NORM_NAMES.items()}
        if match and match.group(2) in norms:
            candidate = f"{match.group(1)}.{norms[match.group(2)]}.weight"
    if candidate is None:
        match = re.fullmatch(r"(model\.layers\.\d+)\.(attention|feed_forward)\.(\w+)\.(weight|bias)", mf_name)
        if match and match.group(3) in MINDFORMERS_TO_HF:
            leaf = MINDFORMERS_TO_HF[match.group(3)]
            candidate = f"{match.group(1)}.{HF_BLOCKS[MINDFORMERS_BLOCK[leaf]]}.{leaf}.{match.group(4)}"
    return candidate if candidate and mindformers_weight_name(candidate) == mf_name else None


def peft_module_of_mindpet(mf_name: str) -> tuple[str, str] | None:
    """`model.layers.0.attention.wq.mindpet_delta_lora_a` -> (`model.layers.0.self_attn.q_proj`, "A"); else None."""
    match = MINDPET.fullmatch(mf_name)
    hf = hf_weight_name(f"{match.group(1)}.weight") if match else None
    if hf is None:
        return None
    module, which = hf.removesuffix(".weight"), match.group(2).upper()
    canonical = mf_name.replace(".tk_delta_", ".mindpet_delta_")
    return (module, which) if mindformers_lora_name(f"{module}.lora_{which}.default.weight") == canonical else None


# --- configurations -----------------------------------------------------------------------

def _mindformers_intermediate(model_config: dict) -> int:
    """The FFN width a MindFormers Llama computes when its YAML has no intermediate_size (LlamaFeedForward)."""
    hidden = model_config.get("hidden_size", 4096)
    width = 4 * hidden
    if model_config.get("ffn_dim_multiplier") is not None:
        width = int((model_config["ffn_dim_multiplier"] + 0.01) * width)
    width = int(2 * width / 3)
    multiple = model_config.get("multiple_of", 256)
    return multiple * ((width + multiple - 1) // multiple)


def yaml_config(path: Path):
    """(LlamaConfig, pet_config dict) of a MindFormers run YAML (model.model_config, MindFormers' defaults)."""
    import yaml
    from transformers import LlamaConfig

    from keeptune.core.io import read_text

    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as err:
        raise ModelLoadError(f"{path}: not valid YAML ({err})") from None
    model_config = ((data or {}).get("model") or {}).get("model_config") if isinstance(data, dict) else None
    if not isinstance(model_config, dict):
        raise ModelLoadError(f"{path}: not a MindFormers run configuration: it has no model.model_config mapping")
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
    heads = model_config.get("num_heads", 32)
    try:
        config = LlamaConfig(
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
    pet = model_config.get("pet_config") or {}
    return config, pet if isinstance(pet, dict) else {}


def read_config(source: str | Path | None):
    """(LlamaConfig or None, pet_config) from --config: a config.json or its directory, a MindFormers YAML,
    or `llama3-8b`; (None, {}) for None."""
    from transformers import LlamaConfig

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
    from transformers import LlamaConfig

    llama3 = LlamaConfig(**LLAMA3_8B)
    if not shape_differences(expected_shapes(llama3), shapes):
        print("keeptune: the weights have Llama-3-8B's shapes: using its published configuration")
        return llama3
    embed = shapes.get("model.embed_tokens.weight")
    raise ModelLoadError(f"{ckpt}: the weights do not tell the number of attention heads (hidden size "
                         f"{embed[1] if embed else '?'}): pass --config with the model's config.json, the "
                         "MindFormers run YAML it was trained with, or llama3-8b")


# --- Hugging Face model directories written tensor by tensor ----------------------------------

class ShardWriter:
    """Writes a Hugging Face safetensors model in shards of about SHARD_BYTES, holding one shard in memory."""

    def __init__(self, folder: Path):
        self.folder, self.pending, self.pending_bytes = folder, {}, 0
        self.files: list[tuple[str, list[str]]] = []
        self.total = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += tensor.numel() * tensor.element_size()
        if self.pending_bytes >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file

        if not self.pending:
            return
        name = f".shard-{len(self.files) + 1:05d}.tmp"
        save_file(self.pending, self.folder / name, metadata={"format": "pt"})
        self.files.append((name, list(self.pending)))
        self.total += self.pending_bytes
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        """Name the shards as save_pretrained does (model.safetensors, or model-0000i-of-0000n + index)."""
        self.flush()
        count = len(self.files)
        weight_map = {}
        for i, (tmp, names) in enumerate(self.files, start=1):
            final = "model.safetensors" if count == 1 else f"model-{i:05d}-of-{count:05d}.safetensors"
            os.replace(self.folder / tmp, self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        if count > 1:
            index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor if dtype is None or not tensor.is_floating_point() else tensor.to(dtype)


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().view(-1).view(torch.uint8).numpy()).hexdigest()


# --- import -------------------------------------------------------------------------------

def checkpoint_kind(ckpt: CheckpointFile) -> str:
    """"model" when the file holds Llama weights, else "adapter" when it holds mindpet LoRA parameters."""
    names = ckpt.names()
    if any(hf_weight_name(n) for n in names):
        return "model"
    if any(MINDPET.fullmatch(n) for n in names):
        return "adapter"
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise CheckpointError(f"{ckpt.path}: neither MindFormers Llama weights (model.tok_embeddings.embedding_weight, "
                          f"model.layers.N.attention.wq.weight, ...) nor mindpet LoRA parameters "
                          f"(...wq.mindpet_delta_lora_a): it holds {shown or 'nothing'}")


def check_model_names(ckpt: CheckpointFile) -> list[str]:
    """The names of a model checkpoint that are not weights (optimizer state, counters), after refusing
    names that look like Llama weights keeptune cannot place."""
    skipped = []
    for name in ckpt.names():
        if hf_weight_name(name) or MINDPET.fullmatch(name):
            continue
        if name.startswith(("model.", "lm_head.")):
            hint = (" (a checkpoint saved with qkv_concat: True; keeptune reads separate wq/wk/wv and w1/w3 as "
                    "MindFormers' convert_weight.py writes them)" if re.search(r"\.w_qkv\.|\.w_gate_hidden\.", name)
                    else "")
            raise CheckpointError(f"{ckpt.path}: parameter {name!r} is not a weight of a MindFormers Llama{hint}")
        skipped.append(name)
    return skipped


def import_model(ckpt: CheckpointFile, folder: Path, config_source=None, dtype: str | None = None):
    """Write the Llama weights of `ckpt` into `folder` as a Hugging Face model (safetensors, config.json).

    Tensor by tensor: names mapped, layouts kept, dtypes kept unless `dtype` is given.
    With a configuration every tensor is checked against it as it arrives; without
    one, the shapes must be Llama-3-8B's. Returns the LlamaConfig."""
    if not any(hf_weight_name(n) for n in ckpt.names()):
        raise CheckpointError(f"{ckpt.path}: holds no MindFormers Llama weights (model.tok_embeddings.embedding_weight, "
                              "model.layers.N.attention.wq.weight, ...); mindpet LoRA parameters import with "
                              "--what adapter")
    config, _ = read_config(config_source)
    skipped = check_model_names(ckpt)
    lora = [n for n in ckpt.names() if MINDPET.fullmatch(n)]
    expected = expected_shapes(config) if config is not None else None
    if expected is not None:  # names first: a file of another model fails before its data is read
        names = {hf_weight_name(n) for n in ckpt.names()} - {None}
        missing = [n for n in expected if n not in names]
        extra = sorted(n for n in names if n not in expected and not (n == "lm_head.weight"
                                                                          and config.tie_word_embeddings))
        if missing or extra:
            raise CheckpointError(f"{ckpt.path}: does not fit the configuration: "
                                  + "; ".join([f"no {n}" for n in missing[:5]] + [f"unexpected {n}" for n in extra[:5]]))
    cast = resolve_dtype(dtype, torch.device("cpu")) if dtype else None
    writer, shapes, digests, dtypes = ShardWriter(folder), {}, {}, []
    tied = config is not None and config.tie_word_embeddings
    for name, tensor in ckpt.tensors(wanted=hf_weight_name):
        hf = hf_weight_name(name)
        if expected is not None and hf in expected and tuple(tensor.shape) != expected[hf]:
            raise CheckpointError(f"{ckpt.path}: {name} has shape {list(tensor.shape)}, the configuration gives "
                                  f"{list(expected[hf])}")
        shapes[hf] = tuple(tensor.shape)
        tensor = _cast(tensor, cast)
        if tied and hf in ("model.embed_tokens.weight", "lm_head.weight"):
            digests[hf] = _digest(tensor)
            if hf == "lm_head.weight":
                continue  # the embedding's copy, compared below
        dtypes.append(tensor.dtype)
        writer.add(hf, tensor)
    if config is None:
        config = infer_config(shapes, ckpt.path)
    elif "lm_head.weight" in digests:
        if digests["lm_head.weight"] != digests.get("model.embed_tokens.weight"):
            raise CheckpointError(f"{ckpt.path}: the configuration ties the output head to the embedding, but "
                                  "lm_head.weight differs from model.tok_embeddings.embedding_weight")
        shapes.pop("lm_head.weight")
    problems = shape_differences(expected_shapes(config), shapes)
    if problems:
        raise CheckpointError(f"{ckpt.path}: does not fit the configuration: {'; '.join(problems[:5])}")
    writer.close()
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = str(max(set(dtypes), key=dtypes.count)).removeprefix("torch.")
    config.save_pretrained(folder)
    if skipped:
        print(f"keeptune: skipped {len(skipped)} parameters that are no model weights "
              f"({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''})")
    if lora:
        print(f"keeptune: {ckpt.path} also holds {len(lora)} mindpet LoRA parameters: import them with "
              "`keeptune import CKPT --what adapter --out DIR`")
    return config


@dataclass(frozen=True)
class LoraPair:
    """One LoRA module of an adapter: PEFT's and mindpet's names, shapes and PEFT's scaling."""

    module: str
    """The Hugging Face module name, e.g. model.layers.0.self_attn.q_proj."""
    mindpet_a: str
    mindpet_b: str
    shape_a: tuple[int, int]
    shape_b: tuple[int, int]
    scaling: float

    @property
    def key_a(self) -> str:
        """The tensor's name in PEFT's adapter_model.safetensors."""
        return f"base_model.model.{self.module}.lora_A.weight"

    @property
    def key_b(self) -> str:
        return f"base_model.model.{self.module}.lora_B.weight"


def import_adapter(ckpt: CheckpointFile, folder: Path, config_source=None, model: str | None = None,
                   alpha: float | None = None, dropout: float | None = None, dtype: str | None = None) -> dict:
    """Write the mindpet LoRA parameters of `ckpt` into `folder` as a PEFT adapter; returns its keeptune.json.

    The checkpoint holds A and B but not lora_alpha: `alpha`, or the pet_config of a
    MindFormers YAML given as `config_source`, says it. `model`: the base model the adapter
    belongs to, checked against the adapter's shapes and recorded for eval and merge."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    modules = {}
    for name in ckpt.names():
        if MINDPET.fullmatch(name):
            placed = peft_module_of_mindpet(name)
            if placed is None:
                raise CheckpointError(f"{ckpt.path}: parameter {name!r} is LoRA on a module keeptune cannot "
                                      "place in a Hugging Face Llama")
            modules.setdefault(placed[0], {})[placed[1]] = name
    unpaired = [f"{m} has no lora_{'b' if 'A' in pair else 'a'}" for m, pair in modules.items() if len(pair) != 2]
    if unpaired or not modules:
        raise CheckpointError(f"{ckpt.path}: " + ("; ".join(unpaired[:5]) if unpaired else
                                                  "no mindpet LoRA parameters (...wq.mindpet_delta_lora_a/_b)"))
    _, pet = read_config(config_source)
    alpha = alpha if alpha is not None else pet.get("lora_alpha")
    if alpha is None:
        raise ModelLoadError(f"{ckpt.path}: a mindpet checkpoint does not record lora_alpha: pass --alpha (the seed's "
                             "baseline: 16) or --config with the MindFormers YAML whose pet_config trained it")
    dropout = dropout if dropout is not None else float(pet.get("lora_dropout", 0.0))
    wanted = {name for pair in modules.values() for name in pair.values()}
    cast = resolve_dtype(dtype, torch.device("cpu")) if dtype else None
    tensors = {name: _cast(t, cast) for name, t in ckpt.tensors(wanted=wanted.__contains__)}
    ranks = set()
    for module, pair in modules.items():
        a, b = tensors[pair["A"]], tensors[pair["B"]]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{ckpt.path}: {pair['A']} {list(a.shape)} and {pair['B']} {list(b.shape)} are not "
                                  "a LoRA pair (A: rank x in, B: out x rank)")
        ranks.add(a.shape[0])
    if len(ranks) != 1:
        raise CheckpointError(f"{ckpt.path}: its LoRA pairs have ranks {sorted(ranks)}; one lora_rank was expected")
    order = sorted(modules, key=lambda m: (int(m.split(".")[2]), m))
    if model is not None:
        check_adapter_fits(order, {m: (tuple(tensors[modules[m]["A"]].shape), tuple(tensors[modules[m]["B"]].shape))
                                   for m in order}, model)
    rank = ranks.pop()
    LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=order, bias="none",
               task_type="CAUSAL_LM", base_model_name_or_path=str(model) if model else None).save_pretrained(folder)
    save_file({f"base_model.model.{m}.lora_{w}.weight": tensors[modules[m][w]].contiguous()
               for m in order for w in "AB"}, folder / ADAPTER_WEIGHTS)
    targets = sorted({m.rsplit(".", 1)[1] for m in order}, key=list(MINDFORMERS_TO_HF.values()).index)
    return {"base_model": str(model) if model else None, "imported_from": str(ckpt.path),
            "lora": {"targets": targets, "rank": rank, "alpha": alpha, "dropout": dropout}}


def check_adapter_fits(modules: list[str], shapes: dict, model: str) -> None:
    """ModelLoadError when the base model has no such module or another shape (config.json only)."""
    base = dict(meta_model(source_config(model)).named_modules())
    for module in modules:
        layer = base.get(module)
        if not isinstance(layer, torch.nn.Linear):
            raise ModelLoadError(f"the adapter has LoRA on {module}, which model {model} does not have")
        (rank, width), (height, _) = shapes[module]
        if (width, height) != (layer.in_features, layer.out_features):
            raise ModelLoadError(f"the adapter's {module} maps {width} -> {height}, model {model}'s "
                                 f"{layer.in_features} -> {layer.out_features}")


# --- export -------------------------------------------------------------------------------

def read_lora_config(adapter: Path):
    """The adapter's LoraConfig; ModelLoadError when it is no plain LoRA that mindpet can hold."""
    from peft import LoraConfig, PeftType

    try:
        config = LoraConfig.from_pretrained(str(adapter))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"{adapter / 'adapter_config.json'}: not a LoRA adapter configuration ({err})") from None
    if config.peft_type != PeftType.LORA:
        raise ModelLoadError(f"{adapter}: a {config.peft_type} adapter; mindpet holds LoRA only")
    unsupported = [flag for flag, on in (("use_dora", config.use_dora), ("fan_in_fan_out", config.fan_in_fan_out),
                                         ("lora_bias", getattr(config, "lora_bias", False)),
                                         (f"bias={config.bias}", config.bias != "none"),
                                         ("modules_to_save", bool(config.modules_to_save)),
                                         ("trainable_token_indices", bool(getattr(config, "trainable_token_indices",
                                                                                  None))),
                                         ("use_qalora", getattr(config, "use_qalora", False)),
                                         ("alora_invocation_tokens", bool(getattr(config, "alora_invocation_tokens",
                                                                                  None))))
                   if on]
    if unsupported:
        raise ModelLoadError(f"{adapter}: {', '.join(unsupported)}: mindpet's LoRADense holds plain LoRA only "
                             "(x A^T B^T scaled by alpha / rank)")
    return config


def adapter_pairs(peft_model) -> list[LoraPair]:
    """Every LoRA module of a PEFT model (meta device is enough) with its mindpet names and scaling.

    The names come from `mindformers_lora_name`, the function `keeptune params --names
    mindformers` prints with. Anything else trainable, or a LoRA variant, cannot be exported."""
    from peft.tuners.lora import LoraLayer

    pairs, covered = [], set()
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
            continue
        if not isinstance(module.get_base_layer(), torch.nn.Linear) or \
                getattr(module, "lora_variant", {}).get("default") is not None:
            raise ModelLoadError(f"LoRA on {name} is not plain LoRA on a Linear layer: mindpet cannot hold it")
        a_name, b_name = (f"{name}.lora_{w}.default.weight" for w in "AB")
        mindpet_a, mindpet_b = mindformers_lora_name(a_name), mindformers_lora_name(b_name)
        if not (MINDPET.fullmatch(mindpet_a) and MINDPET.fullmatch(mindpet_b)):
            raise ModelLoadError(f"LoRA on {name.removeprefix('base_model.model.')}: MindFormers has no name for it "
                                 "(mindpet LoRA goes on a Llama's attention and feed-forward projections)")
        covered.update((a_name, b_name))
        pairs.append(LoraPair(name.removeprefix("base_model.model."), mindpet_a, mindpet_b,
                              tuple(module.lora_A["default"].weight.shape), tuple(module.lora_B["default"].weight.shape),
                              float(module.scaling["default"])))
    extra = [n for n, p in peft_model.named_parameters() if p.requires_grad and n not in covered]
    if extra:
        raise ModelLoadError(f"the adapter trains {extra[0]}{' and more' if len(extra) > 1 else ''}: mindpet's LoRA "
                             "has no place for it")
    return pairs


def meta_peft_model(config, lora_config):
    """PEFT's model of `lora_config` on a meta-device Llama of `config` (no weights)."""
    from peft import get_peft_model

    with warnings.catch_warnings():  # as in apply_lora: PEFT calls a transformers 5 deprecated alias
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(meta_model(config), lora_config)


@dataclass
class AdapterExport:
    """An adapter read for export: its pairs and weights, and the pet_config MindFormers needs."""

    pairs: list[LoraPair]
    weights: dict[str, torch.Tensor]
    rank: int
    alpha: float
    dropout: float

    def pet_config(self) -> dict:
        leaves = sorted({p.mindpet_a.split(".")[-2] for p in self.pairs})
        return {"pet_type": "lora", "lora_rank": self.rank, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                "target_modules": "|".join(f".*{leaf}" for leaf in leaves)}

    def tensors(self, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """(mindpet name, tensor) of every A and B; B carries PEFT's scaling over mindpet's alpha / rank."""
        mindpet_scaling = self.alpha / self.rank
        for pair in self.pairs:
            a, b = self.weights[pair.key_a], self.weights[pair.key_b]
            if pair.scaling != mindpet_scaling:
                b = (b.float() * (pair.scaling / mindpet_scaling)).to(b.dtype)
            yield pair.mindpet_a, _cast(a, dtype)
            yield pair.mindpet_b, _cast(b, dtype)

    def deltas(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """Hugging Face weight name -> (A, B, PEFT's scaling), for merging."""
        return {f"{p.module}.weight": (self.weights[p.key_a], self.weights[p.key_b], p.scaling) for p in self.pairs}


def read_adapter(adapter: Path, model: str | None = None) -> tuple[AdapterExport, str | None]:
    """An adapter directory checked against its base model's configuration (meta device); returns it and the base."""
    from safetensors.torch import load_file

    from keeptune.model.adapter import adapter_info

    adapter = Path(adapter)
    info = adapter_info(adapter)
    base = model if model is not None else info.get("base_model")
    lora_config = read_lora_config(adapter)
    pairs = adapter_pairs(meta_peft_model(source_config(base), lora_config))
    weights_file = adapter / ADAPTER_WEIGHTS
    if not weights_file.is_file():
        raise ModelLoadError(f"{adapter}: no {ADAPTER_WEIGHTS}")
    check_safetensors(weights_file)
    weights = load_file(weights_file)
    expected = {p.key_a: p.shape_a for p in pairs} | {p.key_b: p.shape_b for p in pairs}
    found = {k: tuple(v.shape) for k, v in weights.items()}
    problems = shape_differences(expected, found)
    if problems:
        raise ModelLoadError(f"{weights_file}: does not fit {lora_config.r}-rank LoRA on "
                             f"{base or 'the embedded default model'}: {'; '.join(problems[:3])}")
    ranks = {p.shape_a[0] for p in pairs}
    if ranks != {lora_config.r}:
        raise ModelLoadError(f"{adapter}: LoRA ranks {sorted(ranks)} (rank_pattern): MindFormers' pet_config has one "
                             "lora_rank")
    return AdapterExport(pairs, weights, lora_config.r, lora_config.lora_alpha, lora_config.lora_dropout), base


def model_weights(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a Hugging Face model directory's safetensors, one tensor in memory at a time."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def mindformers_model_tensors(source, adapter: AdapterExport | None = None, dtype: torch.dtype | None = None
                              ) -> Iterator[tuple[str, torch.Tensor]]:
    """The MindFormers checkpoint of a Hugging Face Llama (merged with `adapter` when given), tensor by tensor.

    A merged weight is W + scaling * B @ A in float32, then W's dtype (or `dtype`), as
    PEFT's merge computes it. A tied output head is written as lm_head.weight too, as
    MindFormers' converter (which saves the state dict) does."""
    folder = resolve_model_dir(source)
    check_model_dir(folder)
    config = source_config(folder)
    if config.model_type != "llama":
        raise ModelLoadError(f"{folder}: a {config.model_type} model; MindFormers' Llama checkpoint needs a llama")
    expected = expected_shapes(config)
    deltas = adapter.deltas() if adapter is not None else {}
    found = {}
    for name, tensor in model_weights(folder):
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # the embedding, written under this name below
        mf = mindformers_weight_name(name)
        if mf is None or name not in expected:
            raise ModelLoadError(f"{folder}: weight {name!r} has no MindFormers Llama name")
        found[name] = tuple(tensor.shape)
        if name in deltas:
            a, b, scaling = deltas.pop(name)
            tensor = (tensor.float() + (b.float() @ a.float()) * scaling).to(tensor.dtype)
        tensor = _cast(tensor, dtype)
        yield mf, tensor
        if name == "model.embed_tokens.weight" and config.tie_word_embeddings and "lm_head.weight" not in expected:
            yield "lm_head.weight", tensor
    problems = shape_differences(expected, found)
    if problems or deltas:
        raise ModelLoadError(f"{folder}: {'; '.join(problems[:3] + [f'no {n} for the adapter' for n in deltas][:3])}")
