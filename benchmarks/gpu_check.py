"""Every GPU path of keeptune in one command, on a Llama-3-8B-shaped model with random weights (nothing downloaded).

    .venv/bin/python benchmarks/gpu_check.py                       # llama3-8b shape, bfloat16, cuda (sized for 8 min)
    .venv/bin/python benchmarks/gpu_check.py --shape tiny --device cpu    # the same checks in under a minute

It needs a CUDA build of torch for --device cuda (docs/install.md: TORCH_SPEC). It builds the model from
keeptune's Llama-3-8B configuration (keeptune.model.params.ARCHITECTURES; --shape tiny: 2 layers of width 64) with
random weights in --dtype, and a word-level tokenizer over the texts it uses (a word and a punctuation run are a
token each, about as many tokens as a BPE tokenizer gives English), and then measures:

1. evaluation: keeptune's engine (keeptune.evaluate.engine.evaluate, the squad-seed task: prompts, decoding,
   post-processing, metrics, predictions.jsonl) on --prompts SQuAD prompts (the packaged article's 54 seed-protocol
   prompts, cycled) against Hugging Face `generate` on left-padded, length-sorted batches of the same size (64);
   samples/s of each (generation only, a warm-up excluded), and how many outputs are identical: in bfloat16 the two
   batch the prompts differently, so a near-tie of random weights' flat logits may resolve the other way; so the
   first --exact prompts (256) are compared again in float32 (the model converted in place, then back);
2. LoRA training: the seed's adapter (q_proj, v_proj, rank 8), batch 8, seq_len 256, the same generated math
   records, one epoch of --steps steps: keeptune's loop (keeptune.train.loop.train) against Hugging Face `Trainer`
   with PEFT (bf16 autocast for a bfloat16 model); non-padding tokens/s over the steps after the first;
3. peak GPU memory of each of those (CPU: the process's peak RSS so far);
4. a 2-step `keeptune run` (baseline, training, checkpoint evaluations, gate, report) on a small real model on the
   device: the embedded SmolLM2-135M-Instruct (--shape tiny: a tiny random model saved to disk), with 16 SQuAD
   samples and 8 held-out problems.

It prints each phase as it goes and, at the end, a markdown table (device, torch, flags, then one line per
measurement) ready for docs/experiments.md; --json PATH also writes the numbers. Exit status 1 when a step
fails (the run, or an exception); the identical counts are reported, not judged.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

BATCH, SEQ_LEN, LR, SEED = 8, 256, 1e-3, 0
EVAL_BATCH = 64  # keeptune's decode batch (GenerationSettings.batch_size) and Hugging Face's batch
TINY = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 2048}
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0-3: the model's bos 1, eos 2, pad 3


# --- the machine --------------------------------------------------------------------------------------

def environment(device: torch.device) -> dict:
    """The device's name, torch's version and the flags that decide speed."""
    from keeptune.train.precision import native_bf16

    info = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu": cpu_name(), "cpu capability": torch.backends.cpu.get_cpu_capability(),
            "cpu native bf16": native_bf16(torch.device("cpu"))}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        info |= {"device": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                 "compute capability": f"{major}.{minor}", "bf16 supported": torch.cuda.is_bf16_supported(),
                 "tf32 matmul": torch.backends.cuda.matmul.allow_tf32, "tf32 cudnn": torch.backends.cudnn.allow_tf32,
                 "sdpa flash": torch.backends.cuda.flash_sdp_enabled(),
                 "sdpa mem-efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                 "memory GiB": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)}
    else:
        info["device"] = f"CPU: {info['cpu']}"
    return info


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Peak:
    """Peak memory of a phase: torch's peak allocated on a GPU (reset at the start), the process's peak RSS on a
    CPU (it cannot be reset, so it is the peak so far)."""

    def __init__(self, device: torch.device):
        self.device, self.gib = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.gib = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:
            self.gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# --- the tokenizer, the model, the data ------------------------------------------------------------------

def word_tokenizer(texts: list[str]):
    """A word-level tokenizer over `texts`: each word and each punctuation run is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Whitespace()
    words = sorted({w for text in texts for w, _ in split.pre_tokenize_str(text)})
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + words)}, unk_token="<unk>"))
    backend.pre_tokenizer = split
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def build_model(shape: str, vocab: int, device: torch.device, dtype: torch.dtype):
    """A Llama of the shape with random weights (seeded), on the device, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from keeptune.model.params import ARCHITECTURES

    fields = dict(ARCHITECTURES["llama3-8b"]) if shape == "llama3-8b" else {**TINY, "vocab_size": vocab}
    config = LlamaConfig(**(fields | {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}))
    torch.manual_seed(SEED)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


def squad_task(n: int):
    """The squad-seed task over n samples: the packaged article's 54 prompts, cycled, each with its own id."""
    import dataclasses

    from keeptune.evaluate.samples import load_task_samples, resolve_data_path
    from keeptune.evaluate.spec import load_spec
    from keeptune.evaluate.task import SpecTask

    compiled = load_spec("squad-seed")
    base = load_task_samples(compiled, resolve_data_path(compiled.spec))
    samples = [dataclasses.replace(base[i % len(base)], id=f"{base[i % len(base)].id}#{i // len(base)}")
               for i in range(n)]
    return SpecTask(compiled, samples)


