"""Training sets for the new task: selection strategies over a stream of pairs,
optional worked-step answers, a prompt template, and conversation records.

Strategies (the contest's):

- ``real``: the stream as it is (English problems included);
- ``uniform``: the seed's "uniform pick": 5,000 arithmetic problems, 1,500 of
  every other template, all of fraction and mass (17,145 from the real file);
- ``easy``: Chinese templates without power, root, fraction, function and
  without the multiplications of the arithmetic template;
- ``arithmetic``: the arithmetic template only;
- ``custom``: per-template ``counts``, or ``weights`` that split ``n``.

``n`` caps the result at n records drawn at random (uniformly, with ``seed``)
from what the strategy selects; without it the selection is complete. Picks
within a template use reservoir sampling, so a stream is read once and only
the picked pairs are held in memory. Records keep the stream's order (training
code shuffles). Each record is the seed's conversation object plus the
template name (``template``) for per-template evaluation; files hold one record
per line (JSONL).
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Optional

from tqdm import tqdm

from keeptune.core.io import write_jsonl
from keeptune.data.math.cot import worked_answer
from keeptune.data.math.generate import generate_pairs
from keeptune.data.math.loader import Pair, PairReader
from keeptune.data.math.loader import dedup as dedup_pairs
from keeptune.data.math.stats import count_templates
from keeptune.data.math.templates import TEMPLATE_NAMES, classify, template
from keeptune.data.prompts import format_prompt

STRATEGIES: tuple[str, ...] = ("real", "uniform", "easy", "arithmetic", "custom")
EASY_DROPPED = frozenset({"power", "root", "fraction", "function"})
# None = every pair of that template.
UNIFORM_COUNTS: dict[str, Optional[int]] = {
    name: {"arithmetic": 5000, "fraction": None, "mass": None}.get(name, 1500)
    for name in TEMPLATE_NAMES
}

Item = tuple[int, str, Pair]  # (position in the stream, template name, pair)


def eligible(strategy: str, name: str, problem: str) -> bool:
    """Whether a pair of template ``name`` may be picked by a filter strategy."""
    if strategy == "real":
        return True
    if strategy == "arithmetic":
        return name == "arithmetic"
    if strategy == "easy":
        multiplication = name == "arithmetic" and " * " in problem
        return name in TEMPLATE_NAMES and name not in EASY_DROPPED and not multiplication
    return True  # quota strategies: the quotas decide


def split_counts(n: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``n`` over templates proportionally to ``weights`` (largest remainder)."""
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"weights must be non-negative with a positive sum: {dict(weights)}")
    raw = {name: n * w / total for name, w in weights.items()}
    counts = {name: math.floor(share) for name, share in raw.items()}
    by_remainder = sorted(raw, key=lambda name: raw[name] - counts[name], reverse=True)
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    return counts


def quotas(
    strategy: str,
    n: Optional[int] = None,
    weights: Optional[Mapping[str, float]] = None,
    counts: Optional[Mapping[str, int]] = None,
) -> Optional[dict[str, Optional[int]]]:
    """Template -> how many to pick (None: all) for quota strategies; None for filters."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy == "uniform":
        return dict(UNIFORM_COUNTS)
    if strategy != "custom":
        return None
    if (weights is None) == (counts is None):
        raise ValueError("strategy 'custom' takes exactly one of weights or counts")
    if weights is not None:
        if n is None:
            raise ValueError("custom weights need n, the total to split")
        counts = split_counts(n, weights)
    assert counts is not None
    return {template(name).name: int(count) for name, count in counts.items()}


class Reservoir:
    """A uniform random sample of ``size`` items from a stream (all when size is None)."""

    def __init__(self, size: Optional[int], rng: random.Random):
        self.size, self.rng, self.seen, self.items = size, rng, 0, []

    def offer(self, item: Item) -> None:
        self.seen += 1
        if self.size is None or len(self.items) < self.size:
            self.items.append(item)
            return
        slot = self.rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = item


def label(pairs: Iterable[Pair]) -> Iterator[Item]:
    """Number and classify the pairs of a stream."""
    for index, pair in enumerate(pairs):
        yield index, classify(pair.problem), pair


def select(
    items: Iterable[Item],
    strategy: str = "real",
    n: Optional[int] = None,
    seed: int = 0,
    weights: Optional[Mapping[str, float]] = None,
    counts: Optional[Mapping[str, int]] = None,
) -> Iterator[Item]:
    """The items a strategy picks, in stream order (see the module docstring)."""
    per_template = quotas(strategy, n, weights, counts)
    kept = (item for item in items if eligible(strategy, item[1], item[2].problem))
    if per_template is None and n is None:
        yield from kept
        return
    rng = random.Random(seed)
    pools: dict[str, Reservoir] = {}
    for item in kept:
        key = "*" if per_template is None else item[1]
        if per_template is not None and per_template.get(key, 0) == 0:
            continue
        if key not in pools:
            pools[key] = Reservoir(n if per_template is None else per_template[key], rng)
        pools[key].offer(item)
    picked = [item for pool in pools.values() for item in pool.items]
    if n is not None and len(picked) > n:
        picked = rng.sample(picked, n)
    yield from sorted(picked, key=lambda item: item[0])


def conversation(number: int, prompt_text: str, answer: str, name: str) -> dict:
    """One training record: the seed's conversation object ({"id", "conversations": [human, gpt]}) plus the template name."""
    return {
        "id": str(number),
        "conversations": [
            {"from": "human", "value": prompt_text},
            {"from": "gpt", "value": answer},
        ],
        "template": name,
    }


