"""The typed-config engine: dataclass settings read from YAML and changed with `key=value` words.

A config is a tree of dataclasses, one docstring per field (the help text). A YAML
file gives some fields, `section.field=value` words (read as YAML: `lora.targets=[wq,wv]`,
`model.source=null`) override them, and every value is type-checked. Unknown
fields and wrong types are `ConfigError`s naming FILE:LINE (or the override) and the
field, before any work. The schemas live with their layers (keeptune.train.config,
keeptune.experiment.config, keeptune.sweep.config); this module knows none of them.
"""
from __future__ import annotations

import argparse
import ast
import collections.abc
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import yaml

from keeptune.core.errors import ConfigError, DataError, MalformedLineError
from keeptune.core.io import read_text


def load_config(path: Path | str | None, overrides: Sequence[str], root: type,
                check: Optional[Callable[[Any, dict], Any]] = None):
    """The `root` configuration of a YAML file (None: the defaults) with `key=value` overrides applied;
    `check(config, where)` then validates values the types allow (where: dotted field -> FILE:LINE)."""
    tree: dict = {}
    where: dict[str, str] = {}
    if path is not None:
        tree, where = read_yaml(Path(path))
    for word in overrides:
        key, text = split_override(word)
        set_word(tree, where, key, text, f"override {word!r}")
    config = build(root, tree, where, "", str(path) if path else "defaults")
    return check(config, where) if check else config


def split_override(word: str) -> tuple[str, str]:
    """`section.field=value` -> ("section.field", "value"); ConfigError when it is not key=value."""
    key, sep, text = word.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {word!r} is not key=value (e.g. train.lr=1e-3)")
    return key.strip(), text


# The most values a YAML document may hold with its aliases expanded: keeptune's configs and specs hold a few
# hundred; an alias bomb (anchors of lists of aliases of the anchor before) holds billions in a few lines.
YAML_VALUES = 100_000


