"""Which retention methods training runs, and what a training run keeps of the retention settings.

`kl` and `corda` change the training steps (keeptune.retention.training plugs them into the loop);
`replay` changes the training set, and `scale` and `intruders` make more states of every checkpoint
after training (keeptune.retention.variants): they belong to the experiment (`keeptune run`), and
`keeptune train` refuses them. The settings themselves are
keeptune.train.config.RetentionConfig, a section of the training config (docs/retention.md).
"""
from __future__ import annotations

import dataclasses

from keeptune.core.errors import ConfigError
from keeptune.train.config import RetentionConfig

TRAINING_METHODS = ("kl", "corda")
# Applied after training to each checkpoint's adapter, each factor or lambda one more state the gate judges.
POST_TRAINING_METHODS = ("scale", "intruders")
# The RetentionConfig fields each method reads (their docstrings say the same); a field no method of a run reads
# changes nothing in it.
PRESERVATION_FIELDS = ("preservation", "preservation_samples", "allow_overlap")
FIELDS_OF = {"kl": ("kl_weight",), "corda": PRESERVATION_FIELDS, "replay": ("replay_share", *PRESERVATION_FIELDS),
             "scale": ("scales",), "intruders": ("intruder_lambdas", "intruder_top_k", "intruder_epsilon")}


def fields_read(methods) -> set[str]:
    """The RetentionConfig fields that `methods` read (`methods` itself aside)."""
    return {name for m in methods for name in FIELDS_OF[m]}


def check_training(retention: RetentionConfig, origin: str = "") -> None:
    """ConfigError when `retention.methods` names a method training cannot run (replay, scale, intruders)."""
    others = [m for m in retention.methods if m not in TRAINING_METHODS]
    if others:
        where = f"{origin}: " if origin else ""
        raise ConfigError(f"{where}field 'retention.methods': {', '.join(others)} "
                          f"{'is an experiment method' if len(others) == 1 else 'are experiment methods'}, run by "
                          "`keeptune run` (replay changes the training set, scale and intruders make more states of "
                          "each checkpoint after training); `keeptune train` takes kl and corda")


def training_retention(retention: RetentionConfig) -> RetentionConfig:
    """The retention settings training uses: kl and corda, and the settings of the methods that are off back to
    their defaults (they change nothing in training, so a run resumes, and an experiment with `scale` or
    `replay` shares the checkpoints of the same training, whatever they are)."""
    methods = tuple(m for m in retention.methods if m in TRAINING_METHODS)
    kept = {name: getattr(retention, name) for name in fields_read(methods)}
    return dataclasses.replace(RetentionConfig(), methods=methods, **kept)
