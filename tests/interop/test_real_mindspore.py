"""keeptune's MindSpore interop checked against the real MindSpore 2.10, mindpet 1.0.4 and MindFormers 2.1.0.

`make test-mindspore` (scripts/test-mindspore.sh) runs this module in .venv-mindspore, where those
libraries are installed; the default suite deselects its marker, and without MindSpore it skips.

Tolerances: none (exact equality) wherever no arithmetic happens: names, shapes, dtypes and values
written by one side and read by the other. Where MindSpore and PyTorch compute the same float32
function: one LoRA layer (mindpet's LoRADense against PEFT's) within atol 1e-5, rtol 1e-5
(`LAYER_CLOSE`); a whole model's logits (MindFormers' Llama against Hugging Face's, two layers of
attention and softmax) within atol 1e-4, rtol 1e-4 (`LOGITS_CLOSE`). The weights are drawn with
std 0.2, so the compared values have a std above 0.5 (checked); a wrong layout, rotary convention
or LoRA scaling moves them by 1e-2 and more. The differences seen are printed (pytest -s): up to
2e-6 for the layer and 1e-5 for the logits on the 2-core CPU of this project.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("LOCAL_DEFAULT_PATH", tempfile.mkdtemp(prefix="mindformers-log-"))  # MindFormers logs there
ms = pytest.importorskip("mindspore", reason="MindSpore is installed only in .venv-mindspore: make test-mindspore")

from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from keeptune.cli import main  # noqa: E402
from keeptune.interop import mindspore_ckpt  # noqa: E402
from keeptune.interop.names import mindformers_weight_name  # noqa: E402
from tests.interop.test_mindformers import _isolated, make_adapter, mindformers_yaml  # noqa: E402,F401 (autouse)
from tests.interop.test_mindspore_ckpt import MINDSPORE_FILE  # noqa: E402
from tests.tiny import save_tiny  # noqa: E402

pytestmark = pytest.mark.mindspore
LAYER_CLOSE = {"atol": 1e-5, "rtol": 1e-5}
LOGITS_CLOSE = {"atol": 1e-4, "rtol": 1e-4}
# No pad id (3) in the input: MindFormers' Llama masks pad tokens as keys, Hugging Face's does not.
IDS = np.array([[1, 5, 9, 33, 100, 7, 250, 42]], dtype=np.int32)


@pytest.fixture(autouse=True, scope="module")
def _cpu():
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny Llama with weights of std 0.2 (not 0.02): logits of std about 1.6, so that the tolerances are tight."""
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model", initializer_range=0.2)


def randomize(network, seed: int = 0) -> None:
    """Weights of std 0.2 and norms around 1 (MindFormers initializes with std 0.01 and norms of one)."""
    rng = np.random.default_rng(seed)
    for param in network.get_parameters():
        values = rng.normal(1.0 if "norm" in param.name else 0.0, 0.2, param.shape).astype(np.float32)
        param.set_data(ms.Tensor(values))


def numpy_of(value) -> np.ndarray:
    """A MindSpore tensor's values as float32/int numpy (bfloat16 through MindSpore's own cast)."""
    if value.dtype == ms.bfloat16:
        value = value.astype(ms.float32)
    return value.asnumpy()


def torch_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


def hf_logits(model_dir: Path) -> np.ndarray:
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(model_dir).eval()(torch.from_numpy(IDS).long()).logits.numpy()


def peft_logits(base: Path, adapter: Path) -> np.ndarray:
    with torch.no_grad():
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
        return model(torch.from_numpy(IDS).long()).logits.numpy()


def assert_close(name: str, got: np.ndarray, want: np.ndarray, tolerance: dict | None = None) -> None:
    print(f"{name}: max |difference| {np.abs(got - want).max():.3g} (values of std {want.std():.3g})")
    assert want.std() > 0.5  # large enough for the tolerance to mean something
    np.testing.assert_allclose(got, want, **(tolerance or LOGITS_CLOSE))


