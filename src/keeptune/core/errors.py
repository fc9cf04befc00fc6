"""Every error keeptune raises for bad input (a path, a file, a setting, a model).

The CLI prints an error of USER_ERRORS in one line (`keeptune: error: ...`) and
exits with status 2, without a traceback. Messages name the file, the line and
the field where there is one. This module imports nothing heavy (no torch), so
any layer may raise these errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional


class DataError(ValueError):
    """Input data keeptune cannot use; the message names the file and what is wrong."""


class MalformedLineError(DataError):
    """A line of a data file that is not the record it should be."""

    def __init__(self, path: Path, line: int, field: Optional[str], reason: str):
        self.path, self.line, self.field, self.reason = path, line, field, reason
        where = f"field {field!r}: " if field else ""
        super().__init__(f"{path}:{line}: {where}{reason}")


class OutputError(DataError):
    """A place keeptune cannot or will not write to (not writable, a file in the way, a foreign folder)."""


class ConfigError(ValueError):
    """A configuration keeptune cannot use; the message names where and which field."""


class ModelLoadError(ValueError):
    """A model source that keeptune cannot or will not load."""


class TargetError(ValueError):
    """A LoRA target specification that matches no module."""


class ResumeMismatchError(RuntimeError):
    """An output folder already holds work done with other settings or data."""


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient norm is NaN or infinite."""


USER_ERRORS = (ModelLoadError, DataError, ResumeMismatchError, TargetError, ConfigError, TrainingDivergedError,
               FileNotFoundError)
