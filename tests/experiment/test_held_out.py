"""Held-out tasks (issue 29): an `original:` entry with `held_out: true` is evaluated at the baseline and at every
checkpoint with its paired change against the base model, never gated and never used to choose, and keeptune
refuses one whose samples overlap a gated task's."""
from __future__ import annotations

import json

import pytest

from keeptune.cli import main
from tests.evaluate.test_lmeval import write_arc
from tests.experiment.test_runner import tiny_experiment


def config_with(tmp_path, words: list[str], entries: str) -> tuple:
    """An experiment YAML whose `original:` is `entries` (SQUAD: the tiny SQuAD file, ARC: a 10-question ARC
    file), and the other words."""
    squad = next(w for w in words if w.startswith("original.data=")).split("=", 1)[1]
    arc = write_arc(tmp_path / "arc.jsonl", n=10)
    config = tmp_path / "experiment.yaml"
    config.write_text("original:\n" + entries.replace("SQUAD", squad).replace("ARC", str(arc)), encoding="utf-8")
    return config, [w for w in words if not w.startswith("original.")]


@pytest.mark.parametrize("entries,says", [
    ("  - task: squad-seed\n    data: SQUAD\n  - lm_eval: arc_easy_local\n    data: ARC\n    limit: 6\n"
     "  - lm_eval: arc_easy_local\n    name: arc-held\n    data: ARC\n    start: 4\n    held_out: true\n",
     "field 'original[2].held_out': task arc-held shares 2 samples with gated task arc_easy_local, e.g. "),
    ("  - task: squad-seed\n    data: SQUAD\n  - task: squad-seed\n    name: squad-held\n    data: SQUAD\n"
     "    held_out: true\n", "task squad-held shares 3 samples with gated task squad-seed"),
    ("  - task: squad-seed\n    data: SQUAD\n    held_out: true\n", "every task is held_out"),
    ("  - task: squad-seed\n    data: SQUAD\n  - lm_eval: arc_easy_local\n    data: ARC\n    held_out: true\n"
     "    rule: confident\n", "field 'original[1].rule': confident: a held-out task is never gated"),
    ("  - task: squad-seed\n    data: SQUAD\n    start: -2\n", "field 'original[0].start': -2"),
])
def test_a_held_out_task_that_could_see_gate_data_is_refused_before_any_work(tmp_path, capsys, entries, says):
    config, words = config_with(tmp_path, tiny_experiment(tmp_path), entries)
    assert main(["run", str(config), *words]) == 2
    err = capsys.readouterr().err
    assert says in err, err
    assert not (tmp_path / "run").exists()


