"""The shipped experiment configs: the default one is the bare `keeptune run`, the
Llama-3-8B one is SPEC section 5's best fine-tuned run, each states its run command."""
from __future__ import annotations

from pathlib import Path

import pytest

from keeptune.experiment.config import ExperimentConfig
from keeptune.train.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def load(name: str) -> ExperimentConfig:
    return load_config(CONFIGS / name / "experiment.yaml", [], root=ExperimentConfig)


def test_default_config_file_is_the_bare_run():
    assert load("smollm2-135m") == ExperimentConfig()


def test_llama3_config_is_the_seeds_best_run():
    config = load("llama3-8b")
    task = config.new_task
    # SPEC section 5: easy templates, 7,500 samples, worked steps, math prompt, 2 epochs, batch 4, lr 3e-5, wq|wv.
    assert (task.strategy, task.n, task.cot, task.prompt) == ("easy", 7500, True, "math")
    assert (config.train.epochs, config.train.global_batch, config.train.lr) == (2, 4, 3e-5)
    assert (config.lora.targets, config.lora.rank, config.lora.alpha) == ((".*wq|.*wv",), 8, 16)
    assert task.format == "vicuna" and config.gate == 0.9


@pytest.mark.parametrize("name", ["smollm2-135m", "llama3-8b"])
def test_experiment_configs_state_their_run_command(name):
    header = (CONFIGS / name / "experiment.yaml").read_text().split("\nname:")[0]
    assert f"keeptune run configs/{name}/experiment.yaml" in header


def test_overriding_one_key_keeps_the_experiments_own_section_defaults():
    # ExperimentConfig trains at lr 5e-4 for 5 epochs, not TrainConfig's lr 1e-3 and 300 steps.
    config = load_config(None, ["train.epochs=2", "new_task.counts={mass: 10}"], root=ExperimentConfig)
    default = ExperimentConfig()
    assert config.train.epochs == 2
    assert (config.train.lr, config.train.max_steps) == (default.train.lr, default.train.max_steps) == (5e-4, None)
    assert config.new_task.counts == {"mass": 10} and config.new_task.strategy == "custom"


def test_run_help_shows_the_defaults_a_bare_run_uses():
    # Every `section.field=default` line of `keeptune run --help` parses back, as an override,
    # to the value the bare ExperimentConfig holds: help and run share one source of defaults.
    from keeptune.core.config import describe

    lines = [line.strip() for line in describe(ExperimentConfig) if line.startswith("  ")]
    assert len(lines) > 40
    for line in lines:
        key, _, rest = line.partition("=")
        default = rest.split("  ", 1)[0]
        assert load_config(None, [f"{key}={default}"], root=ExperimentConfig) == ExperimentConfig(), line
    assert "train.lr=0.0005" in [line.split("  ")[0] for line in lines]
