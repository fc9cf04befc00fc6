"""Fuzz YAML alias structures through every YAML reader of keeptune: the experiment config
(`load_config` over `read_yaml`) and the task spec (`load_spec`).

Anchors of lists and mappings hold scalars and aliases of earlier anchors (or of themselves,
a value that contains itself), merge keys and, now and then, a key written twice; the last
anchor is aliased from a real field. Each document is read in bounded time and memory: it
is read, with the value the anchors give, when its expansion is within the bound, and
refused with a user error naming the file otherwise (alias bomb, self-reference, repeated
key). The generator counts the expansion itself, as the reader defines it: one per node,
keys included."""
from __future__ import annotations

import resource
import time
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from keeptune.core.config import YAML_VALUES, read_yaml
from keeptune.evaluate.spec import load_spec
from keeptune.experiment.config import ExperimentConfig
from keeptune.train.config import load_config
from tests.fuzz.helpers import fuzz, long_fuzz, user_error_or_success, workdir

SECONDS = 5  # per reader and document, on a busy 2-core machine; a bomb expanded takes hours
MEGABYTES = 64  # traced Python allocations at the peak, per reader
SPEC = "name: qa\ndata: {path: qa.jsonl}\nprompt: 'Q: {question}'\nmetrics: [exact_match]\n"


@st.composite
def alias_document(draw) -> tuple[str, int | None, bool]:
    """(YAML text, the expanded size of its anchors or None for a self-reference, whether a key repeats)."""
    sizes: list[int | None] = []
    kinds: list[str] = []
    lines = []
    repeated = False
    count = draw(st.integers(1, 9))
    looped = draw(st.integers(0, 7)) == 0 and draw(st.integers(0, count - 1))  # the anchor aliasing itself, if any
    for i in range(count):
        kind = draw(st.sampled_from(["list", "list", "map"]))
        items, size = [], 1
        for j in range(draw(st.integers(0, 12))):
            how = draw(st.sampled_from(["scalar", "previous", "previous", "earlier"])) if i else "scalar"
            target = {"scalar": None, "previous": i - 1, "earlier": draw(st.integers(0, max(i - 1, 0)))}[how]
            if looped is not False and looped == i and j == 0:
                target = i
            if target is None:
                value, value_size = draw(st.sampled_from(["x", "1", "q_proj", "''", "{}", "[]"])), 1
            else:
                value, value_size = f"*a{target}", (sizes[target] if target < i else None)
            if kind == "map" and target is not None and target < i and kinds[target] == "map" and draw(st.booleans()):
                items.append(f"<<: {value}")  # a merge key: its keys come in, the `<<` key node counts one
            else:
                items.append(f"k{j}: {value}" if kind == "map" else value)
            size = None if size is None or value_size is None else size + value_size + (kind == "map")
        keys = [item for item in items if not item.startswith("<<:")]
        if kind == "map" and keys and draw(st.integers(0, 9)) == 0:  # a key written again, with its value
            items.append(keys[0])
            repeated = True
            aliased = keys[0].split(": *a")
            size = None if size is None else size + 2 + (sizes[int(aliased[1])] - 1 if len(aliased) == 2 else 0)
        body = "{" + ", ".join(items) + "}" if kind == "map" else "[" + ", ".join(items) + "]"
        lines.append(f"  a{i}: &a{i} {body}")
        kinds.append(kind)
        sizes.append(size)
    total = None if None in sizes else 1 + sum(1 + s for s in sizes)  # `anchors:` mapping: its keys and values
    return "anchors:\n" + "\n".join(lines) + "\n", total, repeated


def bounded(call, names) -> None:
    """`call()` ends in a result or a user error naming one of `names`, within SECONDS and MEGABYTES."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        user_error_or_success(call, names)
    finally:
        took = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert took < SECONDS, f"{took:.1f} s"
    assert peak < MEGABYTES * 2**20, f"{peak / 2**20:.0f} MB at the peak"


def check_alias_document(data) -> None:
    text, total, repeated = data.draw(alias_document())
    last = text.count("&a") - 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with workdir() as folder:
        config, spec = folder / "experiment.yaml", folder / "spec.yaml"
        config.write_text(text + f"name: x\nlora: {{targets: *a{last}}}\n", encoding="utf-8")
        spec.write_text(text.replace("anchors:", "metadata_x:", 1) + SPEC + f"description: *a{last}\n",
                        encoding="utf-8")
        (folder / "anchors.yaml").write_text(text, encoding="utf-8")
        refusal = None
        try:
            tree = read_yaml(folder / "anchors.yaml")[0]
        except Exception as err:  # noqa: BLE001 (classified below)
            refusal = str(err)
        reasons = [reason for reason, holds in (("refers to the anchor that holds it", total is None),
                                                (f"expand to more than {YAML_VALUES} values",
                                                 total is not None and total > YAML_VALUES),
                                                ("is written twice in one mapping", repeated)) if holds]
        if reasons:  # refused, for one of the reasons the document has (whichever the reader meets first)
            assert refusal is not None and any(reason in refusal for reason in reasons), (reasons, refusal)
            assert refusal.startswith(f"{folder / 'anchors.yaml'}:"), refusal
        else:
            assert refusal is None, refusal  # read, whatever the size within the bound
            assert sorted(tree["anchors"]) == sorted(f"a{i}" for i in range(last + 1))
        bounded(lambda: load_config(config, [], ExperimentConfig), [str(config)])
        bounded(lambda: load_spec(spec), [str(spec)])
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown < 512, f"the process grew by {grown:.0f} MB"


@fuzz(60)
@given(st.data())
def test_yaml_aliases(data):
    check_alias_document(data)


@long_fuzz
@given(st.data())
def test_yaml_aliases_long(data):
    check_alias_document(data)
