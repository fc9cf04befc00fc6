"""LoRA fine-tuning: setup, the training loop, cleanup, in this order.

    train(config, on_step=None, every=1, model=None, tokenizer=None, methods=PLAIN) -> Result

Arithmetic of one optimizer step (nanoGPT style):
    global batch   = micro_batch x accumulation x world size        (samples)
    tokens / step  = every non-padding token of the global batch
    loss           = sum of token losses / label tokens of the global batch
                     (with retention `kl`: (sum of CE + kl_weight x sum of KL) / label tokens;
                     log.jsonl's `ce` is then the loss a plain run reports, `kl` the mean KL)
Each micro-batch's backward gets (its loss sum x world / label tokens of the
global batch); DDP averages over ranks (/ world), so the gradient is the same
for any split into micro-batches and ranks. Steps per epoch = samples //
global batch; total steps = epochs x steps per epoch, capped by max_steps.

Retention methods that change training (kl, corda) plug in through `methods`
(keeptune.train.methods: hooks with plain LoRA's defaults); keeptune.retention.training.train
passes them, and this module imports nothing of keeptune.retention.

The data order is a function of (seed, epoch, step) (see keeptune.train.records),
so a checkpoint's step is its data position; with the optimizer, scheduler and
RNG states restored, a resumed run on CPU ends bit for bit where an
uninterrupted one does.

`on_step(step, model)`, called every `every` optimizer steps on every rank with
the PEFT model (in float32 on a CPU even when training computes in bf16), may
return metrics, logged beside the loss; `{"stop": True}` ends training after a
checkpoint at that step.

About 420 lines, read top to bottom: setup, the loop and the end of a run are one sequence of steps
that share the run's state; splitting them would scatter the order a reader needs to see.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from keeptune.core.config import to_dict, to_yaml
from keeptune.core.errors import ConfigError, DataError, TrainingDivergedError
from keeptune.core.io import append_jsonl, atomic_write_text, read_jsonl_prefix, write_jsonl, writing_to
from keeptune.core.outputs import check_output_dir, claim_output_dir, note_progress
from keeptune.core.resume import check_same, flatten, sha256_file
from keeptune.model import adapter as adapters
from keeptune.model.load import load_model, model_name
from keeptune.model.lora import print_parameter_groups
from keeptune.model.params import check_targets
from keeptune.train import checkpoint, distributed, precision
from keeptune.train.checkpoint import SaveAdapter
from keeptune.train.config import Config
from keeptune.train.distributed import Dist
from keeptune.train.dropout import use_fast_dropout
from keeptune.train.methods import PLAIN, LossTerm, Methods
from keeptune.train.records import (
    IGNORE,
    collate,
    detect_prompt,
    encode,
    epoch_batches,
    label_count,
    micro_batches,
    read_conversations,
    special_ids,
)

OnStep = Callable[[int, torch.nn.Module], Optional[dict]]
# What `keeptune train` writes into its run directory (`out`), beside its methods' `outputs`: a folder holding
# only these is a run of it.
TRAIN_OUTPUTS = ("checkpoints", "adapter", "log.jsonl", "tensorboard", "config.yaml")
# Config fields that may change between a run and its resumption (they do not change the result's maths).
RESUMABLE_CHANGES = {"resume", "overwrite", "model.device", "train.micro_batch", "train.gradient_checkpointing",
                     "distributed.strategy", "distributed.backend"}


@dataclass
class Result:
    run: Path
    adapter: Path
    step: int
    stopped_early: bool
    model: Optional[torch.nn.Module] = None  # the PEFT model, holding the last step's weights
    start: int = 0  # the step this invocation resumed from (0: a fresh run)
    corda_seconds: float = 0.0  # spent preparing the methods in this invocation (CorDA's covariance and decomposition)


@dataclass
class Run:
    """Everything setup builds for the loop."""

    config: Config
    d: Dist
    out: Path
    samples: list
    lengths: list[int]
    labels: list[int]
    pad_id: int
    peft_model: torch.nn.Module
    model: torch.nn.Module  # the PEFT model, wrapped for DDP/FSDP under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: object
    steps_per_epoch: int
    total: int
    save_at: list[int]
    start: int
    info: dict
    bf16: bool
    loss: Optional[LossTerm] = None  # a term beside the cross-entropy (retention `kl`)
    save_adapter: Optional[SaveAdapter] = None  # how checkpoints save the adapter (retention `corda`)
    prepare_seconds: float = 0.0


def train(config: Config, on_step: Optional[OnStep] = None, every: int = 1, model=None, tokenizer=None,
          methods: Methods = PLAIN) -> Result:
    """Fine-tune with LoRA as `config` says; returns where the final adapter is.

    `model` and `tokenizer`, when given, are the base model already loaded (the experiment
    loads it once): LoRA is applied to it in place, and Result.model is that PEFT model.
    `methods`: the hooks of the retention methods config.retention.methods names
    (keeptune.train.methods); the default runs none."""
    if every < 1:
        raise ValueError(f"every must be at least 1, not {every}")
    others = [m for m in config.retention.methods if m not in methods.names]
    if others:
        raise ConfigError(f"field 'retention.methods': this training was given no hooks for {', '.join(others)} "
                          "(keeptune.retention.training.train plugs in kl and corda)")
    d = distributed.setup(config.model.device, config.distributed.backend)
    try:
        with writing_to(config.out):  # a full disk, whoever writes: one error naming the run, which resumes
            run = setup(config, d, model, tokenizer, methods)
            # bf16 on a CPU: the frozen base in bfloat16 and eager attention while the loop runs (train.precision)
            cast = run.bf16 and d.device.type == "cpu" and not (d.world > 1 and config.distributed.strategy == "fsdp")
            with precision.CpuBf16(run.peft_model, cast) as compute:
                return loop(run, on_step, every, compute.paused)
    finally:
        distributed.cleanup(d)


# --- setup -------------------------------------------------------------------------------

def setup(config: Config, d: Dist, model=None, tokenizer=None, methods: Methods = PLAIN) -> Run:
    t, out = config.train, Path(config.out)
    outputs = TRAIN_OUTPUTS + tuple(methods.outputs)
    # global batch = micro_batch x accumulation x world size
    accumulation, rest = divmod(t.global_batch, t.micro_batch * d.world)
    if rest or accumulation == 0:
        raise ConfigError(f"train.global_batch {t.global_batch} must be train.micro_batch {t.micro_batch} x "
                          f"gradient accumulation x world size {d.world}")
    check_output_dir(out, "train", config.overwrite, inputs=(config.data.path, config.model.source),
                     outputs=outputs)
    distributed.barrier(d)  # every rank has looked before rank 0 marks the directory
    prior, start = checkpoint.last_step(out)
    if prior is not None and not config.resume:
        raise ConfigError(f"{out} already holds checkpoints (last: {prior.name}); pass --resume (resume=true) "
                          "to continue that run, or choose another out=")
    path = Path(config.data.path)
    conversations = read_conversations(path)
    check_targets(config.model.source, config.lora.targets)  # on the meta device: before any weights load
    bf16 = precision.use_bf16(t.precision, d.device)
    identity = {**to_dict(config), "data_sha256": sha256_file(path),
                "compute": "bf16" if bf16 else "fp32"}  # what precision=auto chose on this machine
    if prior is not None:  # the methods' late keys (CorDA's prompts) are checked once known, after the model loads
        check_resumable(prior, identity, ignore=methods.late_keys, defaults=section_defaults(config))
    methods.check(config)

    torch.manual_seed(t.seed)
    random.seed(t.seed)
    if model is None:
        model, tokenizer = load_model(config.model.source, config.model.dtype, d.device)
    model.config.use_cache = False
    late = methods.identity(config, d, model, tokenizer)
    if late:
        identity.update(late)
        if prior is not None:
            check_resumable(prior, identity, defaults=section_defaults(config))
    dataset = encode(conversations, tokenizer, config.data.format, config.data.seq_len, config.data.add_bos, path)
    samples = dataset.samples
    # steps per epoch = samples // global batch (a partial last batch is dropped)
    steps_per_epoch = len(samples) // t.global_batch
    if steps_per_epoch == 0:
        raise DataError(f"{path}: {len(samples)} samples train, fewer than one global batch "
                        f"(train.global_batch={t.global_batch})")
    total = t.epochs * steps_per_epoch if t.max_steps is None else min(t.epochs * steps_per_epoch, t.max_steps)
    warmup = math.ceil(t.warmup_ratio * total)
    head, _ = special_ids(tokenizer, config.data.format, config.data.add_bos)
    info = {"base_model": config.model.source, "base_model_name": model_name(config.model.source),
            "prompt": config.data.prompt or detect_prompt(conversations), "format": config.data.format,
            "add_bos": bool(head), "seq_len": config.data.seq_len, "total_steps": total, "data": str(path),
            "lora": {"targets": list(config.lora.targets), "rank": config.lora.rank, "alpha": config.lora.alpha,
                     "dropout": config.lora.dropout},
            "retention": to_dict(config.retention), "config": identity}

    if t.gradient_checkpointing:
        enable_activation_checkpointing(model)
    prepared = methods.prepare(model, tokenizer, config, d.main)  # LoRA (or CorDA) and a loss term (KL)
    peft_model = prepared.peft_model
    info.update(prepared.info)
    if d.main:
        print(dataset.report(path, config.data.seq_len))
        print_parameter_groups(peft_model, t.weight_decay, config.lora.names)
    if prior is not None:
        adapters.load_adapter_weights(prior, peft_model)
    peft_model.train()
    if d.device.type == "cpu":
        use_fast_dropout(peft_model)  # bernoulli_ was a tenth of a CPU step (keeptune.train.dropout)
    model = distributed.wrap(peft_model, d, config.distributed.strategy, bf16)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": trainable, "name": "decay", "weight_decay": t.weight_decay}],
                                  lr=t.lr, betas=t.betas, eps=t.eps)
    # transformers' schedulers import its trainer utilities and with them PEFT (about 2 s): here, not at keeptune's
    # start, which imports this module for every command
    from transformers import get_cosine_schedule_with_warmup

    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)
    if prior is not None:
        checkpoint.restore(prior, model, optimizer, scheduler, d)
    else:
        torch.manual_seed(t.seed + d.rank)  # LoRA init is the same on every rank; dropout is not

    save_at = checkpoint.checkpoint_steps(total, t.checkpoints)
    if d.main:
        print(f"training: {len(samples)} samples, {steps_per_epoch} steps per epoch, {total} steps "
              f"({warmup} warm-up); global batch {t.global_batch} = micro-batch {t.micro_batch} x "
              f"accumulation {accumulation} x world {d.world}; {'bf16' if bf16 else 'fp32'} on {d.device}; "
              f"checkpoints at steps {save_at}" + (f"; resuming from {prior}" if prior else ""))
        checkpoint.remove_partial(out)
        claim_output_dir(out, "train", config.overwrite, inputs=(config.data.path, config.model.source),
                         outputs=outputs)
        note_progress(saved=functools.partial(saved_checkpoints, out, total))
        atomic_write_text(out / "config.yaml", to_yaml(config))
    distributed.barrier(d)
    return Run(config, d, out, samples, [len(s.tokens) for s in samples], [label_count(s) for s in samples],
               tokenizer.pad_token_id, peft_model, model, optimizer, scheduler, steps_per_epoch, total, save_at,
               start, info, bf16, prepared.loss, prepared.save_adapter, prepared.seconds)


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in backward (transformers >= 5.2x renamed the method)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def section_defaults(config: Config) -> dict:
    """Every setting of the config's sections at its default, flattened ({"lora.init": "default", ...})."""
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            with contextlib.suppress(TypeError):  # a section with a required setting has no defaults to give
                out |= flatten(to_dict(type(value)()), f"{field.name}.")
    return out


