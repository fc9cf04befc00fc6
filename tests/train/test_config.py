"""Training configs: YAML, key=value overrides, types, errors with file and line,
the two shipped configs against the seed's settings, and help text for every field."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from keeptune.cli import main
from keeptune.core.config import field_docs
from keeptune.core.errors import ConfigError
from keeptune.model.lora import LoraSettings
from keeptune.model.params import architecture_config, lora_accounting
from keeptune.train.config import Config, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 2.0e-4\n  epochs: 3\nlora:\n  rank: 4\n", encoding="utf-8")
    config = load_config(path, ["train.lr=1e-3", "lora.targets=[wq,wk]", "data.add_bos=true", "model.source=null"])
    assert config.train.lr == 1e-3  # YAML reads "1e-3" as a string: the float field converts it
    assert config.train.epochs == 3
    assert config.lora.rank == 4
    assert config.lora.targets == ("wq", "wk")
    assert config.data.add_bos is True
    assert config.model.source is None
    assert config.train.micro_batch == Config().train.micro_batch  # untouched fields keep their defaults
    assert isinstance(config.lora, LoraSettings)


def test_comma_separated_targets_and_one_expression():
    assert load_config(None, ["lora.targets=q_proj,v_proj"]).lora.targets == ("q_proj", "v_proj")
    assert load_config(None, ["lora.targets=.*wq|.*wv"]).lora.targets == (".*wq|.*wv",)


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("train:\n  lr: 1.0e-3\n  lrr: 2\n", 3, "unknown field 'train.lrr'"),
    ("model:\n  dtype: auto\ndata:\n  seq_len: long\n", 4, "field 'data.seq_len' is 'long'; expected int"),
    ("data:\n  format: alpaca\n", 2, "choose one of plain, vicuna, chat"),
    ("train:\n  betas: [0.9]\n", 2, "expected a list of 2 values"),
    ("train: 3\n", 1, "'train' is a section"),
    ("train:\n  lr: [1\n", 3, "not valid YAML"),
])
def test_errors_name_file_line_and_field(tmp_path, text, line, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert fragment in str(info.value)


def test_override_errors_name_the_override():
    with pytest.raises(ConfigError, match=r"override 'train\.epochs=many': field 'train\.epochs'"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="unknown field 'lora.rnak'"):
        load_config(None, ["lora.rnak=4"])
    with pytest.raises(ConfigError, match="is not key=value"):
        load_config(None, ["=3"])
    with pytest.raises(ConfigError, match="expected bool"):
        load_config(None, ["resume=maybe"])


def test_smollm2_config_is_the_default():
    assert load_config(CONFIGS / "smollm2-135m" / "lora.yaml") == Config()


def test_llama3_config_is_the_seed_baseline():
    """The seed's baseline (docs/train.md), value by value; the targets select 3,407,872 parameters of Llama-3-8B."""
    config = load_config(CONFIGS / "llama3-8b" / "lora.yaml")
    lora, train, data = config.lora, config.train, config.data
    assert (lora.rank, lora.alpha, lora.dropout) == (8, 16, 0.05)
    assert (train.betas, train.eps, train.weight_decay, train.warmup_ratio) == ((0.9, 0.95), 1e-8, 0.0, 0.03)
    assert (train.global_batch, train.grad_clip, train.precision, train.checkpoints) == (64, 1.0, "bf16", 5)
    assert train.global_batch % train.micro_batch == 0
    assert (data.seq_len, data.format, lora.names) == (256, "vicuna", "mindformers")
    _, count = lora_accounting(architecture_config("llama3-8b"), lora)
    assert (count.trainable, count.total) == (3_407_872, 8_030_261_248)


@pytest.mark.parametrize("name", ["smollm2-135m", "llama3-8b"])
def test_configs_state_their_run_command(name):
    header = (CONFIGS / name / "lora.yaml").read_text(encoding="utf-8").split("\nmodel:")[0]
    assert f"keeptune train configs/{name}/lora.yaml" in header


def sections(cls=Config, prefix=""):
    """(section class, dotted prefix) of Config and of every section in it."""
    yield cls, prefix
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            yield from sections(hint, f"{prefix}{f.name}.")


@pytest.mark.parametrize("cls", [cls for cls, _ in sections()], ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls):
    docs = field_docs(cls)
    assert [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)] == []


def test_help_lists_every_field_with_its_docstring(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--resume" in out and "key=value" in out
    assert "  train.lr=0.001  Peak learning rate of AdamW." in out
    assert "  lora.rank=8  Rank r of the update B @ A." in out  # inherited from LoraSettings
    lines = out.splitlines()
    for cls, prefix in sections():
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name]):
                doc = field_docs(cls)[f.name]
                assert any(line.startswith(f"  {prefix}{f.name}=") and line.endswith(doc) for line in lines), f.name


