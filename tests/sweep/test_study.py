"""keeptune.sweep.study: what a finished run tells the study (the gate as Optuna's constraint, both outcomes)
and pruning from the tracker (the median rule and the gate, with the step and the reason)."""
from __future__ import annotations

from pathlib import Path

import pytest

from keeptune.core.errors import ConfigError
from keeptune.sweep.config import PruningConfig, Sweep, SweepConfig
from keeptune.sweep.study import Pruning, trial_outcome

TASKS = [{"name": "qa", "role": "retention", "gate": {"fraction": 0.9}}, {"name": "new", "role": "new"}]


def entry(step, accuracy, ratio, passes):
    return {"step": step, "accuracy": accuracy, "retention": {"qa": {"exact_match.accuracy": ratio}},
            "passes_gate": passes, "score": (1 - 0.01) * 0.3 + accuracy * 0.7 if passes else None}


def test_a_trial_without_a_passing_checkpoint_is_infeasible_not_zero():
    failing = [entry(2, 0.5, 0.5, False), entry(4, 0.75, 0.8, False)]
    results = {"checkpoints": failing, "best": None, "params": {"ratio": 0.01}, "tasks": TASKS}
    outcome = trial_outcome(results, "score")
    assert not outcome["feasible"] and outcome["score"] is None
    assert outcome["constraint"] == pytest.approx(0.9 - 0.8)  # the checkpoint closest to the gate
    assert outcome["values"] == [pytest.approx(0.99 * 0.3 + 0.75 * 0.7)]  # its would-be score, not 0
    passing = failing + [entry(6, 0.25, 1.0, True)]
    results = {**results, "checkpoints": passing, "best": passing[-1]}
    outcome = trial_outcome(results, "score")
    assert outcome["feasible"] and outcome["constraint"] == 0
    assert outcome["values"] == [pytest.approx(0.99 * 0.3 + 0.25 * 0.7)] and outcome["step"] == 6
    assert trial_outcome(results, "pareto")["values"] == [0.25, 1.0]


def test_an_unmeasurable_gap_still_counts_as_failing_and_no_checkpoint_as_fully_failing():
    """A failing checkpoint whose baseline is 0 (no ratio) is 1e-9 from the gate, still > 0 for Optuna; a run
    with no checkpoint at all gets the constraint 1."""
    results = {"checkpoints": [entry(2, 0.5, None, False)], "best": None, "params": {"ratio": 0.01},
               "tasks": TASKS}
    assert trial_outcome(results, "score")["constraint"] == 1e-9
    outcome = trial_outcome({**results, "checkpoints": []}, "score")
    assert outcome["constraint"] == 1.0 and outcome["step"] is None and outcome["values"] == [pytest.approx(0.297)]


def test_under_the_confident_rule_the_constraint_is_the_lower_bounds_gap():
    """A checkpoint that keeps 95% on the point but whose paired lower bound is 0.85 fails a confident gate at
    0.9: the sweep's constraint is 0.9 - 0.85, not the point ratio's (which is past the gate)."""
    failing = entry(2, 0.5, 0.95, False)
    failing["retention_uncertainty"] = {"qa": {"rule": "confident", "scalars": {"exact_match.accuracy": {
        "lower": 0.85}}}}
    results = {"checkpoints": [failing], "best": None, "params": {"ratio": 0.01}, "tasks": TASKS}
    outcome = trial_outcome(results, "score")
    assert not outcome["feasible"] and outcome["constraint"] == pytest.approx(0.05)
    failing["retention_uncertainty"]["qa"]["rule"] = "point"  # the same numbers under the point rule
    assert trial_outcome(results, "score")["constraint"] == 1e-9  # failing, with no measurable gap


class Trial:
    def __init__(self, prune):
        self.prune, self.reported = prune, []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.prune


