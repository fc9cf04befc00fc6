"""A broken or unsafe adapter folder is refused, naming the file, by every command that takes an adapter
(`keeptune eval --adapter`, `merge`, `export`), before PEFT reads it and before a model loads (issue 28, item 4):
a malformed adapter_config.json, a truncated adapter_model.safetensors, and weights that are a pickle
(adapter_model.bin, which PEFT would `torch.load`)."""
from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model

from keeptune.cli import main
from keeptune.core.errors import ModelLoadError
from keeptune.model.adapter import adapter_info
from tests.tiny import save_tiny, tiny_llama

TASK = """name: qa
data: {path: qa.jsonl}
prompt: "Q: {question}\\nA:"
reference: answer
generation: {max_new_tokens: 4}
metrics: [exact_match]
"""


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEPTUNE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def adapter_and_base(tmp_path_factory):
    """A rank-2 LoRA adapter of the tiny Llama, saved by PEFT, with keeptune.json naming its base."""
    folder = tmp_path_factory.mktemp("adapter")
    base = save_tiny(folder / "base")
    peft_model = get_peft_model(tiny_llama(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(folder / "adapter")
    (folder / "adapter" / "keeptune.json").write_text(json.dumps({"base_model": str(base)}))
    return folder / "adapter", base


def cut_in_half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def as_pickle(adapter):
    """PEFT's older format: the weights saved by torch.save, the safetensors file gone."""
    weights = adapter / "adapter_model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(weights), adapter / "adapter_model.bin")
    weights.unlink()


# (what is done to the adapter, the file the error names, what the error says of it)
DAMAGES = {
    "config not JSON": (lambda a: (a / "adapter_config.json").write_text('{"peft_type": "LORA", '),
                        "adapter_config.json", "not valid JSON (Expecting property name"),
    "config with a byte-order mark": (lambda a: (a / "adapter_config.json").write_bytes(
        b"\xef\xbb\xbf" + (a / "adapter_config.json").read_bytes()), "adapter_config.json", "Unexpected UTF-8 BOM"),
    "config a list": (lambda a: (a / "adapter_config.json").write_text("[1, 2]"), "adapter_config.json",
                      "a list, not a JSON object"),
    "weights cut in half": (lambda a: cut_in_half(a / "adapter_model.safetensors"), "adapter_model.safetensors",
                            "not a valid safetensors file: tensor"),
    "weights a pickle": (as_pickle, "adapter_model.bin", "the adapter's weights are a pickle checkpoint; keeptune "
                                                         "refuses them because unpickling can run arbitrary code"),
    "no weights": (lambda a: (a / "adapter_model.safetensors").unlink(), "", "the adapter has no weights"),
}


@pytest.fixture
def no_unpickling(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("something tried to unpickle the adapter")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)


def damaged(adapter_and_base, tmp_path, damage):
    adapter = shutil.copytree(adapter_and_base[0], tmp_path / "adapter")
    DAMAGES[damage][0](adapter)
    return adapter


def test_an_intact_adapter_passes(adapter_and_base):
    assert adapter_info(adapter_and_base[0]) == {"base_model": str(adapter_and_base[1])}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_adapter_is_refused_naming_the_file(adapter_and_base, tmp_path, damage, no_unpickling):
    adapter = damaged(adapter_and_base, tmp_path, damage)
    _, name, says = DAMAGES[damage]
    with pytest.raises(ModelLoadError) as info:
        adapter_info(adapter)
    assert str(info.value).startswith(f"{adapter / name}: " if name else f"{adapter}: "), str(info.value)
    assert says in str(info.value)


@pytest.mark.parametrize("command", ["eval", "merge", "export"])
@pytest.mark.parametrize("damage", DAMAGES)
def test_every_command_that_takes_an_adapter_refuses_it_in_one_line(adapter_and_base, tmp_path, damage, command,
                                                                    no_unpickling, capsys, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",  # refused before any model loads
                        lambda *a, **k: pytest.fail("a model was loaded"))
    adapter, base = damaged(adapter_and_base, tmp_path, damage), adapter_and_base[1]
    (tmp_path / "qa.yaml").write_text(TASK)
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "1 + 1?", "answer": "2"}) + "\n")
    out = tmp_path / "out"
    words = {"eval": ["eval", str(tmp_path / "qa.yaml"), "--model", str(base), "--adapter", str(adapter)],
             "merge": ["merge", str(adapter)], "export": ["export", str(adapter)]}[command]
    assert main([*words, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    _, name, says = DAMAGES[damage]
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"keeptune: error: {adapter / name}: " if name else f"keeptune: error: {adapter}: ")
    assert says in line
    assert not out.exists()


def test_a_full_disk_while_an_adapter_is_exported_names_it(adapter_and_base, tmp_path, monkeypatch):
    """export_adapter writes RUN/adapter (keeptune train) and RUN/best/adapter (keeptune run)."""
    import errno
    import os

    from keeptune.core.errors import OutputError
    from keeptune.model import adapter as adapters

    def full(source, target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(adapters.shutil, "copy2", full)
    target = tmp_path / "best" / "adapter"
    with pytest.raises(OutputError, match=rf"^{target}: cannot write: No space left on device; free some space"):
        adapters.export_adapter(adapter_and_base[0], target)