def test_cli_config_error_is_one_line(tmp_path, capsys):
    assert main(["train", "train.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keeptune: error: override 'train.lrr=1': unknown field")


@pytest.mark.parametrize("word", ["train.micro_batch=0", "data.seq_len=-1", "train.max_steps=0", "train.epochs=0"])
def test_sizes_must_be_positive(word):
    field = word.split("=")[0]
    with pytest.raises(ConfigError, match=rf"override '{word}': field '{field}' is -?\d+; it must be at least 1"):
        load_config(None, [word])


@pytest.mark.parametrize(("word", "fragment"), [
    ("train.lr=-1", "field 'train.lr' is -1.0; it must be greater than 0 (and finite)"),
    ("train.lr=nan", "field 'train.lr' is nan; it must be greater than 0"),
    ("train.lr=.inf", "field 'train.lr' is inf; it must be greater than 0 (and finite)"),
    ("train.warmup_ratio=-1", "field 'train.warmup_ratio' is -1.0; it must be in [0, 1]"),
    ("train.warmup_ratio=1.5", "field 'train.warmup_ratio' is 1.5; it must be in [0, 1]"),
    ("train.checkpoints=0", "field 'train.checkpoints' is 0; it must be at least 1"),
    ("train.checkpoints=-2", "field 'train.checkpoints' is -2; it must be at least 1"),
    ("train.grad_clip=-1", "field 'train.grad_clip' is -1.0; it must be at least 0"),
    ("train.eps=0", "field 'train.eps' is 0.0; it must be greater than 0"),
    ("train.weight_decay=-0.1", "field 'train.weight_decay' is -0.1; it must be at least 0"),
    ("train.betas=[0.9,1.5]", "field 'train.betas' is [0.9, 1.5]; each must be in [0, 1)"),
    ("train.global_batch=6", "field 'train.global_batch' is 6; it must be a multiple of train.micro_batch (4)"),
    ("lora.rank=0", "field 'lora.rank' is 0; it must be at least 1"),
    ("lora.alpha=0", "field 'lora.alpha' is 0; it must be greater than 0"),
    ("lora.dropout=2", "field 'lora.dropout' is 2.0; it must be in [0, 1)"),
    ("lora.dropout=1", "field 'lora.dropout' is 1.0; it must be in [0, 1)"),
    ("lora.targets=[(", "field 'lora.targets': LoRA target '[(' is not a valid regular expression"),
    ("lora.targets=[]", "field 'lora.targets': no LoRA target given"),
    ("model.device=gpu", "field 'model.device': unknown device 'gpu'"),
    ("model.device=cuda:x", "field 'model.device': unknown device 'cuda:x'"),
    ("model.dtype=int8", "field 'model.dtype': unknown dtype 'int8'"),
])
def test_values_training_cannot_use_are_refused_at_parse_time(word, fragment):
    """Issue 11.3/11.5: each of these ran without complaint or ended in a traceback after loading."""
    with pytest.raises(ConfigError) as info:
        load_config(None, [word])
    assert str(info.value) == f"override {word!r}: {fragment}" or str(info.value).startswith(
        f"override {word!r}: {fragment}")


def test_a_cuda_device_this_machine_lacks_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"override 'model.device=cuda:7': field 'model.device': device 'cuda:7' "
                                          r"does not exist: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        load_config(None, ["model.device=cuda:7"])
    assert load_config(None, ["model.device=cuda:1"]).model.device == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="this machine has no CUDA device"):
        load_config(None, ["model.device=cuda"])


def test_range_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 2\n  lr: -3.0e-4\nlora:\n  dropout: 1.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}:3: field 'train.lr' is -0.0003"):
        load_config(path)


def test_the_experiment_config_is_validated_too():
    from keeptune.experiment.config import ExperimentConfig

    with pytest.raises(ConfigError, match="field 'lora.dropout' is 2.0"):
        load_config(None, ["lora.dropout=2"], root=ExperimentConfig)
    with pytest.raises(ConfigError, match="field 'train.warmup_ratio'"):
        load_config(None, ["train.warmup_ratio=-1"], root=ExperimentConfig)


def test_a_config_that_is_not_utf8_names_file_and_line(tmp_path):
    """Found by the fuzz suite: a Windows-1252 config was a UnicodeDecodeError traceback."""
    path = tmp_path / "c.yaml"
    path.write_bytes("train:\n  lr: 1.0e-3\n# caf\u00e9\n".encode("cp1252"))
    with pytest.raises(ConfigError, match=rf"^{path}:3: not valid UTF-8 \(byte 0xe9"):
        load_config(path)
    path.write_bytes(b"\xef\xbb\xbftrain:\n  lr: 2.0e-3\n")  # a BOM is fine
    assert load_config(path).train.lr == 2e-3


def test_a_combination_error_names_the_override_that_made_it():
    with pytest.raises(ConfigError, match=r"^override 'train.micro_batch=3': field 'train.global_batch' is 8"):
        load_config(None, ["train.micro_batch=3"])
