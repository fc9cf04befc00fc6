"""The example of a user's experiment (configs/examples/): every task written as YAML, two
retention tasks with their own gates and a new task learned from a file of problem/answer
pairs, run end to end on a tiny random model with a chat template."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from keeptune.cli import main
from tests.tiny import chat_tokenizer, tiny_llama

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "examples" / "experiment.yaml"


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("example")
    model = tmp / "tiny-chat"
    tiny_llama().save_pretrained(model)
    chat_tokenizer().save_pretrained(model)
    words = [f"model.source={model}", f"out={tmp / 'run'}", "train.max_steps=2", "train.global_batch=4",
             "train.micro_batch=2", "batch_size=8", "new_task.eval_data=" + str(REPO / "configs/examples/data/area-eval.jsonl"),
             "original=[{task: squad-seed, limit: 4}, {task: configs/examples/tasks/squad-chat.yaml, fraction: 0.8, "
             "limit: 4}]", "new_task.max_new_tokens=4"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)  # the example's paths are relative to the checkout, as its header says
        assert main(["run", str(EXAMPLE), *words]) == 0
    return tmp / "run"


def test_the_example_runs_over_its_own_task_specs(example_run):
    results = json.loads((example_run / "results.json").read_text(encoding="utf-8"))
    assert [(t["name"], t["role"]) for t in results["tasks"]] == \
        [("squad-seed", "retention"), ("squad-chat", "retention"), ("area-qa", "new")]
    chat = results["tasks"][1]["gate"]
    assert chat["metrics"] == ["squad_v1.f1"] and chat["fraction"] == 0.8
    base = results["baseline"]["tasks"]
    assert chat["thresholds"]["squad_v1.f1"] == pytest.approx(0.8 * base["squad-chat"]["scores"]["squad_v1.f1"])
    assert base["area-qa"]["total_count"] == 40 and base["squad-chat"]["total_count"] == 4
    for entry in results["checkpoints"]:
        tasks = entry["tasks"]
        seed_ok = all(tasks["squad-seed"]["scores"][m] >= 0.9 * base["squad-seed"]["scores"][m]
                      for m in ("emf1.F1", "emf1.Em"))
        chat_ok = tasks["squad-chat"]["scores"]["squad_v1.f1"] >= 0.8 * base["squad-chat"]["scores"]["squad_v1.f1"]
        assert entry["gate"] == {"squad-seed": seed_ok, "squad-chat": chat_ok}
        assert entry["passes_gate"] == (seed_ok and chat_ok)
        assert entry["accuracy"] == tasks["area-qa"]["scores"]["exact_match.accuracy"]


def test_the_new_task_trains_on_its_own_prompt_and_reference(example_run):
    records = [json.loads(line) for line in (example_run / "data" / "train.jsonl").open(encoding="utf-8")]
    source = [json.loads(line) for line in (REPO / "configs/examples/data/area-train.jsonl").open(encoding="utf-8")]
    assert len(records) == len(source) == 200
    first = records[0]["conversations"]
    assert first[0]["value"] == f"Question: {source[0]['problem']}\nAnswer:"
    assert first[1]["value"] == source[0]["solution"]
    # The chat retention task read its prompt in the chat template: the tokenizer's `<user>` turn.
    record = json.loads((example_run / "baseline" / "squad-chat" / "eval.json").read_text(encoding="utf-8"))
    assert record["format"] == "chat"


def test_the_examples_data_never_overlaps(example_run):
    train = {json.loads(line)["problem"] for line in (REPO / "configs/examples/data/area-train.jsonl").open()}
    held_out = {json.loads(line)["problem"] for line in (REPO / "configs/examples/data/area-eval.jsonl").open()}
    assert len(train) == 200 and len(held_out) == 40 and not train & held_out
    assert (example_run / "report.html").is_file()
