"""`keeptune eval ...`: one typed function per command."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

from keeptune.data.prompts import FORMATS, sequence_bos
from keeptune.data.shared import MATH_SAMPLE, shared_file
from keeptune.data.squad import load_samples, resolve_data
from keeptune.evaluate.engine import evaluate
from keeptune.evaluate.generation import GenerationSettings
from keeptune.evaluate.tasks.math import MathTask, load_math_samples
from keeptune.evaluate.tasks.squad import SquadTask
from keeptune.io import DataError
from keeptune.model.load import load_model, model_name


def default_out(task: str, model: Optional[str]) -> Path:
    """runs/eval/TASK-MODEL, so re-running the same command resumes it."""
    slug = "smollm2-135m-instruct" if model is None else Path(model).name or "model"
    return Path("runs") / "eval" / f"{task}-{re.sub(r'[^A-Za-z0-9._-]+', '-', slug).lower()}"


def squad(
    model: Optional[str] = None,
    data: Optional[str] = None,
    limit: Optional[int] = None,
    batch_size: int = 64,
    prefill_batch_size: int = 8,
    max_new_tokens: int = 20,
    min_new_tokens: Optional[int] = None,
    add_bos: bool = False,
    out: Optional[Path] = None,
    dtype: str = "auto",
    device: str = "auto",
) -> None:
    """Evaluate a model on SQuAD v1.1 reading comprehension under the seed protocol.

    One sample per paragraph (its first question and first answer), the seed's
    prompt, greedy decoding; prints the seed's EmF1 line and the official SQuAD
    v1.1 scores, writes OUT/predictions.jsonl and OUT/metrics.json. Re-run the
    same command after an interruption to resume.

    Args:
        model: a Hugging Face model directory or a GGUF file; default: the embedded SmolLM2-135M-Instruct.
        data: SQuAD v1.1 JSON file or its http(s) address (downloaded once); default: ../shared's 54-paragraph file.
        limit: evaluate only the first N samples.
        batch_size: rows decoded together (more is faster, needs more memory).
        prefill_batch_size: prompts prefilled together (small keeps padding low).
        max_new_tokens: tokens generated at most (the seed: 20).
        min_new_tokens: forbid EOS before this many tokens (the seed: unset).
        add_bos: prepend the BOS token (the seed protocol does not).
        out: output directory; default: runs/eval/squad-MODEL.
        dtype: float32, bfloat16 or float16; auto: float32 on CPU, bfloat16 on GPU.
        device: cpu, cuda, cuda:N; auto: CUDA when available.
    """
    path = resolve_data(data)
    samples = load_samples(path)[:limit]
    run_task(lambda tokenizer: SquadTask(samples, tokenizer), "squad", model, path, "seed", out, dtype, device,
             GenerationSettings(max_new_tokens, min_new_tokens, batch_size, prefill_batch_size), add_bos)


def math(
    model: Optional[str] = None,
    data: Optional[Path] = None,
    limit: Optional[int] = None,
    prompt: str = "none",
    format: str = "plain",
    extraction: str = "seed",
    batch_size: int = 64,
    prefill_batch_size: int = 8,
    max_new_tokens: int = 20,
    min_new_tokens: Optional[int] = None,
    add_bos: bool = False,
    out: Optional[Path] = None,
    dtype: str = "auto",
    device: str = "auto",
) -> None:
    """Evaluate a model on the arithmetic task, judged the seed's way.

    Greedy decoding of each (deduplicated) problem in the chosen prompt; prints
    accuracy at EPS 1e-8, 1e-4 and 1e-2 for the seed judge (np.isclose) and a
    strict absolute judge, and the per-template [correct, total] table; writes
    OUT/predictions.jsonl and OUT/metrics.json. Re-run to resume.

    Args:
        model: a Hugging Face model directory or a GGUF file; default: the embedded SmolLM2-135M-Instruct.
        data: JSON lines of {"problem", "solution"} (the training file's format); default: ../shared's 996-line sample.
        limit: evaluate only the first N problems.
        prompt: none (the raw problem, as the seed's script), math or alpaca.
        format: the training sequence format the prompt is read in: plain (as it is), vicuna (the seed's
            MindFormers wrapper, after BOS) or chat (the model's chat template); use the adapter's own.
        extraction: seed (first match of the template's answer shape), final (last match) or last (last number).
        batch_size: rows decoded together.
        prefill_batch_size: prompts prefilled together.
        max_new_tokens: tokens generated at most (the seed: 20; more for worked-step answers).
        min_new_tokens: forbid EOS before this many tokens.
        add_bos: prepend the BOS token.
        out: output directory; default: runs/eval/math-MODEL.
        dtype: float32, bfloat16 or float16; auto: float32 on CPU, bfloat16 on GPU.
        device: cpu, cuda, cuda:N; auto: CUDA when available.
    """
    path = Path(data) if data is not None else shared_file(
        MATH_SAMPLE, "Pass --data with a JSON-lines file of problem/solution pairs (e.g. from keeptune data generate).")
    samples = load_math_samples(path)[:limit]
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    run_task(lambda tokenizer: MathTask(samples, prompt, extraction, format, tokenizer),
             "math", model, path, prompt if format == "plain" else f"{prompt} in {format}", out, dtype, device,
             GenerationSettings(max_new_tokens, min_new_tokens, batch_size, prefill_batch_size),
             add_bos or sequence_bos(format))


def run_task(make_task: Callable, name: str, model: Optional[str], data: Path, prompt: str, out: Optional[Path],
             dtype: str, device: str, settings: GenerationSettings, add_bos: bool) -> dict:
    """Load the model, build the task, evaluate into OUT (default runs/eval/NAME-MODEL)."""
    net, tokenizer = load_model(model, dtype=dtype, device=device)
    identity = {"model": model_name(model), "data": str(data), "dtype": str(net.dtype).removeprefix("torch."),
                "prompt": prompt}
    return evaluate(make_task(tokenizer), net, tokenizer, out or default_out(name, model), settings, identity,
                    add_bos=add_bos)
