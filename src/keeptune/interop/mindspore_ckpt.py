"""MindSpore checkpoints (`.ckpt`) read and written without MindSpore.

A `.ckpt` is protobuf: MindSpore's `checkpoint.proto` (mindspore/train/checkpoint_pb2.py
in the MindSpore 2.10 wheel), reproduced here field for field:

    syntax = "proto2";
    message Checkpoint {
      message Value {
        required string tag = 1;
        oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; }
      }
      repeated Value value = 1;
    }
    message TensorProto {
      repeated int64 dims = 1;
      required string tensor_type = 2;   // "Float32", "BFloat16", "Int64", "str", ...
      required bytes tensor_content = 3; // the raw little-endian bytes, C order
    }
    message MapTensorProto { repeated TensorProto tensor = 1; }

The schema is built at import time with `descriptor_pb2` in a private descriptor pool
(no generated code, no clash with MindSpore's own `checkpoint.proto` when both are
loaded) and every message is parsed and serialized by the protobuf library.

What `mindspore.save_checkpoint` really writes (serialization.py, `_exec_save`): not one
message but one serialized `Checkpoint` with a single `Value` per parameter, appended one
after the other; a tensor larger than 512 MiB is split over several consecutive values
with the same tag (each with the full dims), and `load_checkpoint` joins the bytes of
consecutive equal tags. Serialized messages of one type concatenate into their merge, so
the file is `Checkpoint` as a whole; keeptune walks it record by record (field 1,
length-delimited) instead of parsing it at once. Opening the file reads only each
record's framing and name (the `tag` field, first in each record, parsed alone); a record
is parsed whole only when its tensor is wanted, and its bytes go straight into that
tensor, so memory holds the tensor being built and one record of at most 512 MiB (and
protobuf's copy of it), never the file. Writing is the same, one record at a time. With
`crc_check=True` MindSpore appends `b"crc_num"` and the CRC-32 of everything before it
as 10 big-endian bytes; keeptune verifies it. An encrypted checkpoint (`enc_key`) is
refused: it is not protobuf. A scalar has no dims (older writers: dims [0]); a string
(`append_dict`) is type "str", UTF-32 code units. Nothing here unpickles anything.

A file cut short at a record boundary is still a valid Checkpoint, holding fewer parameters.
So the files keeptune writes begin with a length note: field 2047 of `Checkpoint` (wire type 1,
a little-endian 64-bit integer: the byte length of the protobuf content, a CRC trailer not
counted). MindSpore's schema has no such field, and protobuf parsers skip fields they do not
know, so `load_checkpoint` reads the file as before; keeptune refuses a file whose note
disagrees with its length. Files of other writers carry no note.
"""
from __future__ import annotations

import binascii
import mmap
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from keeptune.core.errors import ModelLoadError
from keeptune.core.io import atomic_writer

# MindSpore's tensor_type names and their torch dtypes (mindspore/train/serialization.py, tensor_to_ms_type).
TENSOR_TYPES: dict[str, torch.dtype] = {
    "Float16": torch.float16, "Float32": torch.float32, "Float64": torch.float64, "BFloat16": torch.bfloat16,
    "Int8": torch.int8, "UInt8": torch.uint8, "Int16": torch.int16, "UInt16": torch.uint16,
    "Int32": torch.int32, "UInt32": torch.uint32, "Int64": torch.int64, "UInt64": torch.uint64,
    "Bool": torch.bool}
TYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in TENSOR_TYPES.items()}
# MindSpore splits a tensor's bytes into values of at most this size (SLICE_SIZE = 512 * 1024 KB).
CHUNK_BYTES = 512 * 1024 * 1024
CRC_MARK = b"crc_num"
CRC_TRAILER = len(CRC_MARK) + 10


class CheckpointError(ModelLoadError):
    """A file that is not a MindSpore checkpoint keeptune can read, or a tensor it cannot write."""


