"""LoRA training speed: keeptune's loop against Hugging Face `Trainer` + PEFT.

    .venv/bin/python benchmarks/train_lora.py [--steps 12] [--repeats 3]

Both train the embedded default (SmolLM2-135M-Instruct, float32, CPU) with LoRA
rank 8 on q_proj/v_proj for the same number of optimizer steps on the same
generated data (easy templates, worked-step answers, math prompt): the same
token ids and labels, batch 8, seq_len 256, AdamW lr 1e-3 betas (0.9, 0.95),
cosine schedule with 3% warm-up, gradient clipping 1.0; keeptune with its defaults
(length_pool 8, the output head only at label positions). Trainer gets its
standard collator (DataCollatorForSeq2Seq: pads each batch to its longest
sample) and default settings otherwise.

Each run is a fresh subprocess, so its peak memory (max RSS) is its own. Only
the optimizer steps are timed (model loading and setup excluded, for both):
keeptune from its per-step log, Trainer from a callback. Throughput counts
non-padding tokens only. Prints the median of each and the ratio.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, SEQ_LEN, LR, SEED = 8, 256, 1e-3, 0


def make_data(folder: Path, samples: int) -> Path:
    from keeptune.data.math.build import build_records
    from keeptune.data.math.generate import generate_pairs
    from keeptune.io import write_jsonl

    pairs = (pair for _, pair in generate_pairs(20 * samples, SEED, None, "real"))
    path = folder / "train.jsonl"
    write_jsonl(path, build_records(pairs, "easy", samples, cot=True, prompt="math", seed=SEED))
    return path


def run_keeptune(data: Path, steps: int, out: Path) -> dict:
    from keeptune.train.config import Config, DataConfig, TrainConfig
    from keeptune.train.loop import train

    config = Config(data=DataConfig(path=str(data), seq_len=SEQ_LEN),
                    train=TrainConfig(max_steps=steps, global_batch=BATCH, micro_batch=BATCH, lr=LR, seed=SEED,
                                      checkpoints=1),
                    out=str(out))
    train(config)
    log = [json.loads(line) for line in (out / "log.jsonl").open()]
    tokens = sum(r["tokens"] for r in log)
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in log)
    return {"tokens": tokens, "seconds": seconds, "mean_loss": sum(r["loss"] for r in log) / len(log)}


def run_trainer(data: Path, steps: int, out: Path) -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from keeptune.model.load import load_model
    from keeptune.model.lora import LoraSettings, apply_lora
    from keeptune.train.data import encode, read_conversations

    model, tokenizer = load_model(None)
    samples = encode(read_conversations(data), tokenizer, "plain", SEQ_LEN).samples
    rows = [{"input_ids": s.tokens, "attention_mask": [1] * len(s.tokens), "labels": s.labels} for s in samples]
    model = apply_lora(model, LoraSettings())
    model.train()

    class Timer(TrainerCallback):
        def __init__(self):
            self.seconds, self.started = 0.0, 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self.started

    timer, pad = Timer(), DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    counted = []

    def collate(features):  # Trainer's standard collator, counting the real tokens it is given
        counted.append(sum(len(f["input_ids"]) for f in features))
        return pad(features)

    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=LR,
        adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, weight_decay=0.0, lr_scheduler_type="cosine",
        warmup_steps=math.ceil(0.03 * steps), max_grad_norm=1.0,  # keeptune's warm-up rounding
        logging_steps=1, save_strategy="no", report_to=[], seed=SEED,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[timer],
                      data_collator=collate)
    trainer.train()
    summary = trainer.state.log_history[-1]  # transformers 5 logs the run's mean loss as train_loss
    return {"tokens": sum(counted[:steps]), "seconds": timer.seconds, "mean_loss": summary["train_loss"]}


def child(variant: str, data: Path, steps: int) -> None:
    with tempfile.TemporaryDirectory() as out:
        result = (run_keeptune if variant == "keeptune" else run_trainer)(data, steps, Path(out) / "run")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def measure(variant: str, data: Path, steps: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", variant, "--data", str(data), "--steps", str(steps)],
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=("keeptune", "trainer"))
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.data, args.steps)

    with tempfile.TemporaryDirectory() as folder:
        data = make_data(Path(folder), args.steps * BATCH)
        results: dict[str, list[dict]] = {"keeptune": [], "trainer": []}
        for repeat in range(args.repeats):
            for variant in results:
                result = measure(variant, data, args.steps)
                results[variant].append(result)
                print(f"repeat {repeat + 1} {variant:8s}: {result['tokens_per_s']:7.1f} non-pad tokens/s, "
                      f"peak RSS {result['peak_rss_mb']:.0f} MB, mean loss {result['mean_loss']:.4f}", flush=True)
    median = {v: statistics.median(r["tokens_per_s"] for r in rs) for v, rs in results.items()}
    memory = {v: statistics.median(r["peak_rss_mb"] for r in rs) for v, rs in results.items()}
    print(f"\n{args.steps} steps x batch {BATCH}, medians over {args.repeats} repeats:")
    for variant in results:
        print(f"  {variant:8s} {median[variant]:7.1f} non-pad tokens/s, peak RSS {memory[variant]:.0f} MB")
    print(f"keeptune / Trainer throughput: {median['keeptune'] / median['trainer']:.2f}x; "
          f"peak memory {memory['keeptune'] / memory['trainer']:.2f}x")


if __name__ == "__main__":
    main()
