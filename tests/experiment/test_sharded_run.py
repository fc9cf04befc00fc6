"""`keeptune run` under torchrun (2 CPU processes, gloo) evaluates on both ranks and leaves the files one process
leaves: baseline, tracking and checkpoint evaluations byte for byte (but their wall time), the same log and
results; a rank killed with SIGKILL in the middle of a checkpoint's evaluation is resumed by the same command;
two "nodes" (two torchrun commands, one process each, rendezvous on localhost, a cache each) leave the same files
as one node of two processes; with FSDP (no tracking), every rank reloads the base model whole and the
checkpoints' evaluations are still one process's.

One thread per process, in both runs: training then computes the same sums in the same order on one rank and
on two (global batch 4 = micro-batch 2 x accumulation 2 x 1 = 2 x 1 x 2, no dropout, float32), so the
checkpoints, and everything evaluated from them, are the same bits."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.experiment.test_runner import tiny_experiment

pytestmark = pytest.mark.slow  # six runs of a tiny experiment, about two and a half minutes on 2 cores

WORDS = ("new_task.eval_n=8", "new_task.max_new_tokens=6", "train.max_steps=2", "train.checkpoints=2",
         "train.lr=1e-2", "tracking.every=1", "tracking.retention=2", "tracking.new_task=4", "lora.dropout=0",
         "train.precision=fp32", "batch_size=2")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
KILLED = Path("checkpoints") / "step-000002" / "math-worked"  # the folder where rank 1 dies


def keeptune_run(launcher: list[str], words: list[str], command: tuple[str, ...] = ("keeptune", "run")):
    """`python -m keeptune run WORDS` under `launcher` (python, or torchrun); `command`: another module and its
    leading arguments."""
    return subprocess.run([*launcher, "-m", *command, *words], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=400, check=False)


def evaluations(run: Path, *but: str) -> dict[str, object]:
    """Every evaluation folder's files (metrics.json without its wall time, nor `but`) and the results."""
    seen = {}
    for path in sorted(run.glob("*/**/eval.json")):
        folder = path.parent
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        for key in ("seconds", *but):
            metrics.pop(key)
        names = sorted(p.name for p in folder.iterdir() if p.name != ".lock")
        seen[str(folder.relative_to(run))] = (names, path.read_bytes(), (folder / "predictions.jsonl").read_bytes(),
                                              metrics)
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    log = [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "tokens_per_s")}
           for line in (run / "train" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    return {"folders": seen, "checkpoints": results["checkpoints"], "best": results["best"],
            "tracking": results["tracking"], "baseline": results["baseline"], "log": log}


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, list[str], dict]:
    """One process's run, moved aside once done, so that the torchrun runs use the same paths."""
    tmp = tmp_path_factory.mktemp("sharded")
    words = tiny_experiment(tmp, *WORDS)
    result = keeptune_run([sys.executable], words)
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.move(tmp / "run", tmp / "single")
    return tmp, words, evaluations(tmp / "single")


@pytest.fixture
def fresh(single):
    """`single`, with no run in its folder's `run` yet; whatever a test leaves there goes after it."""
    run = single[0] / "run"
    assert not run.exists()
    yield single
    shutil.rmtree(run, ignore_errors=True)


def test_two_ranks_leave_what_one_process_leaves(fresh):
    tmp, words, expected = fresh
    result = keeptune_run(TORCHRUN, words)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world 2" in result.stdout and result.stdout.count("== baseline") == 1
    seen = evaluations(tmp / "run")
    assert len(seen["folders"]) == 2 + 2 * 2 + 2 * 2  # baseline, 2 tracked steps, 2 checkpoints; 2 tasks each
    assert seen == expected
    assert not list((tmp / "run").glob("**/predictions.rank*.jsonl"))


def test_a_rank_killed_mid_evaluation_is_resumed_by_the_same_command(fresh):
    tmp, words, _ = fresh
    run = tmp / "run"
    folder = run / KILLED
    killed = keeptune_run(TORCHRUN, words, ("tests.experiment.kill_rank", str(folder)))
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert not (folder / "metrics.json").exists()
    assert (folder / "predictions.rank1.jsonl").read_text().count("\n") == 2  # its first group of 2, kept
    saved = sum(p.read_text().count("\n") for p in folder.glob("predictions*.jsonl"))

    result = keeptune_run(TORCHRUN, words)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming: " in result.stdout
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["generated"] == 8 - saved  # what was on disk is not generated again
    assert evaluations(run, "generated") == evaluations(tmp / "single", "generated")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_nodes_leave_what_one_node_leaves(fresh, tmp_path):
    """`torchrun --nnodes 2` twice, as on two machines: the run folder shared, each node its own cache."""
    tmp, words, expected = fresh
    port = free_port()
    nodes = []
    for node in range(2):
        cache = tmp_path / f"cache-node{node}"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                    "--node_rank", str(node), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"localhost:{port}",
                    "--rdzv_id", "two-nodes"]
        nodes.append(subprocess.Popen([*launcher, "-m", "keeptune", "run", *words], cwd=REPO,
                                      env={**ENV, "KEEPTUNE_CACHE": str(cache), "XDG_CACHE_HOME": str(cache)},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [node.communicate(timeout=400) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-3000:] for _, err in outputs]
    out = "".join(stdout for stdout, _ in outputs)
    assert "world 2" in out and out.count("== baseline") == 1  # one rank of the two (either node) reports
    assert evaluations(tmp / "run") == expected


def test_fsdp_ranks_evaluate_the_checkpoints_one_process_evaluates(fresh):
    tmp, words, expected = fresh
    result = keeptune_run(TORCHRUN, [*words, "distributed.strategy=fsdp", "tracking.every=0"])
    assert result.returncode == 0, result.stderr[-3000:]
    seen = evaluations(tmp / "run")["folders"]
    assert sorted(seen) == sorted(k for k in expected["folders"] if not k.startswith("tracking"))
    for folder, files in seen.items():  # training's settings are the same: only tracking is off
        assert files == expected["folders"][folder], folder
