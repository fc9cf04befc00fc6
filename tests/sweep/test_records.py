"""keeptune.sweep.records: a study as the plain data the sweep report renders, and Optuna's parameter
importances or the sentence that replaces them."""
from __future__ import annotations

import functools

from keeptune.sweep.records import importances, report_data
from tests.sweep.studies import PARAMS, make_sweep, mixed_trials, study_of, trial


def test_report_data_is_plain_rows_with_the_best_and_the_gate(tmp_path):
    sweep = make_sweep(tmp_path, start=[{"train.lr": 1e-4, "lora.rank": 16}])
    trials, lrs = mixed_trials(sweep.out)
    data = report_data(study_of(trials), sweep)
    rows = data["rows"]
    assert [r["number"] for r in rows] == list(range(14)) and data["fields"] == ["train.lr", "lora.rank"]
    assert [r["kind"] for r in rows[9:]] == ["complete", "infeasible", "pruned", "killed", "complete"]
    assert rows[12]["state"] == "killed, retried as #13" and rows[13]["retry_of"] == 12
    assert rows[10]["state"] == "infeasible (gate short by 0.200)" and rows[10]["value"] == 0.1
    assert rows[0]["params"] == {"train.lr": lrs[0], "lora.rank": 16}
    assert rows[0]["params_text"] == f"train.lr={lrs[0]!r}, lora.rank=16"
    assert data["best"] is rows[0] and data["start"] and data["gates"] == [0.9]
    assert data["best_path"] == sweep.out / "best.yaml"
    assert data["best_yaml"].startswith("# keeptune sweep s: trial #0, the best feasible trial: score 0.600000")
    assert set(data["importances"]) == {"train.lr", "lora.rank"}

    none = report_data(study_of([trial(0, 1e-3, 8, kind="infeasible")]), sweep)
    assert none["best"] is None and none["best_yaml"] is None and none["gates"] == [0.9]


def test_importances_give_way_to_a_sentence(tmp_path):
    two = [trial(0, 1e-4, 4, score=0.3), trial(1, 1e-3, 16, score=0.5)]
    sweep = make_sweep(tmp_path)
    shares, why = importances(study_of(two), sweep)
    assert shares is None and "Too few finished trials for parameter importances: 2 complete, 3 needed" in why

    one_field = make_sweep(tmp_path, params=PARAMS[:1])
    assert importances(study_of(two), one_field)[0] is None
    assert "One field is searched (train.lr)" in importances(study_of(two), one_field)[1]

    # Identical outcomes everywhere: nothing tells the fields apart.
    same = [trial(i, 1e-4 * (i + 1), 8, score=0.4) for i in range(4)]
    shares, why = importances(study_of(same), sweep)
    assert shares is None and "all 0" in why


def test_pareto_importances_count_the_feasible_trials_only(tmp_path):
    sweep = make_sweep(tmp_path, objective="pareto")
    make = functools.partial(trial, root=sweep.out)
    few = [make(0, 1e-4, 4, score=0.3), make(1, 1e-3, 16, score=0.5), make(2, 1e-3, 8, kind="infeasible")]
    shares, why = importances(study_of(few), sweep)
    assert shares is None and why == "Too few feasible trials for parameter importances: 2, 3 needed."


def test_the_best_trial_is_compared_with_the_runner_up_on_shared_samples(tmp_path):
    import json

    from keeptune.experiment.uncertainty import state_folder
    from keeptune.sweep.records import versus_runner_up
    from tests.experiment.evalfolders import answers, write_evaluation

    sweep = make_sweep(tmp_path)
    right = {0: [True] * 9 + [False] * 11, 1: [True] * 12 + [False] * 8, 2: [True] * 3 + [False] * 17}
    for number, samples in ((0, "same"), (1, "same"), (2, "other")):
        run = sweep.out / "trials" / f"trial-{number}"
        write_evaluation(state_folder(run, 10) / "math", "math", answers(right[number]), samples=samples)
        tasks = [{"name": "math", "role": "new", "accuracy": "exact_match.accuracy",
                  "units": {"exact_match.accuracy": "fraction"}}]
        (run / "results.json").write_text(json.dumps({"tasks": tasks, "best": {"step": 10, "scale": 1.0}}))
    trials = [trial(0, 1e-4, 4, score=0.5, root=sweep.out), trial(1, 1e-3, 8, score=0.6, root=sweep.out)]
    versus = versus_runner_up(study_of(trials))
    # trial 1 (12 of 20) against trial 0 (9 of 20), the first 9 right in both: 3 discordant, all trial 1's
    assert (versus["best"], versus["runner_up"], versus["units"], versus["note"]) == (1, 0, "fraction", None)
    c = versus["comparison"]
    assert (c["task"], c["scalar"], c["discordant"], c["verdict"]) == (
        "math", "exact_match.accuracy", [3, 0], "not distinguishable at 95%")
    assert c["p_value"] == 0.25  # two-sided exact McNemar: 2 x (1/2)^3
    other = versus_runner_up(study_of([trial(1, 1e-3, 8, score=0.6, root=sweep.out),
                                       trial(2, 1e-3, 16, score=0.55, root=sweep.out)]))
    assert other["comparison"] is None and "evaluated on different samples" in other["note"]
    assert versus_runner_up(study_of(trials[:1])) is None