def mindformers_llama(run_yaml: Path, lora: bool = False):
    """MindFormers' own LlamaForCausalLM (with its LoraModel when `lora`) of a run YAML's model_config, on CPU.

    CPU-only settings on top (they change how, not what, it computes): float32 compute,
    no flash attention or fused RMSNorm, and `use_rope_slice` (the same rotate-half as the
    swap matrix, without the batched matmul MindSpore's CPU backend cannot broadcast)."""
    from mindformers.models.llama import LlamaConfig, LlamaForCausalLM
    from mindformers.pet import LoraConfig, LoraModel

    model_config = dict(yaml.safe_load(run_yaml.read_text())["model"]["model_config"])
    pet = dict(model_config.pop("pet_config"))
    model_config.pop("type")
    model_config.update(seq_length=IDS.shape[1], compute_dtype="float32", layernorm_compute_type="float32",
                        softmax_compute_type="float32", rotary_dtype="float32", param_init_type="float32",
                        use_flash_attention=False, fused_rms_norm=False, use_rope_slice=True)
    model = LlamaForCausalLM(LlamaConfig(**model_config))
    if lora:
        pet.pop("pet_type")
        model = LoraModel(LoraConfig(**pet), model)
    return model


def mindformers_logits(model) -> np.ndarray:
    model.set_train(False)
    return model(ms.Tensor(IDS))[0].asnumpy()


# --- the checkpoint format ------------------------------------------------------------------

def test_the_schema_is_mindspores_checkpoint_proto():
    from google.protobuf import descriptor_pb2
    from mindspore.train import checkpoint_pb2

    theirs = descriptor_pb2.FileDescriptorProto()
    checkpoint_pb2.DESCRIPTOR.CopyToProto(theirs)
    assert mindspore_ckpt.file_descriptor() == theirs


def test_the_fixture_of_the_default_suite_is_what_mindspore_writes(tmp_path, monkeypatch):
    """tests/interop/data/mindspore-save_checkpoint.ckpt, written again by MindSpore: byte for byte."""
    from mindspore.train import serialization

    monkeypatch.setattr(serialization, "SLICE_SIZE", 1)  # KB: model.w's 1200 bytes in two records
    params = [{"name": "model.w", "data": ms.Tensor(np.arange(300, dtype=np.float32).reshape(2, 150) / 4)},
              {"name": "model.b", "data": ms.Tensor(np.array([1.5, -2.0, 0.25], np.float32), ms.bfloat16)},
              {"name": "scale", "data": ms.Tensor(np.float32(0.5))}]
    ms.save_checkpoint(params, str(tmp_path / "f.ckpt"), crc_check=True, append_dict={"global_step": 7, "note": "hi"})
    assert (tmp_path / "f.ckpt").read_bytes() == MINDSPORE_FILE.read_bytes()


# --- MindSpore reads what keeptune writes -----------------------------------------------------

@pytest.mark.parametrize("dtype", [None, "bfloat16", "float16"])
def test_mindspore_loads_the_exported_model(tmp_path, tiny, monkeypatch, dtype):
    monkeypatch.setattr(mindspore_ckpt, "CHUNK_BYTES", 4096)  # split as MindSpore splits tensors over 512 MiB
    args = ["export", str(tiny), "--out", str(tmp_path / "m.ckpt")] + (["--dtype", dtype] if dtype else [])
    assert main(args) == 0
    from mindformers.models.llama.convert_weight import name_replace  # MindFormers' own HF -> MindFormers names

    loaded = ms.load_checkpoint(str(tmp_path / "m.ckpt"))
    state = AutoModelForCausalLM.from_pretrained(tiny).state_dict()
    assert sorted(loaded) == sorted(name_replace(n) for n in state)
    want_type = {None: ms.float32, "bfloat16": ms.bfloat16, "float16": ms.float16}[dtype]
    for name, tensor in state.items():
        value = loaded[name_replace(name)]
        assert value.dtype == want_type and tuple(value.shape) == tuple(tensor.shape)
        cast = tensor.to(getattr(torch, dtype)) if dtype else tensor
        np.testing.assert_array_equal(numpy_of(value), torch_numpy(cast))


