"""Errors caused by input (a path, a file, a setting): the CLI prints them in one
line and exits with status 2, without a traceback."""
from keeptune.data.squad import SquadDataError
from keeptune.evaluate.engine import ResumeMismatchError
from keeptune.io import MalformedLineError
from keeptune.model.load import ModelLoadError

USER_ERRORS = (ModelLoadError, SquadDataError, ResumeMismatchError, MalformedLineError, FileNotFoundError)