def training_records(folder: Path, samples: int) -> Path:
    """Generated math records (easy templates, worked answers, the math prompt), as benchmarks/train_lora.py."""
    from keeptune.core.io import write_jsonl
    from keeptune.data.math.build import build_records
    from keeptune.data.math.generate import generate_pairs

    pairs = (pair for _, pair in generate_pairs(20 * samples, SEED, None, "real"))
    path = folder / "train.jsonl"
    write_jsonl(path, build_records(pairs, "easy", samples, cot=True, prompt="math", seed=SEED))
    return path


def record_texts(path: Path) -> list[str]:
    return [m["value"] for line in path.read_text(encoding="utf-8").splitlines()
            for m in json.loads(line)["conversations"]]


# --- 1. evaluation -------------------------------------------------------------------------------------------

def hf_generate(model, prompts: list[list[int]], config, pad: int) -> list[list[int]]:
    """Hugging Face `generate` over length-sorted, left-padded batches; the new tokens up to EOS."""
    from keeptune.evaluate.generation import left_pad

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results, eos = {}, set(config.eos_token_id)
    for start in range(0, len(order), EVAL_BATCH):
        group = order[start:start + EVAL_BATCH]
        ids, mask = left_pad([prompts[i] for i in group], pad)
        out = model.generate(ids.to(model.device), attention_mask=mask.to(model.device), generation_config=config)
        for row, i in enumerate(group):
            tokens = out[row, ids.shape[1]:].tolist()
            stop = next((k for k, t in enumerate(tokens) if t in eos), None)
            results[i] = tokens if stop is None else tokens[:stop + 1]
    return [results[i] for i in range(len(prompts))]


class Prompts:
    """The squad-seed task over n prompts, encoded as the engine encodes them, and the decoding settings."""

    def __init__(self, model, tokenizer, n: int):
        from transformers import GenerationConfig

        from keeptune.evaluate.engine import eos_token_ids

        self.task = squad_task(n)
        self.task.tokenizer = tokenizer
        self.settings = self.task.settings(EVAL_BATCH)
        head = [tokenizer.bos_token_id] if self.task.add_bos else []
        self.ids = [head + tokenizer(self.task.prompt(s), add_special_tokens=False).input_ids
                    for s in self.task.samples]
        self.eos, self.pad = eos_token_ids(tokenizer, model), tokenizer.pad_token_id
        self.config = GenerationConfig(max_new_tokens=self.settings.max_new_tokens, do_sample=False, num_beams=1,
                                       eos_token_id=self.eos, pad_token_id=self.pad)

    def keeptune(self, model, ids: list[list[int]]) -> list[list[int]]:
        """keeptune's batched greedy decoding (the engine's), in prompt order."""
        from keeptune.evaluate.generation import generate

        results = {}
        for group in generate(model, ids, self.settings, self.eos, self.pad):
            results.update(group)
        return [results[i] for i in range(len(ids))]


def check_eval(model, tokenizer, n: int, out: Path) -> dict:
    """keeptune's engine and Hugging Face `generate` on the same prompts: samples/s, peaks, identical outputs."""
    from keeptune.evaluate.engine import evaluate

    p = Prompts(model, tokenizer, n)
    task, prompts, settings, config, pad = p.task, p.ids, p.settings, p.config, p.pad
    warm = prompts[:16]  # first-use costs (CUDA's, the kernels', the metrics' jieba dictionary) outside the timing
    p.keeptune(model, warm)
    hf_generate(model, warm, config, pad)
    task.score(task.samples[0], "")
    with Peak(model.device) as ours_peak:
        metrics = evaluate(task, model, tokenizer, out, settings, identity={"model": "random weights"})
    with Peak(model.device) as hf_peak, torch.inference_mode():
        started = time.perf_counter()
        theirs = hf_generate(model, prompts, config, pad)
        hf_seconds = time.perf_counter() - started
    raw = {r["id"]: r["raw"] for r in map(json.loads, (out / "predictions.jsonl").open(encoding="utf-8"))}
    same = sum(raw[s.id] == tokenizer.decode(t, skip_special_tokens=True) for s, t in zip(task.samples, theirs))
    return {"prompts": n, "prompt_tokens": sum(map(len, prompts)) / n, "new_tokens": settings.max_new_tokens,
            "keeptune_seconds": metrics["seconds"], "hf_seconds": hf_seconds,
            "keeptune_samples_per_s": n / metrics["seconds"], "hf_samples_per_s": n / hf_seconds,
            "identical": same, "keeptune_peak_gib": ours_peak.gib, "hf_peak_gib": hf_peak.gib}


