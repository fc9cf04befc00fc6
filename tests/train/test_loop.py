"""The training loop end to end on the tiny Llama: checkpoints, logs, the loss it
reports, the schedule, the callback, a diverging run and bad input."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from keeptune.cli import main
from keeptune.core.errors import ConfigError, ResumeMismatchError, TrainingDivergedError
from keeptune.train.loop import train
from tests.train.conftest import N_RECORDS, conversation, tiny_config

STEPS, CHECKPOINTS = 12, [4, 8, 12]  # 48 samples / global batch 8 = 6 steps per epoch, 2 epochs; round(k*12/3)


def adapter_tensors(path):
    return load_file(path / "adapter_model.safetensors")


def test_checkpoints_are_evenly_spaced_peft_adapters(trained, tiny_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert trained.step == STEPS and not trained.stopped_early
    folders = sorted((trained.run / "checkpoints").iterdir())
    assert [f.name for f in folders] == [f"step-{s:06d}" for s in CHECKPOINTS]
    for folder, step in zip(folders, CHECKPOINTS):
        assert {"adapter_config.json", "adapter_model.safetensors", "keeptune.json", "optimizer.safetensors",
                "trainer_state.json", "rng-rank0.json"} <= {p.name for p in folder.iterdir()}
        assert json.loads((folder / "keeptune.json").read_text())["step"] == step
        assert json.loads((folder / "trainer_state.json").read_text())["samples_seen"] == step * 8
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    loaded = PeftModel.from_pretrained(base, folders[0])
    saved = adapter_tensors(folders[0])
    assert len(saved) == 8  # A and B of q_proj and v_proj in 2 layers
    for name, param in loaded.named_parameters():
        if "lora_" in name:
            assert torch.equal(param, saved[name.replace(".default", "")])
    # training moved the adapter, and on: step 4 != step 8 != step 12
    lora_b = [k for k in saved if "lora_B" in k]
    assert all(saved[k].abs().sum() > 0 for k in lora_b)
    assert not torch.equal(saved[lora_b[0]], adapter_tensors(folders[1])[lora_b[0]])
    final = adapter_tensors(trained.adapter)
    last = adapter_tensors(folders[-1])
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)


def test_keeptune_json_records_what_evaluation_needs(trained, tiny_dir, tiny_data):
    info = json.loads((trained.adapter / "keeptune.json").read_text())
    assert info["base_model"] == str(tiny_dir)
    assert info["prompt"] == "math"  # detected: the records are in the math prompt
    assert (info["format"], info["add_bos"], info["seq_len"], info["step"]) == ("plain", False, 256, STEPS)
    assert info["lora"] == {"targets": ["q_proj", "v_proj"], "rank": 8, "alpha": 16, "dropout": 0.05}
    assert info["data"] == str(tiny_data)


def test_log_has_loss_and_the_cosine_schedule(trained):
    records = [json.loads(line) for line in (trained.run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    # warm-up ceil(0.03 * 12) = 1 step, then cosine from 1e-2 to 0 over the other 11; step k uses lr(k - 1)
    peak, warmup = 1e-2, 1
    expected = [peak * s / warmup if s < warmup else
                peak * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (STEPS - warmup))) for s in range(STEPS)]
    assert [r["lr"] for r in records] == pytest.approx(expected, abs=1e-12)
    assert all(r["tokens_per_s"] > 0 and r["tokens"] > 0 and math.isfinite(r["loss"]) for r in records)
    assert records[-1]["loss"] < records[0]["loss"]
    assert (trained.run / "config.yaml").is_file()
    assert list((trained.run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("bf16", 1e-2)])
def test_first_loss_is_the_base_model_loss_on_answer_tokens(tiny_dir, tiny_data, tmp_path, precision, tolerance):
    """One global batch of all 48 samples: step 1's loss (LoRA B = 0 until then) is the base model's
    mean cross-entropy over answer + EOS tokens, computed here in float32 with transformers' own loss;
    bf16 compute lands within bfloat16's rounding of it, but not on it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = train(tiny_config(tiny_dir, tiny_data, tmp_path / "run", "train.global_batch=48",
                               "train.micro_batch=8", "train.max_steps=1", "train.checkpoints=1",
                               f"train.precision={precision}"))
    logged = json.loads((result.run / "log.jsonl").read_text().splitlines()[0])["loss"]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir)
    total = count = 0
    for i in range(N_RECORDS):
        turns = conversation(i)["conversations"]
        prompt = tokenizer(turns[0]["value"], add_special_tokens=False).input_ids
        answer = tokenizer(turns[1]["value"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + answer])
        labels = torch.tensor([[-100] * len(prompt) + answer])
        with torch.no_grad():
            total += model(input_ids=ids, labels=labels).loss.item() * len(answer)
        count += len(answer)
    assert logged == pytest.approx(total / count, rel=tolerance)
    if precision == "bf16":
        assert logged != pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize("row_masks", [True, False])
