"""`keeptune import`'s conversions: a MindFormers checkpoint into a Hugging Face model or a PEFT adapter.

Both read the checkpoint tensor by tensor (`CheckpointFile.tensors`) and check names before
any tensor data: a file of another model, or LoRA on a module keeptune cannot place, fails
before anything is written. A model keeps the file's layouts and dtypes (see
`keeptune.interop.names`); an adapter needs lora_alpha from the user, since mindpet files do
not hold it.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from keeptune.core.errors import ModelLoadError
from keeptune.core.resume import sha256_bytes
from keeptune.interop.config import expected_shapes, infer_config, read_config, shape_differences
from keeptune.interop.hf_dir import ADAPTER_WEIGHTS, ShardWriter, cast
from keeptune.interop.mindspore_ckpt import CheckpointError, CheckpointFile
from keeptune.interop.names import (
    EMBEDDING,
    MINDPET,
    OUTPUT_HEAD,
    hf_weight_name,
    peft_module_of_mindpet,
    peft_weight_key,
)
from keeptune.model.load import resolve_dtype
from keeptune.model.lora import MINDFORMERS_TO_HF
from keeptune.model.params import meta_model, source_config


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


# --- a model ---------------------------------------------------------------------------------

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
    expected = expected_shapes(config) if config is not None else None
    if expected is not None:  # names first: a file of another model fails before its data is read
        _check_names_fit(ckpt, expected, config.tie_word_embeddings)
    cast_to = resolve_dtype(dtype, torch.device("cpu")) if dtype else None
    writer = ShardWriter(folder)
    tied = config is not None and config.tie_word_embeddings
    shapes, dtypes = _write_weights(ckpt, writer, expected, tied, cast_to)
    if config is None:
        config = infer_config(shapes, ckpt.path)
    problems = shape_differences(expected_shapes(config), shapes)
    if problems:
        raise CheckpointError(f"{ckpt.path}: does not fit the configuration: {'; '.join(problems[:5])}")
    writer.close()
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = str(max(set(dtypes), key=dtypes.count)).removeprefix("torch.")
    config.save_pretrained(folder)
    _report_left_out(ckpt, skipped)
    return config


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


def _check_names_fit(ckpt: CheckpointFile, expected: dict, tied: bool) -> None:
    """CheckpointError when the file's weight names are not those of the configuration (no data read)."""
    names = {hf_weight_name(n) for n in ckpt.names()} - {None}
    missing = [n for n in expected if n not in names]
    extra = sorted(n for n in names if n not in expected and not (n == OUTPUT_HEAD and tied))
    if missing or extra:
        raise CheckpointError(f"{ckpt.path}: does not fit the configuration: "
                              + "; ".join([f"no {n}" for n in missing[:5]] + [f"unexpected {n}" for n in extra[:5]]))


def _write_weights(ckpt: CheckpointFile, writer: ShardWriter, expected: dict | None, tied: bool,
                   dtype: torch.dtype | None) -> tuple[dict[str, tuple[int, ...]], list[torch.dtype]]:
    """Add every weight of `ckpt` to `writer` under its Hugging Face name; returns their shapes and dtypes.

    With a configuration (`expected`), each shape is checked as the tensor arrives. With a tied
    output head, the file's lm_head.weight is not written: it must equal the embedding."""
    shapes, digests, dtypes = {}, {}, []
    for name, tensor in ckpt.tensors(wanted=hf_weight_name):
        hf = hf_weight_name(name)
        if expected is not None and hf in expected and tuple(tensor.shape) != expected[hf]:
            raise CheckpointError(f"{ckpt.path}: {name} has shape {list(tensor.shape)}, the configuration gives "
                                  f"{list(expected[hf])}")
        shapes[hf] = tuple(tensor.shape)
        tensor = cast(tensor, dtype)
        if tied and hf in (EMBEDDING, OUTPUT_HEAD):
            digests[hf] = sha256_bytes(tensor.contiguous().view(-1).view(torch.uint8).numpy())
            if hf == OUTPUT_HEAD:
                continue  # the embedding's copy, compared below
        dtypes.append(tensor.dtype)
        writer.add(hf, tensor)
    if OUTPUT_HEAD in digests:
        if digests[OUTPUT_HEAD] != digests.get(EMBEDDING):
            raise CheckpointError(f"{ckpt.path}: the configuration ties the output head to the embedding, but "
                                  "lm_head.weight differs from model.tok_embeddings.embedding_weight")
        shapes.pop(OUTPUT_HEAD)
    return shapes, dtypes


