"""Sharded evaluation under torchrun against one process, on the default experiment's tasks.

    .venv/bin/python benchmarks/sharded_eval.py [--repeats 1] [--dir /tmp/sharded-eval] [--one-thread]

The base model of the default experiment (the embedded SmolLM2-135M-Instruct) evaluates the
default's tasks (the packaged 54 SQuAD paragraphs and the 60 held-out math problems, the
runner's own task objects and batch size) as `keeptune run`'s baseline does, twice:
- one process with 2 threads (OMP_NUM_THREADS=2);
- `torchrun --nproc_per_node 2`, each rank with 1 thread, each evaluating its share
  (keeptune.evaluate.shard);
- with --one-thread, also one process with 1 thread (what one rank's work costs alone).
On the 2-core CPU the first two use the whole machine. It prints each run's evaluation wall time
(from a barrier after the model is loaded to the last file written; the command's whole wall
time, imports and model load included, beside it), the ratio, and whether the two runs left
the same files: predictions.jsonl and eval.json byte for byte, metrics.json but its `seconds`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def experiment(run: Path):
    """The default experiment's config and plan, its data made in RUN/data (once)."""
    from keeptune.experiment.config import ExperimentConfig
    from keeptune.experiment.plan import plan_experiment
    from keeptune.train.config import load_config

    config = load_config(None, [f"out={run}"], root=ExperimentConfig)
    return config, plan_experiment(config)


def worker(run: Path, out: Path) -> None:
    """One process (or one torchrun rank): the base model on every task into OUT; rank 0 prints the seconds."""
    import torch

    from keeptune.evaluate import shard
    from keeptune.evaluate.run import evaluate_tasks
    from keeptune.experiment import runner
    from keeptune.train import distributed

    config, plan = experiment(run)
    d = distributed.setup(config.model.device, config.distributed.backend)
    e = runner.Experiment(config, plan, run, "benchmark", time.perf_counter(), d.main)
    runner.prepare(e)  # the data (already made), the model, the runner's tasks
    with shard.sharded():
        shard.barrier()
        started = time.perf_counter()
        evaluate_tasks(e.tasks, e.model, e.tokenizer, out, e.base_identity(), config.batch_size)
        seconds = time.perf_counter() - started
    if d.main:
        print("RESULT " + json.dumps({"seconds": seconds, "world": d.world, "threads": torch.get_num_threads(),
                                      "samples": {t.name: len(t.samples) for t in e.tasks}}))
    distributed.cleanup(d)


def launch(command: list[str], threads: int) -> tuple[dict, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), wall


def files(out: Path) -> dict:
    """Every task folder's files as compared: metrics.json without its wall time."""
    seen = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        metrics.pop("seconds")
        seen[folder.name] = ((folder / "predictions.jsonl").read_bytes(), (folder / "eval.json").read_bytes(),
                             metrics, sorted(p.name for p in folder.iterdir()))
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, alternating; medians printed")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/sharded-eval"), help="scratch folder (made)")
    parser.add_argument("--one-thread", action="store_true", help="also time one process with 1 thread")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)  # OUT of one run
    args = parser.parse_args()
    run = args.dir.resolve() / "run"
    if args.worker is not None:
        return worker(run, args.worker)

    from keeptune.experiment.newdata import prepare_data

    config, plan = experiment(run)
    prepare_data(config, run, plan)  # the math data, before any timing
    me = [sys.executable, str(Path(__file__).resolve())]
    commands = {
        "1 process x 2 threads": ([*me, "--dir", str(args.dir), "--worker"], 2),
        "2 ranks x 1 thread": ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                "2", *me[1:], "--dir", str(args.dir), "--worker"], 1),
    }
    if args.one_thread:
        commands["1 process x 1 thread"] = (commands["1 process x 2 threads"][0], 1)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    outputs = {}
    for repeat in range(args.repeats):
        for name, (command, threads) in commands.items():
            out = args.dir / name.replace(" ", "-")
            shutil.rmtree(out, ignore_errors=True)
            result, wall = launch([*command, str(out)], threads)
            assert result["threads"] == threads, result
            times[name].append((result["seconds"], wall))
            outputs[name] = out
            print(f"repeat {repeat + 1}: {name}: evaluation {result['seconds']:.1f} s, command {wall:.1f} s, "
                  f"world {result['world']}, samples {result['samples']}", flush=True)
    print()
    medians = {name: (statistics.median(s for s, _ in runs), statistics.median(w for _, w in runs))
               for name, runs in times.items()}
    for name, (seconds, wall) in medians.items():
        print(f"{name:24s} evaluation {seconds:7.1f} s   command {wall:7.1f} s")
    one, two = medians["1 process x 2 threads"][0], medians["2 ranks x 1 thread"][0]
    print(f"ratio (1 process x 2 threads / 2 ranks x 1 thread), evaluation: {one / two:.2f}x")
    same = all(files(out) == files(outputs["2 ranks x 1 thread"]) for out in outputs.values())
    print(f"identical outputs (predictions.jsonl, eval.json, metrics.json but seconds): {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
