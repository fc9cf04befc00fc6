"""A tiny model directory, a tiny conversation file and one short training run,
shared by the training tests. Torch runs on one thread here: on the busy 2-core
machine two threads are many times slower, and a training subprocess started by
a test (OMP_NUM_THREADS=1) must compute exactly what the test process does."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from keeptune.core.io import write_jsonl
from keeptune.data.prompts import PROMPTS
from keeptune.train.config import Config, load_config
from keeptune.train.loop import train
from tests.tiny import save_tiny

N_RECORDS = 48


def problem(i: int) -> tuple[str, str]:
    """Problems of varying length (so length grouping has something to do) and their answers."""
    a, b = 10 + 7 * i, 3 + (i % 5) * 111
    return f"{a} + {b} =" + " ?" * (i % 6), f"{a + b}"


def conversation(i: int, prompt: str = "math") -> dict:
    question, answer = problem(i)
    return {"id": str(i + 1), "template": "arithmetic", "conversations": [
        {"from": "human", "value": PROMPTS[prompt].format(problem=question)},
        {"from": "gpt", "value": answer}]}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """48 conversation records in the math prompt, as `keeptune data build` writes them."""
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_jsonl(path, [conversation(i) for i in range(N_RECORDS)])
    return path


def tiny_words(model: Path, data: Path, out: Path, *overrides: str) -> list[str]:
    """key=value words of a tiny run: 48 samples, global batch 8 = micro 2 x accumulation 4
    (6 steps per epoch), lr 1e-2; `overrides` come last and win."""
    return [f"model.source={model}", f"data.path={data}", f"out={out}", "train.max_steps=null",
            "train.global_batch=8", "train.micro_batch=2", "train.lr=1e-2", *overrides]


def tiny_config(model: Path, data: Path, out: Path, *overrides: str) -> Config:
    return load_config(None, tiny_words(model, data, out, *overrides))


@pytest.fixture(scope="session")
def trained(tiny_dir, tiny_data, tmp_path_factory):
    """2 epochs = 12 steps, 3 checkpoints (steps 4, 8, 12)."""
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        config = tiny_config(tiny_dir, tiny_data, tmp_path_factory.mktemp("runs") / "run", "train.epochs=2",
                             "train.checkpoints=3")
        return train(config)
