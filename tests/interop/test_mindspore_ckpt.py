"""MindSpore checkpoints read and written without MindSpore (keeptune.interop.mindspore_ckpt).

`data/mindspore-save_checkpoint.ckpt` is what MindSpore 2.10's own `save_checkpoint`
wrote (crc_check=True, SLICE_SIZE lowered to 1 KB so that its 1200-byte tensor is split
over two records as a tensor over 512 MiB is); `make test-mindspore` writes it again with
MindSpore and checks that it is byte for byte this file (tests/interop/test_real_mindspore.py).
"""
from __future__ import annotations

import binascii
import pickle
from pathlib import Path

import pytest
import torch

from keeptune.cli import main
from keeptune.interop import mindspore_ckpt
from keeptune.interop.mindspore_ckpt import CheckpointError, CheckpointFile, read_checkpoint, write_checkpoint

MINDSPORE_FILE = Path(__file__).parent / "data" / "mindspore-save_checkpoint.ckpt"


def test_reads_what_mindspore_save_checkpoint_wrote():
    with CheckpointFile(MINDSPORE_FILE) as ckpt:
        assert len(ckpt.records) == 6  # model.w in two pieces, then one record per parameter
        assert ckpt.names() == ["model.w", "model.b", "scale", "global_step", "note"]
        assert ckpt.crc is not None
        values = dict(ckpt.tensors())
    # the values MindSpore was given (see test_real_mindspore.py's fixture writer)
    assert torch.equal(values["model.w"], torch.arange(300, dtype=torch.float32).reshape(2, 150) / 4)
    assert values["model.b"].dtype == torch.bfloat16
    assert values["model.b"].tolist() == [1.5, -2.0, 0.25]
    assert values["scale"].shape == () and values["scale"].item() == 0.5
    assert values["global_step"].dtype == torch.int64 and values["global_step"].item() == 7
    assert values["note"] == "hi"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8,
                                   torch.uint8, torch.int32, torch.int64, torch.bool])
def test_round_trip_of_every_dtype(tmp_path, dtype):
    torch.manual_seed(0)
    tensors = {"a.weight": (torch.randn(5, 3) * 50).to(dtype), "scalar": torch.tensor(3).to(dtype),
               "empty": torch.empty(0, 4, dtype=dtype)}
    assert write_checkpoint(tmp_path / "x.ckpt", tensors.items()) == 3
    back = read_checkpoint(tmp_path / "x.ckpt")
    assert list(back) == list(tensors)
    for name, tensor in tensors.items():
        assert back[name].dtype == dtype and back[name].shape == tensor.shape
        assert torch.equal(back[name], tensor)


def test_large_tensors_are_split_and_joined_as_mindspore_does(tmp_path, monkeypatch):
    monkeypatch.setattr(mindspore_ckpt, "CHUNK_BYTES", 64)  # MindSpore: 512 MiB
    tensor = torch.randn(10, 7)  # 280 bytes: five records of at most 64
    write_checkpoint(tmp_path / "x.ckpt", [("big", tensor), ("next", torch.ones(2))])
    with CheckpointFile(tmp_path / "x.ckpt") as ckpt:
        assert len(ckpt.records) == 6 and ckpt.names() == ["big", "next"]
        values = dict(ckpt.tensors())
    assert torch.equal(values["big"], tensor)


def test_wanted_skips_tensors_without_parsing_them(tmp_path, monkeypatch):
    write_checkpoint(tmp_path / "x.ckpt", [("a", torch.ones(3)), ("b", torch.zeros(2))])
    with CheckpointFile(tmp_path / "x.ckpt") as ckpt:
        parsed = []
        original = ckpt._value
        monkeypatch.setattr(ckpt, "_value", lambda offset, length, end=None: parsed.append(end) or
                            original(offset, length, end))
        assert [name for name, _ in ckpt.tensors(wanted={"b"}.__contains__)] == ["b"]
    assert parsed == [None]  # one full parse: b's record


def test_a_damaged_crc_is_refused(tmp_path):
    data = bytearray(MINDSPORE_FILE.read_bytes())
    data[100] ^= 1  # a byte of model.w's data
    (tmp_path / "bad.ckpt").write_bytes(bytes(data))
    with CheckpointFile(tmp_path / "bad.ckpt") as ckpt, pytest.raises(CheckpointError, match="CRC-32 does not match"):
        list(ckpt.tensors())


def test_a_crc_trailer_written_by_hand_is_checked(tmp_path):
    write_checkpoint(tmp_path / "x.ckpt", [("a", torch.arange(4.0))])
    body = (tmp_path / "x.ckpt").read_bytes()
    (tmp_path / "crc.ckpt").write_bytes(body + b"crc_num" + binascii.crc32(body).to_bytes(10, "big"))
    assert torch.equal(read_checkpoint(tmp_path / "crc.ckpt")["a"], torch.arange(4.0))


