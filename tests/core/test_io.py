"""keeptune.core.io: the output-directory guard, unwritable outputs and user-file decoding
(issue 11: nothing lost, no traceback)."""
from __future__ import annotations

import errno
import io
import json
import os

import pytest

from keeptune.core.errors import DataError, MalformedLineError, OutputError
from keeptune.core.io import iter_jsonl, located_jsonl, read_jsonl_prefix, read_text, write_jsonl
from keeptune.core.outputs import OWNER_FILE, check_output_dir, claim_output_dir

# --- claim_output_dir ---------------------------------------------------------------------

def test_a_new_directory_is_created_and_marked(tmp_path):
    out = claim_output_dir(tmp_path / "a" / "b", "merge")
    assert out.is_dir()
    assert json.loads((out / OWNER_FILE).read_text())["kind"] == "merge"
    assert claim_output_dir(out, "merge") == out  # its own directory again: fine


def test_an_empty_existing_directory_is_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    claim_output_dir(tmp_path / "empty", "merge")


def test_a_users_folder_is_refused_and_kept(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    with pytest.raises(OutputError, match=r"thesis: the output directory exists and keeptune did not create it "
                                          r"\(it holds thesis.txt\).*--overwrite"):
        claim_output_dir(folder, "merge")
    assert (folder / "thesis.txt").read_text() == "years of work"
    assert not (folder / OWNER_FILE).exists()
    claim_output_dir(folder, "merge", overwrite=True)  # told to: accepted, the file stays
    assert (folder / "thesis.txt").read_text() == "years of work"


def test_a_file_added_to_an_own_directory_is_foreign(tmp_path):
    out = claim_output_dir(tmp_path / "run", "train", outputs=("log.jsonl",))
    (out / "log.jsonl").write_text("")
    claim_output_dir(out, "train", outputs=("log.jsonl",))
    (out / "notes.md").write_text("mine")
    with pytest.raises(OutputError, match=r"holds files keeptune did not write \(notes.md\)"):
        claim_output_dir(out, "train", outputs=("log.jsonl",))


def test_another_commands_directory_is_refused(tmp_path):
    out = claim_output_dir(tmp_path / "x", "eval squad")
    with pytest.raises(OutputError, match="holds the output of `keeptune eval squad`, not of `keeptune merge`"):
        claim_output_dir(out, "merge")


def test_unmarked_directory_of_only_own_outputs_is_adopted(tmp_path):
    """A run directory written before the marker existed is still the command's own."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "log.jsonl").write_text("")
    claim_output_dir(tmp_path / "run", "train", outputs=("checkpoints", "log.jsonl"))
    with pytest.raises(OutputError):  # without `outputs`, an unmarked non-empty folder is never adopted
        check_output_dir(tmp_path / "run", "other")


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_an_input_is_never_an_output_even_with_overwrite(tmp_path, where):
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    out = {"same": adapter, "inside": adapter / "merged", "contains": tmp_path / "run"}[where]
    with pytest.raises(OutputError, match=f"this command's input {adapter}"):
        claim_output_dir(out, "merge", overwrite=True, inputs=[adapter, None, "https://example.org/x"])


def test_a_file_in_the_way_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="a file of that name exists"):
        claim_output_dir(tmp_path / "f", "merge")
    with pytest.raises(OutputError, match=r"f/sub: cannot write here"):
        claim_output_dir(tmp_path / "f" / "sub", "merge")


# --- unwritable outputs of the atomic writers ----------------------------------------------

def test_writing_under_a_file_or_onto_a_directory_is_a_data_error(tmp_path):
    (tmp_path / "occupied").write_text("x")
    with pytest.raises(DataError, match=r"occupied/out.jsonl: cannot write here: a file is in the way"):
        write_jsonl(tmp_path / "occupied" / "out.jsonl", [{"a": 1}])
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"folder: cannot write here: it is a directory"):
        write_jsonl(tmp_path / "folder", [{"a": 1}])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_a_data_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(DataError, match=r"ro/out.jsonl: cannot write here: Permission denied"):
            write_jsonl(folder / "out.jsonl", [{"a": 1}])
    finally:
        folder.chmod(0o700)


# --- reading user files ---------------------------------------------------------------------

def test_bom_prefixed_jsonl_keeps_its_first_record(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"a": 1}\n{"a": 2}\n')
    assert list(iter_jsonl(path)) == [{"a": 1}, {"a": 2}]
    path.write_bytes(b"\xef\xbb\xbf" + b'[{"a": 1}]')
    assert list(located_jsonl(path)) == [(f"{path}: item 1", {"a": 1})]


@pytest.mark.parametrize("reader", [iter_jsonl, read_jsonl_prefix, read_text])
def test_windows_1252_text_names_file_and_line(tmp_path, reader):
    path = tmp_path / "cp1252.jsonl"
    path.write_bytes('{"a": 1}\n{"a": "caf\u00e9 \u201cquoted\u201d"}\n'.encode("cp1252"))
    with pytest.raises(MalformedLineError, match=rf"{path}:2: not valid UTF-8 \(byte 0xe9 at column 11"):
        result = reader(path)
        list(result) if reader is iter_jsonl else result


def test_a_json_array_that_is_broken_names_its_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[{"a": 1},\n {"a": }]')
    with pytest.raises(MalformedLineError, match=rf"{path}:2: not a valid JSON array"):
        list(iter_jsonl(path))


# --- a full disk (issue 28) -------------------------------------------------------------------

class FullDisk(io.StringIO):
    """A file on a disk with no space left: every write fails as the kernel's would (ENOSPC)."""

    name = "/mnt/full/file"

    def write(self, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_under_an_atomic_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import keeptune.core.io as keeptune_io

    path = tmp_path / "metrics.json"
    path.write_text('{"old": true}\n')

    def onto_full_disk(fd, mode, encoding=None):  # the temporary file's bytes go to a full disk
        os.close(fd)
        return FullDisk()

    monkeypatch.setattr(keeptune_io.os, "fdopen", onto_full_disk)
    with pytest.raises(OutputError) as info:
        keeptune_io.atomic_write_json(path, {"new": 1})
    assert str(info.value) == (f"{path}: cannot write: No space left on device; free some space, then run the same "
                               "command again")
    assert path.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # the temporary file is gone


def test_a_full_disk_under_an_append_names_the_file():
    from keeptune.core.io import append_jsonl

    with pytest.raises(OutputError, match=r"^/mnt/full/file: cannot write: No space left on device; free some space"):
        append_jsonl(FullDisk(), [{"id": "a"}])


def test_writing_to_names_the_place_for_a_librarys_own_error_of_a_full_disk(tmp_path):
    """safetensors raises its own SafetensorError, the OS error in its text only (its words on a full tmpfs)."""
    from safetensors import SafetensorError

    from keeptune.core.io import no_space, writing_to

    full = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    other = SafetensorError("Error while deserializing header: incomplete metadata, file not fully covered")
    assert no_space(full) and not no_space(other) and no_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    with pytest.raises(OutputError, match=rf"^{tmp_path}/ckpt: cannot write: No space left on device; free"):
        with writing_to(tmp_path / "ckpt"):
            raise full
    assert not no_space(OutputError(f"{tmp_path}: cannot write: No space left on device"))  # mapped once only


@pytest.mark.parametrize("error", [FileNotFoundError(2, "No such file or directory", "x"), ValueError("no"),
                                   OSError(5, "Input/output error")])
def test_writing_to_lets_other_errors_through(tmp_path, error):
    from keeptune.core.io import writing_to

    with pytest.raises(type(error)) as info:
        with writing_to(tmp_path):
            raise error
    assert info.value is error


# --- locks and what an interrupted command leaves ---------------------------------------------

def test_a_waiting_lock_waits_for_the_holder_instead_of_refusing(tmp_path):
    import threading
    import time

    from keeptune.core.outputs import locked

    order = []
    with locked(tmp_path, "busy"):
        with pytest.raises(DataError, match=rf"^{tmp_path}: busy$"):  # without wait: refused at once
            with locked(tmp_path, "busy"):
                pass

        def second():
            with locked(tmp_path, "busy", wait=True):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first done")
    thread.join(10)
    assert order == ["first done", "second"]


def test_the_interrupted_line_says_the_last_note_and_is_reset(tmp_path):
    from keeptune.core.outputs import interrupted_line, note_progress, reset_progress

    reset_progress()
    assert interrupted_line() == "keeptune: interrupted: nothing was saved; run the same command again"
    note_progress(resume="run it again with --resume")
    note_progress(saved="step 2 is in RUN")
    note_progress(saved="step 4 is in RUN")
    assert interrupted_line() == "keeptune: interrupted: step 4 is in RUN; run it again with --resume"
    lines = tmp_path / "predictions.jsonl"
    note_progress(saved=lambda: f"{len(lines.read_text().splitlines())} lines")  # counted when printed
    lines.write_text("a\nb\n")
    assert interrupted_line() == "keeptune: interrupted: 2 lines; run it again with --resume"
    lines.unlink()
    assert interrupted_line().startswith("keeptune: interrupted: what was saved cannot be read ([Errno 2]")
    reset_progress()
    assert interrupted_line() == "keeptune: interrupted: nothing was saved; run the same command again"
