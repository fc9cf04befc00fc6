"""Conversation records -> token ids and labels, and the order they are trained in.

A record is `{"id", "conversations": [{"from": "human", "value": prompt},
{"from": "gpt", "value": answer}], ...}` (what `keeptune data build` writes).
It becomes a prompt text and an answer text, tokenized separately (so the
prompt's tokens are exactly what evaluation feeds the model) and joined:

- plain:  [BOS if add_bos] prompt answer EOS
- vicuna: BOS `VICUNA_SYSTEM USER: {prompt} ASSISTANT:` ` {answer}` EOS, the
  sequence the seed's MindFormers fine-tuning trained on (keeptune.data.prompts;
  the space before the answer belongs to the answer's tokens)
- chat:   the tokenizer's chat template; the prompt is the user turn with the
  generation prompt, the answer is the rest of the rendered conversation.

Labels are -100 on the prompt (and BOS), the token id on the answer and EOS.
A sequence holds at most seq_len + 1 tokens (seq_len predictions, the seed's
257-token rows); longer ones are cut at the end and counted.

Order: each epoch shuffles the samples with (seed, epoch) and cuts them into
global batches (a partial last one is dropped). Each global batch is sorted by
length and cut into micro-batches of similar lengths (less padding; the batch
and so the gradient are the same); rank r of W takes micro-batches r, r+W, ...
Every rank computes the same plan, so ranks never overlap and the token count
of the whole global batch is known everywhere without communication.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from keeptune.core.errors import DataError, MalformedLineError
from keeptune.core.io import decode_line, json_line, read_lines
from keeptune.data.prompts import PROMPTS, sequence_bos, sequence_prompt

IGNORE = -100  # label of a position that is not trained (prompt, BOS, padding)


@dataclass(frozen=True)
class Conversation:
    line: int
    prompt: str
    answer: str


@dataclass(frozen=True)
class Sample:
    tokens: list[int]
    labels: list[int]


@dataclass
class Dataset:
    """Encoded samples and what encoding did to them."""

    samples: list[Sample]
    records: int
    truncated: int  # longer than seq_len + 1 tokens: cut
    dropped: int  # cut so short that no answer token is left: skipped
    longest: int  # tokens of the longest record before cutting

    def report(self, path: Path, seq_len: int) -> str:
        return (f"data: {self.records} records from {path}; {self.truncated} longer than seq_len + 1 = "
                f"{seq_len + 1} tokens were cut ({self.dropped} of them kept no answer token and are skipped); "
                f"longest {self.longest} tokens; {len(self.samples)} samples train")


def read_conversations(path: Path) -> list[Conversation]:
    """The (prompt, answer) of every record; DataError for an empty file, MalformedLineError with file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training data {path} does not exist (make it with `keeptune data build --out {path}`)")
    records: list[Conversation] = []
    for number, raw in read_lines(path):  # UTF-8, a BOM allowed; a line that is not: MalformedLineError
        text = decode_line(raw, path, number)
        if text.strip():
            records.append(parse_conversation(json_line(text, path, number), path, number))
    if not records:
        raise DataError(f"training data {path} is empty: it holds no conversation record")
    return records


def parse_conversation(record, path: Path, line: int) -> Conversation:
    if not isinstance(record, dict):
        raise MalformedLineError(path, line, None, f"not a JSON object ({type(record).__name__})")
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise MalformedLineError(path, line, "conversations", "missing or not a list")
    roles = [turn.get("from") if isinstance(turn, dict) else None for turn in turns]
    if roles != ["human", "gpt"]:
        raise MalformedLineError(path, line, "conversations", f"expected a human turn then a gpt turn, got {roles}")
    for turn in turns:
        if not isinstance(turn.get("value"), str):
            raise MalformedLineError(path, line, "conversations", f"the {turn['from']} turn's value is not a string")
    return Conversation(line, turns[0]["value"], turns[1]["value"])


def detect_prompt(conversations: list[Conversation]) -> str:
    """The PROMPTS template every human turn is written in, else "none" (the turn is the prompt as it is)."""
    for name, template in PROMPTS.items():
        head, tail = template.split("{problem}")
        if name != "none" and all(c.prompt.startswith(head) and c.prompt.endswith(tail) for c in conversations):
            return name
    return "none"


