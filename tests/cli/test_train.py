"""`keeptune merge` (merged weights give the adapter's logits) and `keeptune train` from the command line."""
from __future__ import annotations

import json

import pytest
import torch

from keeptune.cli import main
from tests.train.conftest import trained  # noqa: F401 (fixture: the training tests' tiny run, merged here)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merged_model_gives_the_adapter_logits(trained, tiny_dir, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    assert main(["merge", str(trained.adapter), "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "keeptune.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.bin"))
    assert json.loads((out / "keeptune.json").read_text())["prompt"] == "math"

    ids = torch.tensor([[5, 80, 81, 90, 100, 7, 3, 60, 61, 62, 63, 64]])
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), trained.adapter).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    assert torch.allclose(logits(merged, ids), logits(adapted, ids), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits(merged, ids), logits(base, ids), atol=1e-3)  # the adapter does something


def test_merge_never_deletes_a_folder_it_did_not_make(trained, tmp_path, capsys):
    """Issue 11.1: `--out` naming a user's folder deleted thesis.txt (exit 0)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    assert main(["merge", str(trained.adapter), "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"keeptune: error: {folder}: the output directory exists and keeptune did not create it")
    assert "--overwrite" in err
    assert [p.name for p in folder.iterdir()] == ["thesis.txt"]
    # told to: the merged model goes in beside it, the user's file stays
    assert main(["merge", str(trained.adapter), "--out", str(folder), "--overwrite", "true"]) == 0
    assert (folder / "thesis.txt").read_text() == "years of work"
    assert (folder / "model.safetensors").is_file()
    # and it is still not ours to replace wholesale
    assert main(["merge", str(trained.adapter), "--out", str(folder)]) == 2
    assert "holds files keeptune did not write (thesis.txt)" in capsys.readouterr().err


def test_merge_replaces_its_own_earlier_output(trained, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", str(trained.adapter), "--out", str(out)]) == 0
    assert main(["merge", str(trained.adapter), "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file()


def test_merge_never_writes_into_its_adapter(trained, capsys):
    """Issue 11.1: `--out` equal to the adapter's folder replaced the adapter with merged weights."""
    before = sorted(p.name for p in trained.adapter.iterdir())
    for out in (trained.adapter, trained.adapter / "merged", trained.adapter.parent):
        assert main(["merge", str(trained.adapter), "--out", str(out), "--overwrite", "true"]) == 2
        assert f"this command's input {trained.adapter}" in capsys.readouterr().err
    assert sorted(p.name for p in trained.adapter.iterdir()) == before


def test_merge_refuses_a_directory_without_adapter(tmp_path, capsys):
    assert main(["merge", str(tmp_path)]) == 2
    assert "is not a PEFT adapter directory" in capsys.readouterr().err


def test_train_command_with_config_file_and_overrides(tiny_dir, tiny_data, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"model:\n  source: {tiny_dir}\ndata:\n  path: {tiny_data}\ntrain:\n  max_steps: 2\n"
                      "  checkpoints: 1\n", encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", str(config), f"out={out}", "lora.rank=2", "lora.names=mindformers",
                 "train.global_batch=4", "train.micro_batch=2"]) == 0
    printed = capsys.readouterr().out
    # the seed's parameter names, then the exact ratio; rank 2 on q (64->64) and v (64->32) in 2 layers:
    # (2*64 + 64*2) + (2*64 + 32*2) = 448 per layer, 896 in all, of 107,328
    assert 'param group "decay": weight_decay 0.0, 8 parameters' in printed
    assert "  model.layers.0.attention.wq.mindpet_delta_lora_a (2, 64)" in printed
    assert "trainable parameters: 896\ntotal parameters: 107328\n" in printed
    assert f"ratio: {896 / 107328:.11g} (exact: {896 / 107328!r})" in printed
    assert "global batch 4 = micro-batch 2 x accumulation 2 x world 1" in printed
    assert json.loads((out / "adapter" / "keeptune.json").read_text())["lora"]["rank"] == 2

    # the same run again is refused; --resume finds it complete
    assert main(["train", str(config), f"out={out}", "lora.rank=2", "lora.names=mindformers",
                 "train.global_batch=4", "train.micro_batch=2"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(config), f"out={out}", "lora.rank=2", "lora.names=mindformers",
                 "train.global_batch=4", "train.micro_batch=2", "--resume"]) == 0


def test_train_refuses_a_folder_it_did_not_make(tiny_dir, tiny_data, tmp_path, capsys):
    """Issue 11.1: a run directory that is a user's non-empty folder is refused before any work."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    words = ["train", f"model.source={tiny_dir}", f"data.path={tiny_data}", f"out={folder}", "train.max_steps=1",
             "train.global_batch=2", "train.micro_batch=2", "train.checkpoints=1"]
    assert main(words) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"keeptune: error: {folder}: the output directory exists and keeptune did not create it")
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]
    assert main([*words, "--overwrite"]) == 0  # told to: the run goes in beside the user's file
    assert (folder / "thesis.txt").read_text() == "years of work"
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert main(["train", f"out={tiny_data.parent}", f"data.path={tiny_data}"]) == 2
    assert f"contains this command's input {tiny_data}" in capsys.readouterr().err


def test_train_targets_are_checked_before_the_model_loads(tiny_dir, tiny_data, tmp_path, monkeypatch, capsys):
    import keeptune.train.loop as loop

    monkeypatch.setattr(loop, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["train", f"model.source={tiny_dir}", f"data.path={tiny_data}", f"out={tmp_path / 'run'}",
                 "lora.targets=[nope]"]) == 2
    assert "'nope' matches no module" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing left behind


def test_unknown_target_is_one_line_error(tiny_dir, tiny_data, tmp_path, capsys):
    assert main(["train", f"model.source={tiny_dir}", f"data.path={tiny_data}", f"out={tmp_path}",
                 "lora.targets=[wq,nope]"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "'nope' matches no module" in err[0] and "q_proj" in err[0]


def test_an_absurd_learning_rate_ends_in_one_line(tiny_dir, tiny_data, tmp_path, capsys):
    """train.lr=1e308 is finite and accepted; training diverges at once and says to lower it (issue 28)."""
    from tests.train.conftest import tiny_words

    run = tmp_path / "run"
    assert main(["train", *tiny_words(tiny_dir, tiny_data, run, "train.lr=1e308")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("keeptune: error: training stopped at step 2: its update made "
                                                   "trainable weights infinite or NaN")
    assert err.strip().endswith("Lower train.lr (now 1e+308)")
    # the checkpoint of step 1 (warm-up: lr 0) is kept, step 2's overflowed weights were not saved
    assert [p.name for p in run.glob("checkpoints/step-*")] == ["step-000001"]
