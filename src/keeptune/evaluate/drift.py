"""How far the model being trained has drifted from its base: the KL divergence between the base model's and the
tuned model's next-token distributions on a fixed set of held-out texts, a cheap forgetting signal that needs no
generation and no gate data (Shenfeld et al. 2025, "RL's Razor", found forgetting to track it on the new task's
data).

The base model is the same object with its LoRA adapter switched off (PEFT's `disable_adapter`), so no second
copy is held. For each text and each position t that predicts a next token:

    KL_t = sum_v p_base(v | x<t) * (log p_base(v | x<t) - log p_tuned(v | x<t))

and the figure is the mean of KL_t over every such position of every text (nats per token), both
distributions in float32 whatever the model computes in. 0 at step 0 (the adapter starts at zero).
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch


def peft_of(model):
    """The PEFT model inside a DDP wrapper (or the model itself); None when it has no adapter to switch off."""
    inner = getattr(model, "module", model)
    return inner if hasattr(inner, "disable_adapter") else None


def _padded(batch: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, tokens in enumerate(batch):  # right padding: a causal model's earlier positions never see it
        ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, :len(tokens)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def token_kl(model, texts: Sequence[Sequence[int]], pad: int, batch_size: int = 8) -> Optional[float]:
    """Mean KL(base || tuned) per predicted token over `texts` (token ids), in nats; None without an adapter or
    without a position to predict (every text shorter than two tokens)."""
    peft = peft_of(model)
    if peft is None:
        return None
    device = next(peft.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        batch = [list(t) for t in texts[start:start + batch_size] if len(t) >= 2]
        if not batch:
            continue
        ids, mask = _padded(batch, pad, device)
        tuned = peft(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
        with peft.disable_adapter():
            base = peft(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
        kl = (base.exp() * (base - tuned)).sum(-1)  # [batch, positions]: KL at each predicting position
        predicting = mask[:, 1:].bool()  # position t predicts token t+1, which must be a real token
        total += float(kl[predicting].sum())
        count += int(predicting.sum())
    return total / count if count else None


@contextlib.contextmanager
def evaluating(model):
    """The model in eval mode (no dropout) for a measurement, back in its former mode after."""
    training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(training)
