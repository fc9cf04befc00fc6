"""`keeptune export`'s conversions: a PEFT adapter or a Hugging Face Llama as MindFormers tensors.

An adapter becomes mindpet LoRA parameters (`AdapterExport.tensors`), with PEFT's scaling
folded into B wherever it is not mindpet's lora_alpha / rank; a model, merged with an adapter
or not, becomes MindFormers Llama weights (`mindformers_model_tensors`). Everything is checked
against the base model's configuration on the meta device before a tensor is yielded, and
tensors are yielded one at a time for `write_checkpoint`.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from keeptune.core.errors import ModelLoadError
from keeptune.interop.config import expected_shapes, shape_differences
from keeptune.interop.hf_dir import ADAPTER_WEIGHTS, cast, model_weights
from keeptune.interop.names import EMBEDDING, MINDPET, OUTPUT_HEAD, mindformers_weight_name, peft_weight_key
from keeptune.model.adapter import adapter_info
from keeptune.model.load import check_model_dir, check_safetensors, resolve_model_dir
from keeptune.model.lora import mindformers_lora_name
from keeptune.model.params import meta_model, source_config


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
        return peft_weight_key(self.module, "A")

    @property
    def key_b(self) -> str:
        return peft_weight_key(self.module, "B")


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
            yield pair.mindpet_a, cast(a, dtype)
            yield pair.mindpet_b, cast(b, dtype)

    def deltas(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """Hugging Face weight name -> (A, B, PEFT's scaling), for merging."""
        return {f"{p.module}.weight": (self.weights[p.key_a], self.weights[p.key_b], p.scaling) for p in self.pairs}


# --- an adapter ------------------------------------------------------------------------------

def read_adapter(adapter: Path, model: str | None = None) -> tuple[AdapterExport, str | None]:
    """An adapter directory checked against its base model's configuration (meta device); returns it and the base."""
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


def read_lora_config(adapter: Path):
    """The adapter's LoraConfig; ModelLoadError when it is no plain LoRA that mindpet can hold."""
    from peft import LoraConfig, PeftType  # about two seconds to import: paid by the commands that need PEFT only

    try:
        config = LoraConfig.from_pretrained(str(adapter))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"{adapter / 'adapter_config.json'}: not a LoRA adapter configuration ({err})") from None
    if config.peft_type != PeftType.LORA:
        raise ModelLoadError(f"{adapter}: a {config.peft_type} adapter; mindpet holds LoRA only")
    unsupported = _beyond_plain_lora(config)
    if unsupported:
        raise ModelLoadError(f"{adapter}: {', '.join(unsupported)}: mindpet's LoRADense holds plain LoRA only "
                             "(x A^T B^T scaled by alpha / rank)")
    return config


def _beyond_plain_lora(config) -> list[str]:
    """The settings of a LoraConfig that mindpet's LoRADense cannot reproduce (getattr: newer PEFT's only)."""
    flags = (("use_dora", config.use_dora), ("fan_in_fan_out", config.fan_in_fan_out),
             ("lora_bias", getattr(config, "lora_bias", False)),
             (f"bias={config.bias}", config.bias != "none"),
             ("modules_to_save", bool(config.modules_to_save)),
             ("trainable_token_indices", bool(getattr(config, "trainable_token_indices", None))),
             ("use_qalora", getattr(config, "use_qalora", False)),
             ("alora_invocation_tokens", bool(getattr(config, "alora_invocation_tokens", None))))
    return [flag for flag, on in flags if on]


def meta_peft_model(config, lora_config):
    """PEFT's model of `lora_config` on a meta-device Llama of `config` (no weights)."""
    from peft import get_peft_model  # about two seconds to import: paid by the commands that need PEFT only

    with warnings.catch_warnings():  # as in apply_lora: PEFT calls a transformers 5 deprecated alias
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(meta_model(config), lora_config)


def adapter_pairs(peft_model) -> list[LoraPair]:
    """Every LoRA module of a PEFT model (meta device is enough) with its mindpet names and scaling.

    The names come from `mindformers_lora_name`, the function `keeptune params --names
    mindformers` prints with. Anything else trainable, or a LoRA variant, cannot be exported."""
    from peft.tuners.lora import LoraLayer  # about two seconds to import: paid by the commands that need PEFT only

    pairs, covered = [], set()
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
            continue
        pairs.append(_lora_pair(name, module))
        covered.update(f"{name}.lora_{w}.default.weight" for w in "AB")
    extra = [n for n, p in peft_model.named_parameters() if p.requires_grad and n not in covered]
    if extra:
        raise ModelLoadError(f"the adapter trains {extra[0]}{' and more' if len(extra) > 1 else ''}: mindpet's LoRA "
                             "has no place for it")
    return pairs


def _lora_pair(name: str, module) -> LoraPair:
    """The LoraPair of one PEFT LoraLayer named `name`; ModelLoadError when mindpet cannot hold it."""
    if not isinstance(module.get_base_layer(), torch.nn.Linear) or \
            getattr(module, "lora_variant", {}).get("default") is not None:
        raise ModelLoadError(f"LoRA on {name} is not plain LoRA on a Linear layer: mindpet cannot hold it")
    mindpet_a, mindpet_b = (mindformers_lora_name(f"{name}.lora_{w}.default.weight") for w in "AB")
    if not (MINDPET.fullmatch(mindpet_a) and MINDPET.fullmatch(mindpet_b)):
        raise ModelLoadError(f"LoRA on {name.removeprefix('base_model.model.')}: MindFormers has no name for it "
                             "(mindpet LoRA goes on a Llama's attention and feed-forward projections)")
    return LoraPair(name.removeprefix("base_model.model."), mindpet_a, mindpet_b,
                    tuple(module.lora_A["default"].weight.shape), tuple(module.lora_B["default"].weight.shape),
                    float(module.scaling["default"]))


# --- a model ---------------------------------------------------------------------------------

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
        if name == OUTPUT_HEAD and config.tie_word_embeddings:
            continue  # the embedding, written under this name below
        mf = mindformers_weight_name(name)
        if mf is None or name not in expected:
            raise ModelLoadError(f"{folder}: weight {name!r} has no MindFormers Llama name")
        found[name] = tuple(tensor.shape)
        if name in deltas:
            tensor = _merged(tensor, *deltas.pop(name))
        tensor = cast(tensor, dtype)
        yield mf, tensor
        if name == EMBEDDING and config.tie_word_embeddings and OUTPUT_HEAD not in expected:
            yield OUTPUT_HEAD, tensor
    problems = shape_differences(expected, found)
    if problems or deltas:
        raise ModelLoadError(f"{folder}: {'; '.join(problems[:3] + [f'no {n} for the adapter' for n in deltas][:3])}")


def _merged(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """W + scaling * B @ A, computed in float32 and returned in W's dtype, as PEFT's merge does."""
    return (weight.float() + (b.float() @ a.float()) * scaling).to(weight.dtype)