def test_mindspore_loads_the_exported_adapter_with_mindformers_lora_names(tmp_path, tiny):
    """Names and shapes are those of MindFormers' own LoraModel; values are PEFT's, bit for bit."""
    adapter = make_adapter(tiny, tmp_path / "adapter")
    assert main(["export", str(adapter), "--out", str(tmp_path / "a.ckpt")]) == 0
    loaded = ms.load_checkpoint(str(tmp_path / "a.ckpt"))
    network = mindformers_llama(mindformers_yaml(tmp_path / "run.yaml"), lora=True)
    theirs = [(p.name, tuple(p.shape)) for p in network.get_parameters() if "mindpet_delta" in p.name]
    assert [(n, tuple(v.shape)) for n, v in loaded.items()] == theirs
    assert all(v.dtype == ms.float32 for v in loaded.values())
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), adapter).state_dict()
    np.testing.assert_array_equal(loaded["model.layers.1.attention.wv.mindpet_delta_lora_b"].asnumpy(),
                                  peft["base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"].numpy())
    np.testing.assert_array_equal(loaded["model.layers.0.attention.wq.mindpet_delta_lora_a"].asnumpy(),
                                  peft["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"].numpy())


# --- keeptune reads what MindSpore writes -----------------------------------------------------

def test_keeptune_imports_a_mindformers_llama_saved_by_mindspore(tmp_path, monkeypatch):
    """MindFormers' Llama, initialized by MindSpore, saved by save_checkpoint (pieces, CRC): the imported
    Hugging Face model has the same weights, and computes the same logits as MindFormers' model."""
    from mindformers.models.llama.convert_reversed import name_replace  # MindFormers -> HF names
    from mindspore.train import serialization

    run_yaml = mindformers_yaml(tmp_path / "run.yaml")
    network = mindformers_llama(run_yaml)
    randomize(network)
    monkeypatch.setattr(serialization, "SLICE_SIZE", 8)  # KB: the 66 KB embedding in nine records
    ms.save_checkpoint(network, str(tmp_path / "mf.ckpt"), crc_check=True)
    assert main(["import", str(tmp_path / "mf.ckpt"), "--config", str(run_yaml), "--out", str(tmp_path / "hf")]) == 0
    state = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()
    params = {p.name: p for p in network.get_parameters()}
    assert sorted(state) == sorted(name_replace(n) for n in params)
    for name, param in params.items():
        np.testing.assert_array_equal(state[name_replace(name)].numpy(), param.asnumpy())
    assert_close("MindFormers Llama vs the imported model", hf_logits(tmp_path / "hf"), mindformers_logits(network))


def test_keeptune_imports_bfloat16_tensors_mindspore_saved(tmp_path, tiny):
    state = AutoModelForCausalLM.from_pretrained(tiny).state_dict()
    params = [{"name": mindformers_weight_name(n), "data": ms.Tensor(t.numpy(), ms.bfloat16)} for n, t in state.items()]
    ms.save_checkpoint(params, str(tmp_path / "bf16.ckpt"))
    assert main(["import", str(tmp_path / "bf16.ckpt"), "--config", str(tiny), "--out", str(tmp_path / "hf")]) == 0
    imported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.bfloat16).state_dict()
    for name, tensor in state.items():
        assert imported[name].dtype == torch.bfloat16
        np.testing.assert_array_equal(imported[name].float().numpy(), numpy_of(
            ms.Tensor(tensor.numpy(), ms.bfloat16)))  # MindSpore's own rounding to bfloat16