def _report_left_out(ckpt: CheckpointFile, skipped: list[str]) -> None:
    """Say which parameters of a model checkpoint were not imported, and how to import its LoRA."""
    lora = [n for n in ckpt.names() if MINDPET.fullmatch(n)]
    if skipped:
        print(f"keeptune: skipped {len(skipped)} parameters that are no model weights "
              f"({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''})")
    if lora:
        print(f"keeptune: {ckpt.path} also holds {len(lora)} mindpet LoRA parameters: import them with "
              "`keeptune import CKPT --what adapter --out DIR`")


# --- an adapter ------------------------------------------------------------------------------

def import_adapter(ckpt: CheckpointFile, folder: Path, config_source=None, model: str | None = None,
                   alpha: float | None = None, dropout: float | None = None, dtype: str | None = None) -> dict:
    """Write the mindpet LoRA parameters of `ckpt` into `folder` as a PEFT adapter; returns its keeptune.json.

    The checkpoint holds A and B but not lora_alpha: `alpha`, or the pet_config of a
    MindFormers YAML given as `config_source`, says it. `model`: the base model the adapter
    belongs to, checked against the adapter's shapes and recorded for eval and merge. The
    adapter must be whole: every module paired, the same modules on every layer up to the
    last one named, one shape per module kind, and, where the base is known (`model`, or a
    configuration as `config_source`), LoRA on each of its layers, shaped as its modules are."""
    from peft import LoraConfig  # about two seconds to import: paid by the commands that need PEFT only

    modules = _mindpet_modules(ckpt)
    order = sorted(modules, key=lambda m: (_layer(m), m))
    check_every_layer(ckpt, order)  # names only: a file cut short fails before its data is read
    base_config, pet = read_config(config_source)
    alpha, dropout = _alpha_and_dropout(ckpt, pet, alpha, dropout)
    wanted = {name for pair in modules.values() for name in pair.values()}
    cast_to = resolve_dtype(dtype, torch.device("cpu")) if dtype else None
    tensors = {name: cast(t, cast_to) for name, t in ckpt.tensors(wanted=wanted.__contains__)}
    rank = _common_rank(ckpt, modules, tensors)
    shapes = {m: (tuple(tensors[modules[m]["A"]].shape), tuple(tensors[modules[m]["B"]].shape)) for m in order}
    _check_one_shape_per_kind(ckpt, shapes)
    for base, config in ((model, source_config(model) if model is not None else None),
                         (config_source, base_config)):
        if config is not None:
            check_adapter_fits(order, shapes, config, str(base), ckpt.path)
    LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=order, bias="none",
               task_type="CAUSAL_LM", base_model_name_or_path=str(model) if model else None).save_pretrained(folder)
    save_file({peft_weight_key(m, w): tensors[modules[m][w]].contiguous() for m in order for w in "AB"},
              folder / ADAPTER_WEIGHTS)
    targets = sorted({m.rsplit(".", 1)[1] for m in order}, key=list(MINDFORMERS_TO_HF.values()).index)
    print(f"keeptune: LoRA of rank {rank} on {', '.join(targets)} of layers 0-{_layer(order[-1])}"
          + ("" if model or base_config else " (pass --model or --config to check that the base has no more)"))
    return {"base_model": str(model) if model else None, "imported_from": str(ckpt.path),
            "lora": {"targets": targets, "rank": rank, "alpha": alpha, "dropout": dropout}}


def _layer(module: str) -> int:
    """The layer index of `model.layers.N.self_attn.q_proj`."""
    return int(module.split(".")[2])


