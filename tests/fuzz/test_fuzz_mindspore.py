"""Fuzz `keeptune import` with MindSpore checkpoints cut short: a small exported adapter (the tiny
model's q_proj and v_proj on 2 layers: 8 records) cut at every record boundary, and at any byte.

Each cut either imports completely, equal to the original adapter tensor for tensor, or is
refused with one `keeptune: error:` line naming the file, leaving no output folder. That holds
for keeptune's own files (their length note tells a cut) and, for a file as MindSpore writes it
(no note), whenever the base is known (`--model`). With neither, a cut at the end of a layer is
a smaller adapter no name can tell from a whole one: it imports as the layers it holds, each
equal to the original's, and says which layers those are."""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from keeptune.cli import main
from keeptune.interop.mindspore_ckpt import LENGTH_NOTE, CheckpointFile
from tests.fuzz.helpers import cli_exit, fuzz, long_fuzz, workdir
from tests.interop.test_mindformers import make_adapter
from tests.tiny import save_tiny

MODES = ["keeptune's file", "MindSpore's file, base known", "MindSpore's file alone"]


@pytest.fixture(scope="module")
def exported():
    """(tiny model, the adapter's PEFT tensors, the exported .ckpt's bytes, its record ends)."""
    folder = Path(tempfile.mkdtemp(prefix="keeptune-fuzz-ckpt-"))
    tiny = save_tiny(folder / "tiny")
    adapter = make_adapter(tiny, folder / "adapter")
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", str(adapter), "--out", str(folder / "a.ckpt")]) == 0
    with CheckpointFile(folder / "a.ckpt") as ckpt:
        ends = [start + length for _, start, length in ckpt.records]
    return tiny, load_file(adapter / "adapter_model.safetensors"), (folder / "a.ckpt").read_bytes(), ends


def check_cut(exported, mode: str, cut: int) -> None:
    tiny, original, whole, ends = exported
    note = mode == MODES[0]
    content = whole[:cut] if note else whole[LENGTH_NOTE:cut]  # MindSpore's file: the records alone
    with workdir() as folder:
        path, out = folder / "cut.ckpt", folder / "out"
        path.write_bytes(content)
        base = ["--model", str(tiny)] if mode == MODES[1] else []
        code = cli_exit(["import", str(path), "--alpha", "8", "--out", str(out), *base], [str(path)], [out])
        if code == 2:
            assert cut != len(whole), "the whole file was refused"
            return
        imported = load_file(out / "adapter_model.safetensors")
        if cut == len(whole):
            assert imported.keys() == original.keys()
        else:  # only a file alone, cut at the end of a layer: the layers it holds
            assert mode == MODES[2] and cut in ends, f"a cut at byte {cut} of {len(whole)} imported"
            layers = {int(key.split(".")[4]) for key in imported}
            assert layers == set(range(max(layers) + 1)) and max(layers) < 1
        assert all(torch.equal(imported[key], original[key]) for key in imported)


@pytest.mark.parametrize("mode", MODES)
def test_every_record_boundary(exported, mode):
    _, _, whole, ends = exported
    assert len(ends) == 8 and ends[-1] == len(whole)
    for cut in [0, LENGTH_NOTE, *ends]:
        check_cut(exported, mode, cut)


@fuzz(15)
@given(st.data())
def test_any_cut(exported, data):
    whole = exported[2]
    check_cut(exported, data.draw(st.sampled_from(MODES)), data.draw(st.integers(LENGTH_NOTE, len(whole))))


@long_fuzz
@given(st.data())
def test_any_cut_long(exported, data):
    whole = exported[2]
    check_cut(exported, data.draw(st.sampled_from(MODES)), data.draw(st.integers(LENGTH_NOTE, len(whole))))