def _schema() -> tuple[type, type]:
    """The Checkpoint and Checkpoint.Value message classes of MindSpore's checkpoint.proto."""
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="checkpoint.proto")  # proto2, as MindSpore's
    checkpoint = proto.message_type.add(name="Checkpoint")
    checkpoint.field.add(name="value", number=1, label=F.LABEL_REPEATED, type=F.TYPE_MESSAGE,
                         type_name=".Checkpoint.Value")
    value = checkpoint.nested_type.add(name="Value")
    value.field.add(name="tag", number=1, label=F.LABEL_REQUIRED, type=F.TYPE_STRING)
    value.field.add(name="tensor", number=2, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE,
                    type_name=".TensorProto", oneof_index=0)
    value.field.add(name="maptensor", number=3, label=F.LABEL_OPTIONAL, type=F.TYPE_MESSAGE,
                    type_name=".MapTensorProto", oneof_index=0)
    value.oneof_decl.add(name="value")
    tensor = proto.message_type.add(name="TensorProto")
    tensor.field.add(name="dims", number=1, label=F.LABEL_REPEATED, type=F.TYPE_INT64)
    tensor.field.add(name="tensor_type", number=2, label=F.LABEL_REQUIRED, type=F.TYPE_STRING)
    tensor.field.add(name="tensor_content", number=3, label=F.LABEL_REQUIRED, type=F.TYPE_BYTES)
    map_tensor = proto.message_type.add(name="MapTensorProto")
    map_tensor.field.add(name="tensor", number=1, label=F.LABEL_REPEATED, type=F.TYPE_MESSAGE,
                         type_name=".TensorProto")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("Checkpoint")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("Checkpoint.Value")))


