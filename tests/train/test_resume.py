"""kill -9 a real training process after its first checkpoint, resume it, and get
the adapter of an uninterrupted run bit for bit (CPU, fixed seed)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from keeptune.model import adapter as adapters
from keeptune.retention.training import train  # the loop with kl and corda plugged in, as `keeptune train` runs it
from tests.conftest import REPO
from tests.train.conftest import tiny_config, tiny_words

# 48 samples / global batch 4 = 12 steps per epoch, 5 epochs = 60 steps; checkpoints at 12, 24, 36, 48, 60.
RUN = ("train.epochs=5", "train.global_batch=4", "train.micro_batch=2", "train.lr=3e-3")


def log_of(run):
    return [(r["step"], r["loss"], r["lr"], r.get("ce"), r.get("kl"))
            for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]


# Retention `corda`'s preservation prompts (passed to train: the subprocess below runs it the same way).
PROMPTS = [f"Passage {i}: the river runs {7 * i + 3} miles past town {i % 5}. Question: how far does it run?"
           for i in range(16)]
# `keeptune train` in a subprocess; with corda, train(config, preservation=PROMPTS) from the same words.
CORDA_CHILD = ("import sys; from keeptune.train.config import load_config; "
               "from keeptune.retention.training import train; from tests.train.test_resume import PROMPTS; "
               "train(load_config(None, sys.argv[1:]), preservation=PROMPTS)")


@pytest.mark.parametrize("precision,methods", [("fp32", ""), ("bf16", ""), ("fp32", "kl"), ("fp32", "corda"),
                                               ("bf16", "kl,corda")])
def test_killed_run_resumes_to_the_identical_adapter(tiny_dir, tiny_data, tmp_path, precision, methods):
    run = (*RUN, f"train.precision={precision}", f"retention.methods=[{methods}]")
    reference = train(tiny_config(tiny_dir, tiny_data, tmp_path / "reference", *run), preservation=PROMPTS)

    out = tmp_path / "killed"
    with open(tmp_path / "stderr.txt", "w") as stderr:
        words = tiny_words(tiny_dir, tiny_data, out, *run)
        command = [sys.executable, *(["-c", CORDA_CHILD] if "corda" in methods else ["-m", "keeptune", "train"]),
                   *words]
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 300
        while not list((out / "checkpoints").glob("step-*")) and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint in 300 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, (tmp_path / "stderr.txt").read_text()[-2000:]
    done = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert done and done[-1] != "step-000060" and not (out / "adapter").exists()  # killed while training
    # what a kill during a save and during a log write leave behind
    (out / "checkpoints" / ".step-000099.tmp").mkdir()
    (out / "checkpoints" / ".step-000099.tmp" / "adapter_model.safetensors").write_bytes(b"torn")
    with open(out / "log.jsonl", "a") as log:
        log.write('{"step": 99, "lo')

    resumed = train(dataclasses.replace(tiny_config(tiny_dir, tiny_data, out, *run), resume=True),
                    preservation=PROMPTS)
    assert resumed.step == reference.step == 60
    expected, actual = load_file(reference.adapter / "adapter_model.safetensors"), \
        load_file(resumed.adapter / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    if "corda" in methods:  # and the weights as trained on CorDA's residual, which resuming loads
        expected, actual = (load_file(r / "checkpoints" / "step-000060" / adapters.CORDA_WEIGHTS)
                            for r in (reference.run, out))
        assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
    assert log_of(out) == log_of(reference.run)  # every step's loss and lr, the torn line gone
    assert not list((out / "checkpoints").glob(".*"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-{s:06d}" for s in (12, 24, 36, 48, 60)]


def test_a_setting_added_after_a_run_was_trained_resumes_at_its_default(tmp_path):
    """A checkpoint recorded before lora.init and retention.intruder_* existed resumes when they are at their
    defaults (what it was trained with), and is refused when one is set otherwise."""
    import dataclasses

    import pytest

    from keeptune.core.config import to_dict
    from keeptune.core.errors import ResumeMismatchError
    from keeptune.train.config import Config, DataConfig, LoraConfig
    from keeptune.train.loop import check_resumable, section_defaults

    config = Config(data=DataConfig(path="train.jsonl"))
    identity = to_dict(config)
    old = json.loads(json.dumps(identity))
    del old["lora"]["init"]
    for key in [k for k in old["retention"] if k.startswith("intruder_")]:
        del old["retention"][key]
    (tmp_path / "keeptune.json").write_text(json.dumps({"config": old}), encoding="utf-8")
    defaults = section_defaults(config)
    assert defaults["lora.init"] == "default"
    check_resumable(tmp_path, identity, defaults=defaults)  # at the defaults: the same run
    with pytest.raises(ResumeMismatchError, match="lora.init"):
        check_resumable(tmp_path, identity)  # without the defaults the missing key is a change
    mica = to_dict(dataclasses.replace(config, lora=dataclasses.replace(LoraConfig(), init="mica")))
    with pytest.raises(ResumeMismatchError, match="lora.init"):
        check_resumable(tmp_path, mica, defaults=defaults)
