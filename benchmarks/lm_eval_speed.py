"""lm-eval tasks in keeptune against lm-eval's own CLI, on the same model and task (issue 26).

    .venv/bin/python benchmarks/lm_eval_speed.py [--task arc_easy_local] [--data FILE] [--limit 200]
                                                 [--batch-size 8] [--repeats 3] [--model SOURCE]

Each repeat times, on this CPU:
- `lm_eval --model hf --model_args pretrained=DIR,dtype=float32 --batch_size B` (its CLI, a subprocess: imports,
  model load and task load included), DIR being the model written as a Hugging Face folder once beforehand;
- `keeptune eval TASK --lm-eval --model DIR --batch-size B` (a subprocess: the same things included);
- keeptune's in-memory path alone (`keeptune.evaluate.lmeval.evaluate` on a model already loaded): what every
  checkpoint of an experiment pays, the adapter swapped in, no reload;
- lm-eval's Python path as issue 3207 wrote it: HFLM around the loaded model with no batch size (so 1) through
  `simple_evaluate`, on the same loaded model.
It prints the median wall time of each, the ratios to the CLI, and whether every figure (acc, acc_norm, or the
perplexities) and every document's scores are identical to the CLI's.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TASKS = REPO / "src" / "keeptune" / "evaluate" / "lm_eval_tasks"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def cli(model_dir: Path, task: str, data: str, limit: int, batch: int, out: Path) -> tuple[dict, dict]:
    """lm-eval's CLI: its figures and each document's scores (from its logged samples)."""
    shutil.rmtree(out, ignore_errors=True)
    run([str(BIN / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
         "--tasks", task, "--include_path", str(TASKS), "--metadata", json.dumps({"path": data}),
         "--batch_size", str(batch), "--limit", str(limit), "--device", "cpu", "--output_path", str(out),
         "--log_samples"])
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"][task]
    figures = {k.split(",")[0]: v for k, v in results.items() if k.endswith(",none") and "stderr" not in k}
    samples = [json.loads(line) for line in next(out.rglob(f"samples_{task}_*.jsonl")).open()]
    return figures, {s["doc_id"]: {m: s[m] for m in s["metrics"]} for s in samples}


def keeptune_command(model_dir: Path, task: str, data: str, limit: int, batch: int, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    run([str(BIN / "keeptune"), "eval", task, "--lm-eval", "--data", data, "--limit", str(limit), "--model",
         str(model_dir), "--batch-size", str(batch), "--dtype", "float32", "--device", "cpu", "--out", str(out)])
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="arc_easy_local")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "arc-easy" / "ARC-Easy-Dev.jsonl"))
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="a model source keeptune loads; default: the embedded one")
    args = parser.parse_args()
    if not Path(args.data).exists():
        sys.exit(f"needs {args.data} (../shared/data beside the checkout, or --data)")

    import torch
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from keeptune.evaluate import lmeval
    from keeptune.model.load import load_model

    torch.manual_seed(0)
    model, tokenizer = load_model(args.model, dtype="float32", device="cpu")
    model.eval()
    work = Path(tempfile.mkdtemp(prefix="lm-eval-speed-"))
    model_dir = work / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    task = lmeval.load(args.task, data=args.data, limit=args.limit, batch_size=args.batch_size)
    print(f"{args.task}: {len(task.documents)} documents of {args.data}; batch {args.batch_size}; "
          f"torch threads {torch.get_num_threads()}")

    times: dict[str, list[float]] = {"lm_eval CLI": [], "keeptune eval (command)": [], "keeptune in memory": [],
                                     "lm-eval Python, HFLM batch 1 (issue 3207)": []}
    reference = ours = command = naive = None
    for repeat in range(args.repeats):
        seconds, reference = timed(lambda: cli(model_dir, args.task, args.data, args.limit, args.batch_size,
                                                 work / "cli"))
        times["lm_eval CLI"].append(seconds)
        seconds, command = timed(lambda: keeptune_command(model_dir, args.task, args.data, args.limit,
                                                          args.batch_size, work / "command"))
        times["keeptune eval (command)"].append(seconds)
        shutil.rmtree(work / "memory", ignore_errors=True)
        seconds, ours = timed(lambda: lmeval.evaluate(task, model, tokenizer, work / "memory", {"model": "bench"}))
        times["keeptune in memory"].append(seconds)
        if repeat == 0:  # batch 1 is slow: once
            fresh = lmeval.load(args.task, data=args.data, limit=args.limit)
            with lmeval.quiet_lm_eval():
                seconds, naive = timed(lambda: simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer),
                                                               tasks=list(fresh.leaves.values()), limit=args.limit,
                                                               bootstrap_iters=0))
            times["lm-eval Python, HFLM batch 1 (issue 3207)"].append(seconds)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items() if v))

    figures, per_doc = reference
    mine = {k.split(".", 1)[1]: v for k, v in ours["scores"].items()}
    records = [json.loads(line) for line in (work / "memory" / "predictions.jsonl").open()]
    same_docs = all(r["scores"]["lmeval"] == {m: float(v) if not isinstance(v, list) else v
                                               for m, v in per_doc[r["doc_id"]].items()} for r in records)
    naive_figures = {k.split(",")[0]: v for k, v in naive["results"][args.task].items()
                     if k.endswith(",none") and "stderr" not in k}
    print()
    print(f"{'path':45s} {'median s':>9s} {'x CLI':>7s}")
    cli_median = statistics.median(times["lm_eval CLI"])
    for name, values in times.items():
        print(f"{name:45s} {statistics.median(values):9.2f} {statistics.median(values) / cli_median:7.2f}")
    print()
    print("figures, lm_eval CLI:          ", figures)
    print("figures, keeptune in memory:   ", mine, "identical" if mine == figures else "DIFFERENT")
    command_figures = {k.split(".", 1)[1]: v for k, v in command["scores"].items()}
    print("figures, keeptune eval command:", command_figures, "identical" if command_figures == figures
          else "DIFFERENT")
    print("figures, HFLM batch 1:         ", naive_figures, "identical" if naive_figures == figures else "DIFFERENT")
    print(f"per-document scores identical to the CLI's: {same_docs} ({len(records)} documents)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
