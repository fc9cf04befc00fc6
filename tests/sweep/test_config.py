"""keeptune.sweep.config: the sweep file's checks (FILE:LINE and the field), the command line's words, the
space's conditional fields and the trials' names and configs."""
from __future__ import annotations

import pytest

from keeptune.core.errors import ConfigError
from keeptune.sweep.config import load_sweep, trial_config, trial_name
from tests.sweep.tinysweep import write_sweep

optuna = pytest.importorskip("optuna")


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def assert_refused(tmp_path, text: str, needle: str, message: str) -> None:
    """The sweep file `text` is refused with `message`, at the line holding `needle`."""
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert f"{path}:{line_of(text, needle)}:" in str(err.value) and message in str(err.value), str(err.value)


@pytest.mark.parametrize("space, needle, message", [
    ("  train.lrr: {type: log_uniform, low: 1.0e-4, high: 1.0e-3}\n", "train.lrr", "unknown field 'train.lrr'"),
    ("  train.lr: {type: log_uniform, low: 0, high: 1.0e-3}\n", "train.lr", "log_uniform needs low > 0"),
    ("  train.lr: {type: normal, low: 0, high: 1}\n", "train.lr", "type 'normal'"),
    ("  lora.rank: {type: categorical}\n", "lora.rank", "needs `choices"),
    ("  lora.dropout: {type: uniform, low: 0.0, high: 1.5}\n", "lora.dropout", "'lora.dropout' is 1.5"),
    ("  train.epochs: {type: int, low: 2.5, high: 4}\n", "train.epochs", "(integers)"),
    ("  out: {type: categorical, choices: [a, b]}\n", "out:", "the sweep sets it"),
    ("  lora.rank: {type: int, low: 2, high: 8}\n  lora.alpha: {type: uniform, low: 1, high: 2, when: {lora.rank: 4}}\n",
     "lora.alpha", "names a categorical field"),
    ("  lora.rank: {type: categorical, choices: [2, 4]}\n"
     "  lora.alpha: {type: uniform, low: 1, high: 2, when: {lora.rank: 8}}\n", "lora.alpha", "not one of its choices"),
])
def test_space_errors_name_the_file_line_and_field(setup, tmp_path, space, needle, message):
    model = setup[1]["model.source"]
    text = f"overrides:\n  model.source: {model}\n  new_task.n: 16\nspace:\n{space}trials: 2\n"
    assert_refused(tmp_path, text, needle, message)


def test_unknown_override_and_a_word_are_named(setup, tmp_path):
    model = setup[1]["model.source"]
    text = f"overrides:\n  model.source: {model}\n  train.lrate: 0.1\nspace:\n  train.lr: {{type: uniform, low: 0.1, high: 0.2}}\n"
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{path}:3: overrides field 'train.lrate'"):
        load_sweep(path)
    path.write_text(text.replace("  train.lrate: 0.1\n", ""), encoding="utf-8")
    with pytest.raises(ConfigError, match="field 'trials' is 0"):
        load_sweep(path, ["trials=0"])
    with pytest.raises(ConfigError, match=r"word 'trials' is not key=value \(e.g. trials=10"):
        load_sweep(path, ["trials"])
    with pytest.raises(ConfigError, match="change the search space in the sweep file"):
        load_sweep(path, ["space.train.lr=1"])
    with pytest.raises(ConfigError, match=rf"{path}:6: start\[0\]: 'lora.rank' is not a field of the space"):
        path.write_text(text.replace("  train.lrate: 0.1\n", "") + "start:\n  - {lora.rank: 4}\n", encoding="utf-8")
        load_sweep(path)
    path.write_text(text.replace("  train.lrate: 0.1\n", ""), encoding="utf-8")
    sweep = load_sweep(path, ["trials=7", "train.max_steps=3", "overrides.train.epochs=2"])  # sweep, experiment
    assert sweep.config.trials == 7 and sweep.overrides[-2:] == ["train.max_steps=3", "train.epochs=2"]


def test_conditional_fields_are_suggested_only_when_their_condition_holds(setup, tmp_path):
    from keeptune.sweep.study import suggest

    model = setup[1]["model.source"]
    path = write_sweep(tmp_path / "s.yaml", {"model.source": model}, {
        "lora.alpha": {"type": "uniform", "low": 4, "high": 8, "when": {"lora.rank": 4}},
        "lora.rank": {"type": "categorical", "choices": [2, 4]},
        "new_task.counts": {"type": "categorical", "choices": [{"area": 10}, {"area": 5, "mass": 5}]}})
    sweep = load_sweep(path)
    assert [p.key for p in sweep.params] == ["lora.rank", "new_task.counts", "lora.alpha"]  # conditions first
    with_alpha = suggest(optuna.trial.FixedTrial({"lora.rank": 4, "lora.alpha": 6.0,
                                                  "new_task.counts": '{"area": 10}'}), sweep.params)
    assert with_alpha == {"lora.rank": 4, "new_task.counts": {"area": 10}, "lora.alpha": 6.0}
    without = suggest(optuna.trial.FixedTrial({"lora.rank": 2, "new_task.counts": '{"area": 5, "mass": 5}'}),
                      sweep.params)
    assert without == {"lora.rank": 2, "new_task.counts": {"area": 5, "mass": 5}}
    config = trial_config(sweep, with_alpha)
    assert (config.lora.rank, config.lora.alpha, config.new_task.counts) == (4, 6.0, {"area": 10})
    assert config.out == str(sweep.out / "trials" / trial_name(with_alpha)) and config.name == trial_name(with_alpha)
    assert trial_name(dict(reversed(with_alpha.items()))) == trial_name(with_alpha) != trial_name(without)


