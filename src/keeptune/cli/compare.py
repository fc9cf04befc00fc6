"""`keeptune compare A B`: its words parsed here (two positional states, one optional), the work in
keeptune.report.compare."""
from __future__ import annotations

import argparse
from pathlib import Path

from keeptune.core import stats
from keeptune.report.compare import compare

USAGE = """\
examples:
  keeptune compare runs/eval/squad-a runs/eval/squad-b          # two evaluation folders of one task
  keeptune compare RUN --steps 200,250                          # two checkpoints of a run (base, 200:0.5 too)
  keeptune compare RUN/checkpoints/step-000200 RUN/checkpoints/step-000250
  keeptune compare runs/experiments/a runs/experiments/b        # two runs: their best checkpoints
"""


def main(argv: list[str]) -> None:
    """`keeptune compare A [B] [--steps S1,S2] [--confidence 0.95] [--json]`."""
    summary = " ".join(compare.__doc__.split("\n\n")[0].split())
    parser = argparse.ArgumentParser(prog="keeptune compare", description=summary, epilog=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="an evaluation folder, a folder of them (RUN/checkpoints/step-N) or "
                                             "a run")
    parser.add_argument("b", type=Path, nargs="?", help="the same kinds; left out with --steps")
    parser.add_argument("--steps", help="two states of the run A: STEP, STEP:SCALE or base, e.g. 200,250")
    parser.add_argument("--confidence", type=float, default=stats.LEVEL,
                        help="level of the intervals and of the verdict (default 0.95)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    compare(args.a, args.b, args.steps, args.confidence, args.json)
