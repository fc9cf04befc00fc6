"""A tiny random Llama and a byte-level tokenizer: real Hugging Face objects,
small enough that a test builds, saves and runs them in well under a second."""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """One token per UTF-8 byte (any text, Chinese included) plus 4 special tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")


def chat_tokenizer() -> PreTrainedTokenizerFast:
    """The byte tokenizer with a minimal chat template: `<role>content</s>` per turn, `<assistant>` to answer."""
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    return tokenizer


def tiny_llama(vocab_size: int = 260, seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A 2-layer Llama with GQA (4 heads, 2 KV heads), random weights, float32, eval mode."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3, **overrides)
    return LlamaForCausalLM(config).eval()


def save_tiny(directory: Path, **overrides) -> Path:
    """A tiny model directory as a user would have it: safetensors, config, tokenizer."""
    tiny_llama(**overrides).save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    return directory
