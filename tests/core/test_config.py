"""The YAML reader of every config and spec (keeptune.core.config.parse_yaml, read_yaml) and the
`key=value` overrides (set_word, load_config): aliases bounded, repeated keys refused, misspelt
sections reported as the override's."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from keeptune.core import config
from keeptune.core.config import load_config, parse_yaml, read_yaml
from keeptune.core.errors import ConfigError


def alias_bomb(levels: int, fan: int = 9) -> str:
    """Anchors a..: each a list of `fan` aliases of the one before; the last expands to fan ** levels values."""
    names = [chr(ord("a") + i) for i in range(levels)]
    lines = [f"a: &a [{', '.join(['x'] * fan)}]"]
    lines += [f"{name}: &{name} [{', '.join(['*' + before] * fan)}]" for before, name in zip(names, names[1:])]
    return "\n".join(lines) + "\n"


def expanded(levels: int, fan: int = 9) -> int:
    """The values of alias_bomb's last anchor with every alias expanded: each list node and each leaf."""
    return sum(fan ** k for k in range(levels + 1))


def test_an_alias_bomb_is_refused_quickly_naming_the_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(9), encoding="utf-8")  # 9 ** 9: 387 million values
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert time.perf_counter() - start < 5
    # the first anchor past the bound: f, 9 ** 5 + ... values on line 6 (e, line 5, holds fewer)
    first = next(level for level in range(1, 10) if expanded(level) > config.YAML_VALUES)
    assert expanded(first - 1) <= config.YAML_VALUES < expanded(first)
    assert str(info.value).startswith(f"{path}:{first}: its aliases expand to more than {config.YAML_VALUES} values")


def test_aliases_within_the_bound_are_read_with_their_values_and_lines(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(alias_bomb(3) + "d: {<<: {k: 1}, m: *b}\n", encoding="utf-8")
    tree, where = read_yaml(path)
    assert tree["c"] == [[["x"] * 9] * 9] * 9
    assert tree["d"] == {"k": 1, "m": [["x"] * 9] * 9}
    assert where["c"] == f"{path}:3" and where["d.m"] == f"{path}:4"


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("train:\n  targets: &t [q_proj, *t]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}:2: an alias refers to the anchor that holds it"):
        read_yaml(path)


def test_a_repeated_key_names_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  lr: 1e-3\n  epochs: 2\n  lr: 3e-4\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert str(info.value) == (f"{path}:4: key 'lr' is written twice in one mapping; this one repeats line 2 "
                               "(keep one)")


def test_a_key_a_merge_gives_may_be_written_again(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {lr: 1, epochs: 2}\ntrain:\n  <<: *b\n  lr: 3\n", encoding="utf-8")
    assert read_yaml(path)[0]["train"] == {"lr": 3, "epochs": 2}


def test_a_foreign_file_may_repeat_keys_when_asked():
    assert parse_yaml("a: 1\na: 2\n", "x", repeats=True)[0] == {"a": 2}  # PyYAML's reading: the last wins


def test_nesting_too_deep_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_yaml("[" * 5000 + "]" * 5000, tmp_path / "deep.yaml")


@dataclass
class Train:
    lr: float = 1e-3
    """learning rate"""


@dataclass
class Root:
    name: str = "x"
    """a name"""
    train: Train = field(default_factory=Train)
    """training"""


@pytest.mark.parametrize("word,message", [
    ("trainn.lr=1", "override 'trainn.lr=1': unknown field 'trainn'"),
    ("train.lr.x=1", "override 'train.lr.x=1': field 'train.lr' is {'x': 1}; expected float"),
    ("name.x=1", "override 'name.x=1': field 'name' is {'x': 1}; expected str"),
])
def test_a_misspelt_section_is_the_overrides_problem(word, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [word], Root)
    assert str(info.value).startswith(message), info.value


def test_a_section_of_the_file_keeps_its_line_when_an_override_adds_to_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^override 'train.lr.x=1': 'train.lr' is a field, not a section"):
        load_config(path, ["train.lr.x=1"], Root)
    with pytest.raises(ConfigError, match=r"^override 'train.lrr=1': unknown field 'train.lrr'"):
        load_config(path, ["train.lrr=1"], Root)


def test_an_override_value_is_read_by_the_same_bounded_reader():
    bomb = "[" + ", ".join(["&a [x, x, x, x, x, x, x, x, x]"] + [f"&{c} [{', '.join(['*' + p] * 9)}]"
                                                                  for p, c in zip("abcdefgh", "bcdefghi")]) + "]"
    with pytest.raises(ConfigError, match=r"^override 'name=\[.*aliases expand to more than"):
        load_config(None, [f"name={bomb}"], Root)
    assert load_config(None, ["name=[(", "train.lr=3e-4"], Root) == Root("[(", Train(3e-4))  # not YAML: the text
