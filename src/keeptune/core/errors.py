"""Errors caused by input (a path, a file, a setting): the CLI prints them in one
line and exits with status 2, without a traceback."""
from keeptune.evaluate.engine import ResumeMismatchError
from keeptune.io import DataError
from keeptune.model.load import ModelLoadError
from keeptune.model.lora import TargetError
from keeptune.train.config import ConfigError
from keeptune.train.loop import TrainingDivergedError

USER_ERRORS = (ModelLoadError, DataError, ResumeMismatchError, TargetError, ConfigError, TrainingDivergedError,
               FileNotFoundError)
