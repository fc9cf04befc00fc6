"""GGUF models (the embedded default is one): the header checked without loading, then de-quantized
once by transformers into a cached safetensors model directory keyed on the file's content (its sha256,
remembered by size, times and inode, so later loads take well under a second)."""
from __future__ import annotations

import json
import math
import mmap
import os
import shutil
import struct
import tempfile
from pathlib import Path

import torch

from keeptune.core.errors import ModelLoadError, OutputError
from keeptune.core.io import atomic_write_json, cache_dir, unwritable, writing_to
from keeptune.core.resume import sha256_file

GGUF_MAGIC = b"GGUF"

# GGUF metadata value types: struct format of the scalars; 8 is a string, 9 an array.
GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_STRING, GGUF_ARRAY = 8, 9

def read_gguf_header(path: Path) -> dict:
    """Walk a GGUF file's header, metadata and tensor table, checking every length against the file.

    Returns {"version", "tensors", "metadata" (key -> value; arrays as their length),
    "data_end" (bytes the tensors need)}. A fake, truncated or garbled file is a
    ModelLoadError naming the file and the byte offset, never a struct.error.
    The file is memory-mapped: only the header's pages are read (0.2 s for the default model)."""

    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < len(GGUF_MAGIC) or handle.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ModelLoadError(f"{path} is not a GGUF file: it does not start with the GGUF magic bytes")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:  # only the header is paged in
            return _walk_gguf(path, mapped, size)

def _walk_gguf(path: Path, view: mmap.mmap, size: int) -> dict:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    pos = 0

    def bad(why: str) -> ModelLoadError:
        return ModelLoadError(f"{path}: not a valid GGUF file: {why} (at byte {pos} of {size})")

    def take(n: int) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > size:
            raise bad(f"it ends inside its header (needs {n} more bytes): truncated?")
        pos += n
        return view[pos - n:pos]

    def unpack(fmt: str):
        return struct.unpack("<" + fmt, take(struct.calcsize("<" + fmt)))[0]

    def string() -> str:
        raw = take(unpack("Q" if version > 1 else "I"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bad("a string is not UTF-8") from None

    def value(kind: int, depth: int = 0):
        if kind in GGUF_SCALARS:
            return unpack(GGUF_SCALARS[kind])
        if kind == GGUF_STRING:
            return string()
        if kind == GGUF_ARRAY and depth < 3:
            item, count = unpack("I"), unpack("Q" if version > 1 else "I")
            if item in GGUF_SCALARS:  # skip scalars in one step
                take(count * struct.calcsize("<" + GGUF_SCALARS[item]))
            else:
                if count > size:
                    raise bad(f"an array claims {count} items")
                for _ in range(count):
                    value(item, depth + 1)
            return count
        raise bad(f"unknown metadata value type {kind}")

    pos, version = 4, 0
    version = unpack("I")
    if version not in (1, 2, 3):
        raise bad(f"unsupported GGUF version {version}")
    tensors, entries = (unpack("Q"), unpack("Q")) if version > 1 else (unpack("I"), unpack("I"))
    if tensors > size or entries > size:
        raise bad(f"it claims {tensors} tensors and {entries} metadata entries, more than its size allows: truncated?")
    metadata = {}
    for _ in range(entries):
        key = string()
        metadata[key] = value(unpack("I"))
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment < 1:
        raise bad(f"general.alignment is {alignment!r}")
    needs = 0
    for _ in range(tensors):
        name = string()[:80]
        ndims = unpack("I")
        if ndims > 8:
            raise bad(f"tensor {name!r} claims {ndims} dimensions")
        dims = [unpack("Q" if version > 1 else "I") for _ in range(ndims)]
        kind, offset = unpack("I"), unpack("Q")
        try:
            block, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise bad(f"tensor {name!r} has an unknown type {kind}") from None
        count = math.prod(dims)
        needs = max(needs, offset + count // block * nbytes)
    start = -(-pos // alignment) * alignment
    if start + needs > size:
        raise bad(f"its tensors need {start + needs} bytes, the file has {size}: truncated?")
    return {"version": version, "tensors": tensors, "metadata": metadata, "data_end": start + needs}

DIGESTS = "digests.json"

def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, remembered in the cache by (path, size, mtime, ctime, inode)."""
    path = Path(os.path.abspath(path))
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
    memo_file = cache_dir() / "gguf" / DIGESTS
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
        memo = memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        memo = {}
    known = memo.get(str(path))
    if isinstance(known, dict) and known.get("stat") == stamp and isinstance(known.get("sha256"), str):
        return known["sha256"]
    digest = sha256_file(path)
    memo[str(path)] = {"stat": stamp, "sha256": digest}
    try:

        atomic_write_json(memo_file, memo)
    except (OSError, ValueError):  # a read-only cache only costs a rehash next time
        pass
    return digest

def gguf_to_model_dir(gguf: Path) -> Path:
    """De-quantize a GGUF file once into a cached safetensors model directory, keyed on its content."""
    with open(gguf, "rb") as handle:
        if handle.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ModelLoadError(f"{gguf} is not a GGUF file: it does not start with the GGUF magic bytes")
    target = cache_dir() / "gguf" / f"sha256-{content_digest(gguf)[:32]}"
    if (target / "config.json").is_file():
        return target
    stat = gguf.stat()
    legacy = cache_dir() / "gguf" / f"{gguf.stem}-{stat.st_size}-{stat.st_mtime_ns}"  # keyed on mtime before
    if (legacy / "config.json").is_file():
        try:
            os.replace(legacy, target)
            return target
        except OSError:
            pass
    read_gguf_header(gguf)
    tmp = staging_in_cache(target)  # before the conversion's seconds: a cache keeptune cannot write fails now
    try:
        with writing_to(target):
            convert(gguf, tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

def staging_in_cache(target: Path) -> Path:
    """An empty folder beside `target` in keeptune's cache; an OutputError saying how to give a writable cache
    when the cache is read-only, full or has a file in the way."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    except OSError as err:
        problem = unwritable(target.parent, err)
        if problem is err:
            raise
        raise OutputError(f"{problem}; keeptune converts a GGUF model once into its cache: make {cache_dir()} "
                          "writable or set KEEPTUNE_CACHE to a writable folder") from None

def convert(gguf: Path, tmp: Path, target: Path) -> None:
    """De-quantize `gguf` into `tmp`, then rename it to `target` (a concurrent conversion that won is kept)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"keeptune: converting {gguf.name} to float weights once (cached in {target})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # an architecture transformers cannot read from GGUF, a broken tensor
        raise ModelLoadError(f"{gguf}: transformers cannot load this GGUF model ({type(err).__name__}: {err})") from None
    # The weights are now plain float tensors: drop the GGUF quantizer so the
    # model saves (and later loads) as an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError as err:
        if not (target / "config.json").is_file():  # not a concurrent winner: a real failure
            raise unwritable(target, err) from None
