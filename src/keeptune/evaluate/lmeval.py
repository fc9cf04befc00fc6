"""lm-evaluation-harness tasks as keeptune tasks: ARC, MMLU, BoolQ, HellaSwag, WikiText perplexity, ... run on
the model keeptune already holds (the base, a checkpoint's adapter swapped in, the model being trained),
through lm-eval's own API, resumable and scored per document like keeptune's own specs.

What is lm-eval's and what is keeptune's:

- lm-eval's: the task (a registered name, or a task YAML from an include path; TaskManager), its documents,
  few-shot contexts and requests (Task.build_all_requests), the model calls (HFLM, wrapping the model object:
  no reload, no subprocess), the filters, the per-document scoring (Task.process_results) and the aggregation
  (lm_eval.api.metrics, keeptune.evaluate.metrics.lm_eval). So a figure is the one `lm_eval --model hf` prints
  for the same model and task (benchmarks/lm_eval_speed.py checks it).
- keeptune's: its engine (keeptune.evaluate.engine) runs the documents in chunks and appends each document's
  record to OUT/predictions.jsonl as its chunk finishes, so a killed evaluation resumes where it stopped, and
  shares them among the ranks under torchrun; OUT/eval.json keys the folder on what produced the records (task,
  version, every request's text, few-shot count, lm-eval's version, the model); metrics.json gains each
  scalar's bootstrap interval; the gate knows which scalars are better lower (perplexities).

HFLM's batch size is given explicitly: built around a model object it defaults to 1, which is what makes
lm-eval's Python path several times slower than its CLI (lm-evaluation-harness issue 3207).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from keeptune.core import stats
from keeptune.core.errors import ConfigError, DataError
from keeptune.evaluate import intervals
from keeptune.evaluate.metrics.lm_eval import LmEvalMetric, json_value
from keeptune.evaluate.metrics.registry import MetricError

BUILTIN = Path(__file__).parent / "lm_eval_tasks"  # keeptune's task YAMLs for local copies (arc_easy_local, ...)
DEFAULT_BATCH = {"loglikelihood_rolling": 1}  # one window of up to the model's context per row; others: 8
OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling", "generate_until")


@dataclass(frozen=True)
class Document:
    """One document of one (leaf) task: what a record is keyed on."""

    id: str  # TASK:DOC_ID, unique over the task's leaves
    task: str  # the leaf task's name
    doc_id: int
    doc: dict = field(repr=False, compare=False)
    where: str = ""


@dataclass
class LmEvalTask:
    """An lm-eval task (or group: its leaves, in order) ready to run: its documents and requests are built when it
    is loaded (`load`), so a bad file or an unknown name fails before any model loads."""

    name: str  # keeptune's name (folders, tables)
    task: str  # lm-eval's name (or the YAML it came from)
    leaves: dict  # leaf name -> lm-eval Task
    documents: list[Document]
    requests: dict[str, list]  # document id -> its Instances, in request order
    metric: LmEvalMetric
    num_fewshot: Optional[int] = None
    limit: Optional[int] = None
    batch_size: Optional[int] = None
    version: Any = None
    start: int = 0
    confidence: float = stats.LEVEL
    sample_size: bool = False
    description: str = ""
    data_path: Optional[str] = None

    # -- what the experiment and the engine read, as of a keeptune spec's task --------------------------------

    @property
    def samples(self) -> list[Document]:
        return self.documents

    @property
    def metrics(self) -> list[LmEvalMetric]:
        return [self.metric]

    def scalars(self) -> list[str]:
        return [f"{self.metric.name}.{s}" for s in self.metric.scalars()]

    def units(self) -> dict[str, str]:
        return {f"{self.metric.name}.{s}": self.metric.scalar_units(s) for s in self.metric.scalars()}

    def lower_is_better(self) -> list[str]:
        return [f"{self.metric.name}.{s}" for s in self.metric.lower_is_better()]

    def gated(self) -> list[str]:
        return self.scalars()

    def subset(self, n: int) -> LmEvalTask:
        kept = self.documents[:n]
        return dataclasses.replace(self, documents=kept, requests={d.id: self.requests[d.id] for d in kept})

    def output_type(self) -> str:
        return next(iter(self.leaves.values())).OUTPUT_TYPE

    def content_hash(self) -> str:
        """Of every document's id and the text of each of its requests (context, continuation, few-shot
        examples, generation settings): resuming keys on what the model reads."""
        digest = hashlib.sha256()
        for d in self.documents:
            arguments = [list(_jsonable(i.arguments)) for i in self.requests[d.id]]
            digest.update(json.dumps([d.id, arguments], ensure_ascii=False, default=str).encode())
        return digest.hexdigest()

    def describe(self) -> dict:
        import lm_eval

        return {"task": self.name, "lm_eval_task": self.task, "task_version": self.version,
                "num_fewshot": self.num_fewshot, "lm_eval": lm_eval.__version__,
                "metrics": json.dumps([self.metric.entry()]), "samples_sha256": self.content_hash()}

    # -- scoring (keeptune.evaluate.engine.ScoringTask) -------------------------------------------------------------

    def scorer(self, model, tokenizer):
        return language_model(model, tokenizer, self.batch_size)

    def cost(self, document: Document) -> int:
        """The characters of its requests: what its log-likelihoods cost, roughly."""
        return sum(len(str(i.arguments)) for i in self.requests[document.id])

    def run_settings(self) -> dict:
        return {"batch_size": self.batch_size}

    def records(self, lm, documents: list[Document]) -> list[dict]:
        with quiet_lm_eval():
            return self._records(lm, documents)

    def _records(self, lm, documents: list[Document]) -> list[dict]:
        """Run every request of `documents` through `lm` (HFLM), apply the task's filters and score each document
        with the task's process_results: one record per document, in order."""
        instances = [i for d in documents for i in self.requests[d.id]]
        for i in instances:
            i.resps.clear()
            i.filtered_resps.clear()
        by_type: dict[str, list] = {}
        for i in instances:
            by_type.setdefault(i.request_type, []).extend([i] * i.repeats)
        for request_type, batch in by_type.items():
            for i, response in zip(batch, getattr(lm, request_type)(batch, disable_tqdm=True), strict=True):
                i.resps.append(response)
        out = []
        for leaf, task in self.leaves.items():
            mine = [i for d in documents if d.task == leaf for i in self.requests[d.id]]
            for f in task._filters:  # the task's own filters, as lm-eval's evaluate applies them
                f.apply(mine)
        for d in documents:
            mine = sorted(self.requests[d.id], key=lambda i: i.idx)
            (key,) = mine[0].filtered_resps  # `load` refused tasks with several filters
            values = self.leaves[d.task].process_results(d.doc, [i.filtered_resps[key] for i in mine])
            out.append({"id": d.id, "task": d.task, "doc_id": d.doc_id,
                        "responses": [_jsonable(i.resps) for i in mine],
                        "scores": {self.metric.name: {m: json_value(values[m]) for m in self.metric.scalars()}}})
        return out

    def aggregate(self, records: list[dict]) -> dict:
        result = self.metric.aggregate(records)
        return {"scores": {f"{self.metric.name}.{k}": v for k, v in result.scores.items()},
                "metrics": {self.metric.name: result.details}, "breakdowns": self.breakdowns(records)}

    def breakdowns(self, records: list[dict]) -> dict:
        """Per leaf task [correct, total] of each mean scalar, for a group (MMLU's subjects are one task here)."""
        if len(self.leaves) < 2:
            return {}
        out = {}
        for scalar in self.metric.scalars():
            if self.metric.aggregation(scalar) != "mean":
                continue
            cells: dict[str, list] = {}
            for r in records:
                cell = cells.setdefault(r["task"], [0, 0])
                cell[0] += r["scores"][self.metric.name][scalar]
                cell[1] += 1
            out[f"{self.metric.name}.{scalar}"] = cells
        return out

    def uncertainty(self, records: list[dict]) -> dict:
        return intervals.uncertainty([self.metric], records, self.confidence,
                                     self.gated() if self.sample_size else None)

    def summary(self, metrics: dict) -> list[str]:
        scores = {k.split(".", 1)[1]: v for k, v in metrics["scores"].items()}
        from keeptune.evaluate.metrics.registry import Aggregate

        lines = self.metric.summary(Aggregate(scores), metrics["total_count"])
        units = self.units()
        for scalar in self.scalars():
            if "intervals" in metrics:
                lines.append(intervals.interval_line(scalar, metrics["scores"][scalar], metrics["intervals"][scalar],
                                                     units[scalar], metrics["total_count"]))
        if "sample_size" in metrics:
            lines += intervals.sample_size_lines(metrics["sample_size"])
        return lines


