"""Training with the retention methods that change training steps, `kl` and `corda` (docs/retention.md).

keeptune.train.loop trains plain LoRA; `Retention` fills in its hooks (keeptune.train.methods):
with `corda` the preservation prompts are read before the model loads, their digest joins the
run's identity once it has loaded, and the PEFT model starts from CorDA's decomposition, its
checkpoints saved converted for the original base (keeptune.retention.corda); with `kl` the loss
gains the KL term (keeptune.retention.kl). `train` is the loop's `train` with them plugged in:
what `keeptune train` and the experiment call. The other two methods, `replay` (preservation data
mixed into the training set) and `scale` (adapters evaluated at scaled strengths), belong to the
experiment (`keeptune run`).
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Optional

from keeptune.model.adapter import mica_saver
from keeptune.model.lora import apply_lora
from keeptune.retention import corda
from keeptune.retention.config import TRAINING_METHODS, check_training, training_retention
from keeptune.retention.kl import KL
from keeptune.train import loop
from keeptune.train.config import Config
from keeptune.train.distributed import Dist
from keeptune.train.methods import Methods, Prepared


class Retention(Methods):
    """The hooks of kl and corda, each acting when config.retention.methods names it."""

    names = TRAINING_METHODS
    outputs = (corda.CORDA_DIR,)
    late_keys = frozenset({corda.PROMPTS_KEY})

    def __init__(self, preservation: Optional[corda.Prompts] = None):
        """`preservation`: corda's prompts, or a function (model, tokenizer) -> prompts (default:
        keeptune.retention.preservation's, of retention.preservation)."""
        self.preservation = preservation
        self.prompts: Optional[list[str]] = None

    def check(self, config: Config) -> None:
        self.preservation = corda.default_prompts(config, self.preservation)

    def identity(self, config: Config, d: Dist, model, tokenizer) -> dict:
        self.prompts = corda.corda_prompts(config, d, self.preservation, model, tokenizer)  # None without corda
        return {} if self.prompts is None else {corda.PROMPTS_KEY: corda.prompts_digest(self.prompts)}

    def prepare(self, model, tokenizer, config: Config, main: bool) -> Prepared:
        """`model` wrapped in PEFT LoRA (CorDA-initialised with `corda`, on the prompts) and the KL term of `kl`."""
        methods, lora = config.retention.methods, config.lora
        if "corda" not in methods:
            peft_model = apply_lora(model, lora)
            return Prepared(peft_model, KL(peft_model, config.retention.kl_weight) if "kl" in methods else None,
                            mica_saver(peft_model))
        peft_model, seconds = corda.corda_model(model, tokenizer, lora, config.model.source, self.prompts,
                                                Path(config.out), main, "kl" in methods)
        info = {"corda": {"method": "kpm", "trained_rank": lora.rank, "prompts": len(self.prompts),
                          corda.PROMPTS_KEY: corda.prompts_digest(self.prompts),
                          "saved_as": f"LoRA of rank {2 * lora.rank}, alpha {2 * lora.alpha}, on the original base"}}
        kl = KL(peft_model, config.retention.kl_weight, corda.REFERENCE) if "kl" in methods else None
        save = functools.partial(corda.save_corda, initial=Path(config.out) / corda.CORDA_DIR / corda.INITIAL)
        return Prepared(peft_model, kl, save, seconds, info)


def train(config: Config, on_step: Optional[loop.OnStep] = None, every: int = 1, model=None, tokenizer=None,
          preservation: Optional[corda.Prompts] = None) -> loop.Result:
    """keeptune.train.loop.train with kl and corda plugged in, as config.retention says (ConfigError for replay
    and scale, the experiment's methods). `preservation`: corda's prompts, or a function (model, tokenizer) ->
    prompts (default: keeptune.retention.preservation's, of retention.preservation)."""
    check_training(config.retention)
    config = dataclasses.replace(config, retention=training_retention(config.retention))
    return loop.train(config, on_step, every, model, tokenizer, Retention(preservation))
