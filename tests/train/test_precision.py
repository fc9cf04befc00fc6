"""bf16 compute on a CPU: when auto picks it, what the loop holds in bfloat16, and what comes back."""
from __future__ import annotations

import json

import pytest
import torch

from keeptune.model.load import load_model
from keeptune.train import precision
from keeptune.train.loop import train
from tests.train.conftest import tiny_config

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_processor_and_forced_values_do_not(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    assert precision.use_bf16("auto", CPU) is native
    assert precision.use_bf16("bf16", CPU) is True
    assert precision.use_bf16("fp32", CPU) is False
    with pytest.raises(ValueError, match="fp16"):
        precision.use_bf16("fp16", CPU)


def test_the_cpu_probe_agrees_with_proc_cpuinfo():
    """On x86 Linux torch's cpuinfo probe and the kernel's flags say the same thing."""
    flags = precision.cpu_flags()
    if not flags or "avx2" not in flags:
        pytest.skip("not an x86 Linux machine: nothing to compare the probe with")
    assert precision.native_bf16(CPU) == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_frozen_weights_are_bf16_inside_and_the_same_float32_tensors_after(tiny_dir):
    model, _ = load_model(tiny_dir)
    model.requires_grad_(False)  # as PEFT leaves the base
    model.model.norm.weight.requires_grad_(True)  # stands for a trainable (LoRA) parameter: left alone
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with precision.CpuBf16(model) as compute:
        dtypes = {name: p.dtype for name, p in model.named_parameters()}
        attention = model.config._attn_implementation
        with compute.paused():
            paused = {name: p.dtype for name, p in model.named_parameters()}, model.config._attn_implementation
        again = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert attention == "eager" and paused[1] != "eager" and set(paused[0].values()) == {torch.float32}
    assert all(torch.equal(again[n], before[n].to(again[n].dtype)) for n in before)  # the same bf16 values
    assert dtypes["model.norm.weight"] == torch.float32
    assert {d for n, d in dtypes.items() if n != "model.norm.weight"} == {torch.bfloat16}
    after = dict(model.named_parameters())
    assert all(after[n].dtype == torch.float32 and torch.equal(after[n], before[n]) for n in before)


def test_bf16_training_returns_the_float32_base_and_records_its_compute(tiny_dir, tiny_data, tmp_path):
    model, tokenizer = load_model(tiny_dir)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    seen = []
    attention = model.config._attn_implementation
    assert attention != "eager"
    weight = base["model.layers.0.mlp.up_proj.weight"]

    def on_step(step, peft_model):  # what the tracker evaluates during training: the float32 model
        base = peft_model.get_base_model()
        seen.append((base.model.layers[0].mlp.up_proj.weight.dtype, base.config._attn_implementation))
        assert torch.equal(base.model.layers[0].mlp.up_proj.weight, weight)

    result = train(tiny_config(tiny_dir, tiny_data, tmp_path / "run", "train.max_steps=2", "train.checkpoints=1",
                               "train.precision=bf16"), on_step=on_step, model=model, tokenizer=tokenizer)
    assert seen == [(torch.float32, attention)] * 2
    trained = result.model.get_base_model()
    assert trained.config._attn_implementation == attention
    for name, p in trained.named_parameters():
        if "lora_" in name:
            assert p.dtype == torch.float32
        else:
            original = name.replace(".base_layer", "")
            assert p.dtype == torch.float32 and torch.equal(p, base[original]), name
    info = json.loads((result.run / "checkpoints" / "step-000002" / "keeptune.json").read_text())
    assert info["config"]["compute"] == "bf16"


def test_evaluating_during_bf16_training_changes_nothing_in_it(tiny_dir, tiny_data, tmp_path):
    """The tracker's float32 pauses (weights put back, then cast again) leave training bit for bit as it was."""
    from safetensors.torch import load_file

    def generate(step, peft_model):  # what the tracker does: greedy decoding, no randomness
        peft_model.eval()
        peft_model.generate(input_ids=torch.tensor([[1, 5, 9]]), max_new_tokens=4, do_sample=False)

    words = ("train.max_steps=6", "train.checkpoints=1", "train.precision=bf16")
    plain = train(tiny_config(tiny_dir, tiny_data, tmp_path / "plain", *words))
    tracked = train(tiny_config(tiny_dir, tiny_data, tmp_path / "tracked", *words), on_step=generate, every=2)
    a, b = (load_file(r.adapter / "adapter_model.safetensors") for r in (plain, tracked))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_inputs_stay_bf16_inside_and_are_cast_again_after(tiny_dir):
    """PEFT's input cast to the float32 LoRA weights is off while bf16 (autocast computes the LoRA product in
    bf16 anyway), on again in a pause and after."""
    from keeptune.model.lora import LoraSettings, apply_lora

    model, _ = load_model(tiny_dir)
    peft_model = apply_lora(model, LoraSettings())
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    seen = []
    hook = layer.lora_dropout["default"].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    ids = torch.tensor([[3, 4, 5]])
    with precision.CpuBf16(peft_model) as compute:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            peft_model(input_ids=ids)
        with compute.paused():
            peft_model(input_ids=ids)
    peft_model(input_ids=ids)
    hook.remove()
    assert seen == [torch.bfloat16, torch.float32, torch.float32]
