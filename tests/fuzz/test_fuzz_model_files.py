"""Fuzz the model file readers: GGUF headers and tensor tables, safetensors headers, config.json.

A fake or damaged file is a ModelLoadError naming it, never struct.error or a parser's
traceback; a safetensors file keeptune's check accepts is one safetensors itself reads."""
from __future__ import annotations

import json
import struct

from hypothesis import given
from hypothesis import strategies as st

from keeptune.core.errors import ModelLoadError
from keeptune.model.load import check_config_json, check_safetensors
from keeptune.model.gguf import gguf_to_model_dir, read_gguf_header
from tests.fuzz.helpers import damaged, fuzz, json_values, long_fuzz, user_error_or_success, workdir

# --- GGUF ---------------------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
small = st.integers(0, 40)


def gguf_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


@st.composite
def gguf_value(draw, depth: int = 0) -> bytes:
    kind = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 99]))
    formats = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    head = struct.pack("<I", kind)
    if kind in formats:
        return head + draw(st.binary(min_size=struct.calcsize(formats[kind]), max_size=struct.calcsize(formats[kind])))
    if kind == 8:
        return head + gguf_string(draw(st.binary(max_size=12)))
    if kind == 9 and depth < 2:
        item = draw(st.sampled_from([4, 8, 6]))
        count = draw(small | u64)
        items = b"".join(struct.pack("<I", 7) if item == 4 else gguf_string(b"t") if item == 8 else b"\0\0\0\0"
                         for _ in range(min(count, 5)))
        return head + struct.pack("<IQ", item, count) + items
    return head + draw(st.binary(max_size=8))


@st.composite
def gguf_file(draw) -> bytes:
    version = draw(st.sampled_from([3, 3, 2, 1, 0, 4]) | u32)
    tensors = draw(small | u64)
    entries = draw(small | u64)
    out = b"GGUF" + struct.pack("<I", version)
    out += struct.pack("<QQ", tensors, entries) if version != 1 else struct.pack("<II", tensors % 2**32, entries % 2**32)
    for _ in range(min(entries, 4)):
        out += gguf_string(draw(st.sampled_from([b"general.architecture", b"general.alignment", b"k"])))
        out += draw(gguf_value())
    for _ in range(min(tensors, 4)):
        out += gguf_string(draw(st.binary(max_size=8)))
        dims = draw(st.lists(st.integers(0, 64) | u64, max_size=draw(st.sampled_from([2, 9]))))
        out += struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", draw(st.integers(0, 40) | u32), draw(st.integers(0, 256) | u64))
    out += bytes(draw(st.integers(0, 512)))
    if draw(st.booleans()):
        out = draw(st.sampled_from([b"GGUF", b"GGU", b"", b"GGML"])) + draw(st.binary(max_size=64))
    return draw(damaged(out))


def check_gguf(content: bytes) -> None:
    import os

    with workdir() as folder:
        path = folder / "model.gguf"
        path.write_bytes(content)
        header = user_error_or_success(lambda: read_gguf_header(path), [str(path)])
        if header is None:  # refused: the conversion refuses it too, before transformers, leaving nothing
            os.environ["KEEPTUNE_CACHE"] = str(folder / "cache")
            try:
                user_error_or_success(lambda: gguf_to_model_dir(path), [str(path)])
            finally:
                del os.environ["KEEPTUNE_CACHE"]
            assert not list((folder / "cache").rglob("config.json"))
        else:
            assert header["data_end"] <= len(content)


@fuzz(150)
@given(gguf_file())
def test_gguf_header(content):
    check_gguf(content)


@long_fuzz
@given(gguf_file())
def test_gguf_header_long(content):
    check_gguf(content)


# --- safetensors --------------------------------------------------------------------------------

DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1, "BOOL": 1}


@st.composite
def safetensors_file(draw) -> bytes:
    header: dict = {}
    offset = 0
    for name in draw(st.lists(st.text(min_size=1, max_size=6), max_size=3, unique=True)):
        dtype = draw(st.sampled_from(sorted(DTYPES)))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        size = DTYPES[dtype]
        for d in shape:
            size *= d
        end = offset + size + draw(st.sampled_from([0, 0, 0, 1, -1]))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}
        offset = max(end, offset)
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.sampled_from([{"format": "pt"}, {"a": 1}, [], "x"]))
    if draw(st.integers(0, 4)) == 0:
        header = draw(json_values)
    raw = json.dumps(header).encode()
    raw += b" " * draw(st.integers(0, 8))
    claimed = len(raw) + draw(st.sampled_from([0, 0, 0, 1, -1, 2**40]))
    out = struct.pack("<Q", max(claimed, 0)) + raw + bytes(offset + draw(st.sampled_from([0, 0, 1])))
    if draw(st.integers(0, 5)) == 0:
        out = draw(st.binary(max_size=40))
    return draw(damaged(out))


def check_safetensors_file(content: bytes) -> None:
    from safetensors.torch import load_file

    with workdir() as folder:
        path = folder / "model.safetensors"
        path.write_bytes(content)
        count = user_error_or_success(lambda: check_safetensors(path), [str(path)])
        if count is not None:  # accepted: safetensors reads it
            assert len(load_file(path)) == count


@fuzz(150)
@given(safetensors_file())
def test_safetensors_header(content):
    check_safetensors_file(content)


@long_fuzz
@given(safetensors_file())
def test_safetensors_header_long(content):
    check_safetensors_file(content)


# --- config.json --------------------------------------------------------------------------------

@st.composite
def config_json(draw) -> bytes:
    value = draw(st.one_of(json_values, st.fixed_dictionaries({"model_type": st.sampled_from(["llama", "x", 3])},
                                                                optional={"hidden_size": json_values})))
    return draw(damaged(json.dumps(value).encode()))


def check_config(content: bytes) -> None:
    with workdir() as folder:
        path = folder / "config.json"
        path.write_bytes(content)
        config = user_error_or_success(lambda: check_config_json(path), [str(path)])
        assert config is None or isinstance(config.get("model_type"), str)


@fuzz(100)
@given(config_json())
def test_config_json(content):
    check_config(content)


@long_fuzz
@given(config_json())
def test_config_json_long(content):
    check_config(content)


def test_a_model_load_error_is_a_user_error():
    from keeptune.core.errors import USER_ERRORS

    assert issubclass(ModelLoadError, USER_ERRORS)
