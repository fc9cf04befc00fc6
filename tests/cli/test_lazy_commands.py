"""The command table imports a command's module only when that command runs (keeptune.cli.COMMANDS), so
`import keeptune.cli` and a light command skip torch, transformers and scipy; `keeptune --help` still lists
every command with its help text."""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys

import pytest

from keeptune import cli

HEAVY = ("torch", "transformers", "peft", "scipy", "matplotlib")


def _modules_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running `code` (a subprocess: this one has them all)."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_cli_imports_no_torch():
    assert _modules_after("import keeptune.cli") == []


def test_a_command_imports_only_its_own_module():
    """`keeptune runs --help` loads the report commands (scipy, for intervals) but not the training stack."""
    code = ("import contextlib, io\nfrom keeptune.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['runs', '--help'])\n    except SystemExit:\n        pass")
    held = _modules_after(code)
    assert "torch" not in held and "transformers" not in held


def _entries(table: dict, prefix: str = ""):
    for name, target in table.items():
        if isinstance(target, dict):
            yield from _entries(target, f"{prefix}{name} ")
        else:
            yield prefix + name, target


@pytest.mark.parametrize("name, target", list(_entries({**cli.COMMANDS, **{f"{k} (words)": v for k, v in
                                                                             cli.WORD_COMMANDS.items()}})))
def test_every_entry_names_a_function_that_exists(name, target):
    """A misspelt "module:function" would only fail when a user ran that command; here it fails at once."""
    module, _, attr = target.partition(":")
    assert callable(getattr(importlib.import_module(module), attr)), name


def test_help_lists_every_command_with_its_summary(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listing = capsys.readouterr().out
    for name, target in cli.COMMANDS.items():
        assert re.search(rf"^    {name}\b", listing, re.MULTILINE), name
        if isinstance(target, str):  # a group (data) has no docstring of its own
            module, _, attr = target.partition(":")
            doc = getattr(importlib.import_module(module), attr).__doc__
            first_words = " ".join(doc.split()[:3])
            assert first_words in " ".join(listing.split()), name
