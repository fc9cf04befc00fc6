"""Streaming reader: dedup, errors naming file/line/field, skip_bad counting."""
from __future__ import annotations

import itertools
import logging

import pytest

from keeptune.data.math.loader import MalformedLineError, Pair, PairReader, dedup, read_pairs

A = '{"problem": "计算 1.00 + 2.00 等于多少？", "solution": "1.00 + 2.00 = 3.00"}'
B = '{"problem": "将分数 6/8 进行简化。", "solution": "最简化的形式为：3/4"}'


def write(tmp_path, *lines):
    path = tmp_path / "train.json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_pairs_and_passes_over_blank_lines(tmp_path):
    path = write(tmp_path, A, "", B)
    assert read_pairs(path) == [
        Pair("计算 1.00 + 2.00 等于多少？", "1.00 + 2.00 = 3.00"),
        Pair("将分数 6/8 进行简化。", "最简化的形式为：3/4"),
    ]


def test_dedup_keeps_first_of_each_pair(tmp_path):
    same_problem_other_solution = A.replace("3.00\"", "3.0\"")
    reader = PairReader(write(tmp_path, A, B, A, same_problem_other_solution, B), dedup=True)
    pairs = list(reader)
    # 5 lines, 2 repeats: A and B once each, plus the pair with the other solution.
    assert [p.solution for p in pairs] == ["1.00 + 2.00 = 3.00", "最简化的形式为：3/4", "1.00 + 2.00 = 3.0"]
    assert (reader.lines, reader.duplicates, reader.skipped) == (5, 2, 0)


@pytest.mark.parametrize(
    "bad, field, reason",
    [
        ('{"problem": "x", "solution": ', None, "not valid JSON"),
        ('["x", "y"]', None, "not a JSON object"),
        ('{"problem": "x"}', "solution", "missing"),
        ('{"problem": 3, "solution": "y"}', "problem", "not a string"),
        ('{"problem": "x", "solution": null}', "solution", "not a string"),
    ],
)
def test_malformed_line_names_file_line_and_field(tmp_path, bad, field, reason):
    path = write(tmp_path, A, "", bad, B)
    with pytest.raises(MalformedLineError) as caught:
        list(PairReader(path))
    err = caught.value
    assert (err.path, err.line, err.field) == (path, 3, field)  # blank line 2 still counts
    assert str(err).startswith(f"{path}:3: ") and reason in str(err)
    if field:
        assert f"field '{field}'" in str(err)


def test_skip_bad_counts_and_reports(tmp_path, caplog):
    path = write(tmp_path, A, "{oops", '{"problem": "x"}', B)
    reader = PairReader(path, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="keeptune"):
        pairs = list(reader)
    assert len(pairs) == 2 and reader.skipped == 2 and reader.lines == 4
    assert "skipped 2 malformed line(s)" in caplog.text


def test_reading_is_lazy(tmp_path):
    # The bad third line is never reached when only two pairs are taken.
    reader = PairReader(write(tmp_path, A, B, "{oops"))
    assert len(list(itertools.islice(reader, 2))) == 2


def test_dedup_of_any_stream():
    pairs = [Pair("p", "s"), Pair("p", "t"), Pair("p", "s")]
    assert list(dedup(pairs)) == [Pair("p", "s"), Pair("p", "t")]


def test_real_sample_streams_without_errors(math_sample):
    reader = PairReader(math_sample, dedup=True)
    assert sum(1 for _ in reader) == 996  # the sample's 996 lines are all distinct
    assert reader.duplicates == 0


# --- issue 11: encodings -----------------------------------------------------------------

def test_bom_prefixed_file_keeps_its_first_record_with_skip_bad(tmp_path):
    """Issue 11.7: --skip-bad dropped a BOM-prefixed file's first (valid) record."""
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + f"{A}\n{B}\n".encode())
    reader = PairReader(path, skip_bad=True)
    assert [p.problem for p in reader] == ["计算 1.00 + 2.00 等于多少？", "将分数 6/8 进行简化。"]
    assert reader.skipped == 0
    assert len(read_pairs(path)) == 2


def test_windows_1252_line_names_file_and_line(tmp_path):
    """Issue 11.6: invalid UTF-8 was a UnicodeDecodeError traceback, also with --skip-bad."""
    path = tmp_path / "cp1252.json"
    path.write_bytes(f"{A}\n".encode() + '{"problem": "caf\u00e9", "solution": "1"}\n'.encode("cp1252")
                     + f"{B}\n".encode())
    with pytest.raises(MalformedLineError, match=rf"^{path}:2: not valid UTF-8 \(byte 0xe9 at column 17"):
        read_pairs(path)
    reader = PairReader(path, skip_bad=True)
    assert len(list(reader)) == 2
    assert (reader.lines, reader.skipped, reader.yielded) == (3, 1, 2)