def check_resumable(prior: Path, identity: dict, ignore: frozenset[str] = frozenset(),
                    defaults: Optional[dict] = None) -> None:
    """Refuse to resume a run made with other settings or other data (ResumeMismatchError naming the dotted
    keys that differ; `ignore`: keys checked later). A setting keeptune gained after the run was trained (lora.init,
    retention.intruder_*) is missing from its record: at its default (`defaults`, `section_defaults`) it is what
    the run was trained with, so it does not stop the resume."""
    saved = flatten(json.loads((prior / "keeptune.json").read_text(encoding="utf-8"))["config"])
    now = flatten(identity)
    saved |= {k: v for k, v in (defaults or {}).items() if k not in saved and now.get(k) == v}
    check_same(saved, now, f"{prior} was trained", "resume with the same config and data, or use another out=",
               ignore=RESUMABLE_CHANGES | set(ignore))


# --- the loop --------------------------------------------------------------------------

def loop(run: Run, on_step: Optional[OnStep], every: int, float32=contextlib.nullcontext) -> Result:
    """The steps; `on_step` runs inside `float32()` (the model's float32 weights, when CPU bf16 held them)."""
    c, d, t = run.config, run.d, run.config.train
    log, writer = open_logs(run) if d.main else (None, None)
    bar = tqdm(total=run.total, initial=run.start, unit="step", dynamic_ncols=True, disable=not d.main)
    step, planned, stopped = run.start, (-1, []), False
    try:
        while step < run.total and not stopped:
            epoch, index = divmod(step, run.steps_per_epoch)
            if planned[0] != epoch:
                planned = (epoch, epoch_batches(len(run.samples), t.global_batch, t.seed, epoch, run.lengths,
                                                c.data.length_pool))
            batch = planned[1][index]
            mine = micro_batches(batch, run.lengths, t.micro_batch, c.data.group_by_length)[d.rank :: d.world]
            label_tokens = sum(run.labels[i] for i in batch)  # of the whole global batch, on every rank
            tokens = sum(run.lengths[i] for i in batch)
            started = time.perf_counter()
            loss_sum = 0.0
            for number, micro in enumerate(mine):
                inputs = {k: v.to(d.device) for k, v in collate([run.samples[i] for i in micro], run.pad_id).items()}
                with distributed.gradient_sync(run.model, number == len(mine) - 1):
                    with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=run.bf16):
                        micro_loss = token_loss_sum(run.model, inputs) if run.loss is None else \
                            token_loss_sum(run.model, inputs, run.loss)
                    (micro_loss * d.world / label_tokens).backward()
                loss_sum += micro_loss.item()
            loss = distributed.all_reduce_sum(d, [loss_sum])[0] / label_tokens
            lr = run.scheduler.get_last_lr()[0]
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in run.model.parameters() if p.requires_grad], t.grad_clip or math.inf)
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                diverged(run, step + 1, loss, grad_norm)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            step += 1
            seconds = time.perf_counter() - started
            record = {"step": step, "epoch": step / run.steps_per_epoch, "loss": loss, "lr": lr,
                      "grad_norm": grad_norm, "tokens": tokens, "tokens_per_s": tokens / seconds, "seconds": seconds}
            if run.loss is not None:
                record.update(run.loss.step_record(label_tokens, d))
            if on_step is not None and step % every == 0:
                with float32():
                    extra = dict(on_step(step, run.peft_model) or {})
                run.peft_model.train()
                stopped = distributed.all_reduce_sum(d, [float(bool(extra.pop("stop", False)))])[0] > 0
                record.update(extra)
            if d.main:
                write_log(log, writer, record)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens / seconds:.0f}")
            if step in run.save_at or stopped or step == run.total:
                check_finite_weights(run, step)  # an absurd lr (1e308) can overflow them with a finite loss
                position = {"epoch": epoch, "batch_in_epoch": index + 1, "samples_seen": step * t.global_batch}
                checkpoint.save(run.out, step, run.model, run.peft_model, run.optimizer, run.scheduler,
                                run.info, position, d, save_adapter=run.save_adapter)
    finally:
        bar.close()
        if log is not None:
            log.close()
            writer.close()
    return finish(run, step, stopped)