def check_every_layer(ckpt: CheckpointFile, modules: list[str]) -> None:
    """CheckpointError unless every layer from 0 to the last one named holds LoRA on the same modules."""
    kinds = {m.split(".", 3)[3] for m in modules}
    missing = [f"model.layers.{i}.{kind}" for i in range(max(map(_layer, modules)) + 1) for kind in sorted(kinds)
               if f"model.layers.{i}.{kind}" not in modules]
    if missing:
        raise CheckpointError(f"{ckpt.path}: the adapter is incomplete: it has LoRA on {', '.join(sorted(kinds))} "
                              f"up to layer {max(map(_layer, modules))}, but none on {_listed(missing)} (a file "
                              "cut short, or saved in part?)")


def _listed(names: list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _check_one_shape_per_kind(ckpt: CheckpointFile, shapes: dict) -> None:
    """CheckpointError when one kind of module (q_proj, say) has LoRA of different shapes on different layers."""
    first: dict[str, str] = {}
    for module, shape in shapes.items():
        kind = module.split(".", 3)[3]
        other = first.setdefault(kind, module)
        if shapes[other] != shape:
            (_, width), (height, _) = shape
            (_, other_width), (other_height, _) = shapes[other]
            raise CheckpointError(f"{ckpt.path}: the LoRA of {module} maps {width} -> {height}, that of {other} "
                                  f"{other_width} -> {other_height}: the layers of one model have one shape")


def _mindpet_modules(ckpt: CheckpointFile) -> dict[str, dict[str, str]]:
    """Hugging Face module -> {"A": mindpet name, "B": mindpet name} of every LoRA pair in the file."""
    modules: dict[str, dict[str, str]] = {}
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
    return modules


def _alpha_and_dropout(ckpt: CheckpointFile, pet: dict, alpha: float | None, dropout: float | None
                       ) -> tuple[float, float]:
    """lora_alpha and lora_dropout: as given, else from the pet_config of --config (dropout: else 0)."""
    alpha = alpha if alpha is not None else pet.get("lora_alpha")
    if alpha is None:
        raise ModelLoadError(f"{ckpt.path}: a mindpet checkpoint does not record lora_alpha: pass --alpha (the seed's "
                             "baseline: 16) or --config with the MindFormers YAML whose pet_config trained it")
    return alpha, dropout if dropout is not None else float(pet.get("lora_dropout", 0.0))


def _common_rank(ckpt: CheckpointFile, modules: dict[str, dict[str, str]], tensors: dict[str, torch.Tensor]) -> int:
    """The one rank of every LoRA pair; CheckpointError for a pair that is none, or ranks that differ."""
    ranks = set()
    for pair in modules.values():
        a, b = tensors[pair["A"]], tensors[pair["B"]]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{ckpt.path}: {pair['A']} {list(a.shape)} and {pair['B']} {list(b.shape)} are not "
                                  "a LoRA pair (A: rank x in, B: out x rank)")
        ranks.add(a.shape[0])
    if len(ranks) != 1:
        raise CheckpointError(f"{ckpt.path}: its LoRA pairs have ranks {sorted(ranks)}; one lora_rank was expected")
    return ranks.pop()


def check_adapter_fits(modules: list[str], shapes: dict, config, base: str, source: Path) -> None:
    """ModelLoadError naming `source` when the base model (its configuration `config`, named `base`) has no such
    module or another shape, or has layers the adapter leaves out (meta device: no weights)."""
    layers = dict(meta_model(config).named_modules())
    for module in modules:
        layer = layers.get(module)
        if not isinstance(layer, torch.nn.Linear):
            raise ModelLoadError(f"{source}: the adapter has LoRA on {module}, which model {base} does not have")
        (rank, width), (height, _) = shapes[module]
        if (width, height) != (layer.in_features, layer.out_features):
            raise ModelLoadError(f"{source}: the adapter's {module} maps {width} -> {height}, model {base}'s "
                                 f"{layer.in_features} -> {layer.out_features}")
    kinds = sorted({m.split(".", 3)[3] for m in modules})
    missing = [f"model.layers.{i}.{kind}" for i in range(config.num_hidden_layers) for kind in kinds
               if f"model.layers.{i}.{kind}" not in modules]
    if missing:
        raise ModelLoadError(f"{source}: the adapter is incomplete: model {base} has {config.num_hidden_layers} "
                             f"layers, the adapter no LoRA on {_listed(missing)} (a file cut short, or saved in part?)")
