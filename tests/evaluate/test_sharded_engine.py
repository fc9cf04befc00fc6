"""The engine under two gloo processes (keeptune.evaluate.shard.sharded()): the same files as one process,
and a rank killed with SIGKILL mid-evaluation resumed by a re-run of either world size without redoing the
samples it had finished."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

COUNT = 23  # odd, so the ranks' shares differ in size; 4 groups of 3 on rank 0
SETTINGS = {"max_new_tokens": 6, "batch_size": 3, "prefill_batch_size": 2}


@dataclass(frozen=True)
class Item:
    id: str
    text: str


class LengthTask:
    """A task whose aggregate depends on the records' order, with an interval beside it; `kill_after`
    scored samples, the process SIGKILLs itself (a kill -9 between two groups' appends)."""

    name = "length"

    def __init__(self, kill_after: int | None = None):
        self.samples = [Item(f"s{i:02d}", "ab " * (i * 7 % 11 + 1) + str(i)) for i in range(COUNT)]
        self.kill_after, self.calls = kill_after, 0

    def prompt(self, sample):
        return sample.text

    def score(self, sample, raw):
        self.calls += 1
        if self.kill_after is not None and self.calls > self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"id": sample.id, "raw": raw, "length": len(raw) / 3}

    def aggregate(self, records):
        return {"scores": {"weighted": sum(i * r["length"] for i, r in enumerate(records))},
                "ids": [r["id"] for r in records]}

    def uncertainty(self, records):
        return {"intervals": {"weighted": {"low": min(r["length"] for r in records)}}}

    def summary(self, metrics):
        return [f"weighted {metrics['scores']['weighted']}"]


def rank_main(store: str, rank: int, world: int, out: str, kill_after: int) -> None:
    """One rank (WORLD 1: a single process, no group) evaluating the tiny model into OUT."""
    import torch.distributed as dist

    from keeptune.evaluate import shard
    from keeptune.evaluate.engine import evaluate
    from keeptune.evaluate.generation import GenerationSettings
    from tests.tiny import byte_tokenizer, tiny_llama

    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    task = LengthTask(kill_after if kill_after >= 0 else None)
    with shard.sharded():
        metrics = evaluate(task, tiny_llama(), byte_tokenizer(), Path(out), GenerationSettings(**SETTINGS),
                           {"model": "tiny"})
    print("RESULT", json.dumps({**metrics, "scored here": task.calls}))


def launch(out: Path, world: int, kill: dict[int, int] | None = None) -> list[subprocess.Popen]:
    """WORLD processes evaluating into OUT; `kill`: {rank: samples it scores before it SIGKILLs itself}."""
    store = out.with_name(out.name + f".store{time.monotonic_ns()}")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")} | {"OMP_NUM_THREADS": "1"}
    env |= {"WORLD_SIZE": str(world)} if world > 1 else {}
    command = "import sys; from tests.evaluate.test_sharded_engine import rank_main; " \
              "rank_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))"
    return [subprocess.Popen([sys.executable, "-c", command, str(store), str(rank), str(world), str(out),
                              str((kill or {}).get(rank, -1))], cwd=REPO, env=env | {"RANK": str(rank)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(world)]


def finish(processes: list[subprocess.Popen]) -> list[dict]:
    """Every rank's returned metrics (each must succeed)."""
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0] * len(processes), [err[-3000:] for _, err in outputs]
    return [json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
            for out, _ in outputs]  # each with "scored here": the samples this rank generated


def files(out: Path, *but: str) -> dict[str, object]:
    """What an evaluation leaves, compared byte for byte (metrics.json without its wall time, nor `but`)."""
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for key in ("seconds", *but):
        del metrics[key]
    names = sorted(p.name for p in out.iterdir() if p.name != ".lock")
    return {"names": names, "eval.json": (out / "eval.json").read_bytes(), "metrics": metrics,
            "predictions.jsonl": (out / "predictions.jsonl").read_bytes()}


def on_disk(out: Path) -> int:
    """Complete prediction lines a killed run left (predictions.jsonl and the rank files)."""
    return sum(text.count("\n") for text in (p.read_text(encoding="utf-8") for p in out.glob("predictions*.jsonl")))


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "eval"
    finish(launch(out, 1))
    return out


def test_two_ranks_write_what_one_process_writes(single, tmp_path):
    out = tmp_path / "eval"
    metrics = finish(launch(out, 2))
    assert files(out) == files(single)
    ids = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert ids == [f"s{i:02d}" for i in range(COUNT)]  # dataset order, each sample once
    expected = json.loads((single / "metrics.json").read_text(encoding="utf-8"))
    for ranked in metrics:  # every rank returns rank 0's metrics
        assert {k: v for k, v in ranked.items() if k not in ("seconds", "scored here")} == \
            {k: v for k, v in expected.items() if k != "seconds"}
    assert metrics[0]["generated"] == COUNT
    assert [m["scored here"] for m in metrics] == [12, 11]  # each rank its share, once


def test_one_process_folds_in_the_rank_files_a_killed_sharded_run_left(tmp_path):
    """In process: the rank files of a killed 2-rank run (one with a torn last line), beside a predictions.jsonl
    an earlier resume wrote, are read, not generated again, and end in one predictions.jsonl in dataset order."""
    from keeptune.evaluate.engine import evaluate
    from keeptune.evaluate.generation import GenerationSettings
    from tests.tiny import byte_tokenizer, tiny_llama

    model, tokenizer, settings = tiny_llama(), byte_tokenizer(), GenerationSettings(**SETTINGS)
    clean = tmp_path / "clean"
    evaluate(LengthTask(), model, tokenizer, clean, settings, {"model": "tiny"})
    lines = (clean / "predictions.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    out = tmp_path / "killed"
    out.mkdir()
    shutil.copy(clean / "eval.json", out)
    (out / "predictions.jsonl").write_text("".join(lines[:4]), encoding="utf-8")
    (out / "predictions.rank0.jsonl").write_text("".join(lines[4:9]) + lines[9][:10], encoding="utf-8")
    (out / "predictions.rank1.jsonl").write_text("".join(lines[3:6] + lines[12:15]), encoding="utf-8")  # 3 twice
    metrics = evaluate(LengthTask(), model, tokenizer, out, settings, {"model": "tiny"})
    assert metrics["generated"] == COUNT - 12
    assert files(out, "generated") == files(clean, "generated")


@pytest.mark.slow
def test_a_rank_killed_mid_evaluation_resumes_on_any_world_size(single, tmp_path):
    killed = tmp_path / "killed"
    processes = launch(killed, 2, kill={1: 4})  # rank 1 dies inside its second group of 3
    processes[1].wait(timeout=240)
    assert processes[1].returncode == -signal.SIGKILL
    processes[0].kill()  # as torchrun stops the others when one rank fails
    processes[0].wait(timeout=60)
    assert not (killed / "metrics.json").exists()
    saved = on_disk(killed)
    assert (killed / "predictions.rank1.jsonl").read_text().count("\n") == 3  # its finished group, kept
    assert 3 <= saved < COUNT

    for world in (2, 1):  # the same world size, and one process
        out = tmp_path / f"resumed-{world}"
        shutil.copytree(killed, out)
        metrics = finish(launch(out, world))[0]
        assert metrics["generated"] == COUNT - saved  # nothing finished before is generated again
        assert files(out, "generated") == files(single, "generated"), world
        assert not list(out.glob("predictions.rank*.jsonl"))