def token_loss_sum(model: torch.nn.Module, batch: dict, term: Optional[LossTerm] = None) -> torch.Tensor:
    """Sum of the cross-entropy of every label token (position t predicts token t + 1); with
    `term`, plus that term at the same positions (retention `kl`: kl_weight x the sum of KL(base || tuned)).

    Only positions that predict a label go through the output head: prompts are
    most of each sequence and the head is a fifth of a small model's weights
    (SmolLM2: 28M of 135M), so skipping it there saves compute in both passes.
    """
    keep, targets = label_positions(batch["labels"])
    reference = term.reference_logits(batch, keep) if term is not None else None  # first: no graph held
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
    if term is not None:  # the term computes the CE beside itself (kl: both from one log-softmax)
        return term.loss_sum(logits.flatten(0, -2), targets.flatten(), reference.flatten(0, -2))
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")


# transformers >= 5.2x slices the head's input with a (batch, length) boolean mask (`slice_logits_to_keep`);
# older releases take positions shared by every row.
try:
    from transformers.modeling_utils import slice_logits_to_keep as _row_masks  # noqa: F401
    ROW_MASKS = True
except ImportError:
    ROW_MASKS = False


def label_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(`logits_to_keep`, the targets of the logits it keeps): position t predicts token t + 1.

    With row masks the head sees exactly the label tokens: logits (label tokens, vocabulary),
    targets (label tokens,). Otherwise it sees the positions that predict a label in ANY row, for
    every row: logits (batch, positions, vocabulary), targets (batch, positions) with IGNORE
    where a row has no label there (on the default's batches of 8, 1.9 rows computed per label).
    """
    targets = labels[:, 1:]
    labelled = targets != IGNORE
    if ROW_MASKS:
        return F.pad(labelled, (0, 1)), targets[labelled]  # the last position predicts nothing
    keep = labelled.any(0).nonzero().squeeze(-1)
    return keep, targets[:, keep]


def diverged(run: Run, step: int, loss: float, grad_norm: float) -> None:
    raise TrainingDivergedError(
        f"training stopped at step {step}: the loss is {loss}, the gradient norm {grad_norm} (not finite); "
        f"nothing of this step was applied and {last_good(run)}. Lower train.lr (now {run.config.train.lr}) or "
        "check the data")


def last_good(run: Run) -> str:
    last, _ = checkpoint.last_step(run.out)
    return f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"


def check_finite_weights(run: Run, step: int) -> None:
    """TrainingDivergedError, on every rank, when a trainable weight is not finite after step `step`'s update:
    a checkpoint is never written with them (resuming it, or evaluating it, could only diverge)."""
    bad = sum(not bool(torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all())
              for p in run.model.parameters() if p.requires_grad)
    if distributed.all_reduce_sum(run.d, [float(bad)])[0] > 0:
        raise TrainingDivergedError(
            f"training stopped at step {step}: its update made trainable weights infinite or NaN (the loss was "
            f"finite), so it was not saved; {last_good(run)}. Lower train.lr (now {run.config.train.lr})")


def saved_checkpoints(out: Path, total: int) -> str:
    """What an interrupted training keeps: its checkpoints so far, as they are on disk."""
    _, step = checkpoint.last_step(out)
    folder = out / checkpoint.CHECKPOINTS
    return f"the checkpoints up to step {step} of {total} are in {folder}" if step else \
        f"no checkpoint of {out} was written yet"


def open_logs(run: Run):
    """RUN/log.jsonl (cut back to the resumed step) and a TensorBoard writer that drops later events."""
    path = run.out / "log.jsonl"
    kept = [r for r in read_jsonl_prefix(path)[0] if r["step"] <= run.start] if path.is_file() else []
    write_jsonl(path, kept)
    writer = SummaryWriter(str(run.out / "tensorboard"), purge_step=run.start + 1 if run.start else None)
    return open(path, "a", encoding="utf-8"), writer


def write_log(log, writer, record: dict) -> None:
    append_jsonl(log, [record])
    for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"train/{key}", value, record["step"])
    writer.flush()


# --- cleanup -------------------------------------------------------------------------

def finish(run: Run, step: int, stopped: bool) -> Result:
    """Export the last checkpoint's adapter to RUN/adapter."""
    adapter = run.out / "adapter"
    if run.d.main:
        last, _ = checkpoint.last_step(run.out)
        adapters.export_adapter(last, adapter)
        why = "stopped early by the callback" if stopped else "done"
        print(f"training {why} at step {step}: adapter in {adapter}; checkpoints in {run.out / checkpoint.CHECKPOINTS}")
    distributed.barrier(run.d)
    return Result(run.out, adapter, step, stopped, run.peft_model, run.start, run.prepare_seconds)
