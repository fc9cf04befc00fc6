"""`keeptune run`: the main job, one typed function."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

from keeptune.core.config import parse_words
from keeptune.core.outputs import note_progress
from keeptune.experiment.config import ExperimentConfig
from keeptune.experiment.runner import run_dir, run_experiment
from keeptune.train.config import load_config

RUN_USAGE = """\
examples:
  keeptune run                                              # the default experiment on the embedded model
  keeptune run configs/smollm2-135m/experiment.yaml train.lr=5e-4 name=lr5e-4
  keeptune run CONFIG model.source=/models/Meta-Llama-3-8B original.data=dev-v1.1.json
  keeptune run configs/examples/experiment.yaml        # tasks written as YAML: two retention tasks, a new task
Re-running the same command continues an interrupted experiment; steps already done are not redone.
"""


def run(config: Optional[Path] = None, overrides: Optional[list[str]] = None) -> Path:
    """Run an experiment: baseline on both tasks, LoRA fine-tuning with evenly spaced
    checkpoints, evaluation of every checkpoint, the retention gate, the score, the
    best checkpoint exported, and RUN/report.md + report.html; returns RUN.

    Args:
        config: experiment YAML; default: the defaults (configs/smollm2-135m/experiment.yaml's values).
        overrides: `section.field=value` words applied on top, e.g. train.lr=5e-4 name=lr5e-4.
    """
    from keeptune.report.render import build_report, versus_runner_up  # imports matplotlib: only here

    settings = load_config(config, overrides or [], root=ExperimentConfig)
    note_progress(resume="run the same command again: it continues where it stopped")
    command = shlex.join(["keeptune", "run", *([str(config)] if config else []), *(overrides or [])])
    results = run_experiment(settings, command)
    if results is None:  # a torchrun rank other than 0: it trained and evaluated its share; rank 0 reports
        return run_dir(settings)
    markdown, html = build_report(run_dir(settings), record_time=True)
    best = results["best"]
    if best:
        against = versus_runner_up(results) or "no runner-up: one checkpoint passes the gate"
        print(f"best checkpoint: step {best['step']}, score {best['score']:.6f}, adapter {best['adapter']}; "
              f"{against[0].lower()}{against[1:]}")
    else:
        print("no checkpoint passes the gate")
    print(f"report: {markdown} and {html}")
    return run_dir(settings)


def main(argv: list[str]) -> None:
    """`keeptune run [CONFIG] [key=value ...]`."""
    config, overrides, _ = parse_words(argv, "keeptune run", run.__doc__.split("\n\n")[0], RUN_USAGE,
                                       ExperimentConfig, resume=False, overwrite=True)
    run(config, overrides)
