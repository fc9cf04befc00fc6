"""LoRA training speed: keeptune's loop in bf16 and float32 against Hugging Face `Trainer` + PEFT.

    .venv/bin/python benchmarks/train_lora.py [--steps 12] [--repeats 3] [--variants ...]

Four variants: keeptune with train.precision=bf16 and =fp32, Trainer with its defaults
(float32) and with `bf16=True` (autocast over float32 weights). All train the embedded
default (SmolLM2-135M-Instruct, CPU) with LoRA
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
non-padding tokens only. Prints the median of each and the ratios.

The bf16 matmul peak of this machine is measured in the same run (the best median
GFLOP/s of a few large bfloat16 products on all threads), and keeptune bf16's
achieved rate is its counted FLOPs (torch's FlopCounterMode over a second, untimed
run of the same steps: matrix products and attention, forward and backward) over
its timed seconds.
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
    from keeptune.core.io import write_jsonl
    from keeptune.data.math.build import build_records
    from keeptune.data.math.generate import generate_pairs

    pairs = (pair for _, pair in generate_pairs(20 * samples, SEED, None, "real"))
    path = folder / "train.jsonl"
    write_jsonl(path, build_records(pairs, "easy", samples, cot=True, prompt="math", seed=SEED))
    return path


def run_keeptune(data: Path, steps: int, out: Path, precision: str, count_flops: bool = False) -> dict:
    from keeptune.train.config import Config, DataConfig, TrainConfig
    from keeptune.train.loop import train

    def config(folder: Path) -> Config:
        return Config(data=DataConfig(path=str(data), seq_len=SEQ_LEN),
                      train=TrainConfig(max_steps=steps, global_batch=BATCH, micro_batch=BATCH, lr=LR, seed=SEED,
                                        checkpoints=1, precision=precision),
                      out=str(folder))

    train(config(out))
    log = [json.loads(line) for line in (out / "log.jsonl").open()]
    tokens = sum(r["tokens"] for r in log)
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in log)
    result = {"tokens": tokens, "seconds": seconds, "mean_loss": sum(r["loss"] for r in log) / len(log)}
    if count_flops:  # the same steps again, untimed: FlopCounterMode's dispatch would slow the timed ones
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            train(config(out.parent / "counted"))
        result["flops"] = counter.get_total_flops()
    return result


def run_trainer(data: Path, steps: int, out: Path, bf16: bool) -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from keeptune.model.load import load_model
    from keeptune.model.lora import LoraSettings, apply_lora
    from keeptune.train.records import encode, read_conversations

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
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, bf16=bf16)
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[timer],
                      data_collator=collate)
    trainer.train()
    summary = trainer.state.log_history[-1]  # transformers 5 logs the run's mean loss as train_loss
    return {"tokens": sum(counted[:steps]), "seconds": timer.seconds, "mean_loss": summary["train_loss"]}


VARIANTS = ("keeptune-bf16", "keeptune-fp32", "trainer-fp32", "trainer-bf16")


def child(variant: str, data: Path, steps: int) -> None:
    with tempfile.TemporaryDirectory() as out:
        run = Path(out) / "run"
        if variant.startswith("keeptune"):
            result = run_keeptune(data, steps, run, variant.split("-")[1], count_flops=variant == "keeptune-bf16")
        else:
            result = run_trainer(data, steps, run, bf16=variant == "trainer-bf16")
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


def matmul_peak(repeats: int = 20) -> tuple[float, str]:
    """The best median GFLOP/s of large bfloat16 products on all of torch's threads, and its shape."""
    import torch

    best = (0.0, "")
    for m, k, n in ((512, 576, 1536), (2048, 576, 1536), (2048, 2048, 2048), (4096, 4096, 4096)):
        a, b = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - started)
        rate = 2 * m * k * n / statistics.median(times) / 1e9
        best = max(best, (rate, f"{m}x{k} @ {k}x{n}"))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.data, args.steps)

    import torch

    from keeptune.train.precision import native_bf16

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {native_bf16(torch.device('cpu'))}")
    with tempfile.TemporaryDirectory() as folder:
        data = make_data(Path(folder), args.steps * BATCH)
        results: dict[str, list[dict]] = {v: [] for v in args.variants}
        for repeat in range(args.repeats):
            for variant in results:
                result = measure(variant, data, args.steps)
                results[variant].append(result)
                print(f"repeat {repeat + 1} {variant:13s}: {result['tokens_per_s']:7.1f} non-pad tokens/s, "
                      f"peak RSS {result['peak_rss_mb']:.0f} MB, mean loss {result['mean_loss']:.4f}", flush=True)
    peak, shape = matmul_peak()
    median = {v: statistics.median(r["tokens_per_s"] for r in rs) for v, rs in results.items()}
    memory = {v: statistics.median(r["peak_rss_mb"] for r in rs) for v, rs in results.items()}
    print(f"\n{args.steps} steps x batch {BATCH}, medians over {args.repeats} repeats:")
    for variant in results:
        print(f"  {variant:13s} {median[variant]:7.1f} non-pad tokens/s, peak RSS {memory[variant]:.0f} MB")
    for a, b in (("keeptune-bf16", "keeptune-fp32"), ("keeptune-bf16", "trainer-fp32"),
                 ("keeptune-bf16", "trainer-bf16"), ("keeptune-fp32", "trainer-fp32"),
                 ("trainer-bf16", "trainer-fp32")):
        if a in median and b in median:
            print(f"{a} / {b}: {median[a] / median[b]:.2f}x throughput, {memory[a] / memory[b]:.2f}x peak memory")
    print(f"bf16 matmul peak of this CPU: {peak:.0f} GFLOP/s ({shape}, median of 20)")
    if "keeptune-bf16" in results:
        rates = [r["flops"] / r["seconds"] / 1e9 for r in results["keeptune-bf16"]]
        achieved = statistics.median(rates)
        print(f"keeptune bf16 reaches {achieved:.0f} GFLOP/s of counted matmul/attention work: "
              f"{achieved / peak:.1%} of that peak")


if __name__ == "__main__":
    main()