Checkpoint, Value = _schema()
# Each record of the file: the key of Checkpoint.value (field 1, wire type 2 = length-delimited), its length, a Value.
RECORD_KEY = Checkpoint.DESCRIPTOR.fields_by_name["value"].number << 3 | 2
TAG_KEY = Value.DESCRIPTOR.fields_by_name["tag"].number << 3 | 2  # the name, first in each Value
LENGTH_FIELD = 2047  # keeptune's length note; Checkpoint has field 1 only
LENGTH_KEY = bytes([(LENGTH_FIELD << 3 | 1) & 0x7F | 0x80, (LENGTH_FIELD << 3 | 1) >> 7])  # a two-byte varint
LENGTH_NOTE = len(LENGTH_KEY) + 8


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The schema as a FileDescriptorProto (to compare with MindSpore's own checkpoint_pb2)."""
    proto = descriptor_pb2.FileDescriptorProto()
    Checkpoint.DESCRIPTOR.file.CopyToProto(proto)
    return proto


def _varint(data, pos: int, end: int) -> tuple[int, int]:
    """The base-128 varint at data[pos:] and the position after it (ValueError when it runs past `end`)."""
    result = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise ValueError("a length runs past the end of the file")


class CheckpointFile:
    """A MindSpore checkpoint opened for reading; `with CheckpointFile(path) as ckpt: ...`.

    Opening walks the file's record framing only (a few bytes per record, no tensor
    data): a file that is empty, truncated, encrypted or not a checkpoint at all is a
    CheckpointError naming it before anything else is read. `tensors()` then yields
    each parameter in file order, reading and parsing one record at a time.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")
        except IsADirectoryError:
            raise self.error("is a directory; give a .ckpt file") from None
        except OSError as err:
            raise self.error(f"cannot read it ({err.strerror})") from None
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size == 0:
                raise self.error("the file is empty")
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self.crc: int | None = None
            self.end = size
            if size >= CRC_TRAILER and self._map[size - CRC_TRAILER:size - 10] == CRC_MARK:
                self.crc = int.from_bytes(self._map[size - 10:size], "big")
                self.end = size - CRC_TRAILER
            self.records = self._walk()
            self.params = self._group()
        except BaseException:
            self.close()
            raise

    def error(self, why: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: not a readable MindSpore checkpoint: {why}")

    def _length_note(self) -> int:
        """Where the records begin: after keeptune's length note, when the file starts with one that matches."""
        if self.end < LENGTH_NOTE and LENGTH_KEY.startswith(self._map[:self.end]):
            raise self.error(f"it holds {self.end} bytes, less than the {LENGTH_NOTE}-byte length note keeptune "
                             "writes first: it was cut short")
        if self._map[:len(LENGTH_KEY)] != LENGTH_KEY:
            return 0
        written = int.from_bytes(self._map[len(LENGTH_KEY):LENGTH_NOTE], "little")
        if written != self.end:
            raise self.error(f"keeptune wrote it with {written} bytes, it holds {self.end}: it was "
                             f"{'cut short' if self.end < written else 'added to'} (copy or export it again)")
        return LENGTH_NOTE

    def _walk(self) -> list[tuple[int, int, int]]:
        data, records = self._map, []
        pos = self._length_note()
        while pos < self.end:
            if data[pos] != RECORD_KEY:
                where = "it does not start" if pos == 0 else f"byte {pos} does not start"
                hint = (" (a pickle file, e.g. torch.save's, which keeptune never loads)"
                        if data[:1] == b"\x80" or data[:2] == b"PK" else
                        " (an encrypted checkpoint, saved with enc_key? decrypt it with MindSpore first)"
                        if pos == 0 else " (damaged?)")
                raise self.error(f"{where} a protobuf Checkpoint record{hint}")
            try:
                length, start = _varint(data, pos + 1, self.end)
            except ValueError as err:
                raise self.error(f"the record at byte {pos}: {err}: truncated?") from None
            if start + length > self.end:
                raise self.error(f"the record at byte {pos} needs {start + length - pos} bytes, the file has "
                                 f"{self.end - pos} from there: truncated?")
            records.append((pos, start, length))
            pos = start + length
        return records

    def _value(self, offset: int, length: int, end: int | None = None):
        """The Value at [offset, end or offset + length), parsed by protobuf (which copies what it keeps)."""
        with memoryview(self._map) as view, view[offset:offset + length if end is None else end] as record:
            try:
                return Value.FromString(record)
            except DecodeError as err:
                raise self.error(f"the record at byte {offset} is not a Checkpoint.Value ({err})") from None

    def _tag(self, offset: int, length: int) -> str:
        """A record's parameter name without reading its tensor: MindSpore writes `tag` (field 1) first, and
        that field alone is a complete Value (the tensor is optional), so protobuf parses just those bytes."""
        if length and self._map[offset] == TAG_KEY:
            try:
                size, start = _varint(self._map, offset + 1, offset + length)
            except ValueError:
                size, start = length, offset + length
            if start + size <= offset + length:
                return self._value(offset, length, end=start + size).tag
        return self._value(offset, length).tag  # another writer's field order: parse it all

    def _group(self) -> list[tuple[str, list[tuple[int, int, int]]]]:
        """(name, records) per parameter: consecutive records of one tag, as MindSpore's loader joins them."""
        params: list[tuple[str, list[tuple[int, int, int]]]] = []
        for record in self.records:
            tag = self._tag(record[1], record[2])
            if params and params[-1][0] == tag:
                params[-1][1].append(record)
            else:
                params.append((tag, [record]))
        return params

    def names(self) -> list[str]:
        """The parameter names, in file order (read when the file was opened; no tensor data)."""
        return [name for name, _ in self.params]

    def _crc(self, crc: int, begin: int, end: int) -> int:
        with memoryview(self._map) as view, view[begin:end] as span:
            return binascii.crc32(span, crc)

    def tensors(self, wanted=None) -> Iterator[tuple[str, torch.Tensor | str | None]]:
        """(name, value) of every parameter in file order: a tensor, a string, or None for a map tensor.

        `wanted(name)` -> False skips a parameter without parsing its records. Records
        are parsed one at a time and a tensor split over several is assembled in place,
        so memory holds the tensor being built and one record; the tensor owns its
        memory. The file's CRC, when it has one, is checked as the records go by (all of
        them, wanted or not); a mismatch is a CheckpointError after the last parameter."""
        crc, begin = 0, 0  # the CRC covers everything before the trailer, a length note too
        for name, records in self.params:
            end = records[-1][1] + records[-1][2]
            if self.crc is not None:
                crc, begin = self._crc(crc, begin, end), end
            if wanted is not None and not wanted(name):
                continue
            assembly = _Assembly(self, name)
            for _, offset, length in records:
                assembly.add(offset, self._value(offset, length))
            yield name, assembly.finish()
        if self.crc is not None and crc != self.crc:
            raise self.error("its CRC-32 does not match its content: the file is damaged")

    def close(self) -> None:
        if getattr(self, "_map", None) is not None:
            self._map.close()
            self._map = None
        self._file.close()

    def __enter__(self) -> CheckpointFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Assembly:
    """One parameter being read: its first record fixes its dims and type; each record's bytes go in place."""

    def __init__(self, ckpt: CheckpointFile, name: str):
        self.ckpt, self.name = ckpt, name
        self.kind: str | None = None
        self.dims: list[int] = []
        self.type_name = ""
        self.out: torch.Tensor | None = None
        self.flat: np.ndarray | None = None
        self.size = self.filled = 0
        self.text: list[bytes] = []

    def add(self, offset: int, value) -> None:
        kind = value.WhichOneof("value")
        if self.kind is None:
            self._start(kind, value)
        elif kind != self.kind or (kind == "tensor" and (list(value.tensor.dims) != self.dims
                                                         or value.tensor.tensor_type != self.type_name)):
            raise self.ckpt.error(f"parameter {self.name!r}: its piece at byte {offset} has another shape or type")
        if kind != "tensor":
            return
        content = value.tensor.tensor_content
        if self.type_name == "str":
            self.text.append(content)
            return
        if self.filled + len(content) > self.size:
            raise self.ckpt.error(f"parameter {self.name!r} has more than the {self.size} bytes of shape "
                                  f"{self.dims} of {self.type_name}")
        if content:
            self.flat[self.filled:self.filled + len(content)] = np.frombuffer(content, dtype=np.uint8)
        self.filled += len(content)

    def _start(self, kind: str | None, value) -> None:
        self.kind = kind
        if kind is None:
            raise self.ckpt.error(f"parameter {self.name!r} holds no tensor")
        if kind != "tensor":
            return
        self.dims, self.type_name = list(value.tensor.dims), value.tensor.tensor_type
        if self.type_name == "str":
            return
        if self.type_name not in TENSOR_TYPES:
            raise self.ckpt.error(f"parameter {self.name!r} has tensor type {self.type_name!r}, which keeptune "
                                  f"does not read (it reads {', '.join(TENSOR_TYPES)})")
        if sys.byteorder != "little":
            raise CheckpointError(f"{self.ckpt.path}: MindSpore checkpoints are little-endian; this machine is not")
        dtype = TENSOR_TYPES[self.type_name]
        itemsize = torch.empty((), dtype=dtype).element_size()
        shape = self.dims
        if shape == [0] and len(value.tensor.tensor_content) == itemsize:  # how MindSpore's loader reads dims [0]
            shape = []
        if any(d < 0 for d in shape):
            raise self.ckpt.error(f"parameter {self.name!r} has a negative dimension in {self.dims}")
        self.size = int(np.prod(shape, dtype=np.int64)) * itemsize
        self.out = torch.empty(shape, dtype=dtype)
        self.flat = self.out.view(-1).view(torch.uint8).numpy() if self.size else None

    def finish(self) -> torch.Tensor | str | None:
        if self.kind != "tensor":
            return None
        if self.type_name == "str":
            raw = b"".join(self.text)
            return str(np.frombuffer(raw, dtype=f"<U{len(raw) // 4}")[0]) if len(raw) >= 4 else ""
        if self.filled != self.size:
            raise self.ckpt.error(f"parameter {self.name!r} has {self.filled} bytes for shape {self.dims} of "
                                  f"{self.type_name} ({self.size} bytes)")
        return self.out


def read_checkpoint(path: Path | str) -> dict[str, torch.Tensor | str]:
    """Every parameter of a (small) checkpoint in a dict; for large files iterate `CheckpointFile.tensors()`."""
    with CheckpointFile(path) as ckpt:
        return {name: value for name, value in ckpt.tensors() if value is not None}


def tensor_records(name: str, tensor: torch.Tensor) -> Iterator[bytes]:
    """The serialized records MindSpore's save_checkpoint writes for one tensor (split every CHUNK_BYTES)."""
    if tensor.dtype not in TYPE_NAMES:
        raise CheckpointError(f"parameter {name!r}: MindSpore checkpoints have no {tensor.dtype} type")
    tensor = tensor.detach().to("cpu").contiguous()
    raw = tensor.reshape(-1).view(torch.uint8) if tensor.numel() else torch.empty(0, dtype=torch.uint8)
    for start in range(0, max(len(raw), 1), CHUNK_BYTES):
        message = Checkpoint()
        value = message.value.add(tag=name)
        value.tensor.dims.extend(tensor.shape)
        value.tensor.tensor_type = TYPE_NAMES[tensor.dtype]
        value.tensor.tensor_content = raw[start:start + CHUNK_BYTES].numpy().tobytes()
        yield message.SerializeToString()


def write_checkpoint(path: Path | str, tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
    """Write (name, tensor) pairs as a MindSpore checkpoint, one at a time, atomically; returns the count.

    The file appears complete or not at all (`atomic_writer`: a temporary file beside it is
    renamed); a name written twice is a CheckpointError (MindSpore would merge the two). It
    begins with the length note (filled in once the records are written), so that a copy cut
    short is refused when read."""
    seen: set[str] = set()
    with atomic_writer(path) as handle:
        handle.write(LENGTH_KEY + bytes(8))
        for name, tensor in tensors:
            if name in seen:
                raise CheckpointError(f"{path}: parameter {name!r} twice")
            seen.add(name)
            for record in tensor_records(name, tensor):
                handle.write(record)
        length = handle.tell()
        handle.seek(len(LENGTH_KEY))
        handle.write(length.to_bytes(8, "little"))
    return len(seen)
