"""Evaluation folders written by hand, as keeptune's engine leaves them (eval.json, predictions.jsonl in
completion order, metrics.json), scored by keeptune's own metrics: what the uncertainty code, `keeptune compare`
and the sweep's comparison read, without a model. Shared by tests/experiment, tests/report and tests/sweep."""
from __future__ import annotations

import json
import random
from pathlib import Path

from keeptune.evaluate import intervals
from keeptune.evaluate.metrics.registry import make_metric

METRICS = ["emf1", "exact_match"]


def record(sample_id: str, prediction: str, label: str) -> dict:
    """One scored record of a SQuAD-like sample."""
    out = {"id": sample_id, "raw": prediction, "prediction": prediction, "label": label}
    out["scores"] = {m.name: m.score(out, {}) for m in map(make_metric, METRICS)}
    return out


def write_evaluation(folder: Path, task: str, records: list[dict], samples: str = "same", shuffle: int = 1) -> Path:
    """FOLDER/eval.json (samples_sha256 = `samples`), predictions.jsonl (the records shuffled with seed `shuffle`,
    as completion order would) and metrics.json (scores and intervals over the records in the order given)."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = [make_metric(m) for m in METRICS]
    identity = {"task": task, "metrics": json.dumps(METRICS), "samples_sha256": samples}
    (folder / "eval.json").write_text(json.dumps(identity), encoding="utf-8")
    order = list(records)
    random.Random(shuffle).shuffle(order)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in order), encoding="utf-8")
    scores = {}
    for metric in metrics:
        scores |= {f"{metric.name}.{k}": v for k, v in metric.aggregate(records).scores.items()}
    content = {**identity, "total_count": len(records), "scores": scores, **intervals.uncertainty(metrics, records)}
    (folder / "metrics.json").write_text(json.dumps(content), encoding="utf-8")
    return folder


def answers(right: list[bool], prefix: str = "s") -> list[dict]:
    """Records whose prediction is the label where `right`, a wrong answer elsewhere (ids s00, s01, ...)."""
    return [record(f"{prefix}{i:02d}", f"answer {i}" if ok else "something else", f"answer {i}")
            for i, ok in enumerate(right)]