def build_records(
    pairs: Iterable[Pair],
    strategy: str = "uniform",
    n: Optional[int] = None,
    cot: bool = False,
    prompt: str = "math",
    seed: int = 0,
    weights: Optional[Mapping[str, float]] = None,
    counts: Optional[Mapping[str, int]] = None,
    dedup: bool = True,
    chat_template: Optional[Callable[[str], str]] = None,
) -> Iterator[dict]:
    """Conversation records of a training set, ids "1", "2", ... in order.

    Args:
        pairs: Source pairs (a `PairReader` or generated pairs).
        strategy: One of `STRATEGIES`.
        n: At most this many records (random pick); None for all selected.
        cot: Worked-step answers ending with the exact reference solution.
        prompt: ``alpaca``, ``math``, ``none`` or ``chat`` (needs ``chat_template``).
        seed: Random seed of the picks.
        weights: ``custom`` only: template -> weight splitting ``n``.
        counts: ``custom`` only: template -> count.
        dedup: Drop repeated (problem, solution) pairs first.
        chat_template: Callable rendering a problem with the model's chat template.
    """
    stream = dedup_pairs(pairs) if dedup else pairs
    chosen = select(label(stream), strategy, n, seed, weights, counts)
    for number, (_, name, pair) in enumerate(chosen, start=1):
        answer = worked_answer(pair.problem, pair.solution) if cot else pair.solution
        text = format_prompt(prompt, pair.problem, chat_template)
        yield conversation(number, text, answer, name)


def progress(items: Iterable, desc: str, total: Optional[int] = None) -> Iterator:
    return iter(tqdm(items, desc=desc, total=total, unit=" lines", mininterval=1.0, leave=False))


def print_counts(counts: dict[str, int]) -> None:
    width = max(len(name) for name in counts)
    for name, count in counts.items():
        if count:
            print(f"  {name:<{width}} {count:>9,}")
    print(f"  {'total':<{width}} {sum(counts.values()):>9,}")

def write_training_set(source: Optional[Path], strategy: str, n: Optional[int], cot: bool, prompt: str, seed: int,
                       out: Path, pool: int = 200_000, mix: Optional[str] = None,
                       weights: Optional[dict[str, float]] = None, counts: Optional[dict[str, int]] = None,
                       dedup: bool = True, skip_bad: bool = False, chat_template=None) -> Path:
    """`keeptune data build`'s work: conversation records of `source` (None: a generated pool) written to OUT,
    with their count per template printed. `chat_template`: the renderer of prompt `chat`."""
    format_prompt(prompt, "", chat_template)  # fail before reading a large file
    reader: Optional[PairReader] = None
    if source is None:
        mix = mix or ("uniform" if strategy in ("uniform", "custom") else "real")
        pairs: Iterable[Pair] = (pair for _, pair in generate_pairs(pool, seed, None, mix))
    else:
        pairs = reader = PairReader(source, skip_bad=skip_bad)
    records = build_records(progress(pairs, "read"), strategy, n, cot, prompt, seed,
                            weights=weights, counts=counts, dedup=dedup, chat_template=chat_template)
    count = write_jsonl(out, records)
    skipped = f" ({reader.skipped} malformed lines skipped)" if reader and reader.skipped else ""
    print(f"keeptune: wrote {count:,} {strategy} records to {out}{skipped}")
    print_counts(count_templates(out))
    return out
