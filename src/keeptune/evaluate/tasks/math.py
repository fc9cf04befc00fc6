"""The new task: templated arithmetic, judged the seed's way (SPEC section 2).

Samples are problem/solution lines (the training file's format, which the
seed's test set shares). The prompt is one of `keeptune.data.prompts`; the
seed's official script fed the raw problem (`none`). Each generation is judged
by `keeptune.evaluate.metrics.math_judge`: NumPy `isclose` (the seed judge) and
an absolute-only strict judge, at EPS 1e-8, 1e-4 and 1e-2, with a per-template
[correct, total] table.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keeptune.data.math.loader import PairReader
from keeptune.data.prompts import format_prompt, sequence_prompt
from keeptune.evaluate.metrics import math_judge
from keeptune.io import DataError


@dataclass(frozen=True)
class MathSample:
    id: str
    problem: str
    solution: str


def load_math_samples(path: Path, dedup: bool = True, skip_bad: bool = False) -> list[MathSample]:
    """Problem/solution lines as samples, ids numbered in file order after dedup."""
    reader = PairReader(path, dedup=dedup, skip_bad=skip_bad)
    samples = [MathSample(f"m{i}", pair.problem, pair.solution) for i, pair in enumerate(reader)]
    if not samples:
        raise DataError(f"{path}: no problem/solution lines")
    return samples


@dataclass
class MathTask:
    samples: Sequence[MathSample]
    prompt_name: str = "none"
    extraction: str = "seed"
    format: str = "plain"
    """The training sequence format the prompt is read in (keeptune.data.prompts.sequence_prompt)."""
    tokenizer: Any = None
    """Needed by the chat format only (it renders the tokenizer's chat template)."""
    name: str = "math"

    def prompt(self, sample: MathSample) -> str:
        return sequence_prompt(format_prompt(self.prompt_name, sample.problem), self.format, self.tokenizer)

    def score(self, sample: MathSample, raw: str) -> dict:
        verdict = math_judge.judge(sample.problem, raw, sample.solution, extraction=self.extraction)
        return {"id": sample.id, "problem": sample.problem, "solution": sample.solution, "raw": raw, **verdict}

    def aggregate(self, records: list[dict]) -> dict:
        summary = math_judge.aggregate(records)
        tables = {judge: {name: cells[judge] for name, cells in summary["per_template"].items()}
                  for judge in math_judge.JUDGES}
        return {"prompt": self.prompt_name, "extraction": self.extraction,
                "accuracy": summary["accuracy"]["seed"], "accuracy_strict": summary["accuracy"]["strict"],
                "per_template": tables["seed"], "per_template_strict": tables["strict"]}

    def summary(self, metrics: dict) -> list[str]:
        keys = list(metrics["accuracy"])
        lines = [f"math accuracy over {metrics['total_count']} problems (prompt {self.prompt_name}, "
                 f"extraction {self.extraction}); seed judge = np.isclose(ref, pred, atol=EPS), "
                 "strict = |ref - pred| <= EPS",
                 f"{'':14s}" + "".join(f"{'EPS ' + k:>22s}" for k in keys)]
        for label, field in (("seed", "accuracy"), ("strict", "accuracy_strict")):
            lines.append(f"{label:14s}" + "".join(f"{100 * metrics[field][k]:21.2f}%" for k in keys))
        lines.append("per template [correct, total], seed judge:")
        for name, cells in metrics["per_template"].items():
            lines.append(f"  {name:12s}" + "".join(f"{str(cells[k]):>22s}" for k in keys))
        return lines