# --- 2. LoRA training ----------------------------------------------------------------------------------------

def check_exact(model, tokenizer, n: int) -> dict:
    """The first n prompts in float32 (the model converted in place, and back): identical new tokens?"""
    dtype = model.dtype
    p = Prompts(model, tokenizer, n)
    model.float()
    with torch.inference_mode():
        ours, theirs = p.keeptune(model, p.ids), hf_generate(model, p.ids, p.config, p.pad)
    model.to(dtype)  # bfloat16 -> float32 -> bfloat16 gives back the same weights
    return {"prompts": n, "identical": sum(a == b for a, b in zip(ours, theirs))}


def train_keeptune(model, tokenizer, data: Path, source: Path, steps: int, out: Path) -> tuple[dict, object]:
    """keeptune's loop on `model` (LoRA applied in place); returns its numbers and the base model again."""
    from keeptune.train.config import Config, DataConfig, ModelConfig, TrainConfig
    from keeptune.train.loop import train

    config = Config(model=ModelConfig(source=str(source), device=str(model.device)),
                    data=DataConfig(path=str(data), seq_len=SEQ_LEN),
                    train=TrainConfig(max_steps=steps, global_batch=BATCH, micro_batch=BATCH, lr=LR, seed=SEED,
                                      checkpoints=1),
                    out=str(out))
    with Peak(model.device) as peak:
        result = train(config, model=model, tokenizer=tokenizer)
    log = [json.loads(line) for line in (out / "log.jsonl").open()]
    seconds = [r["tokens"] / r["tokens_per_s"] for r in log]
    numbers = {"tokens": sum(r["tokens"] for r in log), "step_tokens": [r["tokens"] for r in log],
               "step_seconds": seconds, "peak_gib": peak.gib}
    return numbers, result.model.unload()  # the LoRA layers out: the random base, for Trainer