def _jsonable(value: Any) -> Any:
    """Responses and arguments for JSON: tuples as lists, numpy numbers as floats, anything else as text."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


# --- loading a task ----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_lm_eval():
    """lm-eval logs every task it loads and every batch it runs at INFO and warns about custom datasets; keep its
    warnings that matter (WARNING and above, less the custom-dataset note) off keeptune's output."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def task_name_of(path: Path) -> str:
    """The `task:` a task YAML file declares (lm-eval's `!function` tags read as plain text)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a task YAML ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise ConfigError(f"{path}: field 'task' is missing; an lm-eval task YAML names its task")
    return config["task"]


def load(task: str, *, name: Optional[str] = None, include: Optional[list[str]] = None, data: Optional[str] = None,
         limit: Optional[int] = None, num_fewshot: Optional[int] = None, batch_size: Optional[int] = None,
         start: int = 0, fewshot_seed: int = 1234, confidence: float = stats.LEVEL, sample_size: bool = False,
         where: str = "lm_eval") -> LmEvalTask:
    """An lm-eval task by name (registered, keeptune's own *_local ones, or found on `include`) or as a task YAML
    file, its documents read (`data`: the file or folder keeptune's *_local tasks read, passed to the task as
    metadata `path`) and its requests built. ConfigError/DataError naming `where` (the config field) on a name
    lm-eval does not know, a task keeptune cannot score, or a bad data file."""
    from lm_eval.tasks import TaskManager

    paths = [str(BUILTIN), *(include or [])]
    given = Path(task)
    if task.endswith((".yaml", ".yml")):
        if not given.is_file():
            raise ConfigError(f"{where}: {task}: no such task YAML file")
        paths.append(str(given.parent))
        task = task_name_of(given)
    for path in include or []:
        if not Path(path).exists():
            raise ConfigError(f"{where}.include: {path}: no such file or folder")
    builtin = {p.stem for p in BUILTIN.glob("*.yaml")}
    local_only = task in builtin or given.is_file() or _declared(task, include or [])
    with quiet_lm_eval():
        manager = TaskManager(include_path=paths, include_defaults=not local_only,
                              metadata={"path": data} if data else None)
        if task not in manager.all_tasks:
            near = [t for t in manager.all_tasks if task.lower() in t.lower()][:8]
            raise ConfigError(f"{where}: lm-eval knows no task {task!r}" + (f"; close: {', '.join(near)}" if near
                                                                             else ""))
        try:
            loaded = manager.load([task])
        except ValueError as err:  # keeptune's readers of official layouts name FILE:LINE and the field
            raise DataError(f"{where}: {err}") from None
        leaves = loaded["tasks"]
        return _build(task, leaves, name=name or _slug(task), limit=limit, start=start, num_fewshot=num_fewshot,
                      batch_size=batch_size, fewshot_seed=fewshot_seed, confidence=confidence,
                      sample_size=sample_size, data=data, where=where)


def _declared(task: str, include: list[str]) -> bool:
    """Whether a YAML on the include path declares `task` (then lm-eval's own ~15,000 need not be indexed)."""
    for folder in include:
        for path in Path(folder).rglob("*.yaml") if Path(folder).is_dir() else [Path(folder)]:
            if re.search(rf"^task:\s*['\"]?{re.escape(task)}['\"]?\s*$", path.read_text(encoding="utf-8",
                                                                                          errors="replace"), re.M):
                return True
    return False


def _slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", task).strip("-") or "lm-eval"


def _build(task: str, leaves: dict, *, name: str, limit, start, num_fewshot, batch_size, fewshot_seed, confidence,
           sample_size, data, where: str) -> LmEvalTask:
    metrics, version, documents, requests = None, None, [], {}
    for leaf, obj in leaves.items():
        if obj.OUTPUT_TYPE not in OUTPUT_TYPES:
            raise ConfigError(f"{where}: task {leaf} has output type {obj.OUTPUT_TYPE!r}; keeptune runs "
                              f"{', '.join(OUTPUT_TYPES)}")
        if len(obj._filters) != 1:
            raise ConfigError(f"{where}: task {leaf} has {len(obj._filters)} filter pipelines; keeptune scores "
                              "tasks with one")
        if num_fewshot is not None:
            obj.set_config(key="num_fewshot", value=num_fewshot)
        elif obj.get_config("num_fewshot") is None:
            obj.set_config(key="num_fewshot", value=0)
        obj.set_fewshot_seed(seed=fewshot_seed)
        higher, aggregation = obj.higher_is_better(), obj.aggregation()
        names = sorted(aggregation, key=list(aggregation).index)
        try:
            entries = [[m, _aggregation_name(aggregation[m]), bool(higher.get(m, True))] for m in names]
            leaf_metrics = LmEvalMetric(metrics=entries)
        except MetricError as err:
            raise ConfigError(f"{where}: task {leaf}: {err}") from None
        if metrics is not None and leaf_metrics.metrics != metrics.metrics:
            raise ConfigError(f"{where}: the leaves of {task} do not share their metrics ({leaf}); name one leaf")
        metrics, version = leaf_metrics, version or obj.VERSION
        if start:  # documents start .. start + limit of each leaf, by lm-eval's own document index
            total = len(obj.eval_docs)
            if start >= total:
                raise DataError(f"{where}: start is {start}, but task {leaf} has {total} documents"
                                + (f" in {data}" if data else ""))
            chosen = list(range(start, total if limit is None else min(total, start + limit)))  # lm-eval's `samples`
            obj.build_all_requests(samples=chosen, rank=0, world_size=1, cache_requests=False)
        else:
            obj.build_all_requests(limit=limit, rank=0, world_size=1, cache_requests=False)
        for instance in obj.instances:
            doc_id = instance.doc_id + start  # lm-eval numbers the chosen documents from 0; keeptune by the file
            key = f"{leaf}:{doc_id}"
            if key not in requests:
                documents.append(Document(key, leaf, doc_id, instance.doc, f"{data or leaf}: document {doc_id}"))
                requests[key] = []
            requests[key].append(instance)
    if not documents:
        raise DataError(f"{where}: task {task} has no documents" + (f" in {data}" if data else ""))
    documents.sort(key=lambda d: (list(leaves).index(d.task), d.doc_id))
    output = next(iter(leaves.values())).OUTPUT_TYPE
    return LmEvalTask(name, task, leaves, documents, requests, metrics, num_fewshot, limit,
                      batch_size or DEFAULT_BATCH.get(output, 8), version, start, confidence, sample_size,
                      f"lm-eval task {task} ({len(documents)} documents)", data)


def _aggregation_name(fn) -> str:
    """The registered name of an lm-eval aggregation function (mean, weighted_perplexity, ...)."""
    from lm_eval.api.registry import AGGREGATION_REGISTRY

    for key, value in AGGREGATION_REGISTRY.items():
        if value is fn:
            return key
    return getattr(fn, "__name__", str(fn))


# --- running it --------------------------------------------------------------------------------------------------

def language_model(model, tokenizer, batch_size: int):
    """lm-eval's HFLM around a model object (no reload): the same code path `lm_eval --model hf` runs."""
    from lm_eval.models.huggingface import HFLM

    with quiet_lm_eval():
        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def evaluate(task: LmEvalTask, model, tokenizer, out: Path, identity: dict) -> dict:
    """Evaluate `model` on `task` with keeptune's engine (keeptune.evaluate.engine): resumable in OUT, sharded
    under torchrun, OUT/eval.json, predictions.jsonl (one record per document, in dataset order at the end) and
    metrics.json as for a task spec. Returns the metrics."""
    from keeptune.evaluate.engine import evaluate as run

    return run(task, model, tokenizer, out, settings=None, identity=identity)

