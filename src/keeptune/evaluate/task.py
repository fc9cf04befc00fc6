"""The task the evaluation engine runs: a compiled spec over its samples, rendering each sample's
prompt in the spec's sequence format, scoring a generation through the spec's steps and metrics,
aggregating the records, giving each scalar its confidence interval (keeptune.evaluate.intervals), and
describing what produced the predictions (eval.json's identity)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from keeptune.core import stats
from keeptune.data.prompts import sequence_bos, sequence_prompt
from keeptune.evaluate import intervals
from keeptune.evaluate import steps as steps_module
from keeptune.evaluate.generation import GenerationSettings
from keeptune.evaluate.metrics import registry
from keeptune.evaluate.samples import Sample, needed_fields
from keeptune.evaluate.spec import Compiled, TaskSpec, render_prompt


@dataclass
class SpecTask:
    """A compiled spec over its samples: what `keeptune.evaluate.engine.evaluate` runs. `confidence`: the
    level of every scalar's interval (and of the sample-size test); `sample_size`: also estimate the samples
    a gate on the spec's gated scalars needs, with the evaluated model as the base. Neither changes a
    prediction, so neither is part of `describe`."""

    compiled: Compiled
    samples: list[Sample]
    tokenizer: Any = None
    confidence: float = stats.LEVEL
    sample_size: bool = False

    @property
    def spec(self) -> TaskSpec:
        return self.compiled.spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> int:
        return self.spec.metadata.version

    @property
    def add_bos(self) -> bool:
        return sequence_bos(self.spec.format, self.spec.add_bos)

    def settings(self, batch_size: int = 64, prefill_batch_size: int = 8) -> GenerationSettings:
        """The spec's greedy decoding, in batches of this size."""
        generation = self.spec.generation
        return GenerationSettings(generation.max_new_tokens, generation.min_new_tokens, batch_size, prefill_batch_size)

    def subset(self, n: int) -> "SpecTask":
        return dataclasses.replace(self, samples=self.samples[:n])

    def prompt(self, sample: Sample) -> str:
        return sequence_prompt(render_prompt(self.spec, sample.fields), self.spec.format, self.tokenizer)

    def label(self, sample: Sample) -> str:
        label = sample.fields[self.spec.reference]
        if self.spec.roundtrip_reference:  # the seed compared with the label encoded and decoded again
            label = self.tokenizer.decode(self.tokenizer(label, add_special_tokens=False).input_ids)
        return label

    def content_hash(self) -> str:
        """Of every sample's id and the fields the task reads (prompt, references, metrics' own): resuming
        keys on what is evaluated, not on a file's path. The prompt template and format are in `describe`."""
        fields = needed_fields(self.compiled)
        digest = hashlib.sha256()
        for s in self.samples:
            digest.update(json.dumps([s.id, [s.fields[f] for f in fields]], ensure_ascii=False).encode())
        return digest.hexdigest()

    def score(self, sample: Sample, raw: str) -> dict:
        where = f"sample {sample.id} ({sample.where})"  # named by a step that fails (a regex that never ends)
        record = {"id": sample.id, "raw": raw,
                  "prediction": steps_module.run_steps(self.compiled.steps, raw, sample.fields, where),
                  "label": self.label(sample)}
        if self.spec.references:
            record["references"] = list(sample.fields[self.spec.references])
        record["scores"] = {m.name: m.score(record, sample.fields) for m in self.compiled.metrics}
        return record

    def aggregate(self, records: list[dict]) -> dict:
        scores, details, breakdowns = {}, {}, {}
        for metric in self.compiled.metrics:
            result = metric.aggregate(records)
            scores |= {f"{metric.name}.{k}": v for k, v in result.scores.items()}
            details[metric.name] = result.details
            breakdowns |= {f"{metric.name}.{k}": v for k, v in result.breakdowns.items()}
        return {"scores": scores, "metrics": details, "breakdowns": breakdowns}

    def gated(self) -> list[str]:
        """The scalars a retention gate checks: the spec's `gate`, else every scalar."""
        return list(self.spec.gate) or self.compiled.scalars()

    def uncertainty(self, records: list[dict]) -> dict:
        """metrics.json's `intervals` and `bootstrap` (and `sample_size` when asked) from the records, in
        dataset order (keeptune.evaluate.intervals)."""
        return intervals.uncertainty(self.compiled.metrics, records, self.confidence,
                                     self.gated() if self.sample_size else None)

    def interval_lines(self, metrics: dict) -> list[str]:
        """One line per gated and accuracy scalar (every scalar when the spec names none), with its interval."""
        shown = list(dict.fromkeys([*self.spec.gate, *([self.spec.accuracy] if self.spec.accuracy else [])]))
        units = self.compiled.units()
        return [intervals.interval_line(s, metrics["scores"][s], metrics["intervals"][s], units[s],
                                        metrics["total_count"]) for s in shown or self.compiled.scalars()]

    def summary(self, metrics: dict) -> list[str]:
        lines = []
        for metric in self.compiled.metrics:
            prefix = metric.name + "."
            result = registry.Aggregate(
                {k[len(prefix):]: v for k, v in metrics["scores"].items() if k.startswith(prefix)},
                metrics["metrics"][metric.name],
                {k[len(prefix):]: v for k, v in metrics["breakdowns"].items() if k.startswith(prefix)})
            lines += metric.summary(result, metrics["total_count"])
        if "intervals" in metrics:
            lines += self.interval_lines(metrics)
        if "sample_size" in metrics:
            lines += intervals.sample_size_lines(metrics["sample_size"])
        return lines

    def describe(self) -> dict:
        """What produced the predictions, for OUT/eval.json (resuming with other settings is refused) and
        OUT/metrics.json."""
        spec = self.spec
        return {"task": spec.name, "task_version": self.version, "prompt": spec.prompt, "format": spec.format,
                "postprocess": json.dumps(list(spec.postprocess)), "metrics": json.dumps(list(spec.metrics)),
                "reference": spec.reference, "samples_sha256": self.content_hash()}
