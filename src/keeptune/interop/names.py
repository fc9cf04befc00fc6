"""Llama weight names between Hugging Face and MindFormers, LoRA names between PEFT and mindpet.

Names follow MindFormers' own Llama converters (mindformers 2.1.0,
models/llama/convert_weight.py `name_replace` for Hugging Face -> MindFormers and
convert_reversed.py for the way back): `model.embed_tokens.weight` <->
`model.tok_embeddings.embedding_weight`, `self_attn.q_proj` <-> `attention.wq` (k, v, o
alike), `mlp.gate_proj/down_proj/up_proj` <-> `feed_forward.w1/w2/w3`,
`input_layernorm` <-> `attention_norm`, `post_attention_layernorm` <-> `ffn_norm`,
`model.norm` <-> `model.norm_out`, `lm_head.weight` unchanged. The projection names are
keeptune's one mapping in `keeptune.model.lora` (the one `keeptune params --names
mindformers` prints); this module adds the embedding and norms around it.

Only names change. Both converters copy every tensor as it is (a MindFormers `Linear`
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

import re

from keeptune.model.lora import MINDFORMERS_BLOCK, MINDFORMERS_TO_HF, mindformers_lora_name, mindformers_name

# Names outside the decoder layers, and the layers' norms (convert_weight.py, name_replace).
OUTER_NAMES = {"model.embed_tokens.weight": "model.tok_embeddings.embedding_weight",
               "model.norm.weight": "model.norm_out.weight", "lm_head.weight": "lm_head.weight"}
NORM_NAMES = {"input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm"}
HF_BLOCKS = {"attention": "self_attn", "feed_forward": "mlp"}
MINDPET = re.compile(r"(model\.layers\.\d+\.\w+\.\w+)\.(?:mindpet|tk)_delta_lora_([ab])")  # tk_: older mindpet
EMBEDDING, OUTPUT_HEAD = "model.embed_tokens.weight", "lm_head.weight"


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
    candidate = _hf_outer_or_norm_name(mf_name) or _hf_projection_name(mf_name)
    return candidate if candidate and mindformers_weight_name(candidate) == mf_name else None


def _hf_outer_or_norm_name(mf_name: str) -> str | None:
    """The Hugging Face name of the embedding, the output head or a norm; else None."""
    inverse = {mf: hf for hf, mf in OUTER_NAMES.items()}
    if mf_name in inverse:
        return inverse[mf_name]
    match = re.fullmatch(r"(model\.layers\.\d+)\.(\w+)\.weight", mf_name)
    norms = {mf: hf for hf, mf in NORM_NAMES.items()}
    return f"{match.group(1)}.{norms[match.group(2)]}.weight" if match and match.group(2) in norms else None


def _hf_projection_name(mf_name: str) -> str | None:
    """The Hugging Face name of an attention or feed-forward projection's weight or bias; else None."""
    match = re.fullmatch(r"(model\.layers\.\d+)\.(attention|feed_forward)\.(\w+)\.(weight|bias)", mf_name)
    if not match or match.group(3) not in MINDFORMERS_TO_HF:
        return None
    leaf = MINDFORMERS_TO_HF[match.group(3)]
    return f"{match.group(1)}.{HF_BLOCKS[MINDFORMERS_BLOCK[leaf]]}.{leaf}.{match.group(4)}"


def peft_module_of_mindpet(mf_name: str) -> tuple[str, str] | None:
    """`model.layers.0.attention.wq.mindpet_delta_lora_a` -> (`model.layers.0.self_attn.q_proj`, "A"); else None."""
    match = MINDPET.fullmatch(mf_name)
    hf = hf_weight_name(f"{match.group(1)}.weight") if match else None
    if hf is None:
        return None
    module, which = hf.removesuffix(".weight"), match.group(2).upper()
    canonical = mf_name.replace(".tk_delta_", ".mindpet_delta_")
    return (module, which) if mindformers_lora_name(f"{module}.lora_{which}.default.weight") == canonical else None


def peft_weight_key(module: str, which: str) -> str:
    """The name of a LoRA matrix ("A" or "B") of `module` in PEFT's adapter_model.safetensors."""
    return f"base_model.model.{module}.lora_{which}.weight"
