"""Overlay the training loss of experiment runs: one curve per RUN/train/log.jsonl.

    .venv/bin/python scripts/plot_loss.py RUN [RUN ...] --labels A B --out docs/img/loss.png

Each curve is the per-step loss and, bold, its moving average over `--window` steps.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error("give one label per run")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (run, label) in enumerate(zip(args.runs, labels)):
        log = [json.loads(line) for line in (run / "train" / "log.jsonl").open(encoding="utf-8")]
        steps, loss = [r["step"] for r in log], [r["loss"] for r in log]
        line, = ax.plot(steps, loss, alpha=0.3, linewidth=0.8)
        w = args.window
        smooth = [sum(loss[max(0, i - w + 1):i + 1]) / len(loss[max(0, i - w + 1):i + 1]) for i in range(len(loss))]
        ax.plot(steps, smooth, color=line.get_color(), linewidth=2, linestyle=("-", "--", ":")[i % 3],
                zorder=3 + i, label=f"{label} ({w}-step mean)")  # dashed over solid: equal curves both show
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
