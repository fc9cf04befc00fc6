"""Batched greedy generation that matches batch-1 `generate` token for token.

Where the time goes on a CPU (SmolLM2-135M, SQuAD prompts of ~190 tokens, 20 new
tokens): the prefill is compute-bound and costs the same per token whatever the
batch, while a decode step reads every weight once (~540 MB in float32), so it
costs about as much for 1 row as for 32. Batch-1 decoding therefore spends
20 x (weight read) per sample; decoding 32 rows together spends it once per 32.

So: sort prompts by length, prefill them in small chunks (`prefill_batch_size`,
little left-padding because neighbours have similar lengths), merge the chunks'
KV caches into one decode batch of up to `batch_size` rows (left-padded with
masked zeros), and drop rows from the batch as they reach EOS.

Only transformers' public cache API is used: a `DynamicCache` per prefill chunk,
and for decoding a `StaticCache` with room for the new tokens, so each decode
step writes in place where a `DynamicCache` would copy the whole cache
(torch.cat) every step. The cache goes in as `cache=` where the model takes it
(transformers 5.24 renamed `past_key_values`), else as `past_key_values=`.

Exactness: padding only adds masked positions, whose softmax weight is exactly
zero, and position ids come from each row's own token count, so every row sees
the computation of a batch-1 run; tests check the tokens are identical.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import DynamicCache, StaticCache


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy decoding settings; the defaults are the seed protocol's."""

    max_new_tokens: int = 20
    """Tokens to generate at most (the seed: 20)."""
    min_new_tokens: int | None = None
    """Suppress EOS before this many new tokens (the seed: unset)."""
    batch_size: int = 64
    """Rows decoded together; larger amortises the weight read of each step."""
    prefill_batch_size: int = 8
    """Prompts prefilled together; small keeps padding waste low."""

    def describe(self, eos_token_ids: Sequence[int], pad_token_id: int) -> dict:
        """The effective generation config, printed before scores as the seed did."""
        return {
            "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0, "top_k": 0,
            "top_p": 1.0, "temperature": 1.0, "use_cache": True,
            **asdict(self), "eos_token_id": list(eos_token_ids), "pad_token_id": pad_token_id,
        }


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.as_tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position of every token counted over real tokens only (pads get 0)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _cache_keyword(model) -> str:
    """The forward keyword that takes the KV cache: `cache` in newer transformers,
    `past_key_values` (deprecated there) in older ones."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model passes it through
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _merge_caches(model, parts: list[tuple[DynamicCache, torch.Tensor]], room: int) -> tuple[StaticCache, torch.Tensor]:
    """Stack the prefill chunks' caches into one decode batch.

    Each chunk is left-padded (masked zeros) to the longest chunk, and every layer
    gets `room` free slots for the tokens still to come. Each prefill layer is released
    as soon as it is copied, so the two caches are never held whole at once.
    """
    width = max(mask.shape[1] for _, mask in parts)
    rows = sum(mask.shape[0] for _, mask in parts)
    cache = StaticCache(config=model.config, max_cache_len=width + room)
    for i in range(len(parts[0][0].layers)):
        _, h, _, d = parts[0][0].layers[i].keys.shape
        k = parts[0][0].layers[i].keys.new_zeros((rows, h, width, d))
        v = torch.zeros_like(k)
        row = 0
        for part, mask in parts:
            n, t = mask.shape
            k[row:row + n, :, width - t:] = part.layers[i].keys
            v[row:row + n, :, width - t:] = part.layers[i].values
            part.layers[i].keys = part.layers[i].values = None  # copied: release it
            row += n
        cache.update(k, v, i)
    masks = [torch.nn.functional.pad(mask, (width - mask.shape[1], 0)) for _, mask in parts]
    return cache, torch.cat(masks)


def _select_rows(model, cache: StaticCache, keep: torch.Tensor, length: int, room: int) -> StaticCache:
    """The decode cache of the rows `keep` only: its first `length` slots, and `room` free ones.
    Each old layer is released once its rows are copied (peak: the old cache and one new layer)."""
    selected = StaticCache(config=model.config, max_cache_len=length + room)
    for i, layer in enumerate(cache.layers):
        keys, values = layer.keys[keep, :, :length], layer.values[keep, :, :length]
        layer.keys = layer.values = None
        selected.update(keys, values, i)
    return selected


def _next_tokens(logits: torch.Tensor, step: int, settings: GenerationSettings, eos: torch.Tensor) -> torch.Tensor:
    logits = logits[:, -1, :]
    if settings.min_new_tokens and step < settings.min_new_tokens:
        logits = logits.clone()
        logits[:, eos] = float("-inf")
    return logits.argmax(-1)


@torch.inference_mode()
def generate_group(model, prompts: Sequence[Sequence[int]], settings: GenerationSettings,
                   eos_token_ids: Sequence[int], pad_token_id: int,
                   progress: Callable[[str], None] = lambda status: None) -> list[list[int]]:
    """Greedy-decode one group of prompts; returns the new tokens of each, EOS included."""
    device = model.device
    eos = torch.as_tensor(list(eos_token_ids), device=device)
    keyword = _cache_keyword(model)
    parts, first = [], []
    for start in range(0, len(prompts), settings.prefill_batch_size):
        progress(f"prefill {start}/{len(prompts)}")
        ids, mask = left_pad(prompts[start:start + settings.prefill_batch_size], pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask),
                    use_cache=True, logits_to_keep=1, **{keyword: cache})
        first.append(_next_tokens(out.logits, 0, settings, eos))
        parts.append((cache, mask))
    cache, mask = _merge_caches(model, parts, room=settings.max_new_tokens)
    del parts  # the prefill caches, now copied into the decode cache
    token = torch.cat(first)
    rows = torch.arange(len(prompts), device=device)  # original prompt of each batch row
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    outputs: list[list[int]] = [[] for _ in prompts]
    for step in range(1, settings.max_new_tokens + 1):
        for row, tok, finished in zip(rows.tolist(), token.tolist(), done.tolist()):
            if not finished:
                outputs[row].append(tok)
        done |= torch.isin(token, eos)
        if step == settings.max_new_tokens or done.all():
            break
        if done.sum() * 4 >= len(rows):  # a quarter finished: drop them, later steps cost less
            keep = (~done).nonzero().squeeze(-1)
            cache = _select_rows(model, cache, keep, mask.shape[1], settings.max_new_tokens - step + 1)
            rows, token, mask, done = rows[keep], token[keep], mask[keep], done[keep]
        progress(f"decode {step}/{settings.max_new_tokens}, {len(rows)} rows")
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                    use_cache=True, **{keyword: cache})
        token = _next_tokens(out.logits, step, settings, eos)
    return outputs


def generate(model, prompts: Sequence[Sequence[int]], settings: GenerationSettings,
             eos_token_ids: Sequence[int], pad_token_id: int,
             progress: Callable[[str], None] = lambda status: None) -> Iterator[list[tuple[int, list[int]]]]:
    """Greedy-decode every prompt; yields, group by group, (prompt index, new tokens).

    Groups are formed longest-first so the peak memory shows at once and
    neighbours in a group have similar lengths.
    """
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), settings.batch_size):
        group = order[start:start + settings.batch_size]
        tokens = generate_group(model, [prompts[i] for i in group], settings, eos_token_ids, pad_token_id, progress)
        yield list(zip(group, tokens))
