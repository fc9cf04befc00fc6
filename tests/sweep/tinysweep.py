"""What the sweep tests write: the retention task `qa` and sweep files.

The retention task `qa` asks the tiny model four questions whose references are the base model's own greedy
answers (tests/sweep/conftest.py's `setup` writes them): the base model scores 100%, a trial at lr 1e-6 keeps
those answers (it passes the gate) and a trial at lr 0.5 changes them (it fails), so both sides of the gate are
seen on purpose."""
from __future__ import annotations

from pathlib import Path

QUESTIONS = ["What is red?", "Who wrote it?", "Where is Rome?", "How many legs?"]
SPEC = """name: qa
data: {path: qa.jsonl}
prompt: "Q: {question}\\nA:"
reference: answer
generation: {max_new_tokens: 6}
postprocess: [strip, first_line]
metrics: [exact_match]
gate: [exact_match.accuracy]
"""
LOW, HIGH = 1e-6, 0.5  # learning rates that keep and that change the base model's answers


def write_sweep(path: Path, overrides: dict, space: dict, **settings) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"overrides": overrides, "space": space, **settings}, sort_keys=False),
                    encoding="utf-8")
    return path
