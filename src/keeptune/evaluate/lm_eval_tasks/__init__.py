"""lm-evaluation-harness task YAMLs for local copies of standard benchmarks, in their official layouts.

Each YAML is lm-eval's own task (prompt, choices, target, metrics copied from the task of the same
benchmark in lm-eval 0.4.13, which tests/evaluate/test_lmeval_tasks.py checks field by field), with
the Hub dataset replaced by `custom_dataset: !function official.LOADER` reading a local file given as
metadata `path` (keeptune: an `original:` entry's `data:`, or `keeptune eval --data`):

    arc_easy_local   ARC-Easy, official jsonl (ARC-Easy-Test.jsonl / ARC-Easy-Dev.jsonl)   like lm-eval's arc_easy
    boolq_local      BoolQ, SuperGLUE jsonl (val.jsonl)                                      like lm-eval's boolq
    mmlu_local       MMLU, the original headerless CSVs (a folder with test/ dev/ val/)      like lm-eval's mmlu
    wikitext_local   WikiText-2 raw (wiki.test.raw), split into articles                     like lm-eval's wikitext

The official addresses are in docs/lm-eval.md.
"""
