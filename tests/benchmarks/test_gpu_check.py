"""benchmarks/gpu_check.py at its tiny shape on the CPU, in bfloat16 as on a GPU: every step a GPU run takes
(the engine against Hugging Face generate, the float32 recheck, both training loops, a 2-step keeptune run) runs
here, so the script is known to work before a GPU is lent."""
from __future__ import annotations

import json
import subprocess
import sys

import torch

from keeptune.train.records import encode, read_conversations
from tests.conftest import REPO


def test_gpu_check_runs_every_step_at_the_tiny_shape_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--shape", "tiny", "--device", "cpu",
               "--prompts", "16", "--exact", "16", "--steps", "2", "--out", str(out),
               "--json", str(tmp_path / "c.json")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    check = json.loads((tmp_path / "c.json").read_text())
    assert check["environment"]["torch"] == torch.__version__ and check["environment"]["device"].startswith("CPU")
    # In float32, keeptune's batched decoding and Hugging Face generate agree token for token.
    assert check["exact"] == {"prompts": 16, "identical": 16}
    predictions = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len({p["id"] for p in predictions}) == 16 == check["eval"]["prompts"]
    assert 0 < check["eval"]["identical"] <= 16 and check["eval"]["keeptune_samples_per_s"] > 0
    # One epoch in both loops: each saw every record once, as many tokens as the records encode to.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / "tiny-model")
    records = encode(read_conversations(out / "train.jsonl"), tokenizer, "plain", 256).samples
    assert len(records) == 16
    assert check["keeptune_train"]["tokens"] == check["hf_train"]["tokens"] == sum(len(r.tokens) for r in records)
    # The keeptune run trained 2 steps and evaluated both checkpoints.
    results = json.loads(open(check["run"]["results"]).read())
    assert check["run"]["ok"] and [e["step"] for e in results["checkpoints"]] == [1, 2]
    table = result.stdout.split("| measurement | keeptune | Hugging Face | keeptune / HF | notes |")[1]
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 6  # the rule and five rows


def test_a_failing_check_is_reported_in_its_line_and_the_others_still_run():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    failed = gpu_check.attempt(lambda n: n / 0, 1)
    assert failed == {"error": "ZeroDivisionError: division by zero"}
    assert gpu_check.row("LoRA training", [{"tokens": 1}, failed], lambda: 1 / 0) == (
        "LoRA training", "FAILED", "", "", "ZeroDivisionError: division by zero")
    assert gpu_check.row("LoRA training", [{"tokens": 1}], lambda: ("2", "3", "0.67x", "")) == (
        "LoRA training", "2", "3", "0.67x", "")