def test_keeptune_imports_a_mindpet_adapter_mindformers_saved(tmp_path, tiny):
    """MindFormers' LoraModel with random LoRA weights, saved whole by MindSpore (base and LoRA): the
    adapter import gives PEFT the same LoRA output as MindFormers computes."""
    run_yaml = mindformers_yaml(tmp_path / "run.yaml")
    network = mindformers_llama(run_yaml, lora=True)
    base = {mindformers_weight_name(n): ms.Parameter(ms.Tensor(t.numpy()))
            for n, t in AutoModelForCausalLM.from_pretrained(tiny).state_dict().items()}
    not_loaded, unused = ms.load_param_into_net(network, base)
    assert sorted(not_loaded) == sorted(p.name for p in network.get_parameters() if "mindpet_delta" in p.name)
    assert unused == []
    rng = np.random.default_rng(0)
    for param in network.get_parameters():
        if "mindpet_delta_lora_b" in param.name:  # B starts at zero: make the adapter do something
            param.set_data(ms.Tensor(rng.normal(0, 0.2, param.shape).astype(np.float32)))
    ms.save_checkpoint(network, str(tmp_path / "finetuned.ckpt"))
    assert main(["import", str(tmp_path / "finetuned.ckpt"), "--what", "adapter", "--config", str(run_yaml),
                 "--model", str(tiny), "--out", str(tmp_path / "adapter")]) == 0
    assert_close("MindFormers LoraModel vs PEFT on the imported adapter", peft_logits(tiny, tmp_path / "adapter"),
                 mindformers_logits(network))


# --- the same computation on both sides -------------------------------------------------------

@pytest.mark.parametrize("rslora", [False, True])
def test_mindpet_lora_layer_computes_what_peft_computes(tmp_path, tiny, rslora):
    """mindpet's LoRADense with the exported A/B pair and the base weight vs PEFT's LoRA layer, float32."""
    from mindpet.delta.lora import LoRADense

    adapter = make_adapter(tiny, tmp_path / "adapter", use_rslora=rslora)
    assert main(["export", str(adapter), "--out", str(tmp_path / "a.ckpt")]) == 0
    loaded = ms.load_checkpoint(str(tmp_path / "a.ckpt"))
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), adapter).eval()
    theirs = peft.base_model.model.model.layers[1].self_attn.v_proj  # 64 -> 32, rank 4, alpha 8
    layer = LoRADense(in_channels=64, out_channels=32, lora_rank=4, lora_alpha=8, lora_dropout=0.0,
                      param_init_type=ms.float32, compute_dtype=ms.float32, has_bias=False)
    layer.weight.set_data(ms.Tensor(theirs.base_layer.weight.detach().numpy()))
    layer.mindpet_delta_lora_a.set_data(loaded["model.layers.1.attention.wv.mindpet_delta_lora_a"])
    layer.mindpet_delta_lora_b.set_data(loaded["model.layers.1.attention.wv.mindpet_delta_lora_b"])
    layer.set_train(False)
    x = np.random.default_rng(1).normal(size=(3, 5, 64)).astype(np.float32)
    with torch.no_grad():
        want = theirs(torch.from_numpy(x)).numpy()
    assert_close(f"mindpet LoRADense vs PEFT (rslora={rslora})", layer(ms.Tensor(x)).asnumpy(), want, LAYER_CLOSE)
    base_only = x @ theirs.base_layer.weight.detach().numpy().T
    assert np.abs(want - base_only).max() > 1e-2  # the LoRA branch counts


def test_mindformers_loads_the_base_and_the_adapter_from_one_folder(tmp_path, tiny):
    """The README's recipe: the exported base model and adapter in one folder as `load_checkpoint`, the
    printed pet_config in the model_config; MindFormers' own loader (trainer/utils.py load_ckpt) loads
    every parameter, and MindFormers' LoraModel computes PEFT's logits."""
    from mindformers.tools import MindFormerConfig
    from mindformers.trainer.utils import load_ckpt

    adapter = make_adapter(tiny, tmp_path / "adapter")
    (tmp_path / "load").mkdir()
    assert main(["export", str(tiny), "--out", str(tmp_path / "load" / "llama.ckpt")]) == 0
    assert main(["export", str(adapter), "--out", str(tmp_path / "load" / "adapter.ckpt")]) == 0
    network = mindformers_llama(mindformers_yaml(tmp_path / "run.yaml"), lora=True)
    before = {p.name: p.asnumpy().copy() for p in network.get_parameters()}
    config = MindFormerConfig(checkpoint={"load_path": str(tmp_path / "load")}, load_ckpt_format="ckpt",
                              auto_trans_ckpt=False, load_ckpt_async=False, remove_redundancy=False,
                              runner_config={"step_scale": None}, model={"model_config": {}})
    load_ckpt(config, network)
    assert all(not np.array_equal(p.asnumpy(), before[p.name]) for p in network.get_parameters()
               if "norm" not in p.name)  # every weight replaced (norms start at one, as the tiny model's)
    assert_close("MindFormers LoraModel vs PEFT", mindformers_logits(network), peft_logits(tiny, adapter))


