"""`keeptune sweep` end to end on a tiny random model (keeptune.sweep.worker and keeptune.cli.sweep): the gate
as Optuna's constraint on both sides, pruning from the tracker, a shared baseline, kill -9 and resume, and two
workers sharing one study; the report each leaves. The retention task `qa` (tests/sweep/conftest.py) is passed
at lr 1e-6 and failed at lr 0.5 on purpose."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keeptune.cli import main
from tests.conftest import REPO
from tests.sweep.tinysweep import HIGH, LOW, write_sweep

optuna = pytest.importorskip("optuna")


def study_of(out: Path, name: str):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))))


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def trial_rows(markdown: str) -> list[list[str]]:
    """The cells of sweep.md's trials table (the rows after its header rule)."""
    lines = markdown.split("## Trials", 1)[1].split("\n## ", 1)[0].splitlines()
    table = [line for line in lines if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table[2:]]


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "train" / "log.jsonl").read_text().splitlines()]


# --- sweeps end to end ------------------------------------------------------------------------------

def test_sweep_end_to_end_both_sides_of_the_gate(setup, tmp_path):
    tmp, overrides = setup
    out = tmp_path / "sweep"
    path = write_sweep(tmp_path / "gate.yaml", overrides, {"train.lr": {"type": "categorical", "choices": [LOW, HIGH]}},
                       trials=3, out=str(out), sampler={"name": "random", "seed": 1},
                       pruning={"gate": False, "median": False}, start=[{"train.lr": LOW}])
    assert main(["sweep", str(path)]) == 0
    study = study_of(out, "gate")
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert trials[0].params == {"train.lr": LOW}  # the `start` trial runs first
    assert {t.params["train.lr"] for t in trials} == {LOW, HIGH}  # both sides seen (seeded)
    for t in trials:
        run = Path(t.user_attrs["run_dir"])
        results = read(run / "results.json")
        assert (run / "report.md").is_file()
        base = results["baseline"]["tasks"]["qa"]["scores"]["exact_match.accuracy"]
        assert base == 1.0  # the references are the base model's answers
        # The gate recomputed from the checkpoints' own scores: exact match >= 0.9 x 1.0.
        kept = [e for e in results["checkpoints"] if e["tasks"]["qa"]["scores"]["exact_match.accuracy"] >= 0.9]
        assert t.user_attrs["feasible"] == bool(kept) == (t.params["train.lr"] == LOW)
        if kept:
            best = max(kept, key=lambda e: (e["score"], e["step"]))
            assert t.value == pytest.approx((1 - results["params"]["ratio"]) * 0.3 + best["accuracy"] * 0.7)
            assert t.constraints == {"gate": 0.0}
        else:  # infeasible: a positive constraint, the gap of the closest checkpoint
            closest = max(e["tasks"]["qa"]["scores"]["exact_match.accuracy"] for e in results["checkpoints"])
            assert t.constraints["gate"] == pytest.approx(0.9 - closest) and t.constraints["gate"] > 0
    table = (out / "sweep.md").read_text()
    states = [row[2] for row in trial_rows(table)]  # columns: #, train.lr, state, ...
    assert states.count("complete") == sum(t.user_attrs["feasible"] for t in trials)
    assert sum(s.startswith("infeasible (gate short by") for s in states) == sum(not t.user_attrs["feasible"]
                                                                                for t in trials)
    best = max((t for t in trials if t.user_attrs["feasible"]), key=lambda t: (t.value, -t.number))
    assert f"Best feasible trial: #{best.number}, score {best.value:.6f}" in table
    # The report: one field searched, so no importances but the sentence; both plots embedded in the page.
    assert "One field is searched (train.lr)" in table and not (out / "plots" / "importances.png").exists()
    page = (out / "sweep.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2 and "http" not in page.replace("https://optuna", "")
    # best.yaml: the best trial's full config, as keeptune's loader reads it and as its run recorded it.
    from keeptune.core.config import to_dict
    from keeptune.experiment.config import ExperimentConfig
    from keeptune.train.config import load_config

    loaded = load_config(out / "best.yaml", root=ExperimentConfig)
    assert to_dict(loaded) == read(Path(best.user_attrs["run_dir"]) / "results.json")["config"]
    assert loaded.train.lr == best.params["train.lr"] and loaded.out == best.user_attrs["run_dir"]
    # The sweep's trials are runs like any: keeptune runs lists them from the sweep directory or its trials/.
    for folder in (out, out / "trials"):
        assert main(["runs", str(folder)]) == 0
        listed = (folder / "RUNS.md").read_text()
        assert all(Path(t.user_attrs["run_dir"]).name in listed for t in trials)
    # The same command again: nothing redone, the report rebuilt; best.yaml runs as it is (all found done).
    logs = {t.number: (Path(t.user_attrs["run_dir"]) / "train" / "log.jsonl").read_text() for t in trials}
    (out / "sweep.html").unlink()
    assert main(["sweep", str(path)]) == 0
    assert len(study_of(out, "gate").get_trials()) == 3 and (out / "sweep.html").is_file()
    assert main(["run", str(out / "best.yaml")]) == 0
    assert read(Path(best.user_attrs["run_dir"]) / "results.json")["best"]["score"] == best.value
    assert logs == {t.number: (Path(t.user_attrs["run_dir"]) / "train" / "log.jsonl").read_text() for t in trials}


def test_a_trial_whose_tracked_retention_fails_is_pruned_with_step_and_reason(setup, tmp_path):
    tmp, overrides = setup
    out = tmp_path / "sweep"
    path = write_sweep(tmp_path / "prune.yaml", overrides, {"train.lr": {"type": "categorical", "choices": [HIGH]}},
                       trials=1, out=str(out), pruning={"gate": True, "median": False})
    assert main(["sweep", str(path)]) == 0
    (trial,) = study_of(out, "prune").get_trials()
    assert trial.state == optuna.trial.TrialState.PRUNED
    run = Path(trial.user_attrs["run_dir"])
    tracked = read(run / "results.json")["tracking"]
    assert trial.user_attrs["pruned_step"] == 2 and tracked[0]["step"] == 2 and not tracked[0]["passes_gate"]
    assert trial.user_attrs["pruned_reason"].startswith("tracked retention of qa below the gate")
    assert max(logged_steps(run)) == 2  # training stopped at the pruned step (of 4)
    (row,) = trial_rows((out / "sweep.md").read_text())  # #, train.lr, state, score, ..., pruned at, run
    assert row[2] == f"pruned: {trial.user_attrs['pruned_reason']}" and row[-2] == "2"


def test_a_new_trial_reuses_the_baseline_only_where_its_samples_are_the_same(setup, tmp_path):
    """Trial 1 evaluates fewer held-out problems than trial 0: its copy of trial 0's `qa` baseline is used (no
    sample generated again, the same predictions), its copy of the new task's is refused by the resume check and
    evaluated again."""
    tmp, overrides = setup
    out = tmp_path / "sweep"
    fixed = {key: value for key, value in overrides.items() if key != "new_task.eval_n"}
    path = write_sweep(tmp_path / "share.yaml", fixed, {"new_task.eval_n": {"type": "categorical", "choices": [4, 3]}},
                       trials=2, out=str(out), sampler={"name": "random", "seed": 0},
                       pruning={"gate": False, "median": False},
                       start=[{"new_task.eval_n": 4}, {"new_task.eval_n": 3}])
    assert main(["sweep", str(path)]) == 0
    first, second = (Path(t.user_attrs["run_dir"]) / "baseline" for t in study_of(out, "share").get_trials())
    (new_task,) = {p.name for p in first.iterdir()} - {"qa"}
    assert read(first / "qa" / "metrics.json")["generated"] == 4 and read(first / new_task / "metrics.json")["generated"] == 4
    assert read(second / "qa" / "metrics.json")["generated"] == 0  # all 4 reused
    assert (second / "qa" / "predictions.jsonl").read_text() == (first / "qa" / "predictions.jsonl").read_text()
    assert read(second / "qa" / "metrics.json")["scores"] == read(first / "qa" / "metrics.json")["scores"]
    assert read(second / new_task / "metrics.json")["generated"] == 3  # other samples: evaluated again



def test_a_new_trial_reuses_the_base_models_preservation_data_and_replay_answers(setup, tmp_path):
    """Two replay trials: the second's copies of the first's self-written preservation data (passages, then
    questions) and of replay's base-model answers to it pass the resume check, so nothing of them is generated
    again and its replay records are the first's."""
    tmp, overrides = setup
    out = tmp_path / "sweep"
    fixed = {**overrides, "retention.methods": ["replay"], "retention.preservation_samples": 3}
    path = write_sweep(tmp_path / "replay.yaml", fixed, {"train.lr": {"type": "categorical", "choices": [LOW, HIGH]}},
                       trials=2, out=str(out), sampler={"name": "grid", "seed": 0},
                       pruning={"gate": False, "median": False})
    assert main(["sweep", str(path)]) == 0
    first, second = (Path(t.user_attrs["run_dir"]) for t in study_of(out, "replay").get_trials())
    shared = ["preservation/passages", "preservation/questions", "replay/answers/qa"]
    assert [read(first / part / "metrics.json")["generated"] for part in shared] == [3, 3, 3]
    assert [read(second / part / "metrics.json")["generated"] for part in shared] == [0, 0, 0]
    for part in shared:
        assert (second / part / "predictions.jsonl").read_bytes() == (first / part / "predictions.jsonl").read_bytes()
    chosen = Path("preservation") / "chosen.jsonl"
    assert (second / chosen).read_bytes() == (first / chosen).read_bytes()

STALL = """
import sys, time
from pathlib import Path
from keeptune.train import checkpoint

seen, save = [], checkpoint.save

def stalling_save(run, step, *args, **kwargs):  # the second trial's first checkpoint: written, then a stall
    path = save(run, step, *args, **kwargs)
    seen.append(run) if run not in seen else None
    if len(seen) == 2:
        Path(sys.argv[1]).write_text(str(path))
        time.sleep(600)
    return path

checkpoint.save = stalling_save
from keeptune.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_kill_9_then_rerun_redoes_no_finished_trial_and_resumes_the_killed_one(setup, tmp_path):
    tmp, overrides = setup
    out = tmp_path / "sweep"
    path = write_sweep(tmp_path / "kill.yaml", overrides, {"train.lr": {"type": "log_uniform", "low": LOW,
                                                                        "high": 1e-5}},
                       trials=3, out=str(out), pruning={"gate": False, "median": False})
    (tmp_path / "stall.py").write_text(STALL, encoding="utf-8")
    marker = tmp_path / "stalled"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen([sys.executable, str(tmp_path / "stall.py"), str(marker), "sweep", str(path)],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert marker.exists(), "the worker never reached the second trial's first checkpoint"
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    checkpoint = Path(marker.read_text())
    killed_run = checkpoint.parents[2]
    (first,) = [t for t in study_of(out, "kill").get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    first_log = (Path(first.user_attrs["run_dir"]) / "train" / "log.jsonl").read_text()

    result = subprocess.run([sys.executable, "-m", "keeptune", "sweep", str(path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {checkpoint}" in result.stdout  # training went on from the killed trial's checkpoint
    assert result.stdout.count("== sweep kill: trial") == 2  # the retry and the third trial, not the first
    trials = study_of(out, "kill").get_trials()
    states = {t.number: t.state for t in trials}
    assert states == {0: optuna.trial.TrialState.COMPLETE, 1: optuna.trial.TrialState.FAIL,
                      2: optuna.trial.TrialState.COMPLETE, 3: optuna.trial.TrialState.COMPLETE}
    assert trials[1].user_attrs["interrupted"] == "killed" and trials[2].user_attrs["retry_of"] == 1
    assert trials[2].params == trials[1].params and Path(trials[2].user_attrs["run_dir"]) == killed_run
    assert (Path(first.user_attrs["run_dir"]) / "train" / "log.jsonl").read_text() == first_log
    assert logged_steps(killed_run) == sorted(set(logged_steps(killed_run)))  # each step trained once
    assert [row[2] for row in trial_rows((out / "sweep.md").read_text())][1] == "killed, retried as #2"


def test_two_workers_share_one_study(setup, tmp_path):
    tmp, overrides = setup
    out = tmp_path / "sweep"
    path = write_sweep(tmp_path / "two.yaml", overrides, {"train.lr": {"type": "log_uniform", "low": LOW,
                                                                       "high": 1e-5}},
                       trials=4, out=str(out), pruning={"gate": False, "median": False})
    result = subprocess.run([sys.executable, "-m", "keeptune", "sweep", str(path), "--workers", "2"], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study_of(out, "two").get_trials()
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    runs = [Path(t.user_attrs["run_dir"]) for t in trials]
    assert len(set(runs)) == 4  # no trial run twice
    for run in runs:
        assert logged_steps(run) == [1, 2, 3, 4]
    assert result.stdout.count("== sweep two: trial") == 4