def test_the_head_sees_only_what_the_loss_needs(tiny_dir, monkeypatch, row_masks):
    """token_loss_sum (head on label positions only: exactly them with transformers' row masks, else the
    positions any row needs) equals the cross-entropy of the full logits at the label tokens."""
    from transformers import AutoModelForCausalLM

    from keeptune.train import loop
    from keeptune.train.records import IGNORE

    if row_masks and not loop.ROW_MASKS:
        pytest.skip("this transformers has no row masks for logits_to_keep")
    monkeypatch.setattr(loop, "ROW_MASKS", row_masks)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (3, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # a padded row
    labels = torch.full_like(ids, IGNORE)
    labels[0, 4:8], labels[1, 7:12], labels[2, 2:9] = ids[0, 4:8], ids[1, 7:12], ids[2, 2:9]
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    keep, targets = loop.label_positions(labels)
    assert (targets != IGNORE).sum() == 4 + 5 + 7 and (targets.numel() == 16) == row_masks
    with torch.no_grad():
        got = loop.token_loss_sum(model, batch)
        logits = model(input_ids=ids, attention_mask=mask).logits
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                                 ignore_index=IGNORE, reduction="sum")
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_same_seed_same_adapter_other_seed_other(trained, tiny_dir, tiny_data, tmp_path):
    again = train(tiny_config(tiny_dir, tiny_data, tmp_path / "again", "train.epochs=2", "train.checkpoints=3"))
    other = train(tiny_config(tiny_dir, tiny_data, tmp_path / "other", "train.epochs=2", "train.checkpoints=1",
                              "train.seed=1"))
    first, second, third = (adapter_tensors(r.adapter) for r in (trained, again, other))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_callback_metrics_are_logged_and_it_can_stop(tiny_dir, tiny_data, tmp_path):
    calls = []

    def on_step(step, model):
        calls.append((step, model.training, type(model).__name__))
        model.eval()  # the loop puts the model back in training mode
        return {"probe": step * 10, "stop": step == 4}

    result = train(tiny_config(tiny_dir, tiny_data, tmp_path / "run"), on_step=on_step, every=2)
    assert calls == [(2, True, "PeftModelForCausalLM"), (4, True, "PeftModelForCausalLM")]
    assert result.stopped_early and result.step == 4
    records = [json.loads(line) for line in (result.run / "log.jsonl").read_text().splitlines()]
    assert [r.get("probe") for r in records] == [None, 20, None, 40]
    assert "stop" not in records[-1]
    # checkpoints at the planned step 1 (round(6/5)) and 2, and at the stop
    assert [p.name for p in sorted((result.run / "checkpoints").iterdir())] == [
        "step-000001", "step-000002", "step-000004"]
    assert json.loads((result.adapter / "keeptune.json").read_text())["step"] == 4


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_dir, tiny_data, tmp_path, monkeypatch, bad):
    import keeptune.train.loop as loop

    calls, real = [], loop.token_loss_sum

    def poisoned(model, batch):  # step 3's second micro-batch (of 4) returns a non-finite loss
        calls.append(1)
        loss = real(model, batch)
        return loss * bad if len(calls) == 10 else loss

    monkeypatch.setattr(loop, "token_loss_sum", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=rf"training stopped at step 3: the loss is {bad}, .*not finite.*"
                                                    rf"the last good checkpoint is {run}/checkpoints/step-000002"):
        train(tiny_config(tiny_dir, tiny_data, run, "train.checkpoints=6"))
    assert len(calls) == 12  # step 3 ran to its end, and no further
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    assert not (run / "adapter").exists()
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_an_absurd_lr_is_refused_before_its_weights_are_saved(tiny_dir, tiny_data, tmp_path):
    """Issue 28: train.lr=1e308 is finite, so it passes validation; step 2's update (step 1 is warm-up, lr 0)
    overflows the adapter's weights while that step's loss is still finite. Before, the checkpoint of step 2 was
    written with NaN weights and then called "the last good checkpoint" when step 3's loss was NaN."""
    from safetensors.torch import load_file

    run = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=rf"^training stopped at step 2: its update made trainable weights "
                                                    rf"infinite or NaN \(the loss was finite\), so it was not saved; "
                                                    rf"the last good checkpoint is {run}/checkpoints/step-000001\. "
                                                    rf"Lower train.lr \(now 1e\+308\)$"):
        train(tiny_config(tiny_dir, tiny_data, run, "train.checkpoints=6", "train.lr=1e308"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001"]
    weights = load_file(run / "checkpoints" / "step-000001" / "adapter_model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert [json.loads(line)["lr"] for line in (run / "log.jsonl").read_text().splitlines()] == [0.0, 1e308]


def test_existing_run_needs_resume_and_the_same_settings(trained, tiny_dir, tiny_data):
    config = tiny_config(tiny_dir, tiny_data, trained.run, "train.epochs=2", "train.checkpoints=3")
    with pytest.raises(ConfigError, match="already holds checkpoints .* --resume"):
        train(config)
    changed = dataclasses.replace(config, resume=True, lora=dataclasses.replace(config.lora, rank=4))
    with pytest.raises(ResumeMismatchError, match=r"step-000012 was trained with other settings \(lora.rank differ\); "
                                                  "resume with the same config and data, or use another out="):
        train(changed)
    done = train(dataclasses.replace(config, resume=True))  # already complete: nothing to train
    assert done.step == STEPS


def test_retention_methods_need_their_hooks(tiny_dir, tiny_data, tmp_path):
    """The loop alone trains plain LoRA; kl and corda come through keeptune.retention.training.train."""
    with pytest.raises(ConfigError, match="'retention.methods': this training was given no hooks for kl"):
        train(tiny_config(tiny_dir, tiny_data, tmp_path / "run", "retention.methods=[kl]"))
    assert not (tmp_path / "run").exists()


def test_global_batch_must_split_into_micro_batches(tiny_dir, tiny_data, tmp_path):
    # at parse time (issue 11.3): before any data is read or model loaded
    with pytest.raises(ConfigError, match=r"field 'train.global_batch' is 8; it must be a multiple of "
                                          r"train.micro_batch \(3\)"):
        tiny_config(tiny_dir, tiny_data, tmp_path / "run", "train.micro_batch=3")
    # and by the loop, which also knows the world size
    config = tiny_config(tiny_dir, tiny_data, tmp_path / "run")
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, micro_batch=3))
    with pytest.raises(ConfigError, match="global_batch 8 must be train.micro_batch 3"):
        train(config)


@pytest.mark.parametrize(("content", "message"), [
    ("", "is empty"),
    (json.dumps(conversation(0)) + "\n{oops\n", ":2: not valid JSON"),
    (json.dumps(conversation(0)) + "\n", "fewer than one global batch"),
])
def test_bad_data_is_one_line_cli_error(tiny_dir, tmp_path, capsys, content, message):
    data = tmp_path / "bad.jsonl"
    data.write_text(content, encoding="utf-8")
    code = main(["train", f"model.source={tiny_dir}", f"data.path={data}", f"out={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2
    error_lines = [line for line in err.splitlines() if line.startswith("keeptune: error:")]
    assert len(error_lines) == 1 and str(data) in error_lines[0] and message in error_lines[0], err
    assert "Traceback" not in err


def test_all_samples_too_long_is_one_line_cli_error(tiny_dir, tiny_data, tmp_path, capsys):
    assert main(["train", f"model.source={tiny_dir}", f"data.path={tiny_data}", "data.seq_len=8"]) == 2
    assert "are longer than seq_len + 1 = 9 tokens" in capsys.readouterr().err


def test_gradient_checkpointing_gives_the_same_losses(tiny_dir, tiny_data, tmp_path):
    seen = []

    def checkpointed(step, model):  # the decoder layers recompute their activations in backward
        seen.append(bool(getattr(model.get_base_model().model.layers[0], "gradient_checkpointing", False)))

    runs = [train(tiny_config(tiny_dir, tiny_data, tmp_path / name, "train.max_steps=3", "train.checkpoints=1",
                              f"train.gradient_checkpointing={flag}", "lora.dropout=0"), on_step=checkpointed, every=3)
            for name, flag in (("plain", "false"), ("ckpt", "true"))]
    assert seen == [False, True]
    losses = [[json.loads(line)["loss"] for line in (r.run / "log.jsonl").read_text().splitlines()] for r in runs]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
