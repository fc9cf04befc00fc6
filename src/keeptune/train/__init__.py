"""LoRA fine-tuning: config (dataclasses, YAML) -> data (tokens, labels, batches) -> loop (with
checkpoint and distributed) -> commands (`keeptune train`, `keeptune merge`)."""
