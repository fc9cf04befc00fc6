"""The original task: SQuAD v1.1 under the seed protocol (SPEC section 1).

Prompt byte for byte as the seed; each generation is cut to its first line
after stripping; scored with the seed's EmF1 against the first answer (round-
tripped through the tokenizer) and, beside it, the official SQuAD v1.1 metric
(max over all gold answers).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keeptune.data.squad import SquadSample
from keeptune.evaluate.metrics import emf1, squad_v1

SEED_PROMPT = ("Read the passage and answer the question below.\n\n### Instruction:\n{passage}"
               "\n\n### Input:\n{query}\n\n### Response:")


def postprocess(raw: str) -> str:
    """The seed's answer: strip surrounding whitespace, keep the text before the first newline."""
    return raw.strip().split("\n", 1)[0]


def roundtrip_label(tokenizer, text: str) -> str:
    """The seed compared against the label encoded (no special tokens) and decoded again."""
    return tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids)


@dataclass
class SquadTask:
    samples: Sequence[SquadSample]
    tokenizer: object
    name: str = "squad"

    def prompt(self, sample: SquadSample) -> str:
        return SEED_PROMPT.format(passage=sample.passage, query=sample.question)

    def score(self, sample: SquadSample, raw: str) -> dict:
        label, prediction = roundtrip_label(self.tokenizer, sample.label), postprocess(raw)
        return {
            "id": sample.id, "question": sample.question, "label": label, "answers": list(sample.answers),
            "raw": raw, "prediction": prediction,
            "f1": emf1.f1_score(prediction, label), "em": emf1.exact_match(prediction, label),
            "squad_f1": squad_v1.metric_max_over_ground_truths(squad_v1.f1_score, prediction, sample.answers),
            "squad_em": float(squad_v1.metric_max_over_ground_truths(
                squad_v1.exact_match_score, prediction, sample.answers)),
        }

    def aggregate(self, records: list[dict]) -> dict:
        predictions = [r["prediction"] for r in records]
        return {
            "protocol": "seed",
            "emf1": dict(emf1.emf1(predictions, [r["label"] for r in records])),
            "squad_v1": dict(squad_v1.squad_v1(predictions, [r["answers"] for r in records])),
        }

    def summary(self, metrics: dict) -> list[str]:
        official = metrics["squad_v1"]
        return [emf1.result_line(metrics["emf1"]),
                f"SQuAD v1.1 official: exact_match {official['exact_match']}, f1 {official['f1']}"]
