"""The hooks a training method plugs into the loop, and plain LoRA's defaults.

keeptune.train.loop trains plain LoRA and imports no retention method. A method that changes
training (kl and corda, docs/retention.md; keeptune.retention.training wires them in) hands
the loop a `Methods` whose hooks it calls in this order:

1. `check(config)`, before the model loads: read and check what the methods need (CorDA's
   preservation source), so that a bad setting fails in seconds;
2. `identity(config, d, model, tokenizer)`, once the model is loaded: keys added to the run's
   identity (CorDA's prompts digest). A resumed run is compared on `late_keys` only then;
3. `prepare(model, tokenizer, config, main)`: a `Prepared`: the PEFT model, a `LossTerm`
   added to the cross-entropy (kl), how a checkpoint saves its adapter (CorDA's converted
   one), the seconds the preparation took and what it adds to keeptune.json.

`names` are the retention.methods the hooks run (the loop refuses any other); `outputs` the
names they add to the run directory (so that a later run there knows them as its own).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

import torch

from keeptune.model.adapter import mica_saver
from keeptune.model.lora import apply_lora
from keeptune.train.checkpoint import SaveAdapter
from keeptune.train.config import Config
from keeptune.train.distributed import Dist


class LossTerm(Protocol):
    """A term of the loss beside the cross-entropy, at the positions whose next token is a label."""

    def reference_logits(self, batch: dict, keep: torch.Tensor) -> torch.Tensor:
        """What the term compares the tuned logits with, at positions `keep`; run before the tuned model's
        forward, without gradients (so it holds no graph while that forward's does)."""

    def loss_sum(self, logits: torch.Tensor, targets: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The sum of cross-entropy + the term over the label positions (logits and reference: positions x
        vocabulary; targets: positions, IGNORE where a row predicts nothing)."""

    def step_record(self, label_tokens: int, d: Dist) -> dict:
        """This optimizer step's entries for log.jsonl (per label token of the global batch)."""


@dataclass
class Prepared:
    """What the methods' preparation gives the loop."""

    peft_model: torch.nn.Module
    loss: Optional[LossTerm] = None  # None: the cross-entropy alone
    save_adapter: Optional[SaveAdapter] = None  # None: PEFT's save_pretrained (keeptune.train.checkpoint)
    seconds: float = 0.0  # spent preparing (CorDA's covariance and decomposition): not a cost of every step
    info: dict = field(default_factory=dict)  # added to every checkpoint's keeptune.json


class Methods:
    """Plain LoRA: no retention method. A subclass overrides what its methods change."""

    names: tuple[str, ...] = ()  # the retention.methods these hooks run
    outputs: tuple[str, ...] = ()  # names they add to the run directory
    late_keys: frozenset[str] = frozenset()  # identity keys `identity` returns: not compared before the model loads

    def check(self, config: Config) -> None:
        """Before the model loads: read and check what the methods need (ConfigError, DataError)."""

    def identity(self, config: Config, d: Dist, model, tokenizer) -> dict:
        """Keys the methods add to the run's identity once the model is loaded (every rank calls it)."""
        return {}

    def prepare(self, model, tokenizer, config: Config, main: bool) -> Prepared:
        """`model` wrapped in PEFT LoRA as config.lora says (in place; a MiCA adapter saved as the plain LoRA it is
        once trained: keeptune.model.adapter.mica_saver)."""
        peft_model = apply_lora(model, config.lora)
        return Prepared(peft_model, save_adapter=mica_saver(peft_model))


PLAIN = Methods()
