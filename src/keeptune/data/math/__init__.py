"""The new task's data: the math training file (the contest's templated arithmetic; docs/tasks.md).

- `loader`: streaming reader of ``train.json`` with deduplication and clear errors;
- `templates`: the 11 Chinese templates as a data table, `classify`, `solve`, `verify`;
- `generate`: deterministic generator in the real file's format;
- `cot`: worked-step answers that keep the exact reference;
- `build`: selection strategies and conversation records;
- `stats`: records per template of a file;
- `commands`: the ``generate``, ``build`` and ``stats`` command functions.
"""
from keeptune.data.math.build import STRATEGIES, build_records, select
from keeptune.data.math.cot import worked_answer
from keeptune.data.math.generate import DISTINCT_COUNTS, MIXES, generate_pairs
from keeptune.data.math.loader import MalformedLineError, Pair, PairReader, dedup, read_pairs
from keeptune.data.math.stats import count_templates
from keeptune.data.math.templates import (
    ENGLISH,
    TEMPLATE_NAMES,
    TEMPLATES,
    UNKNOWN,
    Template,
    classify,
    solve,
    verify,
)

__all__ = [
    "DISTINCT_COUNTS", "ENGLISH", "MIXES", "STRATEGIES", "TEMPLATES", "TEMPLATE_NAMES",
    "UNKNOWN", "MalformedLineError", "Pair", "PairReader", "Template", "build_records",
    "classify", "count_templates", "dedup", "generate_pairs", "read_pairs", "select", "solve",
    "verify", "worked_answer",
]
