"""What the offline preservation default and replay's answers cost on the embedded model.

    .venv/bin/python benchmarks/preservation_cost.py [--n 64] [--out DIR]

Loads the embedded model (float32, as `keeptune run` evaluates), lets it write N self-written
preservation samples (keeptune.retention.selfwritten: passages, then questions) and answer them in the
squad-seed prompt as replay does (keeptune.retention.replay.base_answers), and prints the
generation seconds of each pass (model loading excluded) and what was written. Everything is cached
in --out (a fresh temporary folder by default): run it twice on one folder and the second run
generates nothing.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from keeptune.evaluate.task import SpecTask
from keeptune.evaluate.spec import load_spec
from keeptune.evaluate.samples import load_task_samples, resolve_data_path
from keeptune.model.load import load_model
from keeptune.retention.preservation import load_preservation
from keeptune.retention.replay import base_answers
from keeptune.train.config import RetentionConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="preservation samples")
    parser.add_argument("--out", type=Path, default=None, help="cache folder (default: a fresh temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="preservation-cost-"))
    model, tokenizer = load_model(None, "auto", "cpu")
    compiled = load_spec("squad-seed")
    gate = [SpecTask(compiled, load_task_samples(compiled, resolve_data_path(compiled.spec)), tokenizer)]
    identity = {"model": "default", "state": "base"}
    started = time.perf_counter()
    chosen = load_preservation(RetentionConfig(methods=("replay",), preservation_samples=args.n), gate, out, model,
                               tokenizer, identity)
    written = time.perf_counter()
    base_answers(chosen, gate, args.n, model, tokenizer, out / "answers", identity, 64)
    answered = time.perf_counter()
    seconds = {f: json.loads((out / f / "metrics.json").read_text())["seconds"]
               for f in ("passages", "questions", "answers/squad-seed")}
    words = [len(i.sample.fields["passage"].split()) for i in chosen.items]
    print(json.dumps({"n": args.n, "generation_seconds": seconds, "preservation_seconds": written - started,
                      "answers_seconds": answered - written, "words_per_passage": sum(words) / len(words),
                      "preservation": chosen.describe(), "out": str(out)}, indent=2))


if __name__ == "__main__":
    main()
