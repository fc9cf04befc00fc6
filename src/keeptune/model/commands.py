"""`keeptune params`: one typed function per command."""
from __future__ import annotations

from typing import Literal

from keeptune.model.load import DEFAULT_MODEL_NAME, ModelLoadError
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
