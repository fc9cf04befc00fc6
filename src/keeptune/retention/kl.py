"""Retention method `kl` (docs/retention.md): stay close to the base model's distribution.

The loss of a step becomes

    loss = (sum of CE + kl_weight x sum of KL(base || tuned)) / label tokens of the global batch

where KL(p || q) = sum over the vocabulary of p (log p - log q), at every position whose next
token is a label (the positions the cross-entropy sums over), both softmaxes in float32. The base
distribution comes from the same model with its adapter disabled (PEFT's `disable_adapter`), in
one extra forward without gradients: no second copy of the model. With `corda`, whose disabled
model is CorDA's residual and not the base, it is the model with CorDA's initial adapter instead
(a frozen copy of it, keeptune.retention.corda.REFERENCE, selected by PEFT's `adapter_names`):
the model before training, to float error. log.jsonl gets `ce` and `kl`, each per label token,
beside `loss`. `KL` is a keeptune.train.methods.LossTerm.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from keeptune.train import distributed
from keeptune.train.distributed import Dist
from keeptune.train.records import IGNORE


class KL:
    """The term kl_weight x KL(base || tuned) of training's loss, and the step's sums for log.jsonl."""

    def __init__(self, peft_model, weight: float, reference: Optional[str] = None):
        """`peft_model`: the unwrapped PEFT model (under DDP its forward skips DDP's hooks; no gradient flows
        there); `reference`: an adapter giving the base distribution (None: the adapter disabled)."""
        self.model, self.weight, self.reference = peft_model, weight, reference
        self.ce, self.kl = 0.0, 0.0

    def reference_logits(self, batch: dict, keep: torch.Tensor) -> torch.Tensor:
        """The base model's logits at positions `keep` (one forward without gradients, in eval mode: no
        dropout, and PEFT selects an adapter per row only there)."""
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                          "logits_to_keep": keep}
                if self.reference is not None:
                    return self.model(**inputs, adapter_names=[self.reference] * len(batch["input_ids"])).logits
                with self.model.disable_adapter():
                    return self.model(**inputs).logits
        finally:
            self.model.train(training)

    def loss_sum(self, logits: torch.Tensor, targets: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Sum of CE + kl_weight x KL(base || tuned) over the positions whose target is a label (logits and base:
        positions x vocabulary; targets: positions, IGNORE where a row predicts nothing); the sums are kept
        for `step_record`. One float32 log-softmax of the tuned logits serves both terms (F.cross_entropy is
        nll_loss of log_softmax: the same CE)."""
        labelled = targets != IGNORE
        if not bool(labelled.all()):
            logits, targets, base = logits[labelled], targets[labelled], base[labelled]
        tuned = F.log_softmax(logits.float(), dim=-1)
        ce = F.nll_loss(tuned, targets, reduction="sum")
        kl = F.kl_div(tuned, F.log_softmax(base.float(), dim=-1), reduction="sum", log_target=True)
        self.ce += ce.item()
        self.kl += kl.item()
        return ce + self.weight * kl

    def step_record(self, label_tokens: int, d: Dist) -> dict:
        """`ce` and `kl` per label token of the global batch (summed over ranks); the sums start again."""
        ce, kl = distributed.all_reduce_sum(d, [self.ce, self.kl])
        self.ce, self.kl = 0.0, 0.0
        return {"ce": ce / label_tokens, "kl": kl / label_tokens}
