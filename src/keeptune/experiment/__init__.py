"""One experiment end to end: baseline, LoRA fine-tuning, every checkpoint evaluated, gate, score, report."""
