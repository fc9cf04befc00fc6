"""`keeptune run` refuses a wrong setting before any data is built or a model loaded, and
never writes into a folder it did not make, nor beside another run in the same folder."""
from __future__ import annotations

import fcntl

import pytest

from keeptune.cli import main


@pytest.mark.parametrize("word,words", [
    ("new_task.accuracy=judge.accuracy@0.001", "'judge.accuracy@0.001' is not a scalar of task math-worked"),
    ("new_task.prompt=chat", "field 'new_task.prompt': 'chat'"),
    ("new_task.prompt=bogus", "field 'new_task.prompt': 'bogus'"),
    ("original.limit=-1", "field 'data.limit': is -1"),
    ("original.gate=[emf1.f1]", "field 'original[0].gate'"),
    ("original.task=squad3", "unknown task 'squad3'"),
    ("new_task.extraction=best", "choose one of seed, final, last"),
    ("tracking.every=-1", "field 'tracking'"),
    ("name=a/b", "field 'name': 'a/b'"),
    ("gate=1.5", "field 'gate': 1.5"),
    ("lora.targets=[nothing_like_this]", "nothing_like_this"),
    ("model.device=cuda:7", "cuda:7"),
])
def test_a_wrong_setting_fails_before_any_work(tmp_path, capsys, word, words):
    out = tmp_path / "run"
    assert main(["run", f"out={out}", word]) == 2
    err = capsys.readouterr().err  # (with an empty cache the default GGUF's conversion bar comes first)
    assert err.strip().splitlines()[-1].startswith("keeptune: error: ") and words in err, err
    assert not out.exists()  # no data built, nothing written


def test_a_folder_keeptune_did_not_make_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("years of work")
    assert main(["run", f"out={out}", "lora.targets=[nothing_like_this]"]) == 2  # plan first: still refused
    assert main(["run", f"out={out}", "tracking.every=0", "new_task.accuracy=nope"]) == 2
    capsys.readouterr()
    from keeptune.experiment.runner import RUN_OUTPUTS, exclusive

    with pytest.raises(Exception, match="thesis.txt|not made by keeptune|keeptune did not make"):
        with exclusive(out, False, ()):
            pass
    with exclusive(out, True, ()):  # --overwrite: accepted, and nothing is deleted
        pass
    assert (out / "thesis.txt").read_text() == "years of work" and ".lock" in RUN_OUTPUTS


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    from keeptune.core.errors import DataError
    from keeptune.experiment.runner import exclusive

    out = tmp_path / "run"
    with exclusive(out, False, ()):
        with open(out / ".lock", "w") as handle:  # what a second process sees
            with pytest.raises(BlockingIOError):
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DataError, match="another keeptune run is working in this directory"):
            with exclusive(out, False, ()):
                pass
    with exclusive(out, False, ()):  # released when the first one ends
        pass