def test_trial_names_and_fingerprints_keep_the_values_existing_sweeps_were_made_with(tmp_path):
    """A run directory's name and a study's fingerprint are stored on disk: the same values, the same text, so a
    sweep made before still finds its trials' directories and opens its study."""
    from keeptune.sweep.config import Param, Sweep, SweepConfig

    assert trial_name({"train.lr": 0.001, "lora.rank": 8}) == "trial-00b5769446"
    assert trial_name({"note": "é", "mix": {"b": [1, 2]}}) == "trial-c396c022a5"
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  lr: 0.001\n", encoding="utf-8")
    params = [Param("train.lr", "log_uniform", 1e-4, 1e-2, where="s.yaml:5"),
              Param("lora.rank", "categorical", choices=(4, 8), when={}, where="s.yaml:6")]
    sweep = Sweep(SweepConfig(), tmp_path / "s.yaml", "s", base, ["train.max_steps=10"], params, tmp_path / "out")
    assert sweep.fingerprint() == "c1162debda6b9f99"
    assert Sweep(SweepConfig(objective="pareto"), sweep.path, "s", None, [], params, sweep.out).fingerprint() \
        == "8e6f62ba02fac612"


@pytest.mark.parametrize("space, trials, needle, message", [
    ("  train.lr: {type: log_uniform, low: 1.0e-4, high: 1.0e-3}\n", 2, "train.lr",
     "sampler grid crosses categorical fields"),
    ("  lora.rank: {type: categorical, choices: [2, 4]}\n"
     "  lora.alpha: {type: categorical, choices: [1, 2], when: {lora.rank: 4}}\n", 2, "lora.alpha",
     "sampler grid crosses categorical fields without `when`"),
    ("  lora.rank: {type: categorical, choices: [2, 4]}\n  train.seed: {type: categorical, choices: [0, 1, 2]}\n",
     7, "trials:", "field 'trials' is 7, but the grid has 6 combinations; set trials: 6"),
])
def test_a_grid_is_categorical_and_no_longer_than_its_combinations(setup, tmp_path, space, trials, needle, message):
    model = setup[1]["model.source"]
    text = (f"overrides:\n  model.source: {model}\n  new_task.n: 16\nspace:\n{space}sampler: {{name: grid}}\n"
            f"trials: {trials}\n")
    assert_refused(tmp_path, text, needle, message)


GRID_START = [{"retention.methods": ["scale"], "train.seed": 1}, {"retention.methods": ["kl"], "train.seed": 0}]


@pytest.mark.parametrize("start", [[], GRID_START])
def test_a_grid_sweep_draws_every_combination_once_whoever_draws(setup, tmp_path, start):
    """Each trial drawn as the worker draws it (the sampler reseeded with the number of trials so far): the six
    combinations of a list-valued field and a seed, each exactly once, and then nothing new; with `start`, its
    combinations first, in the order written. (Optuna's GridSampler alone does not count a queued trial as
    visited, and ran the first start combination twice.)"""
    import itertools

    from keeptune.sweep.study import make_sampler, open_study, suggest

    model = setup[1]["model.source"]
    path = write_sweep(tmp_path / "grid.yaml", {"model.source": model, "new_task.n": 16},
                       {"retention.methods": {"type": "categorical", "choices": [[], ["kl"], ["scale"]]},
                        "train.seed": {"type": "categorical", "choices": [0, 1]}},
                       sampler={"name": "grid", "seed": 3}, trials=6, start=start, out=str(tmp_path / "out"))
    sweep = load_sweep(path)
    study = open_study(sweep)
    drawn = []
    for _ in range(6):
        study.sampler = make_sampler(sweep, len(study.get_trials(deepcopy=False)))
        study.optimize(lambda trial: drawn.append(suggest(trial, sweep.params)) or 0.0, n_trials=1)
    assert drawn[:len(start)] == start
    combos = [(tuple(v["retention.methods"]), v["train.seed"]) for v in drawn]
    assert sorted(combos) == sorted(itertools.product([(), ("kl",), ("scale",)], [0, 1]))


def test_a_grid_start_gives_every_field(setup, tmp_path):
    model = setup[1]["model.source"]
    text = (f"overrides:\n  model.source: {model}\n  new_task.n: 16\nspace:\n"
            "  lora.rank: {type: categorical, choices: [2, 4]}\n  train.seed: {type: categorical, choices: [0, 1]}\n"
            "sampler: {name: grid}\ntrials: 4\nstart:\n  - {lora.rank: 4}\n")
    assert_refused(tmp_path, text, "- {lora.rank: 4}", "start[0] leaves out train.seed: a grid's trial is a whole")


def test_the_forgetting_benchmark_sweeps_load_on_the_shared_data_as_whole_grids(monkeypatch):
    """configs/forgetting's sweeps (skipped without ../shared): each is checked as `keeptune sweep` checks it (every
    value built, the lowest trial planned on the real files) and runs every combination of its grid."""
    import math

    from tests.conftest import REPO, shared_file

    for name in ("squad/dev-v1.1-43-articles.json", "arc-easy/ARC-Easy-Test.jsonl", "wikitext-2/wiki.test.raw"):
        shared_file(name)
    monkeypatch.chdir(REPO)
    grids = {}
    for name in ("curve", "methods", "mica", "methods-lr1e-3"):
        sweep = load_sweep(REPO / "configs" / "forgetting" / f"{name}.yaml")
        assert sweep.config.sampler.name == "grid"
        grids[name] = (sweep.config.trials, math.prod(len(p.choices) for p in sweep.params))
    # one sweep per training seed; the methods' grid leaves out its last combination (corda, which diverges there)
    assert grids == {"curve": (4, 4), "methods": (3, 4), "mica": (1, 1), "methods-lr1e-3": (2, 2)}
