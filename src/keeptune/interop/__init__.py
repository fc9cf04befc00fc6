"""MindSpore and MindFormers interop: `keeptune params`, `keeptune import` and `keeptune export`.

- `mindspore_ckpt`: MindSpore `.ckpt` files read and written without MindSpore.
- `names`: Llama weight names Hugging Face <-> MindFormers, LoRA names PEFT <-> mindpet.
- `config`: a checkpoint's Llama configuration (config.json, MindFormers YAML, llama3-8b) and shapes.
- `hf_dir`: Hugging Face model directories read and written tensor by tensor.
- `imports`: a MindFormers checkpoint into a Hugging Face model or a PEFT adapter.
- `export`: a PEFT adapter or a Hugging Face Llama into MindFormers tensors.
- `commands`: the three commands.

docs/mindformers.md is the user's reference.
"""
