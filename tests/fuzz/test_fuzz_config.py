"""Fuzz the YAML configs and `key=value` overrides through `load_config`, for the training config
and the experiment's (whatever fields the roots have: they are found by introspection)."""
from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from keeptune.train.config import Config, load_config
from tests.fuzz.helpers import damaged, encode, encodings, fuzz, json_values, long_fuzz, user_error_or_success, workdir


def dotted_fields(cls, prefix: str = "") -> list[str]:
    names = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            names.append(prefix + f.name)
            names += dotted_fields(hint, f"{prefix}{f.name}.")
        else:
            names.append(prefix + f.name)
    return names


def roots():
    from keeptune.experiment.config import ExperimentConfig

    return [Config, ExperimentConfig]


FRAGMENTS = ["0", "1", "-1", "-2", "2", "8", "1e-3", "-1e-3", "nan", ".nan", ".inf", "-.inf", "0.5", "1.5", "2",
             "true", "false", "null", "~", "", "[]", "[1]", "[0.9, 0.95]", "[q_proj, v_proj]", "[(", ".*wq|.*wv",
             "q_proj,v_proj", "{a: 1}", "{mass: 10}", "cpu", "cuda", "cuda:7", "gpu", "auto", "bf16", "int8",
             "plain", "chat", "math", "bogus", "seed", "final", "a/b", "../x", "'quoted'", "\"unterminated", "{",
             "x: [", "&a 1", "*a", "!!python/object:os.system ls", "9999999999999999999999", "0x10", "1_000"]
fragment = st.sampled_from(FRAGMENTS) | st.text(max_size=12)


def yaml_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


@st.composite
def tree(draw, root):
    """A nested mapping over the root's dotted fields (some unknown ones too) with fuzzed values."""
    keys = draw(st.lists(st.sampled_from(dotted_fields(root)) | st.sampled_from(["train.lrr", "nope", "x.y.z"]),
                         max_size=6))
    value: dict = {}
    for key in keys:
        node = value
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            leaf = draw(st.sampled_from(["fragment", "json"]))
            node[parts[-1]] = (yaml_value(draw(st.sampled_from(FRAGMENTS)))
                               if leaf == "fragment" else draw(json_values))
    return value


@st.composite
def config_text(draw, root) -> bytes:
    kind = draw(st.sampled_from(["tree", "tree", "fragments", "text"]))
    if kind == "tree":
        text = yaml.safe_dump(draw(tree(root)), allow_unicode=True, sort_keys=False)
    elif kind == "fragments":
        text = "\n".join(f"{draw(st.sampled_from(dotted_fields(root)))}: {draw(fragment)}"
                         for _ in range(draw(st.integers(0, 4))))
    else:
        text = draw(st.text(max_size=60))
    return draw(damaged(encode(text, draw(encodings))))


@st.composite
def override(draw, root) -> str:
    key = draw(st.sampled_from(dotted_fields(root)) | st.sampled_from(["", " ", "nope", "train.lr.x", "a..b"]))
    return f"{key}{draw(st.sampled_from(['=', '=', '']))}{draw(fragment)}"


def check_config(root, content: bytes | None, overrides: list[str]) -> None:
    with workdir() as folder:
        path = None
        if content is not None:
            path = folder / "config.yaml"
            path.write_bytes(content)
        names = [str(path)] if path else []
        names += ["override", "defaults"] if overrides else ["defaults"]
        config = user_error_or_success(lambda: load_config(path, overrides, root=root), names)
        assert config is None or isinstance(config, root)


@pytest.mark.parametrize("index", [0, 1], ids=["train", "experiment"])
@fuzz(60)
@given(data=st.data())
def test_config(index, data):
    root = roots()[index]
    content = data.draw(st.none() | config_text(root))
    check_config(root, content, data.draw(st.lists(override(root), max_size=3)))


@pytest.mark.parametrize("index", [0, 1], ids=["train", "experiment"])
@long_fuzz
@given(data=st.data())
def test_config_long(index, data):
    root = roots()[index]
    content = data.draw(st.none() | config_text(root))
    check_config(root, content, data.draw(st.lists(override(root), max_size=3)))
