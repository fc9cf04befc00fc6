"""lm-evaluation-harness task YAMLs for local copies of standard benchmarks, in their official layouts.

Each YAML is lm-eval's own task (prompt, choices, target, metrics copied from the task of the same
benchmark in lm-eval 0.4.13, which tests/evaluate/test_lmeval.py checks field by field), with
the Hub dataset replaced by `custom_dataset: !function official.LOADER` reading a local file given as
metadata `path` (keeptune: an `original:` entry's `data:`, or `keeptune eval --data`):

    arc_easy_local   ARC-Easy, official jsonl (ARC-Easy-Test.jsonl / ARC-Easy-Dev.jsonl)   like lm-eval's arc_easy
    boolq_local      BoolQ, SuperGLUE jsonl (val.jsonl)                                      like lm-eval's boolq
    mmlu_local       MMLU, the original headerless CSVs (a folder with test/ dev/ val/)      like lm-eval's mmlu
    wikitext_local   WikiText-2 raw (wiki.test.raw), split into articles                     like lm-eval's wikitext

and one of keeptune's own, lm-eval's wikitext scoring (rolling log-likelihood; word and byte perplexity) on
text the package ships, so that a run without ../shared can measure language modelling:

    squad_passages   a SQuAD v1.1 JSON file's paragraphs, each once; no data: the Super Bowl 50 article (54)

The official addresses are in docs/lm-eval.md.
"""