def test_a_held_out_task_is_measured_at_every_checkpoint_and_decides_nothing(tmp_path):
    """ARC questions 0-4 gated (at a fraction no state can miss), 5-9 held out: the held-out task is evaluated
    wherever the gated one is, its change against the base model recomputed here from the scores, and it appears in
    no gate, no tracking and no score."""
    words = tiny_experiment(tmp_path, "new_task.eval_n=4", "new_task.max_new_tokens=4", "train.max_steps=2",
                            "train.checkpoints=2", "train.lr=1e-2", "tracking.every=1", "tracking.retention=2",
                            "tracking.new_task=2")
    config, words = config_with(tmp_path, words, (
        "  - task: squad-seed\n    data: SQUAD\n    fraction: 0.0001\n"
        "  - lm_eval: arc_easy_local\n    data: ARC\n    limit: 5\n    gate: [acc]\n    fraction: 0.0001\n"
        "  - lm_eval: arc_easy_local\n    name: arc-held\n    data: ARC\n    start: 5\n    gate: [acc, acc_norm]\n"
        "    held_out: true\n"))
    assert main(["run", str(config), *words]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    roles = {t["name"]: t["role"] for t in results["tasks"]}
    assert roles == {"squad-seed": "retention", "arc_easy_local": "retention", "arc-held": "held_out",
                     "math-worked": "new"}
    held = next(t for t in results["tasks"] if t["name"] == "arc-held")
    assert "gate" not in held and held["measured"]["metrics"] == ["lmeval.acc", "lmeval.acc_norm"]
    ids = [json.loads(line)["id"] for line in (run / "baseline" / "arc-held" / "predictions.jsonl").open()]
    assert ids == [f"arc_easy_local:{i}" for i in range(5, 10)]  # the file's questions 5-9, numbered as in it
    base = results["baseline"]["tasks"]["arc-held"]["scores"]
    assert results["checkpoints"]
    for entry in results["checkpoints"]:
        assert set(entry["gate"]) == set(entry["retention"]) == {"squad-seed", "arc_easy_local"}
        assert entry["passes_gate"] is True and entry["score"] is not None
        scores = entry["tasks"]["arc-held"]["scores"]
        for scalar in ("lmeval.acc", "lmeval.acc_norm"):
            expected = scores[scalar] / base[scalar] if base[scalar] else None
            assert entry["held_out"]["arc-held"][scalar] == pytest.approx(expected)
            numbers = entry["held_out_uncertainty"]["arc-held"]["scalars"][scalar]
            assert numbers["tuned"] == pytest.approx(scores[scalar]) and numbers["base"] == pytest.approx(base[scalar])
        assert (run / "checkpoints" / f"step-{entry['step']:06d}" / "arc-held" / "predictions.jsonl").is_file()
    assert results["tracking"] and all("arc-held" not in t["tasks"] for t in results["tracking"])
    assert "arc-held" in (run / "report.md").read_text(encoding="utf-8")


def test_the_forgetting_benchmark_plans_on_the_shared_data_and_its_held_out_sets_are_apart(tmp_path, monkeypatch):
    """configs/forgetting/experiment.yaml on the real files (skipped without ../shared): the gate reads the seed's
    54 Super Bowl 50 paragraphs and 100 ARC-Easy dev questions, the held-out tasks other paragraphs, the ARC-Easy
    test set and 3 WikiText-2 articles; moved to the start of the 43-article file (whose first article is Super
    Bowl 50), the held-out SQuAD is refused for sharing the gate's 54 paragraphs."""
    from keeptune.core.config import load_config
    from keeptune.core.errors import ConfigError
    from keeptune.experiment.config import ExperimentConfig
    from keeptune.experiment.plan import plan_experiment
    from tests.conftest import REPO, shared_file

    for name in ("squad/dev-v1.1-43-articles.json", "arc-easy/ARC-Easy-Dev.jsonl", "arc-easy/ARC-Easy-Test.jsonl",
                 "wikitext-2/wiki.test.raw"):
        shared_file(name)
    monkeypatch.chdir(REPO)
    config = REPO / "configs" / "forgetting" / "experiment.yaml"
    plan = plan_experiment(load_config(config, [], ExperimentConfig))
    held = {g.task: g.held_out for _, g in plan.retention}
    assert held == {"squad-seed": False, "arc-easy-dev": False, "squad-held-out": True, "arc-easy-held-out": True,
                    "wikitext-held-out": True}
    sizes = {t.name: len(s) if s is not None else len(t.documents) for (t, _), s in zip(plan.retention, plan.samples)}
    assert sizes == {"squad-seed": 54, "arc-easy-dev": 100, "squad-held-out": 200, "arc-easy-held-out": 400,
                     "wikitext-held-out": 3}
    squad = plan.samples[[t.name for t, _ in plan.retention].index("squad-held-out")]
    assert squad[0].where.endswith("dev-v1.1-43-articles.json: paragraph 54")
    text = config.read_text(encoding="utf-8")
    assert text.count("start: 54") == 1
    (tmp_path / "overlapping.yaml").write_text(text.replace("start: 54", "start: 0"), encoding="utf-8")
    with pytest.raises(ConfigError, match="task squad-held-out shares 54 samples with gated task squad-seed"):
        plan_experiment(load_config(tmp_path / "overlapping.yaml", [], ExperimentConfig))
