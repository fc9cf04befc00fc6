"""A full disk and Ctrl-C during `keeptune eval` and `keeptune train` (issue 28, item 4): one line, not a
traceback (a full disk: `keeptune: error: FILE: ...`, exit 2; Ctrl-C: what was saved and how to go on, exit 130),
and the same command run again finishes the work with the result of an uninterrupted run."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import SafetensorError
from safetensors.torch import load_file

from keeptune.cli import main
from tests.train.conftest import tiny_words

REPO = Path(__file__).resolve().parents[2]
SPEC = """name: qa
data: {path: qa.jsonl}
prompt: "Q: {question}\\nA:"
reference: answer
generation: {max_new_tokens: 4}
postprocess: [strip, first_line]
metrics: [exact_match]
"""
# What safetensors raises on a full disk (its words on a full tmpfs): its own error, the OS error in the text.
FULL_SAFETENSORS = "Error while serializing: I/O error: No space left on device (os error 28)"
FULL = "cannot write: No space left on device; free some space, then run the same command again"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEPTUNE_CACHE", str(tmp_path / "cache"))


def qa_task(folder: Path, count: int = 12) -> Path:
    (folder / "qa.yaml").write_text(SPEC, encoding="utf-8")
    (folder / "qa.jsonl").write_text("".join(json.dumps({"question": f"{i} + 1?", "answer": str(i + 1)}) + "\n"
                                             for i in range(count)), encoding="utf-8")
    return folder / "qa.yaml"


def last_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    return err.strip().splitlines()[-1]


def predictions(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return sorted(records, key=lambda r: r["id"])


def failing_on_call(number: int, error: BaseException, real=None):
    """A stand-in that raises `error` on its `number`-th call, before any work, and calls `real` (when given)
    on the others."""
    calls = []

    def call(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise error
        return real(*args, **kwargs) if real is not None else None
    return call


# --- keeptune eval --------------------------------------------------------------------------------

def eval_words(task: Path, model: Path, out: Path) -> list[str]:
    return ["eval", str(task), "--model", str(model), "--out", str(out), "--batch-size", "4"]


def test_a_full_disk_during_eval_names_the_file_and_the_rerun_resumes(tiny_dir, tmp_path, monkeypatch, capsys):
    import keeptune.core.io as keeptune_io

    task, out, clean = qa_task(tmp_path), tmp_path / "eval", tmp_path / "clean"
    assert main(eval_words(task, tiny_dir, clean)) == 0
    with monkeypatch.context() as patch:  # the disk fills while the second batch is pushed to it
        patch.setattr(keeptune_io.os, "fsync", failing_on_call(2, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                                                               os.fsync))
        capsys.readouterr()
        assert main(eval_words(task, tiny_dir, out)) == 2
    assert last_line(capsys.readouterr().err) == f"keeptune: error: {out / 'predictions.jsonl'}: {FULL}"
    assert main(eval_words(task, tiny_dir, out)) == 0
    assert "resuming: 8 of 12 samples already in" in capsys.readouterr().out
    assert predictions(out) == predictions(clean)
    assert json.loads((out / "metrics.json").read_text())["scores"] == \
        json.loads((clean / "metrics.json").read_text())["scores"]


def test_ctrl_c_during_eval_says_what_was_saved_and_the_rerun_resumes(tiny_dir, tmp_path, monkeypatch, capsys):
    import keeptune.evaluate.engine as engine

    task, out = qa_task(tmp_path), tmp_path / "eval"
    with monkeypatch.context() as patch:  # Ctrl-C once the second batch is on disk
        patch.setattr(engine, "append_jsonl", failing_on_call(3, KeyboardInterrupt(), engine.append_jsonl))
        assert main(eval_words(task, tiny_dir, out)) == 130
    assert last_line(capsys.readouterr().err) == (f"keeptune: interrupted: 8 of 12 predictions are in "
                                                  f"{out / 'predictions.jsonl'}; run the same command again to resume")
    assert main(eval_words(task, tiny_dir, out)) == 0
    assert "resuming: 8 of 12 samples already in" in capsys.readouterr().out


def test_a_real_sigint_during_eval_ends_in_one_line(tiny_dir, tmp_path):
    task, out = qa_task(tmp_path, count=400), tmp_path / "eval"
    # SIGINT at its default in the child: a test run started in the background of a non-interactive shell (as
    # `cmd &` does) ignores SIGINT, and Python then never raises KeyboardInterrupt in what it starts.
    process = subprocess.Popen([sys.executable, "-m", "keeptune", *eval_words(task, tiny_dir, out)], cwd=REPO,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        written = out / "predictions.jsonl"
        while not (written.is_file() and written.stat().st_size) and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        err = process.communicate(timeout=60)[1]
    finally:
        process.kill()
    assert process.returncode == 130, err[-3000:]
    saved = len(written.read_text().splitlines())
    assert 4 <= saved < 400
    assert last_line(err) == (f"keeptune: interrupted: {saved} of 400 predictions are in {written}; "
                              "run the same command again to resume")


@pytest.mark.skipif(shutil.which("unshare") is None or subprocess.run(
    ["unshare", "-rm", "true"], capture_output=True).returncode != 0, reason="no user namespaces to mount a tmpfs in")
def test_a_really_full_disk_during_eval(tiny_dir, tmp_path):
    """A 12 KiB tmpfs (mounted in a user namespace) fills while the predictions are written."""
    task, out = qa_task(tmp_path, count=60), tmp_path / "disk" / "eval"
    out.parent.mkdir()
    command = (f"mount -t tmpfs -o size=12k tmpfs {out.parent} && exec {sys.executable} -m keeptune "
               + " ".join(eval_words(task, tiny_dir, out)))
    result = subprocess.run(["unshare", "-rm", "sh", "-c", command], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line(result.stderr) == f"keeptune: error: {out / 'predictions.jsonl'}: {FULL}"


# --- keeptune train ---------------------------------------------------------------------------------

def train_words(model: Path, data: Path, out: Path) -> list[str]:
    return ["train", *tiny_words(model, data, out, "train.checkpoints=3")]  # 6 steps, checkpoints 2, 4, 6


def test_a_full_disk_during_train_names_the_checkpoint_and_resume_ends_as_uninterrupted(tiny_dir, tiny_data, tmp_path,
                                                                                       monkeypatch, capsys):
    import keeptune.train.checkpoint as checkpoint

    run, clean = tmp_path / "run", tmp_path / "clean"
    assert main(train_words(tiny_dir, tiny_data, clean)) == 0
    with monkeypatch.context() as patch:  # the second checkpoint's optimizer state finds the disk full
        patch.setattr(checkpoint, "save_file", failing_on_call(2, SafetensorError(FULL_SAFETENSORS), checkpoint.save_file))
        capsys.readouterr()
        assert main(train_words(tiny_dir, tiny_data, run)) == 2
    step4 = run / "checkpoints" / "step-000004"
    assert last_line(capsys.readouterr().err) == f"keeptune: error: {step4}: {FULL}"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002"]  # no half checkpoint left
    assert main([*train_words(tiny_dir, tiny_data, run), "--resume"]) == 0
    assert f"resuming from {run / 'checkpoints' / 'step-000002'}" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    resumed = load_file(run / "adapter" / "adapter_model.safetensors")
    uninterrupted = load_file(clean / "adapter" / "adapter_model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all((resumed[k] == uninterrupted[k]).all() for k in resumed)


def test_ctrl_c_during_train_names_the_last_checkpoint_and_how_to_resume(tiny_dir, tiny_data, tmp_path, monkeypatch,
                                                                         capsys):
    import keeptune.train.loop as loop

    run = tmp_path / "run"
    with monkeypatch.context() as patch:  # Ctrl-C at step 3, after the checkpoint of step 2
        patch.setattr(loop, "write_log", failing_on_call(3, KeyboardInterrupt(), loop.write_log))
        assert main(train_words(tiny_dir, tiny_data, run)) == 130
    assert last_line(capsys.readouterr().err) == (
        f"keeptune: interrupted: the checkpoints up to step 2 of 6 are in {run / 'checkpoints'}; "
        "run the same command with --resume to continue from the last checkpoint")
    assert main([*train_words(tiny_dir, tiny_data, run), "--resume"]) == 0
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
