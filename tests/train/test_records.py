"""Conversation records -> tokens and labels, the truncation report, bad files,
and the batch plan (shuffle, length grouping, ranks).

The byte tokenizer (tests/tiny.py) gives one token per UTF-8 byte, so every
expected sequence here is the bytes of a string written out from the seed's
MindFormers vicuna template (VICUNA below) plus the special ids BOS 1 and EOS 2,
not keeptune's own formatting code.
"""
from __future__ import annotations

import json

import pytest

from keeptune.core.errors import DataError, MalformedLineError
from keeptune.core.io import write_jsonl
from keeptune.train.records import (
    IGNORE,
    Conversation,
    collate,
    detect_prompt,
    encode,
    epoch_batches,
    micro_batches,
    read_conversations,
)
from tests.tiny import byte_tokenizer, chat_tokenizer
from tests.train.conftest import conversation

BOS, EOS = 1, 2
TOKENIZER = byte_tokenizer()
# The seed's MindFormers fine-tuning sequence (vicuna), byte for byte, BOS and EOS aside.
VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions. USER: {prompt} ASSISTANT: {answer}")


def ids(text: str) -> list[int]:
    """Byte tokens, computed from the vocabulary itself: sorted byte alphabet after 4 specials."""
    (piece, _), = TOKENIZER.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)  # one char per byte
    return [TOKENIZER.convert_tokens_to_ids(char) for char in piece]


def test_ids_are_bytes():
    assert len(ids("计算 1+1")) == len("计算 1+1".encode())


def one(prompt: str, answer: str, fmt: str, **kw):
    return encode([Conversation(1, prompt, answer)], TOKENIZER, fmt, seq_len=512, **kw)


def test_plain_is_prompt_answer_eos_without_bos():
    sample = one("计算 1 + 2 等于多少？", "1 + 2 = 3", "plain").samples[0]
    prompt, answer = ids("计算 1 + 2 等于多少？"), ids("1 + 2 = 3")
    assert sample.tokens == prompt + answer + [EOS]
    assert sample.labels == [IGNORE] * len(prompt) + answer + [EOS]


def test_plain_with_bos():
    sample = one("Q", "A", "plain", add_bos=True).samples[0]
    assert sample.tokens == [BOS] + ids("Q") + ids("A") + [EOS]
    assert sample.labels == [IGNORE, IGNORE] + ids("A") + [EOS]


def test_vicuna_is_the_mindformers_sequence():
    sample = one("What is 2+2?", "4", "vicuna").samples[0]
    full = ids(VICUNA.format(prompt="What is 2+2?", answer="4"))
    assert sample.tokens == [BOS] + full + [EOS]
    answer = ids(" 4")  # the space before the answer is part of the answer's tokens
    assert sample.labels == [IGNORE] * (1 + len(full) - len(answer)) + answer + [EOS]


def test_chat_uses_the_tokenizer_template():
    tokenizer = chat_tokenizer()
    sample = encode([Conversation(1, "hi", "yo")], tokenizer, "chat", seq_len=512).samples[0]
    assert sample.tokens == ids("<user>hi") + [EOS] + ids("<assistant>yo") + [EOS]
    assert sample.labels == [IGNORE] * (len(ids("<user>hi")) + 1 + len(ids("<assistant>"))) + ids("yo") + [EOS]


def test_truncation_is_counted_and_samples_without_answer_skipped():
    conversations = [Conversation(1, "ab", "cd"),            # 5 tokens: fits seq_len + 1 = 5
                     Conversation(2, "abc", "de"),           # 6: cut to 5, keeps "d"
                     Conversation(3, "abcde", "f")]          # 7: cut to 5, no answer token left: skipped
    data = encode(conversations, TOKENIZER, "plain", seq_len=4)
    assert (data.records, data.truncated, data.dropped, data.longest) == (3, 2, 1, 7)
    assert [s.tokens for s in data.samples] == [ids("abcd") + [EOS], ids("abcde")]
    assert data.samples[1].labels == [IGNORE] * 3 + ids("de")
    assert "2 longer than seq_len + 1 = 5 tokens were cut (1 of them" in data.report("f.jsonl", 4)


def test_all_samples_too_long_is_an_error():
    with pytest.raises(DataError, match=r"all 2 samples of f\.jsonl are longer than seq_len \+ 1 = 4 tokens"):
        encode([Conversation(1, "abc", "de"), Conversation(2, "abcd", "e")], TOKENIZER, "plain", 3, path="f.jsonl")


