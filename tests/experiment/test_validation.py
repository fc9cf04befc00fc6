"""`keeptune run` refuses a wrong setting before any data is built or a model loaded, and
never writes into a folder it did not make, nor beside another run in the same folder."""
from __future__ import annotations

import fcntl
import json

import pytest

from keeptune.cli import main


@pytest.mark.parametrize("word,words", [
    ("new_task.accuracy=judge.accuracy@0.001", "'judge.accuracy@0.001' is not a scalar of task math-worked"),
    ("new_task.prompt=chat", "field 'new_task.prompt': 'chat'"),
    ("new_task.prompt=bogus", "field 'new_task.prompt': 'bogus'"),
    ("original.limit=-1", "field 'original[0].limit': -1"),
    ("original.start=-1", "field 'original[0].start': -1"),
    ("original.gate=[emf1.f1]", "field 'original[0].gate'"),
    ("original.task=squad3", "unknown task 'squad3'"),
    ("new_task.extraction=best", "choose one of seed, final, last"),
    ("tracking.every=-1", "field 'tracking'"),
    ("name=a/b", "field 'name': 'a/b'"),
    ("gate=1.5", "field 'gate': 1.5"),
    ("lora.targets=[nothing_like_this]", "nothing_like_this"),
    ("model.device=cuda:7", "cuda:7"),
    ("original.rule=lucky", "lucky"),
    ("original.confidence=1.5", "field 'original[0].confidence': 1.5"),
])
def test_a_wrong_setting_fails_before_any_work(tmp_path, capsys, word, words):
    out = tmp_path / "run"
    assert main(["run", f"out={out}", word]) == 2
    err = capsys.readouterr().err  # (with an empty cache the default GGUF's conversion bar comes first)
    assert err.strip().splitlines()[-1].startswith("keeptune: error: ") and words in err, err
    assert not out.exists()  # no data built, nothing written


@pytest.mark.parametrize("words,says", [
    (["new_task.eval_n=0"], "override 'new_task.eval_n=0': field 'new_task.eval_n' is 0; it must be at least 1"),
    (["new_task.counts={area: -5}"], "field 'new_task.counts' gives 'area' -5 records; a count is at least 0"),
    (["new_task.counts={nosuch: 5}"], "field 'new_task.counts' names no template 'nosuch'; the templates: "
                                      "arithmetic, power, root, fraction, mean, equation, function, area, mass, "
                                      "discount, sales"),
    (["new_task.strategy=foo"], "field 'new_task.strategy' is 'foo'; choose one of real, uniform, easy, arithmetic, "
                                "custom"),
    (["new_task.n=0"], "field 'new_task.n' is 0; it must be at least 1"),
    (["new_task.seq_len=0"], "field 'new_task.seq_len' is 0; it must be at least 1"),
    (["new_task.counts={}"], "field 'new_task.counts' is {}; the custom strategy needs one or more records"),
    (["new_task.eval_templates=[nosuch]"], "field 'new_task.eval_templates' is ['nosuch']; name one or more"),
    (["new_task.strategy=arithmetic", "new_task.eval_templates=[mass]"],
     "field 'new_task.eval_templates' is ['mass']: the arithmetic strategy admits none of its problems"),
    # mass has 100 distinct problems and the default trains on 70 of them
    (["new_task.eval_templates=[mass]"], "field 'new_task.eval_n' is 60, but templates mass leave at most 30 "
                                         "distinct problems outside the training set"),
    (["new_task.max_new_tokens=100000"], "task math-worked: generation.max_new_tokens is 100000, but the model's "
                                         "context holds 8192 tokens"),
    (["new_task.source=no-such-file.json"], "field 'new_task.source': "),
    (["new_task.train_data=."], "field 'new_task.train_data': "),
    (["new_task.eval_data=http://127.0.0.1:9/eval.jsonl"], "field 'new_task.eval_data': "
                                                           "'http://127.0.0.1:9/eval.jsonl' is an address"),
])
def test_a_new_task_the_data_build_cannot_use_fails_before_any_work(tmp_path, capsys, monkeypatch, words, says):
    """Issue 28: these passed validation and failed after the run folder existed (a traceback for most)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["run", f"out={out}", *words]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("keeptune: error: ") and says in line, line
    assert not out.exists()


def test_the_held_out_bound_is_exact(tmp_path):
    """The fraction template has 45 distinct problems (numerator 1..9 over a larger denominator up to 10) and the
    default trains on 30: a generated evaluation set of 15 is built, one of 16 is refused."""
    from keeptune.core.errors import ConfigError
    from keeptune.experiment.config import ExperimentConfig
    from keeptune.experiment.newdata import prepare_data
    from keeptune.experiment.plan import plan_experiment
    from keeptune.train.config import load_config

    distinct = sum(1 for b in range(2, 11) for a in range(1, min(b, 10)))
    assert distinct == 45
    words = ["new_task.eval_templates=[fraction]"]
    with pytest.raises(ConfigError, match=f"is {distinct - 30 + 1}, but templates fraction leave at most "
                                          f"{distinct - 30} distinct problems"):
        load_config(None, [*words, f"new_task.eval_n={distinct - 30 + 1}"], root=ExperimentConfig)
    config = load_config(None, [*words, f"new_task.eval_n={distinct - 30}"], root=ExperimentConfig)
    train_path, eval_path = prepare_data(config, tmp_path, plan_experiment(config))
    held_out = [json.loads(line)["problem"] for line in eval_path.read_text().splitlines()]
    trained = {json.loads(line)["conversations"][0]["value"] for line in train_path.read_text().splitlines()}
    assert len(set(held_out)) == distinct - 30
    assert not any(problem in prompt for problem in held_out for prompt in trained)


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


def test_train_data_without_the_tasks_own_data_names_eval_data(tmp_path, capsys, monkeypatch):
    """With new_task.train_data and no eval_data the new task is evaluated on its spec's data; where that is the
    shared sample and ../shared is absent (a user's clone), the error names the experiment field to set."""
    import keeptune.data.shared as shared

    monkeypatch.setattr(shared, "SHARED_ROOTS", (tmp_path,))
    train = tmp_path / "train.jsonl"
    train.write_text('{"problem": "1 + 1 = ?", "solution": "2"}\n', encoding="utf-8")
    assert main(["run", f"out={tmp_path / 'run'}", f"new_task.train_data={train}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "field 'new_task.eval_data': null, so the new task math-worked is evaluated on its spec's data" in err
    assert "shared/data/math/train-sample-996.jsonl is not here" in err and err.endswith("give new_task.eval_data")
    assert not (tmp_path / "run").exists()
