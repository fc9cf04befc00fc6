"""LoRA dropout on a CPU, from 31-bit random integers instead of `bernoulli_`.

    use_fast_dropout(peft_model)   # every LoRA layer's nn.Dropout -> MaskDropout, same p

PEFT applies `nn.Dropout(p)` to a LoRA layer's input (the seed's p = 0.05), one mask
per layer and micro-batch: 60 masks of batch x tokens x 576 per micro-batch on
SmolLM2. torch's CPU `bernoulli_` draws them one element at a time (about 5 ns an
element on this project's EPYC, one thread whatever the thread count), which made
it a tenth of a bf16 training step. `random_()` on int32 fills the same tensor about
five times faster; an element is kept when its draw (uniform on 0 .. 2^31 - 1) is
at least round(p x 2^31), so P(drop) = round(p x 2^31) / 2^31: p to within 2^-31.
Kept inputs are scaled by 1 / (1 - p), as nn.Dropout does, and the backward pass
multiplies the gradient by the same saved factor.

The draws come from torch's default generator, so `torch.manual_seed` and the RNG
state a checkpoint saves govern them as they did `bernoulli_` (resume stays
bit-identical). benchmarks/train_lora.py measures the effect on a training step.
"""
from __future__ import annotations

import torch

BITS = 31  # random_() on int32 draws uniformly from [0, 2^31 - 1]


class MaskDropout(torch.nn.Module):
    """Dropout with probability `p` (in training mode only), its mask drawn with `random_()`."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability {p} is not in [0, 1)")
        self.p = p
        self.threshold = round(p * 2**BITS)  # a draw below it drops the element

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        draws = torch.empty(x.shape, dtype=torch.int32, device=x.device).random_()
        factor = (draws >= self.threshold).to(x.dtype).mul_(1 / (1 - self.p))
        return x * factor

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(peft_model: torch.nn.Module) -> int:
    """Swap every LoRA layer's `nn.Dropout` for a MaskDropout of the same p; returns how many were swapped.

    Dropout holds no weights, so what is saved (the adapter, its state dict) is unchanged."""
    swapped = 0
    for module in peft_model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, layer in dropouts.items():
            if type(layer) is torch.nn.Dropout:
                dropouts[name] = MaskDropout(layer.p)
                swapped += 1
    return swapped