def test_read_conversations(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [conversation(0), conversation(1)])
    records = read_conversations(path)
    assert [(r.line, r.answer) for r in records] == [(1, "13"), (2, "131")]
    assert records[0].prompt == conversation(0)["conversations"][0]["value"]


@pytest.mark.parametrize(("line", "field", "reason"), [
    ("{not json", None, "not valid JSON"),
    ('["a"]', None, "not a JSON object"),
    ('{"id": "2"}', "conversations", "missing or not a list"),
    ('{"conversations": [{"from": "gpt", "value": "x"}]}', "conversations", "expected a human turn then a gpt"),
    ('{"conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}]}', "conversations",
     "value is not a string"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, line, field, reason):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(conversation(0)) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(MalformedLineError) as info:
        read_conversations(path)
    assert (info.value.path, info.value.line, info.value.field) == (path, 3, field)
    assert reason in str(info.value) and str(info.value).startswith(f"{path}:3: ")


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=f"{empty} is empty"):
        read_conversations(empty)
    with pytest.raises(DataError, match="does not exist"):
        read_conversations(tmp_path / "missing.jsonl")


def test_detect_prompt():
    math = [Conversation(i, conversation(i)["conversations"][0]["value"], "") for i in range(3)]
    alpaca = [Conversation(i, conversation(i, "alpaca")["conversations"][0]["value"], "") for i in range(3)]
    assert detect_prompt(math) == "math"
    assert detect_prompt(alpaca) == "alpaca"
    assert detect_prompt(math + alpaca) == "none"
    assert detect_prompt([Conversation(1, "计算 1 + 1 等于多少？", "")]) == "none"


def test_epoch_batches_shuffle_per_epoch_and_drop_the_rest():
    first, again, second = epoch_batches(30, 8, 0, 0), epoch_batches(30, 8, 0, 0), epoch_batches(30, 8, 0, 1)
    assert first == again
    assert [len(b) for b in first] == [8, 8, 8]
    flat = [i for b in first for i in b]
    assert len(set(flat)) == 24 and set(flat) <= set(range(30))
    assert first != second and first != epoch_batches(30, 8, 1, 0)


def test_micro_batches_group_by_length_and_split_ranks():
    lengths = [5, 9, 1, 7, 3, 8, 2, 6]
    batch = [0, 1, 2, 3, 4, 5, 6, 7]
    grouped = micro_batches(batch, lengths, 2, True)
    assert grouped == [[1, 5], [3, 7], [0, 4], [6, 2]]
    assert micro_batches(batch, lengths, 2, False) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    ranks = [grouped[r::2] for r in range(2)]
    assert ranks == [[[1, 5], [0, 4]], [[3, 7], [6, 2]]]
    padded = sum(len(m) * max(lengths[i] for i in m) for m in grouped)
    assert padded < sum(len(m) * max(lengths[i] for i in m) for m in micro_batches(batch, lengths, 2, False))


def test_collate_pads_right():
    samples = encode([Conversation(1, "ab", "c"), Conversation(2, "a", "b")], TOKENIZER, "plain", 16).samples
    batch = collate(samples, pad_id=3)
    assert batch["input_ids"].tolist() == [ids("abc") + [EOS], ids("ab") + [EOS, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE] + ids("c") + [EOS], [IGNORE] + ids("b") + [EOS, IGNORE]]


def test_chat_without_a_template_is_an_error():
    with pytest.raises(DataError, match="data.format=chat needs a tokenizer with a chat template"):
        one("Q", "A", "chat")


def test_length_pool_puts_neighbours_in_length_together():
    # 8 samples whose length rank is known: sample i has length 10 * (7 - i) (all distinct).
    lengths = [10 * (7 - i) for i in range(8)]
    # One pool holds every sample (4 batches x 2): the batches are neighbours in length order,
    # so {7, 6}, {5, 4}, {3, 2}, {1, 0} whatever the shuffle, in some order.
    batches = epoch_batches(8, 2, 0, 0, lengths, pool=4)
    assert sorted(map(sorted, batches)) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    # pool 1 keeps the plain shuffle
    assert epoch_batches(8, 2, 0, 0, lengths, pool=1) == epoch_batches(8, 2, 0, 0)
    # the partial rest is dropped first: 9 samples give 4 batches of 2, one sample unused
    assert len({i for b in epoch_batches(9, 2, 0, 0, lengths + [5], pool=4) for i in b}) == 8