def parse_yaml(text: str, origin: str | Path, repeats: bool = False) -> tuple[Any, yaml.Node | None]:
    """The value of a YAML document (safe_load's) and its node tree (compose's), the text parsed once.

    yaml.YAMLError for text that is not YAML. ConfigError naming `origin` (a file: with the
    line) for a key written twice in one mapping (unless `repeats`: PyYAML keeps the last), an
    alias of a value that holds it, or aliases that expand past YAML_VALUES values, refused
    before anything walks or copies the expansion."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_nodes(node, origin, repeats)
        return (loader.construct_document(node) if node is not None else None), node
    except RecursionError:
        raise ConfigError(f"{origin}: nested too deeply to read") from None
    finally:
        loader.dispose()


def _at(origin: str | Path, node: yaml.Node) -> str:
    """`FILE:LINE` of a node of a file, else the origin (an override) alone."""
    return f"{origin}:{node.start_mark.line + 1}" if isinstance(origin, Path) else str(origin)


def _check_nodes(root: yaml.Node, origin: str | Path, repeats: bool) -> None:
    """ConfigError for repeated keys, an alias inside its own anchor, and expansions past YAML_VALUES."""
    sizes: dict[int, int] = {}  # a node's value count with its aliases expanded, each node counted once
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise ConfigError(f"{_at(origin, node)}: an alias refers to the anchor that holds it (a value that "
                              "contains itself)")
        open_nodes.add(id(node))
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        if isinstance(node, yaml.MappingNode) and not repeats:
            _check_keys(node, origin)
        total = 1 + sum(size(child) for child in children)
        if total > YAML_VALUES:
            raise ConfigError(f"{_at(origin, node)}: its aliases expand to more than {YAML_VALUES} values (an alias "
                              "bomb?); write the values out, or alias fewer")
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root)


def _check_keys(node: yaml.MappingNode, origin: str | Path) -> None:
    """ConfigError for a key written twice in one mapping (a merge key `<<` aside: it may be overridden)."""
    seen: dict[Any, yaml.Node] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        first = seen.setdefault(key.value, key)
        if first is not key:
            where = f"line {first.start_mark.line + 1}" if isinstance(origin, Path) else "the first"
            raise ConfigError(f"{_at(origin, key)}: key {key.value!r} is written twice in one mapping; this one "
                              f"repeats {where} (keep one)")


def yaml_locations(path: Path, node: yaml.Node | None) -> dict[str, str]:
    """'FILE:LINE' of every key (dotted: `train.lr`) and list item (`original[0]`, `original[0].task`) of a
    composed YAML document (`parse_yaml`'s node tree: its aliases expand to YAML_VALUES values at most)."""
    where: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                where[dotted] = f"{path}:{key_node.start_mark.line + 1}"
                walk(value_node, dotted)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                where[f"{prefix}[{i}]"] = f"{path}:{item.start_mark.line + 1}"
                walk(item, f"{prefix}[{i}]")

    walk(node, "")
    return where


def set_word(tree: dict, where: dict[str, str], key: str, text: str, origin: str) -> None:
    """Put the value of a `key=text` word (read as YAML) at the dotted `key` of `tree`; `where` notes `origin` for
    the key and for each section the word adds, so that a misspelt section is reported as the word's."""
    try:
        value = parse_yaml(text, origin)[0]
    except yaml.YAMLError:
        value = text
    node, parts = tree, key.split(".")
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{origin}: {'.'.join(parts[:i + 1])!r} is a field, not a section")
        where.setdefault(".".join(parts[:i + 1]), origin)
    node[parts[-1]] = value
    where[key] = origin


def read_yaml(path: Path) -> tuple[dict, dict[str, str]]:
    """A YAML mapping and, for every dotted key, 'FILE:LINE' where it is written."""
    try:
        text = read_text(path)  # UTF-8, a BOM allowed
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except MalformedLineError as err:  # not UTF-8
        raise ConfigError(f"{err.path}:{err.line}: {err.reason}") from None
    except DataError as err:  # a directory, unreadable
        raise ConfigError(str(err)) from None
    try:
        tree, root = parse_yaml(text, path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if tree is None:
        return {}, {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a config file is a mapping of sections, not a {type(tree).__name__}")
    return tree, yaml_locations(path, root)

def build(cls: type, values: Any, where: dict[str, str], prefix: str, source: str, base: Any = None):
    """`base` (default: `cls()`) with the fields of a mapping replaced, every field type-checked.

    A section keeps the defaults its parent gives it (ExperimentConfig's `train` is not
    TrainConfig's), so overriding one key of a section leaves its other keys alone.
    """
    base = cls() if base is None else base
    location = where.get(prefix.rstrip("."), source)
    if not isinstance(values, dict):
        raise ConfigError(f"{location}: {prefix.rstrip('.')!r} is a section: give it a mapping, not {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        dotted = prefix + str(key)
        if key not in names:
            choices = ", ".join(prefix + n for n in names)
            raise ConfigError(f"{where.get(dotted, source)}: unknown field {dotted!r}; the fields here: {choices}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, value, where, dotted + ".", source, getattr(base, key))
        elif _item_class(hint) is not None:
            kwargs[key] = build_list(_item_class(hint), value, where, dotted, source, getattr(base, key))
        else:
            kwargs[key] = coerce(value, hint, f"{where.get(dotted, source)}: field {dotted!r}")
    return dataclasses.replace(base, **kwargs)

def _item_class(hint: Any) -> type | None:
    """The dataclass of a `list[SomeConfig]` field, else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (list, collections.abc.Sequence) and args and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None

def build_list(cls: type, values: Any, where: dict[str, str], dotted: str, source: str, base: list) -> list:
    """A list of `cls` sections. An item may be its first field's value alone (`original: [squad-seed]`);
    a mapping instead of a list changes the one item of the default (`original.data=FILE`)."""
    location = where.get(dotted, source)
    if isinstance(values, dict):
        if len(base) != 1:
            raise ConfigError(f"{location}: {dotted!r} holds {len(base)} items: give the whole list")
        return [build(cls, values, where, dotted + ".", source, base[0])]
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{location}: field {dotted!r} is a list of one or more sections, not {values!r}")
    first = dataclasses.fields(cls)[0].name
    items = []
    for i, value in enumerate(values):
        value = {first: value} if isinstance(value, str) else value
        items.append(build(cls, value, where, f"{dotted}[{i}].", source, cls()))
    return items

def coerce(value: Any, hint: Any, what: str) -> Any:
    """`value` as type `hint` (int, float, bool, str, Literal, Optional, tuple, Sequence)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(value, inner, what)
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{what} is {value!r}; choose one of {', '.join(map(str, args))}")
    if origin is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(coerce(v, a, what) for a, v in zip(args, value))
        raise ConfigError(f"{what} is {value!r}; expected a list of {len(args)} values, e.g. [0.9, 0.95]")
    if origin is dict:
        if isinstance(value, dict):
            return {coerce(k, args[0], what): coerce(v, args[1], what) for k, v in value.items()}
        raise ConfigError(f"{what} is {value!r}; expected a mapping, e.g. {{area: 100}}")
    if origin in (list, collections.abc.Sequence):
        if isinstance(value, str):  # `q_proj,v_proj` or one regular expression
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            return tuple(coerce(v, args[0], what) for v in value)
        raise ConfigError(f"{what} is {value!r}; expected a list")
    if hint is float and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 1e-3 (no dot) as a string
        except (TypeError, ValueError):
            pass
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{what} is {value!r}; expected {hint.__name__}")

def to_dict(config: Any) -> dict:
    """Plain nested dict of a config (tuples as lists), for YAML and JSON."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(dataclasses.asdict(config))

def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)

def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it), inherited ones included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs

def parse_words(argv: list[str], prog: str, description: str, examples: str, root: type, resume: bool = True,
                overwrite: bool = False):
    """Parse `[CONFIG] [key=value ...] [--resume] [--overwrite]` (the words jsonargparse cannot read);
    `--help` lists every field of `root` with its default and docstring.
    Returns (config file or None, overrides, whether --resume was given); with `overwrite`, a
    `--overwrite` flag is accepted and becomes the override `overwrite=true` (`root` needs that field)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=examples + "\nconfig fields (section.field=default), each settable as key=value:\n"
                                     + "\n".join(describe(root)))
    parser.add_argument("words", nargs="*", metavar="CONFIG | key=value",
                        help="a YAML config file, then overrides such as train.lr=1e-3")
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    if overwrite:
        parser.add_argument("--overwrite", action="store_true",
                            help="write into an output directory keeptune did not make (nothing there is deleted)")
    args = parser.parse_args(argv)
    files = [w for w in args.words if "=" not in w]
    if len(files) > 1:
        parser.error(f"one config file at most, got {files}")
    words = [w for w in args.words if "=" in w] + (["overwrite=true"] if getattr(args, "overwrite", False) else [])
    return (files[0] if files else None), words, getattr(args, "resume", False)

def describe(cls: type, prefix: str = "", defaults: Any = None) -> list[str]:
    """One help line per field: `section.field = default  docstring`.

    The defaults are those a bare run uses: a section's come from its parent
    (ExperimentConfig's `train` is not TrainConfig's), the same source `build` starts from."""
    lines: list[str] = []
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    defaults = cls() if defaults is None else defaults
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(f"{prefix}{f.name}: {docs.get(f.name, '')}")
            lines += describe(hints[f.name], prefix + f.name + ".", getattr(defaults, f.name))
        else:
            # One line however long (PyYAML wraps at 80 columns): the help line parses back as an override.
            default = yaml.safe_dump(to_dict(defaults)[f.name], default_flow_style=True,
                                     width=float("inf")).strip()
            default = default.removesuffix("\n...").removesuffix(" ...")
            lines.append(f"  {prefix}{f.name}={default}  {docs.get(f.name, '')}")
    return lines
