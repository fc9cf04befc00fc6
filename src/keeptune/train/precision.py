"""Training's compute precision: bfloat16 where the processor computes it natively.

    precision: auto | bf16 | fp32   (train.precision)

auto is bf16 on a GPU, and on a CPU with native bfloat16 arithmetic (x86 AVX512-BF16
or AMX, Arm's BF16 extension); float32 on other CPUs, where bfloat16 would be emulated
and slower.

On a CPU, bf16 training (`CpuBf16`) stores the frozen base weights in bfloat16 for
the length of the loop, computes under autocast, and uses transformers' eager
attention; LoRA's A/B matrices, their gradients and AdamW's state stay float32.
Measured on SmolLM2-135M, one step of 4 x 110 tokens on this project's 2-core AMX
EPYC: float32 1.07 s; bf16 autocast over float32 weights ~1.7x slower than bf16
weights (autocast re-casts every frozen matrix at every forward); bf16 weights with
SDPA 0.73 s, of which SDPA's CPU flash-attention backward took a quarter (slower in
bf16 than in float32); with eager attention (its matrix products run on AMX) 0.59 s.
The float32 weights and the attention implementation are put back when training
ends, so the evaluation of checkpoints after training runs on the float32 base,
exactly as before (batch-1 `generate` equivalence), and while the tracker evaluates
during training: measured on the default experiment, tracking on the bf16 model was
no faster (132 s against 123 s for ten evaluations) and its generations differ from
float32's (benchmarks/eval_bf16.py; docs/experiments.md, "bf16 on a CPU").
"""
from __future__ import annotations

import contextlib
import platform
import subprocess
from pathlib import Path

import torch


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (every CUDA GPU keeptune supports does)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        cpu = torch.cpu  # torch's own cpuinfo probe; private names, so looked up with a fallback
        probes = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        if any(probe is not None for probe in probes):
            return any(probe() for probe in probes if probe is not None)
        return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    if machine in ("aarch64", "arm64"):
        return "bf16" in cpu_flags() or _sysctl_flag("hw.optional.arm.FEAT_BF16")
    return False


def cpu_flags() -> set[str]:
    """The flags (x86) or features (Arm) of the first processor in /proc/cpuinfo; empty elsewhere."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return set()
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _sysctl_flag(name: str) -> bool:
    """A macOS sysctl boolean (Apple silicon's FEAT_BF16); False where there is no sysctl."""
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.stdout.strip() == "1"


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether training computes in bfloat16: forced by bf16/fp32, chosen by the device for auto."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"unknown precision {precision!r}; choose auto, bf16 or fp32")
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


class CpuBf16:
    """Context: the frozen base of `peft_model` held in bfloat16 and eager attention while inside.

    Trainable parameters (LoRA) are left alone; tied weights are one Parameter, cast once.
    The float32 tensors are kept, not re-made from bfloat16 (that would lose 16 bits each),
    and `paused()` puts them back for a while (the tracker evaluates in float32): casting
    them again gives the same bfloat16 values, so a pause changes nothing in training.
    """

    def __init__(self, peft_model: torch.nn.Module, enabled: bool = True):
        self.model, self.enabled = peft_model, enabled
        self.base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
        self.attention = getattr(self.base.config, "_attn_implementation", None)
        self.kept: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    def __enter__(self) -> CpuBf16:
        if self.enabled:
            self._apply()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._restore()

    @contextlib.contextmanager
    def paused(self):
        """Inside: the float32 weights and the model's own attention again."""
        if not self.enabled:
            yield
            return
        self._restore()
        try:
            yield
        finally:
            self._apply()

    def _apply(self) -> None:
        for param in self.model.parameters():
            if not param.requires_grad and param.dtype == torch.float32:
                self.kept.append((param, param.data))
                param.data = param.data.to(torch.bfloat16)
        if self._switches():
            self.base.set_attn_implementation("eager")
        self._cast_lora_inputs(False)

    def _restore(self) -> None:
        for param, data in self.kept:
            param.data = data
        self.kept = []
        if self._switches():
            self.base.set_attn_implementation(self.attention)
        self._cast_lora_inputs(True)

    def _cast_lora_inputs(self, enabled: bool) -> None:
        """PEFT casts a LoRA layer's bf16 input to its float32 A's dtype, then autocast casts it back to bf16 for
        the product: two copies of every LoRA input for nothing. Off while bf16, that input stays bf16 (PEFT's
        `cast_input_dtype_enabled`, the switch of peft.helpers.disable_input_dtype_casting)."""
        from peft.tuners.tuners_utils import BaseTunerLayer  # peft: about 2 s to import, loaded with the model

        for module in self.model.modules():
            if isinstance(module, BaseTunerLayer):
                module.cast_input_dtype_enabled = enabled

    def _switches(self) -> bool:
        return self.attention not in (None, "eager") and hasattr(self.base, "set_attn_implementation")
