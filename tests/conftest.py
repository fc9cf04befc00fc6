"""Shared fixtures. Real data lives in ../shared/data beside the repository and is
used in place; tests that need it skip with a reason when it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """Path of a file under ../shared/data, or skip the calling test."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"needs {path} (../shared/data is not beside this checkout)")
    return path


@pytest.fixture
def squad_sample() -> Path:
    """The first SQuAD v1.1 dev article: 54 paragraphs."""
    return shared_file("squad/dev-v1.1-super-bowl-50.json")


@pytest.fixture
def math_sample() -> Path:
    """996 real lines of the math fine-tuning file."""
    return shared_file("math/train-sample-996.jsonl")