def test_merged_export_in_mindformers_computes_the_adapted_model(tmp_path, tiny):
    adapter = make_adapter(tiny, tmp_path / "adapter")
    assert main(["export", str(adapter), "--merged", "--out", str(tmp_path / "merged.ckpt")]) == 0
    network = mindformers_llama(mindformers_yaml(tmp_path / "run.yaml"))
    assert ms.load_param_into_net(network, ms.load_checkpoint(str(tmp_path / "merged.ckpt"))) == ([], [])
    assert_close("MindFormers Llama on the merged export vs PEFT", mindformers_logits(network),
                 peft_logits(tiny, adapter))


# --- round trips and MindFormers' own converters ------------------------------------------------

def test_round_trip_through_mindspore_gives_the_same_logits(tmp_path, tiny):
    """HF tiny Llama -> keeptune export -> MindSpore load_checkpoint and save_checkpoint -> keeptune import."""
    assert main(["export", str(tiny), "--out", str(tmp_path / "m.ckpt")]) == 0
    resaved = [{"name": n, "data": p} for n, p in ms.load_checkpoint(str(tmp_path / "m.ckpt")).items()]
    ms.save_checkpoint(resaved, str(tmp_path / "resaved.ckpt"))
    assert main(["import", str(tmp_path / "resaved.ckpt"), "--config", str(tiny), "--out", str(tmp_path / "hf")]) == 0
    np.testing.assert_array_equal(hf_logits(tmp_path / "hf"), hf_logits(tiny))


def test_mindformers_converters_agree_with_keeptune(tmp_path, tiny):
    """MindFormers' convert_pt_to_ms on the Hugging Face model writes what keeptune export writes, and its
    convert_ms_to_pt reads keeptune's export back to the Hugging Face weights."""
    from mindformers.models.llama.convert_reversed import convert_ms_to_pt
    from mindformers.models.llama.convert_weight import convert_pt_to_ms

    assert main(["export", str(tiny), "--out", str(tmp_path / "keeptune.ckpt")]) == 0
    convert_pt_to_ms(str(tiny), str(tmp_path / "mindformers.ckpt"))
    ours, theirs = (ms.load_checkpoint(str(tmp_path / f)) for f in ("keeptune.ckpt", "mindformers.ckpt"))
    assert sorted(ours) == sorted(theirs)
    for name, value in theirs.items():
        assert ours[name].dtype == value.dtype
        np.testing.assert_array_equal(ours[name].asnumpy(), value.asnumpy())
    convert_ms_to_pt(str(tmp_path / "keeptune.ckpt"), str(tmp_path / "back.pt"))
    back = torch.load(tmp_path / "back.pt", weights_only=True)  # MindFormers' own output (a pickle), restricted load
    state = AutoModelForCausalLM.from_pretrained(tiny).state_dict()
    assert sorted(back) == sorted(state)
    assert all(torch.equal(back[n], state[n]) for n in state)


def test_a_file_mindspore_encrypted_is_refused(tmp_path, capsys):
    ms.save_checkpoint([{"name": "model.norm_out.weight", "data": ms.Tensor(np.ones(4, np.float32))}],
                       str(tmp_path / "enc.ckpt"), enc_key=b"0123456789abcdef")
    assert main(["import", str(tmp_path / "enc.ckpt"), "--config", "llama3-8b"]) == 2
    assert "an encrypted checkpoint, saved with enc_key?" in capsys.readouterr().err
    assert not (tmp_path / "enc-hf").exists()
