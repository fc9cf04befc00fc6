"""One experiment, start to finish (SPEC: baseline, fine-tune, evaluate every
checkpoint, gate, score, best, report). Every step leaves its result in the run
directory and is skipped when it is already there for the same settings:

    RUN/data/train.jsonl, eval.jsonl         the new task's training and evaluation sets
    RUN/baseline/{squad,math}/                evaluations of the base model
    RUN/train/                                keeptune train's run (checkpoints/, log.jsonl, adapter/)
    RUN/checkpoints/step-N/{squad,math}/      evaluations of every checkpoint
    RUN/best/adapter (+ merged/)              the best checkpoint that passes the gate
    RUN/results.json, report.md, report.html

Evaluations resume sample by sample (keeptune.evaluate.engine); one whose
settings changed is redone. Training resumes from its last checkpoint, or starts
over when its settings changed.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from keeptune.data.math.build import eligible
from keeptune.data.math.commands import build as build_training_set
from keeptune.data.math.generate import generate_pairs
from keeptune.data.prompts import sequence_bos, unwrap_prompt
from keeptune.data.squad import load_samples, resolve_data
from keeptune.evaluate.engine import ResumeMismatchError, evaluate
from keeptune.evaluate.generation import GenerationSettings
from keeptune.evaluate.tasks.math import MathTask, load_math_samples
from keeptune.evaluate.tasks.squad import SquadTask
from keeptune.experiment.config import ExperimentConfig
from keeptune.io import atomic_write_json, write_jsonl
from keeptune.model.load import load_model, model_name
from keeptune.model.params import lora_accounting, source_config
from keeptune.train import checkpoint
from keeptune.train.config import Config, DataConfig, to_dict
from keeptune.train.data import read_conversations, special_ids, texts
from keeptune.train.loop import train


# The new-task fields that change the data files (the others only change training or evaluation).
DATA_FIELDS = ("source", "strategy", "n", "counts", "cot", "prompt", "seed", "eval_data", "eval_n",
               "eval_templates", "eval_seed")


def run_dir(config: ExperimentConfig) -> Path:
    return Path(config.out or Path("runs") / "experiments" / config.name)


# --- data ------------------------------------------------------------------------------

def prepare_data(config: ExperimentConfig, run: Path) -> tuple[Path, Path]:
    """The training set (conversation records) and a held-out evaluation set (problem/solution)."""
    task = config.new_task
    folder = run / "data"
    stamp = folder / "data.json"
    train_path, eval_path = folder / "train.jsonl", folder / "eval.jsonl"
    recipe = {k: v for k, v in to_dict(task).items() if k in DATA_FIELDS}
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return train_path, eval_path
    folder.mkdir(parents=True, exist_ok=True)
    build_training_set(source=Path(task.source) if task.source else None, strategy=task.strategy, n=task.n,
                       cot=task.cot, prompt=task.prompt, seed=task.seed, out=train_path, counts=task.counts)
    if task.eval_data:
        shutil.copyfile(task.eval_data, eval_path)
    else:
        write_jsonl(eval_path, held_out_problems(train_path, task.eval_n, task.eval_seed, task.eval_templates,
                                                 task.strategy))
    atomic_write_json(stamp, recipe)
    return train_path, eval_path


def training_templates_and_problems(train_path: Path) -> tuple[list[str], set[str]]:
    """The templates (in order of appearance) and raw problems of a conversation-format training set."""
    templates, problems = [], set()
    for line in train_path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        problems.add(unwrap_prompt(record["conversations"][0]["value"]))
        if record["template"] not in templates:
            templates.append(record["template"])
    return templates, problems


def longest_answer(train_path: Path, tokenizer, fmt: str = "plain") -> int:
    """Tokens of the longest answer a training set teaches in sequence format ``fmt``, EOS included."""
    answers = [texts(c, fmt, tokenizer)[1] for c in read_conversations(train_path)]
    tail = len(special_ids(tokenizer, fmt, None)[1])  # EOS, unless the chat template writes its own
    return tail + max(len(ids) for ids in tokenizer(answers, add_special_tokens=False).input_ids)


def warn_if_answers_do_not_fit(train_path: Path, tokenizer, max_new_tokens: int, fmt: str = "plain") -> None:
    longest = longest_answer(train_path, tokenizer, fmt)
    if longest > max_new_tokens:
        print(f"warning: the longest training answer is {longest} tokens (EOS included) but new_task.max_new_tokens "
              f"is {max_new_tokens}: answers that long are cut before their final line and judged wrong; "
              f"set new_task.max_new_tokens={longest} or more", file=sys.stderr)


def held_out_problems(train_path: Path, n: int, seed: int, templates: list[str] | None,
                      strategy: str = "real") -> list[dict]:
    """`n` generated problems of the training set's templates that the training set does not contain.

    They obey the training strategy's filter too: `easy` trains on no multiplication of the
    arithmetic template, so none is evaluated.
    """
    seen_templates, seen = training_templates_and_problems(train_path)
    chosen: list[dict] = []
    for name, pair in generate_pairs(50 * n, seed, templates or seen_templates, "uniform"):
        if pair.problem not in seen and eligible(strategy, name, pair.problem):
            seen.add(pair.problem)
            chosen.append(pair._asdict())
            if len(chosen) == n:
                return chosen
    raise ValueError(f"could not draw {n} held-out problems (templates {templates or seen_templates})")


# --- evaluations -----------------------------------------------------------------------

def evaluate_fresh(task, model, tokenizer, out: Path, settings: GenerationSettings, identity: dict,
                   add_bos: bool = False) -> dict:
    """`evaluate`, resuming when OUT holds the same configuration, redoing it when not."""
    try:
        return evaluate(task, model, tokenizer, out, settings, identity, add_bos)
    except ResumeMismatchError:
        print(f"{out}: settings changed, evaluating again")
        shutil.rmtree(out)
        return evaluate(task, model, tokenizer, out, settings, identity, add_bos)


def math_task(config: ExperimentConfig, samples, tokenizer) -> MathTask:
    """The new task as training shaped it: its prompt template inside its sequence format."""
    task = config.new_task
    return MathTask(samples, task.prompt, task.extraction, task.format, tokenizer)


def evaluate_both(config: ExperimentConfig, model, tokenizer, squad_samples, math_samples, out: Path,
                  identity: dict) -> dict:
    """SQuAD (seed protocol) and math (the training prompt and format) of one model state."""
    squad_settings = GenerationSettings(batch_size=config.batch_size)
    math_settings = GenerationSettings(max_new_tokens=config.new_task.max_new_tokens, batch_size=config.batch_size)
    squad = evaluate_fresh(SquadTask(squad_samples, tokenizer), model, tokenizer, out / "squad", squad_settings,
                           {**identity, "prompt": "seed"})
    math = evaluate_fresh(math_task(config, math_samples, tokenizer), model, tokenizer, out / "math",
                          math_settings, {**identity, "prompt": config.new_task.prompt,
                                          "format": config.new_task.format},
                          add_bos=sequence_bos(config.new_task.format))
    return {"squad": {**squad["emf1"], "squad_v1": squad["squad_v1"]},
            "math": {k: math[k] for k in ("total_count", "accuracy", "accuracy_strict", "per_template")}}


def adapter_identity(path: Path) -> str:
    return hashlib.sha256((path / "adapter_model.safetensors").read_bytes()).hexdigest()[:16]


# --- gate and score --------------------------------------------------------------------

def retention(squad: dict, baseline: dict) -> dict:
    """Checkpoint / baseline for F1 and EM (None where the baseline is 0)."""
    return {k: (squad[k] / baseline[k] if baseline[k] else None) for k in ("F1", "Em")}


def passes_gate(squad: dict, baseline: dict, gate: float) -> bool:
    """The seed's rule: F1 AND EM both >= gate x the base model's."""
    return squad["F1"] >= gate * baseline["F1"] and squad["Em"] >= gate * baseline["Em"]


def score(accuracy: float, ratio: float) -> float:
    """SPEC section 4: (1 - ratio) * 0.3 + accuracy * 0.7."""
    return (1 - ratio) * 0.3 + accuracy * 0.7


# --- the experiment --------------------------------------------------------------------

def training_config(config: ExperimentConfig, run: Path, train_path: Path) -> Config:
    data = DataConfig(path=str(train_path), format=config.new_task.format, seq_len=config.new_task.seq_len,
                      prompt=config.new_task.prompt)
    return Config(model=config.model, lora=config.lora, data=data, train=config.train,
                  distributed=config.distributed, out=str(run / "train"), resume=True)


def run_training(config: ExperimentConfig, run: Path, train_path: Path, on_step, every: int) -> list[Path]:
    """Train (resuming when possible); returns the complete checkpoints in step order."""
    settings = training_config(config, run, train_path)
    try:
        train(settings, on_step, every)
    except ResumeMismatchError:
        print(f"{run / 'train'}: training settings changed, training again")
        shutil.rmtree(run / "train")
        train(settings, on_step, every)
    return checkpoint.complete_checkpoints(run / "train")


def run_experiment(config: ExperimentConfig, command: str) -> dict:
    """Run (or finish) the experiment; returns what RUN/results.json holds."""
    from keeptune.experiment.tracking import Tracker, tracking_history

    started = time.perf_counter()
    run = run_dir(config)
    run.mkdir(parents=True, exist_ok=True)
    train_path, eval_path = prepare_data(config, run)
    squad_samples = load_samples(resolve_data(config.original.data))[:config.original.limit]
    math_samples = load_math_samples(eval_path)
    source = config.model.source
    base, tokenizer = load_model(source, config.model.dtype, config.model.device)
    warn_if_answers_do_not_fit(train_path, tokenizer, config.new_task.max_new_tokens, config.new_task.format)
    identity = {"model": model_name(source), "data": config.original.data or "shared"}

    print("== baseline: the base model on both tasks")
    baseline = evaluate_both(config, base, tokenizer, squad_samples, math_samples, run / "baseline",
                             {**identity, "state": "base"})
    del base  # training loads its own copy; evaluation reloads per checkpoint

    print("== training")
    tracker = Tracker(config, run, tokenizer, squad_samples, math_task(config, math_samples, tokenizer))
    checkpoints = run_training(config, run, train_path, tracker.on_step if config.tracking.every else None,
                               config.tracking.every or 1)

    print("== evaluating every checkpoint")
    losses = {r["step"]: r["loss"] for r in map(json.loads, (run / "train" / "log.jsonl").open())}
    # The low-parameter ratio of the trained configuration, counted by PEFT on the meta device.
    params = lora_accounting(source_config(source), config.lora)[1]
    entries = []
    for ckpt in checkpoints:
        step = checkpoint.step_of(ckpt)
        model, _ = load_model(source, config.model.dtype, config.model.device)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ckpt).eval()
        scores = evaluate_both(config, model, tokenizer, squad_samples, math_samples,
                               run / "checkpoints" / ckpt.name,
                               {**identity, "state": f"{ckpt.name} {adapter_identity(ckpt)}"})
        passed = passes_gate(scores["squad"], baseline["squad"], config.gate)
        accuracy = scores["math"]["accuracy"][str(config.score_eps)]
        entries.append({"step": step, "loss": losses.get(step), **scores, "adapter": str(ckpt),
                        "retention": retention(scores["squad"], baseline["squad"]), "passes_gate": passed,
                        "score": score(accuracy, params.ratio) if passed else None})
        del model  # the next checkpoint loads a fresh base model

    best = export_best(config, run, entries)
    results = {
        "name": config.name, "command": command, "wall_seconds": time.perf_counter() - started,
        "settings": settings_summary(config, checkpoint.step_of(checkpoints[-1]) if checkpoints else None),
        "config": to_dict(config),
        "params": params.__dict__, "gate": config.gate, "score_eps": str(config.score_eps),
        "baseline": baseline, "checkpoints": entries, "best": best, "tracking": tracking_history(run),
    }
    atomic_write_json(run / "results.json", results)
    return results


def export_best(config: ExperimentConfig, run: Path, entries: list[dict]) -> dict | None:
    """Copy the best passing checkpoint's adapter to RUN/best (and merge it on request)."""
    passing = [e for e in entries if e["passes_gate"]]
    if not passing:
        return None
    best = max(passing, key=lambda e: (e["score"], e["step"]))
    adapter = checkpoint.export_adapter(Path(best["adapter"]), run / "best" / "adapter")
    merged = None
    if config.export_merged:
        from keeptune.train.commands import merge

        merged = merge(adapter, out=run / "best" / "merged")
    return {**best, "adapter": str(adapter), "merged": str(merged) if merged else None}


def settings_summary(config: ExperimentConfig, steps: int | None) -> dict:
    """The settings a reader compares runs by; ``steps`` is the number of optimizer steps trained."""
    task = config.new_task
    source = f"real {Path(task.source).name}" if task.source else "generated"
    mix = ""
    if task.strategy == "custom" and task.counts:
        mix = " (" + ", ".join(f"{name} {count}" for name, count in task.counts.items()) + ")"
    recipe = f"{source} {task.strategy}{mix}{f' x{task.n}' if task.n else ''}{', cot' if task.cot else ''}"
    return {"model": model_name(config.model.source), "data_recipe": recipe, "prompt": task.prompt,
            "format": task.format, "targets": list(config.lora.targets), "rank": config.lora.rank,
            "alpha": config.lora.alpha, "dropout": config.lora.dropout, "lr": config.train.lr,
            "epochs": config.train.epochs, "steps": steps,
            "global_batch": config.train.global_batch, "seq_len": task.seq_len,
            "original_data": config.original.data or "shared 54-paragraph article",
            "new_task_eval": task.eval_data or f"{task.eval_n} generated held-out problems",
            "max_new_tokens": task.max_new_tokens, "extraction": task.extraction}
