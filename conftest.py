"""Deprecation warnings caused by keeptune's own calls fail the test run.

A library that deprecates an API warns (DeprecationWarning or FutureWarning),
and the day it removes the API, keeptune breaks for every new install. So a
deprecated call of ours must fail the tests now, while the warning still names
the replacement; pyproject's `error::FutureWarning:keeptune` filters do that
when the library attributes the warning to our frame. Libraries often do not:
a deprecated keyword of a transformers model's forward is attributed to torch's
`Module.__call__`, and a deprecated property to the library's own line.

So this hook also looks at the stack of each deprecation warning: from the frame
the warning is attributed to, it steps over the module that warned and the call
plumbing (torch's `Module.__call__`, functools, contextlib, importlib); the first
frame left is the caller. A caller in keeptune's src/ or tests/ turns the
warning into an error raised at that call. A caller in another library (PEFT
using a deprecated transformers alias, jieba importing pkg_resources) is that
library's business: its warning stays in pytest's summary and fails nothing.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
OURS = tuple(str(ROOT / folder) + os.sep for folder in ("src", "tests"))
PLUMBING = ("torch.nn.modules.module", "functools", "contextlib", "importlib", "warnings", __name__)
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _module(frame) -> str:
    return frame.f_globals.get("__name__", "")


def _is(frame, modules) -> bool:
    name = _module(frame)
    return any(name == m or name.startswith(m + ".") for m in modules)


def deprecated_call_of_ours(filename: str, lineno: int, frame=None) -> str | None:
    """`path:line` of keeptune's call that caused the warning being shown, else None."""
    frame = frame or sys._getframe(1)
    while frame is not None and _is(frame, ("warnings", __name__)):  # warnings' own frames and this hook
        frame = frame.f_back
    if frame is None:
        return None
    warner = _module(frame)
    attributed = frame
    while attributed is not None and not (attributed.f_code.co_filename == filename
                                          and attributed.f_lineno == lineno):
        attributed = attributed.f_back
    frame = attributed or frame
    while frame is not None and (_module(frame) == warner or _is(frame, PLUMBING)):
        frame = frame.f_back
    if frame is None or warner.split(".")[0] in ("keeptune", "tests"):  # our own warnings are not calls into a library
        return None
    path = frame.f_code.co_filename
    return f"{path}:{frame.f_lineno}" if path.startswith(OURS) else None


def _raising_ours():
    """Install a `warnings.showwarning` that raises our deprecated calls and passes the rest on
    to the one it replaces (pytest's recorder); yields, then puts that one back."""
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DEPRECATIONS) and (call := deprecated_call_of_ours(filename, lineno)):
            raise category(f"{message}\n[keeptune's own call at {call}: migrate it; "
                           "deprecation warnings of our calls are errors, see conftest.py]")
        return show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    try:
        yield
    finally:
        warnings.showwarning = show


# Wrappers without tryfirst run inside pytest's own warning capture (a tryfirst wrapper),
# which starts a fresh catch_warnings for collection and for each test.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    with contextlib.contextmanager(_raising_ours)():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    with contextlib.contextmanager(_raising_ours)():
        return (yield)
