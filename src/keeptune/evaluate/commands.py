"""`keeptune eval TASK`: any task spec, or with --lm-eval any lm-evaluation-harness task, on a model or on a PEFT
adapter over its base."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from keeptune.core.errors import DataError, ModelLoadError
from keeptune.core.outputs import check_output_dir, claim_output_dir, note_progress
from keeptune.data.prompts import PROMPTS
from keeptune.evaluate import lmeval
from keeptune.evaluate.engine import evaluate
from keeptune.evaluate.samples import given_path, load_task_samples, resolve_data_path
from keeptune.evaluate.spec import load_spec
from keeptune.evaluate.task import SpecTask
from keeptune.model.adapter import adapter_digest, adapter_info
from keeptune.model.load import load_model, model_name

# What an evaluation writes into its --out: a folder holding only these is one of its outputs.
EVAL_OUTPUTS = ("predictions.jsonl", "metrics.json", "eval.json", ".lock")


def default_out(task: str, model: Optional[str], adapter: Optional[Path] = None) -> Path:
    """runs/eval/TASK-MODEL[-ADAPTER], so re-running the same command resumes it."""
    slug = "smollm2-135m-instruct" if model is None else Path(model).name or "model"
    if adapter is not None:
        slug += "-" + (Path(adapter).resolve().name or "adapter")
    return Path("runs") / "eval" / f"{task}-{re.sub(r'[^A-Za-z0-9._-]+', '-', slug).lower()}"


def as_trained(changes: dict, info: dict, adapter_prompt: bool) -> dict:
    """The prompt and sequence format an adapter was trained with, where the user named none.

    Only for a task with `adapter_prompt: true` (the task an adapter learns); a fixed protocol such
    as squad-seed keeps its own. A recorded prompt of `none` means the training prompts were the
    task's own text, so the spec's prompt stays.
    """
    if not adapter_prompt:
        return changes
    trained = dict(changes)
    if "prompt" not in changes and info.get("prompt") in PROMPTS and info["prompt"] != "none":
        trained["prompt"] = info["prompt"]
    if "format" not in changes and info.get("format"):
        trained["format"] = info["format"]
        if "add_bos" not in changes and "add_bos" in info:  # BOS goes with the format it was trained in
            trained["add_bos"] = bool(info["add_bos"])
    return trained


def load_with_adapter(model: Optional[str], adapter: Optional[Path], info: dict, dtype: str, device: str):
    """(model, tokenizer, identity) of a base model, with the adapter applied unmerged when given."""
    source = model if model is not None or adapter is None else info.get("base_model")
    net, tokenizer = load_model(source, dtype=dtype, device=device)
    identity = {"model": model_name(source), "dtype": str(net.dtype).removeprefix("torch.")}
    if adapter is not None:
        from peft import PeftModel  # about two seconds to import: only evaluations of an adapter pay for it

        try:
            net = PeftModel.from_pretrained(net, str(adapter)).eval()
        except Exception as err:  # a mismatched adapter (its files are checked): shape, key or config errors
            raise ModelLoadError(f"{adapter}: cannot apply this adapter to {identity['model']}: "
                                 f"{type(err).__name__}: {err}") from None
        identity["adapter"] = f"{Path(adapter).resolve()} {adapter_digest(adapter)}"
    return net, tokenizer, identity


def _positive(name: str, value: Optional[int]) -> None:
    if value is not None and value < 1:
        raise DataError(f"--{name.replace('_', '-')} is {value}; it must be at least 1")


def eval_task(
    task: str,
    model: Optional[str] = None,
    adapter: Optional[Path] = None,
    data: Optional[str] = None,
    limit: Optional[int] = None,
    start: Optional[int] = None,
    prompt: Optional[str] = None,
    format: Optional[str] = None,
    extraction: Optional[str] = None,
    max_new_tokens: Optional[int] = None,
    min_new_tokens: Optional[int] = None,
    add_bos: Optional[bool] = None,
    batch_size: Optional[int] = None,
    prefill_batch_size: int = 8,
    skip_bad: bool = False,
    confidence: float = 0.95,
    sample_size: bool = False,
    out: Optional[Path] = None,
    overwrite: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    lm_eval: bool = False,
    include: Optional[list[str]] = None,
    num_fewshot: Optional[int] = None,
) -> dict:
    """Evaluate a model (or an adapter on its base model) on a task: a built-in name or a YAML spec.

    Built-ins: squad-seed (alias squad: SQuAD v1.1 under the seed protocol, the packaged 54-paragraph
    article by default) and math-contest (alias math: the contest's arithmetic, judged the seed's way).
    Greedy decoding in batches; prints the task's metrics; writes OUT/predictions.jsonl (one scored
    record per sample, appended as batches finish) and OUT/metrics.json. Re-run the same command after
    an interruption to resume; resuming over other settings or other data is refused.

    Args:
        task: a built-in task name (squad-seed, math-contest; squad, math) or a task spec YAML file.
        model: a Hugging Face model directory or a GGUF file; default: the adapter's base model, else the
            embedded SmolLM2-135M-Instruct.
        adapter: a PEFT adapter directory (keeptune train writes them): evaluated on its base model without
            merging, in the prompt and sequence format it was trained with (for a task with adapter_prompt).
        data: the task's samples instead of the spec's: a file or an http(s) address (downloaded once).
        limit: evaluate only the first N samples (after --start).
        start: skip the first N samples (with --lm-eval, documents of each leaf task), then take --limit: a part
            of a file that does not overlap another part.
        prompt: a named prompt (squad-seed, math, alpaca, none) or a format string over the sample's fields.
        format: the sequence format the prompt is read in: plain, vicuna or chat.
        extraction: the math judge's answer extraction: seed (first match), final (last match) or last (last number).
        max_new_tokens: tokens generated at most (the spec's by default: 20 for both built-ins, as the seed).
        min_new_tokens: forbid EOS before this many tokens.
        add_bos: prepend the BOS token (default: the spec's; the seed protocol adds none).
        batch_size: rows decoded together (more is faster, needs more memory); default 64, and with --lm-eval the
            rows lm-eval scores together: 8, 1 for a perplexity (rolling windows as long as the model's context).
        prefill_batch_size: prompts prefilled together (small keeps padding low).
        skip_bad: leave out (and count) malformed records and samples whose prompt does not fit the model's
            context, instead of stopping at the first with an error naming its file and line.
        confidence: the level of each scalar's bootstrap confidence interval (metrics.json's intervals) and of
            the sample-size test.
        sample_size: also report, with this model as the base, the smallest relative drop of each gated scalar
            that a gate on these samples detects (80% power) and the samples needed for a 5% and a 10% drop.
        out: output directory; default: runs/eval/TASK-MODEL[-ADAPTER].
        overwrite: write into OUT even when it exists and keeptune did not make it (nothing there is deleted).
        dtype: float32, bfloat16 or float16; auto: float32 on CPU, bfloat16 on GPU.
        device: cpu, cuda, cuda:N; auto: CUDA when available.
        lm_eval: TASK is an lm-evaluation-harness task: a registered name (arc_easy, hellaswag, ...), keeptune's
            tasks for local copies (arc_easy_local, boolq_local, mmlu_local, wikitext_local, with --data), a task
            on --include, or a task YAML file. Scored by lm-eval on the loaded model (docs/lm-eval.md).
        include: with --lm-eval, folders or files of task YAMLs to search besides lm-eval's own.
        num_fewshot: with --lm-eval, few-shot examples per prompt (default: the task's, 0 when it has none).
    """
    for name in ("limit", "batch_size", "prefill_batch_size", "max_new_tokens"):
        _positive(name, locals()[name])
    note_progress(resume="run the same command again to resume")
    if start is not None and start < 0:
        raise DataError(f"--start is {start}; it must be 0 or more")
    if not 0 < confidence < 1:
        raise DataError(f"--confidence is {confidence}; it must be between 0 and 1 (0.95 for 95%)")
    if lm_eval:
        spec_only = {"prompt": prompt, "format": format, "extraction": extraction, "max_new_tokens": max_new_tokens,
                     "min_new_tokens": min_new_tokens, "add_bos": add_bos}
        unused = [name for name, value in spec_only.items() if value is not None]
        if unused:
            raise DataError(f"--{unused[0].replace('_', '-')} applies to keeptune's task specs; an lm-eval task "
                            "sets its own prompts (give a task YAML with --include to change them)")
        return eval_lm_eval(task, model, adapter, data, limit, start or 0, batch_size, include, num_fewshot,
                            confidence, sample_size, out, overwrite, dtype, device)
    batch_size = 64 if batch_size is None else batch_size
    info = adapter_info(adapter) if adapter is not None else {}
    changes: dict[str, Any] = {key: value for key, value in (
        ("data.limit", limit), ("data.start", start), ("prompt", prompt), ("format", format), ("add_bos", add_bos),
        ("generation.max_new_tokens", max_new_tokens), ("generation.min_new_tokens", min_new_tokens))
        if value is not None}
    if extraction is not None:
        changes["extraction"] = extraction
    if data is not None:
        changes["data.path"] = given_path(str(data))
    if info:  # the spec says whether an adapter's own prompt and format apply to it
        changes = as_trained(changes, info, load_spec(task).spec.adapter_prompt)
    compiled = load_spec(task, changes)
    spec = compiled.spec
    path = resolve_data_path(spec)
    samples = load_task_samples(compiled, path, skip_bad)  # every record checked before the model loads
    out, inputs = out or default_out(spec.name, model, adapter), (path, model, adapter)
    check_output_dir(out, "eval", overwrite, inputs=inputs, outputs=EVAL_OUTPUTS)  # before minutes of loading
    net, tokenizer, identity = load_with_adapter(model, adapter, info, dtype, device)
    spec_task = SpecTask(compiled, samples, tokenizer, confidence=confidence, sample_size=sample_size)
    claim_output_dir(out, "eval", overwrite, inputs=inputs, outputs=EVAL_OUTPUTS)
    print(f"task {spec.name} ({spec.source}): {len(samples)} samples from {path}")
    return evaluate(spec_task, net, tokenizer, out, spec_task.settings(batch_size, prefill_batch_size),
                    identity, add_bos=spec_task.add_bos, skip_bad=skip_bad)


def eval_lm_eval(task: str, model, adapter, data, limit, start: int, batch_size, include, num_fewshot,
                 confidence: float, sample_size: bool, out, overwrite: bool, dtype: str, device: str) -> dict:
    """`keeptune eval TASK --lm-eval`: the task's documents read and its requests built before the model loads."""
    if num_fewshot is not None and num_fewshot < 0:
        raise DataError(f"--num-fewshot is {num_fewshot}; it must be 0 or more")
    info = adapter_info(adapter) if adapter is not None else {}
    data_path = given_path(str(data)) if data is not None else None
    lm_task = lmeval.load(task, include=include, data=data_path, limit=limit, start=start,
                          num_fewshot=num_fewshot, batch_size=batch_size, confidence=confidence,
                          sample_size=sample_size, where="--lm-eval")
    out, inputs = out or default_out(lm_task.name, model, adapter), (data_path, model, adapter)
    check_output_dir(out, "eval", overwrite, inputs=inputs, outputs=EVAL_OUTPUTS)
    net, tokenizer, identity = load_with_adapter(model, adapter, info, dtype, device)
    claim_output_dir(out, "eval", overwrite, inputs=inputs, outputs=EVAL_OUTPUTS)
    print(f"lm-eval task {lm_task.task}: {len(lm_task.documents)} documents" + (f" from {data_path}" if data_path
                                                                                 else ""))
    return lmeval.evaluate(lm_task, net, tokenizer, out, identity)