def texts(conversation: Conversation, fmt: str, tokenizer) -> tuple[str, str]:
    """(prompt text, answer text) of one conversation in a sequence format."""
    prompt = sequence_prompt(conversation.prompt, fmt, tokenizer)
    if fmt == "plain":
        return prompt, conversation.answer
    if fmt == "vicuna":
        return prompt, f" {conversation.answer}"
    full = tokenizer.apply_chat_template([{"role": "user", "content": conversation.prompt},
                                          {"role": "assistant", "content": conversation.answer}], tokenize=False)
    if not full.startswith(prompt):
        raise DataError(f"line {conversation.line}: the chat template renders the conversation without "
                        "its generation prompt as a prefix; use data.format=plain or vicuna")
    return prompt, full[len(prompt):]


def special_ids(tokenizer, fmt: str, add_bos: Optional[bool]) -> tuple[list[int], list[int]]:
    """Token ids put before the prompt and after the answer."""
    bos = sequence_bos(fmt, add_bos)
    if fmt == "chat":  # the template writes its own special tokens
        return ([tokenizer.bos_token_id] if bos else []), []
    if bos and tokenizer.bos_token_id is None:
        raise DataError("data.add_bos (or the vicuna format) needs a BOS token, and this tokenizer has none")
    return ([tokenizer.bos_token_id] if bos else []), [tokenizer.eos_token_id]


def encode(conversations: list[Conversation], tokenizer, fmt: str, seq_len: int,
           add_bos: Optional[bool] = None, path: Path | str = "data") -> Dataset:
    """Token ids and labels of every conversation; DataError when no sample keeps an answer token."""
    head, tail = special_ids(tokenizer, fmt, add_bos)
    pairs = [texts(c, fmt, tokenizer) for c in conversations]
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False).input_ids
    answers = tokenizer([a for _, a in pairs], add_special_tokens=False).input_ids
    samples, truncated, dropped, longest = [], 0, 0, 0
    for prompt, answer in zip(prompts, answers):
        tokens = head + prompt + answer + tail
        labels = [IGNORE] * (len(head) + len(prompt)) + answer + tail
        longest = max(longest, len(tokens))
        if len(tokens) > seq_len + 1:
            truncated += 1
            tokens, labels = tokens[: seq_len + 1], labels[: seq_len + 1]
            if all(label == IGNORE for label in labels[1:]):  # the first position is never predicted
                dropped += 1
                continue
        samples.append(Sample(tokens, labels))
    if truncated == len(conversations):
        raise DataError(f"all {len(conversations)} samples of {path} are longer than seq_len + 1 = {seq_len + 1} "
                        f"tokens (the longest has {longest}); raise data.seq_len")
    return Dataset(samples, len(conversations), truncated, dropped, longest)


# --- order and batches ----------------------------------------------------------------------

def epoch_batches(n_samples: int, global_batch: int, seed: int, epoch: int,
                  lengths: Optional[list[int]] = None, pool: int = 1) -> list[list[int]]:
    """Sample indices of every global batch of an epoch: a (seed, epoch) shuffle, the partial rest dropped.

    With `lengths` and `pool` > 1, each run of `pool` global batches of the shuffle
    is sorted by length before it is cut, and the batches are shuffled again: a
    batch holds samples of similar length, so padding nearly vanishes (on the
    easy worked-step data, padded/real tokens fall from 1.34 to 1.04 with pool 8),
    while which samples meet stays random at the scale of `pool` batches.
    """
    rng = random.Random(f"keeptune-{seed}-{epoch}")
    order = list(range(n_samples))
    rng.shuffle(order)
    order = order[: n_samples - n_samples % global_batch]
    if lengths is not None and pool > 1:
        span = pool * global_batch
        order = [i for start in range(0, len(order), span)
                 for i in sorted(order[start : start + span], key=lambda i: lengths[i])]
    batches = [order[i : i + global_batch] for i in range(0, len(order), global_batch)]
    if lengths is not None and pool > 1:
        rng.shuffle(batches)
    return batches


def micro_batches(batch: list[int], lengths: list[int], micro: int, group_by_length: bool) -> list[list[int]]:
    """A global batch cut into micro-batches, longest first when grouped by length."""
    if group_by_length:
        batch = sorted(batch, key=lambda i: -lengths[i])
    return [batch[i : i + micro] for i in range(0, len(batch), micro)]


def collate(samples: list[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (-100 on padding)."""
    width = max(len(s.tokens) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample.tokens)
        ids[row, :n], labels[row, :n], mask[row, :n] = torch.tensor(sample.tokens), torch.tensor(sample.labels), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def label_count(sample: Sample) -> int:
    """Positions that contribute to the loss (labels are shifted: the first token is never predicted)."""
    return sum(label != IGNORE for label in sample.labels[1:])
