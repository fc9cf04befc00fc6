"""The fuzz suite's contract, reusable for any reader of user input (issue 11).

For any generated input a reader either succeeds or raises one of the CLI's user
errors (`keeptune.core.errors.USER_ERRORS`: printed as `keeptune: error: ...`, exit 2)
whose message names the input; never another exception, and never a partial
output left behind. `user_error_or_success` checks a Python call, `cli_exit`
a whole command through `keeptune.cli.main`.

Each property runs twice: a default profile that keeps the whole suite under a
minute (`examples(n)`), and a long one behind the `fuzz_long` marker
(`pytest -m fuzz_long tests/fuzz`), with `LONG` examples. To fuzz a new reader
(task specs, say), write one `check_...(data)` function and wrap it:

    @fuzz(20)
    @given(st.data())
    def test_task_spec(data): check_task_spec(data)

    @long_fuzz
    @given(st.data())
    def test_task_spec_long(data): check_task_spec(data)
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from keeptune.core.errors import USER_ERRORS

LONG = 1000


def fuzz(examples: int):
    """Settings of the default profile: `examples` cases, no deadline (a busy shared CPU), no example database."""
    return settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


def long_fuzz(test):
    """The long profile of a property: LONG examples, only with `-m fuzz_long`."""
    return pytest.mark.fuzz_long(fuzz(LONG)(test))


@contextlib.contextmanager
def workdir():
    """A fresh directory per example (pytest's tmp_path is shared by all examples of a test)."""
    with tempfile.TemporaryDirectory(prefix="keeptune-fuzz-") as folder:
        yield Path(folder)


def user_error_or_success(call: Callable, names: Iterable[str], outputs: Iterable[Path] = ()):
    """`call()`'s result, or None when it raised a user error whose message holds one of `names`.

    Any other exception propagates (the property fails); after a user error none of
    `outputs` may exist (no partial output)."""
    try:
        return call()
    except USER_ERRORS as err:
        message = str(err)
        assert any(name in message for name in names), f"the error does not name {list(names)}: {message}"
        assert "\n" not in message.strip() or "Traceback" not in message
        for path in outputs:
            assert not Path(path).exists(), f"a failed run left {path} behind"
        return None


def cli_exit(argv: list[str], names: Iterable[str], outputs: Iterable[Path] = ()) -> int:
    """Run `keeptune ARGV` in-process: exit 0, or exit 2 with one `keeptune: error:` line naming the input."""
    from keeptune.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    assert code in (0, 2), f"exit {code}: {err.getvalue()[-2000:]}"
    if code == 2:
        line = [ln for ln in err.getvalue().splitlines() if ln.startswith("keeptune: error:")]
        assert line, f"no 'keeptune: error:' line in {err.getvalue()[-2000:]}"
        assert any(name in line[-1] for name in names), f"the error does not name {list(names)}: {line[-1]}"
        for path in outputs:
            assert not Path(path).exists(), f"a failed command left {path} behind"
    return code


# --- building blocks of inputs ---------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def encode(text: str, how: str) -> bytes:
    """`text` as a user's editor might have saved it."""
    if how == "utf-8-bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8")
    if how == "cp1252":
        return text.encode("cp1252", errors="replace")
    if how == "latin-1":
        return text.encode("latin-1", errors="replace")
    if how == "utf-16":
        return text.encode("utf-16")
    return text.encode("utf-8")


encodings = st.sampled_from(["utf-8", "utf-8", "utf-8-bom", "cp1252", "latin-1", "utf-16"])


@st.composite
def damaged(draw, content: bytes) -> bytes:
    """`content`, maybe cut short, with a few bytes flipped, or with junk appended."""
    how = draw(st.sampled_from(["as is", "as is", "truncate", "flip", "append"]))
    if how == "truncate" and content:
        return content[: draw(st.integers(0, len(content) - 1))]
    if how == "flip" and content:
        data = bytearray(content)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "append":
        return content + draw(st.binary(max_size=16))
    return content


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)
