"""SQuAD evaluation speed: keeptune's batched greedy path against batch-1 `generate`.

    .venv/bin/python benchmarks/eval_squad.py [--repeats 3] [--limit N]

On the embedded default model over the 54 shared paragraphs, each repeat times:
- batch-1 `model.generate` (the seed's way, no padding);
- Hugging Face `generate` on left-padded, length-sorted batches of 8;
- keeptune's `generate` (chunked prefill, one larger decode batch);
- the prefill alone: one forward pass over every prompt, no decoding. At batch 1
  (no padding, no wasted work) it bounds any exact float32 method; keeptune's
  own chunked prefill is timed too.
It prints the median of each, samples/s, the ratios, and whether the generated
tokens are identical to batch-1 `generate` (they must be: 54/54).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from transformers import GenerationConfig

from keeptune.evaluate.generation import GenerationSettings, generate, left_pad, positions
from keeptune.evaluate.task import SpecTask
from keeptune.evaluate.spec import load_spec
from keeptune.evaluate.samples import load_task_samples, resolve_data_path
from keeptune.model.load import load_model


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def hf_generate(model, prompts, config, batch_size, pad):
    """HF generate over length-sorted, left-padded batches; returns new tokens without padding."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results = {}
    for start in range(0, len(order), batch_size):
        group = order[start:start + batch_size]
        ids, mask = left_pad([prompts[i] for i in group], pad)
        out = model.generate(ids, attention_mask=mask, generation_config=config)[:, ids.shape[1]:]
        for row, i in enumerate(group):
            tokens = out[row].tolist()
            if config.eos_token_id in tokens:  # rows that stopped early are padded after EOS
                tokens = tokens[:tokens.index(config.eos_token_id) + 1]
            results[i] = tokens
    return [results[i] for i in range(len(prompts))]


def keeptune_generate(model, prompts, settings, eos, pad):
    results = {}
    for group in generate(model, prompts, settings, eos, pad):
        results.update(group)
    return [results[i] for i in range(len(prompts))]


def prefill(model, prompts, chunk, pad):
    """One forward pass over every prompt (logits of the last position only), no decoding."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), chunk):
        ids, mask = left_pad([prompts[i] for i in order[start:start + chunk]], pad)
        model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), logits_to_keep=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--data", default=None, help="SQuAD v1.1 file; default: the packaged 54-paragraph article")
    args = parser.parse_args()

    model, tokenizer = load_model(None)
    compiled = load_spec("squad-seed", {"data.path": args.data} if args.data else {})
    samples = load_task_samples(compiled, resolve_data_path(compiled.spec))[:args.limit]
    task = SpecTask(compiled, samples, tokenizer)
    prompts = [tokenizer(task.prompt(s), add_special_tokens=False).input_ids for s in samples]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    config = GenerationConfig(max_new_tokens=20, do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad)
    settings = GenerationSettings()
    n, tokens = len(prompts), sum(map(len, prompts))
    print(f"embedded default, {n} SQuAD prompts ({tokens} tokens), float32, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; keeptune settings {settings}")

    times: dict[str, list[float]] = {k: [] for k in ("batch-1 generate", "HF generate, batches of 8",
                                                     "keeptune", "prefill batch-1", "prefill chunks of 8")}
    with torch.inference_mode():
        for repeat in range(args.repeats):
            t, reference = timed(lambda: hf_generate(model, prompts, config, 1, pad))
            times["batch-1 generate"].append(t)
            t, hf8 = timed(lambda: hf_generate(model, prompts, config, 8, pad))
            times["HF generate, batches of 8"].append(t)
            t, ours = timed(lambda: keeptune_generate(model, prompts, settings, [eos], pad))
            times["keeptune"].append(t)
            times["prefill batch-1"].append(timed(lambda: prefill(model, prompts, 1, pad))[0])
            times["prefill chunks of 8"].append(timed(lambda: prefill(model, prompts, 8, pad))[0])
            same = sum(a == b for a, b in zip(ours, reference))
            same8 = sum(a == b for a, b in zip(hf8, reference))
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items())
                  + f"; identical to batch-1: keeptune {same}/{n}, HF batches of 8 {same8}/{n}", flush=True)

    median = {k: statistics.median(v) for k, v in times.items()}
    base, ours = median["batch-1 generate"], median["keeptune"]
    print(f"\nmedians over {args.repeats} repeats:")
    for name, seconds in median.items():
        print(f"  {name:28s} {seconds:7.2f} s  {n / seconds:6.2f} samples/s  {base / seconds:5.2f}x batch-1")
    bound = median["prefill batch-1"]
    print(f"keeptune vs batch-1 generate: {base / ours:.2f}x; identical outputs: {same}/{n}")
    print(f"keeptune vs prefill bound (batch-1 prefill {bound:.2f} s): {ours / bound:.2f}x the bound "
          f"({100 * (ours / bound - 1):+.0f}%); vs its own chunked prefill: {ours / median['prefill chunks of 8']:.2f}x")
    sys.exit(0 if same == n else 1)


if __name__ == "__main__":
    main()
