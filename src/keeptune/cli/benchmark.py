"""`keeptune benchmark SOURCES...`: its words parsed here (any number of runs and sweeps), the work in
keeptune.report.benchmark."""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from keeptune.core import stats
from keeptune.report.benchmark import benchmark

USAGE = """\
examples:
  keeptune benchmark runs/sweeps/methods                       # every trial of a methods x seeds sweep
  keeptune benchmark runs/plain-s0 runs/kl-s0 runs/plain-s1 runs/kl-s1 --out runs/benchmark-kl
  keeptune benchmark runs/sweeps/curve runs/sweeps/methods --level 0.99
"""


def main(argv: list[str]) -> None:
    """`keeptune benchmark SOURCE... [--out DIR] [--level 0.95] [--overwrite]`."""
    summary = "\n\n".join(textwrap.fill(" ".join(part.split()), 100) for part in benchmark.__doc__.split("\n\n")[:2])
    parser = argparse.ArgumentParser(prog="keeptune benchmark", description=summary, epilog=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", type=Path, nargs="+", metavar="SOURCE",
                        help="a run directory (holding results.json) or a sweep directory (its trials/*/results.json)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"),
                        help="the output directory (default runs/benchmark)")
    parser.add_argument("--level", type=float, default=stats.LEVEL,
                        help="level of the intervals and of the verdicts (default 0.95: p < 0.05)")
    parser.add_argument("--overwrite", action="store_true", help="write into an output directory keeptune did not make")
    args = parser.parse_args(argv)
    benchmark(args.sources, args.out, args.level, args.overwrite)
