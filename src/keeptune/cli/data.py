"""`keeptune data generate|build|stats`: the math data commands, one typed function each.

Output files are JSON lines written atomically (keeptune.core.io). `build --prompt chat` renders
prompts with a model's chat template, so these commands sit above the model layer; the data work
itself is keeptune.data.math's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from keeptune.core.errors import ModelLoadError
from keeptune.core.io import write_jsonl
from keeptune.data.math.build import print_counts, progress, write_training_set
from keeptune.data.math.generate import generate_pairs
from keeptune.data.math.stats import count_templates
from keeptune.data.prompts import CHAT
from keeptune.model.load import resolve_model_dir


def generate(
    n: int = 1000,
    seed: int = 0,
    templates: Optional[list[str]] = None,
    mix: str = "real",
    out: Path = Path("out/math/generated.jsonl"),
) -> Path:
    """Generate template problems in the format of the real ``train.json``.

    Args:
        n: Number of lines.
        seed: Random seed; the same arguments give the same file.
        templates: Template names to draw from (default: all 11).
        mix: Template mix: ``real`` (the real file's distinct counts) or ``uniform``.
        out: Output JSON-lines file of ``{"problem", "solution"}`` objects.
    """
    pairs = (pair._asdict() for _, pair in generate_pairs(n, seed, templates, mix))
    count = write_jsonl(out, progress(pairs, "generate", n))
    print(f"keeptune: wrote {count:,} generated problems to {out}")
    return out


def chat_renderer(model: Optional[str]):
    """The problem as the user turn of the model's chat template, ready for the answer."""
    from transformers import AutoTokenizer


    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(model))
    if not tokenizer.chat_template:
        raise ModelLoadError(f"model {model or 'the default'} has no chat template; use --prompt math, alpaca or none")
    return lambda problem: tokenizer.apply_chat_template(
        [{"role": "user", "content": problem}], tokenize=False, add_generation_prompt=True)


def build(
    source: Optional[Path] = None,
    strategy: str = "uniform",
    n: Optional[int] = None,
    cot: bool = False,
    prompt: str = "math",
    seed: int = 0,
    out: Path = Path("out/math/train-conversations.jsonl"),
    pool: int = 200_000,
    mix: Optional[str] = None,
    weights: Optional[dict[str, float]] = None,
    counts: Optional[dict[str, int]] = None,
    dedup: bool = True,
    skip_bad: bool = False,
    model: Optional[str] = None,
) -> Path:
    """Build a training set of conversation records (one JSON object per line).

    Args:
        source: The real ``train.json`` (JSON lines problem/solution); None draws
            ``pool`` generated problems instead.
        strategy: ``real``, ``uniform``, ``easy``, ``arithmetic`` or ``custom``.
        n: At most this many records, picked at random; None keeps all selected.
        cot: Worked-step answers that end with the exact reference solution.
        prompt: Prompt template: ``alpaca``, ``math``, ``none``, or ``chat``: the
            chat template of ``model``'s tokenizer (the problem as the user turn).
        seed: Random seed of the picks (and of the generated pool).
        out: Output JSON-lines file.
        pool: Generated problems to draw from when ``source`` is None.
        mix: Template mix of the generated pool; default ``uniform`` for the
            ``uniform`` and ``custom`` strategies, ``real`` otherwise.
        weights: ``custom`` only: template -> weight splitting ``n``.
        counts: ``custom`` only: template -> number of records.
        dedup: Drop repeated (problem, solution) pairs before picking.
        skip_bad: Count and pass over malformed source lines instead of failing.
        model: With ``prompt chat``: the model whose chat template renders the
            prompt (directory or GGUF; default: the embedded SmolLM2).
    """
    chat_template = chat_renderer(model) if prompt == CHAT else None
    return write_training_set(source, strategy, n, cot, prompt, seed, out, pool, mix, weights, counts, dedup,
                              skip_bad, chat_template)


def stats(file: Path, dedup: bool = False, skip_bad: bool = False) -> dict[str, int]:
    """Count the records of a math data file per template.

    Args:
        file: JSON lines of raw problem/solution pairs or conversation records.
        dedup: Count each distinct (problem, answer) pair once.
        skip_bad: Count and pass over malformed records instead of failing at the first.
    """
    counts = count_templates(file, dedup=dedup, skip_bad=skip_bad)
    print(f"keeptune: {file}")
    print_counts(counts)
    return counts