def train_hf(model, tokenizer, data: Path, steps: int, out: Path) -> dict:
    """Hugging Face Trainer with PEFT's LoRA (keeptune's apply_lora: the same adapter) on the same records."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from keeptune.model.lora import LoraSettings, apply_lora
    from keeptune.train.records import encode, read_conversations

    samples = encode(read_conversations(data), tokenizer, "plain", SEQ_LEN).samples
    rows = [{"input_ids": s.tokens, "attention_mask": [1] * len(s.tokens), "labels": s.labels} for s in samples]
    peft_model = apply_lora(model, LoraSettings())
    peft_model.train()
    device = model.device

    class Timer(TrainerCallback):
        def __init__(self):
            self.seconds, self.started = [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the step's kernels done, as keeptune's loop waits for its loss
            self.seconds.append(time.perf_counter() - self.started)

    timer, pad = Timer(), DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    counted = []

    def collate(features):  # Trainer's standard collator, counting the real tokens it is given
        counted.append(sum(len(f["input_ids"]) for f in features))
        return pad(features)

    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=LR,
        adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, lr_scheduler_type="cosine", warmup_steps=1,
        max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[], seed=SEED, disable_tqdm=True,
        use_cpu=device.type == "cpu", dataloader_num_workers=0, bf16=model.dtype == torch.bfloat16)
    with Peak(device) as peak:
        Trainer(model=peft_model, args=args, train_dataset=rows, callbacks=[timer], data_collator=collate).train()
    return {"tokens": sum(counted[:steps]), "step_tokens": counted[:steps], "step_seconds": timer.seconds,
            "peak_gib": peak.gib}


def steady(numbers: dict) -> float:
    """Non-padding tokens/s over the steps after the first (the first pays for kernels' first use)."""
    tokens, seconds = numbers["step_tokens"][1:], numbers["step_seconds"][1:]
    return sum(tokens) / sum(seconds) if seconds else float("nan")


# --- 4. a keeptune run ----------------------------------------------------------------------------------------

def save_tiny_model(folder: Path, tokenizer) -> Path:
    """A tiny random Llama and the tokenizer, saved as a user's model folder (--shape tiny's run)."""
    model = build_model("tiny", len(tokenizer), torch.device("cpu"), torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def keeptune_run(source: Path | None, device: torch.device, out: Path) -> dict:
    """`keeptune run` for 2 steps in a process of its own; what its results.json says."""
    import yaml

    config = {"name": "gpu-check", "model": {"source": None if source is None else str(source), "device": str(device)},
              "original": [{"task": "squad-seed", "limit": 16}], "new_task": {"n": 32, "eval_n": 8},
              "train": {"max_steps": 2, "epochs": 1, "global_batch": BATCH, "micro_batch": 4, "checkpoints": 2},
              "tracking": {"every": 0}, "out": str(out / "run")}
    (out / "experiment.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    with open(out / "run.log", "w", encoding="utf-8") as log:
        code = subprocess.run([sys.executable, "-m", "keeptune", "run", str(out / "experiment.yaml")],
                              stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    text = (out / "run.log").read_text(encoding="utf-8", errors="replace")
    results = out / "run" / "results.json"
    if code or not results.is_file():
        return {"ok": False, "seconds": seconds, "log_tail": text[-3000:]}
    done = json.loads(results.read_text(encoding="utf-8"))
    return {"ok": f"on {device}" in text, "seconds": seconds, "results": str(results),
            "checkpoints": [e["step"] for e in done["checkpoints"]],
            "passing": sum(bool(e.get("passes_gate")) for e in done["checkpoints"])}


# --- the table ------------------------------------------------------------------------------------------------

def table(args, env: dict, ev: dict, exact: dict | None, ours: dict, hf: dict, run: dict) -> str:
    """The markdown table: the device, torch and the flags, then a line per measurement (FAILED and the error where
    a check raised)."""
    memory = "GPU peak allocated" if args.device.type == "cuda" else "peak RSS so far"
    flags = ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("device", "torch"))
    rows = [
        row("evaluation: squad-seed, samples/s", [ev], lambda: (
            f"{ev['keeptune_samples_per_s']:.2f}", f"{ev['hf_samples_per_s']:.2f}",
            f"{ev['keeptune_samples_per_s'] / ev['hf_samples_per_s']:.2f}x",
            f"{ev['prompts']} prompts of {ev['prompt_tokens']:.0f} tokens on average, {ev['new_tokens']} new; HF "
            f"`generate` in length-sorted batches of {EVAL_BATCH}; identical outputs {ev['identical']}/{ev['prompts']}"
            + (f" ({args.dtype})" if args.dtype != "float32" else "") + _exact(exact))),
        row(f"evaluation: {memory}, GiB", [ev], lambda: (
            f"{ev['keeptune_peak_gib']:.2f}", f"{ev['hf_peak_gib']:.2f}",
            f"{ev['keeptune_peak_gib'] / ev['hf_peak_gib']:.2f}x", "model weights included")),
        row("LoRA training: non-pad tokens/s", [ours, hf], lambda: (
            f"{steady(ours):.0f}", f"{steady(hf):.0f}", f"{steady(ours) / steady(hf):.2f}x",
            f"q_proj,v_proj rank 8, batch {BATCH}, seq_len {SEQ_LEN}, steps 2-{args.steps} of {args.steps} timed "
            f"({ours['tokens']} and {hf['tokens']} tokens in the epoch); HF: Trainer + PEFT")),
        row(f"LoRA training: {memory}, GiB", [ours, hf], lambda: (
            f"{ours['peak_gib']:.2f}", f"{hf['peak_gib']:.2f}", f"{ours['peak_gib'] / hf['peak_gib']:.2f}x",
            "model weights included")),
        row(f"`keeptune run`, 2 steps, {run_model_name(args)}", [run], lambda: (
            f"{run['seconds']:.0f} s", "", "",
            f"ok: checkpoints at steps {run['checkpoints']}, {run['passing']} pass the gate" if run["ok"]
            else "FAILED (the tail of its log is printed above)")),
    ]
    lines = [f"gpu_check: {args.shape} shape, {args.dtype}, on {env['device']}; torch {env['torch']}", "",
             f"Flags: {flags}.", "", "| measurement | keeptune | Hugging Face | keeptune / HF | notes |",
             "| --- | ---: | ---: | ---: | --- |"]
    lines += [f"| {' | '.join(cells)} |" for cells in rows]
    return "\n".join(lines)


def row(name: str, results: list[dict], cells) -> tuple[str, ...]:
    """A table line: the name and the cells, or FAILED and the first error of `results`."""
    errors = [r["error"] for r in results if "error" in r]
    return (name, "FAILED", "", "", errors[0]) if errors else (name, *cells())


def _exact(exact: dict | None) -> str:
    if exact is None:
        return ""
    if "error" in exact:
        return f"; the float32 recheck FAILED: {exact['error']}"
    return f", {exact['identical']}/{exact['prompts']} in float32"


def run_model_name(args) -> str:
    return "SmolLM2-135M-Instruct" if args.shape == "llama3-8b" else "a tiny random Llama"


# --- main -------------------------------------------------------------------------------------------------------

def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("tiny", "llama3-8b"), default="llama3-8b")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--prompts", type=int, help="SQuAD-shaped prompts to evaluate (default 2067; tiny: 64)")
    parser.add_argument("--exact", type=int, help="with --dtype bfloat16: compare this many prompts again in float32 "
                                                  "(default 256; tiny: 16; 0: no)")
    parser.add_argument("--steps", type=int, help="LoRA training steps, one epoch (default 10; tiny: 3)")
    parser.add_argument("--out", type=Path, help="keep the outputs here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    big = args.shape == "llama3-8b"
    args.prompts = args.prompts or (2067 if big else 64)
    args.exact = (256 if big else 16) if args.exact is None else args.exact
    args.steps = args.steps or (10 if big else 3)
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device; install a CUDA "
                     "build (docs/install.md, TORCH_SPEC) or pass --device cpu --shape tiny")
    if args.prompts < 16 or args.steps < 2:
        parser.error("--prompts must be at least 16 and --steps at least 2")
    return args


def phase(name: str, started: float) -> None:
    print(f"== {name} ({time.perf_counter() - started:.0f} s since the start)", flush=True)


def attempt(fn, *args):
    """One check's result, or {"error": ...} after its traceback is printed: a GPU session gets the outcome of
    every check in one run, whichever fails."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - reported in the table; the other checks still run
        traceback.print_exc()
        first = str(err).splitlines()[0] if str(err) else ""
        return {"error": f"{type(err).__name__}: {first}"[:300]}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        env = environment(args.device)
        print(json.dumps(env), flush=True)
        data = training_records(out, args.steps * BATCH)  # one epoch: every record once, in both loops
        tokenizer = word_tokenizer([squad_task(54).prompt(s) for s in squad_task(54).samples] + record_texts(data))
        phase(f"building the {args.shape} model ({args.dtype}, random weights)", started)
        dtype = getattr(torch, args.dtype)
        model = build_model(args.shape, len(tokenizer), args.device, dtype)
        source = out / "model-config"
        model.config.save_pretrained(source)  # what keeptune's target check reads; the weights stay in memory
        phase("1. evaluation: keeptune's engine, then Hugging Face generate", started)
        ev = attempt(check_eval, model, tokenizer, args.prompts, out / "eval")
        exact = None
        if args.dtype != "float32" and args.exact:
            phase(f"1. the first {args.exact} prompts again, in float32", started)
            exact = attempt(check_exact, model, tokenizer, min(args.exact, args.prompts))
        phase("2. LoRA training: keeptune's loop", started)
        ours = attempt(train_keeptune, model, tokenizer, data, source, args.steps, out / "train-keeptune")
        if isinstance(ours, tuple):
            ours, model = ours
        else:  # LoRA may be half applied: a fresh base for the other loop
            del model
            model = build_model(args.shape, len(tokenizer), args.device, dtype)
        phase("2. LoRA training: Hugging Face Trainer + PEFT", started)
        hf = attempt(train_hf, model, tokenizer, data, args.steps, out / "train-hf")
        del model
        if args.device.type == "cuda":
            torch.cuda.empty_cache()
        phase("4. keeptune run, 2 steps", started)
        run_model = None if args.shape == "llama3-8b" else save_tiny_model(out / "tiny-model", tokenizer)
        run = attempt(keeptune_run, run_model, args.device, out)
        if not run.get("ok", True):
            print(run.get("log_tail", ""), file=sys.stderr)
        phase("done", started)
        text = table(args, env, ev, exact, ours, hf, run)
        print("\n" + text)
        if args.json:
            numbers = {"environment": env, "eval": ev, "exact": exact, "keeptune_train": ours, "hf_train": hf,
                       "run": run, "seconds": time.perf_counter() - started, "table": text}
            args.json.write_text(json.dumps(numbers, indent=1), encoding="utf-8")
    failed = [r for r in (ev, exact or {}, ours, hf, run) if "error" in r] or not run.get("ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