def test_median_rule_prunes_with_the_step_and_reason():
    sweep = Sweep(SweepConfig(pruning=PruningConfig(gate=True, median=True, warmup_steps=4)), Path("s.yaml"), "s",
                  None, [], [], Path("out"))
    track = {"tasks": {"new": {"scores": {"acc": 0.25}}}, "passes_gate": True, "gate": {"qa": True},
             "retention": {"qa": {"m": 1.0}}}
    trial = Trial(prune=True)
    hook = Pruning(sweep, trial, "new", "acc")
    assert hook(2, track) is None and hook.pruned is None  # warm-up
    assert "below the median" in hook(4, track) and hook.pruned["step"] == 4
    assert trial.reported == [(2, 0.25), (4, 0.25)]
    failing = {**track, "passes_gate": False, "gate": {"qa": False}, "retention": {"qa": {"m": 0.5}}}
    hook = Pruning(sweep, Trial(prune=False), "new", "acc")
    assert hook(4, track) is None
    assert hook(6, failing) == "tracked retention of qa below the gate (0.500 of the baseline)"
    unmeasured = {**failing, "retention": {"qa": {"m": None}}}
    assert hook(8, unmeasured) == "tracked retention of qa below the gate"


def test_a_study_refuses_other_settings_and_names_the_part_that_changed(tmp_path):
    """The same folder opened with an edited base file (one comment), then with other overrides: each refusal names
    what changed and only that; restoring the settings opens the study again."""
    from keeptune.sweep.config import Param
    from keeptune.sweep.study import open_study

    base = tmp_path / "base.yaml"
    base.write_text("train:\n  lr: 0.001\n", encoding="utf-8")
    params = [Param("lora.rank", "categorical", choices=(4, 8), when={}, where="s.yaml:6")]
    sweep = Sweep(SweepConfig(), tmp_path / "s.yaml", "s", base, ["train.max_steps=10"], params, tmp_path / "out")
    open_study(sweep)
    base.write_text("# a comment\ntrain:\n  lr: 0.001\n", encoding="utf-8")
    edited = (r"made with other settings \(changed: the base experiment .*base\.yaml \(its bytes: an edited comment "
              r"counts\)\)")
    with pytest.raises(ConfigError, match=edited + "; give this sweep another out=") as err:
        open_study(sweep)
    assert "overrides" not in str(err.value)
    base.write_text("train:\n  lr: 0.001\n", encoding="utf-8")
    other = Sweep(SweepConfig(), sweep.path, "s", base, ["train.max_steps=20"], params, sweep.out)
    with pytest.raises(ConfigError, match=r"made with other settings \(changed: the overrides \(the sweep file's and "
                                          r"the command line's\)\); give") as err:
        open_study(other)
    assert "base experiment" not in str(err.value)
    assert open_study(sweep).user_attrs["fingerprint"] == sweep.fingerprint()


def test_a_study_made_before_its_parts_were_stored_is_refused_in_general_words(tmp_path):
    import optuna

    from keeptune.sweep.study import open_storage, open_study

    sweep = Sweep(SweepConfig(), tmp_path / "s.yaml", "s", None, ["train.max_steps=10"], [], tmp_path / "out")
    old = optuna.create_study(study_name="s", storage=open_storage(sweep, None))
    old.set_user_attr("fingerprint", "0123456789abcdef")  # as keeptune stored it before: no fingerprint_parts
    with pytest.raises(ConfigError, match=r"made with another base, overrides, space or objective \(a base file's "
                                          r"bytes count, comments included\)"):
        open_study(sweep)


def test_a_sweep_folder_of_another_sweep_is_refused_before_its_study_is_made(tmp_path):
    """Another sweep file (another study name) pointed at a sweep's folder would interleave trials of both in one
    trials/ folder: refused, and its study is not created."""
    import optuna

    from keeptune.sweep.study import open_storage, open_study

    first = Sweep(SweepConfig(), tmp_path / "methods.yaml", "methods", None, [], [], tmp_path / "out")
    open_study(first)
    second = Sweep(SweepConfig(), tmp_path / "curve.yaml", "curve", None, [], [], first.out)
    with pytest.raises(ConfigError, match=r"out: this folder holds the study 'methods' of another sweep \(this "
                                          r"one is 'curve', named after its file or `name:`\); give this sweep "
                                          r"another out="):
        open_study(second)
    assert optuna.get_all_study_names(open_storage(first, None)) == ["methods"]
    assert open_study(first).study_name == "methods"