def one_line_error(path: Path, capsys) -> str:
    assert main(["import", str(path), "--out", str(path.parent / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert not (path.parent / "out").exists()
    return err


class Boom:
    """Unpickling this writes a file: the proof that something ran code from a checkpoint."""

    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


@pytest.mark.parametrize("case", ["empty", "truncated", "garbage", "pickle", "zip", "directory", "missing",
                                  "bad value", "wrong size"])
def test_files_it_cannot_parse_are_refused_naming_the_file(tmp_path, capsys, case):
    path = tmp_path / "model.ckpt"
    good = MINDSPORE_FILE.read_bytes()
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(good[:700])
    elif case == "garbage":
        path.write_bytes(bytes(range(7, 200)))
    elif case == "pickle":
        Boom.marker = tmp_path / "ran"
        path.write_bytes(pickle.dumps({"model.tok_embeddings.embedding_weight": Boom()}))
    elif case == "zip":
        torch.save({"w": torch.ones(2)}, path)
    elif case == "directory":
        path.mkdir()
    elif case == "bad value":  # a well-framed record whose content is no Checkpoint.Value
        path.write_bytes(b"\x0a\x03\xff\xff\xff")
    elif case == "wrong size":  # dims [4] of Float32 but 8 bytes
        message = mindspore_ckpt.Checkpoint()
        value = message.value.add(tag="model.norm_out.weight")
        value.tensor.dims.extend([4])
        value.tensor.tensor_type = "Float32"
        value.tensor.tensor_content = bytes(8)
        path.write_bytes(message.SerializeToString())
    err = one_line_error(path, capsys)
    assert f"keeptune: error: {path}" in err
    expected = {"empty": "the file is empty", "truncated": "truncated?", "garbage": "does not start a protobuf",
                "pickle": "a pickle file", "zip": "a pickle file", "directory": "is a directory",
                "missing": "No such file", "bad value": "is not a Checkpoint.Value",
                "wrong size": "has 8 bytes for shape [4] of Float32"}[case]
    assert expected in err
    assert not (tmp_path / "ran").exists()


def test_a_copy_cut_short_at_any_record_boundary_is_refused(tmp_path):
    """Issue 28: a file cut between records is a valid Checkpoint of fewer parameters; keeptune's length note
    tells it from the file written."""
    tensors = [("a", torch.arange(6.0)), ("b", torch.ones(2, 3)), ("c", torch.tensor(7))]
    write_checkpoint(tmp_path / "x.ckpt", tensors)
    whole = (tmp_path / "x.ckpt").read_bytes()
    with CheckpointFile(tmp_path / "x.ckpt") as ckpt:
        ends = [start + length for _, start, length in ckpt.records]
        assert ckpt.records[0][0] == mindspore_ckpt.LENGTH_NOTE and ends[-1] == len(whole)
    assert int.from_bytes(whole[2:10], "little") == len(whole)
    for cut in [1, mindspore_ckpt.LENGTH_NOTE, *ends[:-1]]:
        (tmp_path / "cut.ckpt").write_bytes(whole[:cut])
        with pytest.raises(CheckpointError, match=f"it holds {cut}" if cut < 10 else
                           f"keeptune wrote it with {len(whole)} bytes, it holds {cut}: it was cut short"):
            CheckpointFile(tmp_path / "cut.ckpt")
    (tmp_path / "more.ckpt").write_bytes(whole + whole[10:])
    with pytest.raises(CheckpointError, match="it was added to"):
        CheckpointFile(tmp_path / "more.ckpt")


def test_the_length_note_is_a_field_protobuf_skips_and_files_without_it_still_read(tmp_path):
    write_checkpoint(tmp_path / "x.ckpt", [("a", torch.arange(3.0)), ("b", torch.ones(2))])
    whole = (tmp_path / "x.ckpt").read_bytes()
    # MindSpore's load_checkpoint parses the file as one Checkpoint message: the unknown field is skipped
    assert [v.tag for v in mindspore_ckpt.Checkpoint.FromString(whole).value] == ["a", "b"]
    (tmp_path / "plain.ckpt").write_bytes(whole[mindspore_ckpt.LENGTH_NOTE:])  # as MindSpore writes it
    assert torch.equal(read_checkpoint(tmp_path / "plain.ckpt")["b"], torch.ones(2))


def test_writing_is_atomic(tmp_path):
    def tensors():
        yield "a", torch.ones(2)
        raise RuntimeError("killed half way")

    write_checkpoint(tmp_path / "x.ckpt", [("old", torch.zeros(1))])
    with pytest.raises(RuntimeError):
        write_checkpoint(tmp_path / "x.ckpt", tensors())
    assert list(read_checkpoint(tmp_path / "x.ckpt")) == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt"]


def test_unwritable_types_and_repeated_names_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no torch.complex64 type"):
        write_checkpoint(tmp_path / "x.ckpt", [("c", torch.ones(2, dtype=torch.complex64))])
    with pytest.raises(CheckpointError, match="'a' twice"):
        write_checkpoint(tmp_path / "x.ckpt", [("a", torch.ones(2)), ("a", torch.ones(2))])
    assert not (tmp_path / "x.ckpt").exists()
