"""`keeptune eval ...`: one typed function per command."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from keeptune.data.squad import load_samples, resolve_data
from keeptune.evaluate.engine import evaluate
from keeptune.evaluate.generation import GenerationSettings
from keeptune.evaluate.tasks.squad import SquadTask
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
    net, tokenizer = load_model(model, dtype=dtype, device=device)
    settings = GenerationSettings(max_new_tokens, min_new_tokens, batch_size, prefill_batch_size)
    identity = {"model": model_name(model), "data": str(path), "dtype": str(net.dtype).removeprefix("torch."),
                "prompt": "seed"}
    evaluate(SquadTask(samples, tokenizer), net, tokenizer, out or default_out("squad", model),
             settings, identity, add_bos=add_bos)
