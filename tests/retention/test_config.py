"""Which retention methods training runs (kl, corda) and what a training run keeps of the settings; `keeptune
train` and the API refuse the experiment's methods, naming where they were set."""
from __future__ import annotations

from pathlib import Path

import pytest

from keeptune.cli import main
from keeptune.core.errors import ConfigError
from keeptune.experiment.config import ExperimentConfig
from keeptune.retention.config import training_retention
from keeptune.retention.training import train
from keeptune.train.config import RetentionConfig, load_config
from tests.train.conftest import tiny_config, tiny_words


def test_training_keeps_kl_and_corda_and_resets_what_is_off():
    retention = RetentionConfig(methods=("kl", "replay", "scale"), kl_weight=0.3, replay_share=0.5, scales=(0.5,),
                                preservation="p.json")
    kept = training_retention(retention)
    assert kept == RetentionConfig(methods=("kl",), kl_weight=0.3)
    assert training_retention(RetentionConfig(methods=("corda",), kl_weight=0.3, preservation="p.json")) == \
        RetentionConfig(methods=("corda",), preservation="p.json")
    # the experiment's training: kl and corda only (replay is data, scale a choice among checkpoints)
    from keeptune.experiment.runner import training_config

    experiment = load_config(None, ["retention.methods=[kl,replay,scale]"], root=ExperimentConfig)
    assert training_config(experiment, Path("run"), Path("run/t.jsonl")).retention.methods == ("kl",)


@pytest.mark.parametrize("method", ["replay", "scale"])
def test_keeptune_train_refuses_the_experiment_methods_naming_where(tiny_dir, tiny_data, tmp_path, capsys, method):
    words = tiny_words(tiny_dir, tiny_data, tmp_path / "run", f"retention.methods=[kl,{method}]")
    assert main(["train", *words]) == 2
    err = capsys.readouterr().err
    assert f"override 'retention.methods=[kl,{method}]'" in err and "keeptune run" in err
    config = tmp_path / "config.yaml"
    config.write_text(f"train:\n  lr: 1e-3\nretention:\n  methods: [{method}]\n")
    assert main(["train", str(config), *tiny_words(tiny_dir, tiny_data, tmp_path / "run")]) == 2
    assert f"{config}:4: field 'retention.methods': {method} is an experiment method" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=f"{method} is an experiment method"):  # the API too
        train(tiny_config(tiny_dir, tiny_data, tmp_path / "run", f"retention.methods=[{method}]"))
