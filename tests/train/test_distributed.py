"""Two processes under torchrun (gloo, CPU) train what one process trains with the
same global batch: DDP and FSDP2, each against the single-process run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from keeptune.train import distributed
from keeptune.train.loop import train
from tests.conftest import REPO
from tests.train.conftest import tiny_config, tiny_words

# global batch 8 = micro 2 x accumulation 4 x 1 process = micro 2 x accumulation 2 x 2 processes;
# no dropout, so the two runs compute the same function of the same data (ranks take disjoint micro-batches);
# float32, so "the same" holds to float32's rounding (FSDP's bf16 policy and CPU bf16 round differently)
RUN = ("train.epochs=1", "train.checkpoints=2", "lora.dropout=0", "train.precision=fp32")


def test_rank_and_world_read_torchrun_s_variables(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.rank_and_world() == (0, 1)  # one process, no torchrun
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed.rank_and_world() == (3, 4)


@pytest.fixture(scope="module")
def single(tiny_dir, tiny_data, tmp_path_factory):
    torch.set_num_threads(1)
    return train(tiny_config(tiny_dir, tiny_data, tmp_path_factory.mktemp("single") / "run", *RUN))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_two_processes_match_one(single, tiny_dir, tiny_data, tmp_path, strategy):
    out = tmp_path / "run"
    words = tiny_words(tiny_dir, tiny_data, out, *RUN, f"distributed.strategy={strategy}")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "keeptune", "train", *words],
                            cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global batch 8 = micro-batch 2 x accumulation 2 x world 2" in result.stdout
    assert result.stdout.count("training done at step 6") == 1  # rank 0 reports (and writes) alone

    expected = load_file(single.adapter / "adapter_model.safetensors")
    actual = load_file(out / "adapter" / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.allclose(actual[key], expected[key], rtol=1e-4, atol=1e-6), key
    assert any(expected[k].abs().sum() > 0 for k in expected if "lora_B" in k)  # training moved B from 0
    losses = [[json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
              for run in (single.run, out)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    step = out / "checkpoints" / "step-000006"
    assert {p.name for p in step.glob("rng-rank*.json")} == {"rng-rank0.json", "rng-rank1.json"}
