"""bfloat16 against float32 evaluation on a CPU: same generations? same scores? how much faster?

    .venv/bin/python benchmarks/eval_bf16.py [--adapter RUN/best/adapter --math-data RUN/data/eval.jsonl]
                                             [--repeats 1]

Runs `keeptune eval` in this process for each (task, dtype) on the embedded model:
squad-seed over the 54 packaged paragraphs (the base model, as the baseline and the
retention gate see it) and, with --adapter, squad-seed and math-worked over
--math-data with that adapter applied (as tracking sees a model during training: bfloat16 base, float32
LoRA). Prints per task: the share of samples whose generated text is identical in
both dtypes, each metric in both and the difference, and the generation seconds
(median over repeats; model loading excluded) with the float32 / bf16 ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from keeptune.evaluate.commands import eval_task

DTYPES = ("float32", "bfloat16")


def run(task: str, dtype: str, out: Path, adapter: Path | None, data: Path | None) -> tuple[dict, dict[str, str]]:
    metrics = eval_task(task, adapter=adapter, data=data, dtype=dtype, out=out)
    raw = {r["id"]: r["raw"] for r in map(json.loads, (out / "predictions.jsonl").open(encoding="utf-8"))}
    return metrics, raw


def compare(task: str, adapter: Path | None, data: Path | None, repeats: int, folder: Path) -> None:
    seconds: dict[str, list[float]] = {d: [] for d in DTYPES}
    metrics, raw = {}, {}
    for repeat in range(repeats):
        for dtype in DTYPES:
            out = folder / f"{task}-{'adapter' if adapter else 'base'}-{dtype}-{repeat}"
            metrics[dtype], raw[dtype] = run(task, dtype, out, adapter, data)
            seconds[dtype].append(metrics[dtype]["seconds"])
    same = sum(raw["float32"][i] == raw["bfloat16"][i] for i in raw["float32"])
    total = len(raw["float32"])
    print(f"\n{task}{' with ' + str(adapter) if adapter else ' (base model)'}: {total} samples")
    print(f"  identical generations: {same}/{total} ({same / total:.1%})")
    for name, value in metrics["float32"]["scores"].items():
        other = metrics["bfloat16"]["scores"][name]
        print(f"  {name:28s} float32 {value:10.4f}   bf16 {other:10.4f}   bf16 - float32 {other - value:+.4f}")
    fp32, bf16 = statistics.median(seconds["float32"]), statistics.median(seconds["bfloat16"])
    print(f"  generation seconds (median of {repeats}): float32 {fp32:.1f}, bf16 {bf16:.1f}; "
          f"float32 / bf16 = {fp32 / bf16:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, help="an adapter for the math-worked comparison")
    parser.add_argument("--math-data", type=Path, help="math-worked samples (e.g. a run's data/eval.jsonl)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if (args.adapter is None) != (args.math_data is None):
        parser.error("--adapter and --math-data go together")
    with tempfile.TemporaryDirectory() as folder:
        compare("squad-seed", None, None, args.repeats, Path(folder))
        if args.adapter:
            compare("squad-seed", args.adapter, None, args.repeats, Path(folder))
            compare("math-worked", args.adapter, args.math_data, args.repeats, Path(folder))


if __name__ == "__main__":
    main()
