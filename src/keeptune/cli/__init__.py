"""The `keeptune` command: a table from command names to typed functions.

Options come from each function's signature and docstring (jsonargparse, as in
litgpt). Both `--batch-size` and `--batch_size` spellings are accepted.
"""
from __future__ import annotations

import importlib
import inspect
import sys
import textwrap

from jsonargparse import CLI, ArgumentParser

from keeptune.core.errors import USER_ERRORS
from keeptune.core.io import disk_full, no_space
from keeptune.core.outputs import interrupted_line, reset_progress

# "module:function" for each command, imported only when that command runs: every command module
# imports torch, transformers or scipy (2-5 s), which `keeptune runs` or `keeptune compare --help`
# should not pay for the others'. `keeptune --help` (no known command) imports them all to list them.
COMMANDS = {
    "eval": "keeptune.evaluate.commands:eval_task",  # eval TASK: a built-in name (squad, math, ...) or a task spec
    "data": {"generate": "keeptune.cli.data:generate", "build": "keeptune.cli.data:build",
             "stats": "keeptune.cli.data:stats"},
    "params": "keeptune.interop.commands:params",
    "import": "keeptune.interop.commands:import_checkpoint",  # a MindFormers .ckpt -> a HF model or a PEFT adapter
    "export": "keeptune.interop.commands:export",  # an adapter or a model -> a MindFormers .ckpt
    "run": "keeptune.cli.run:run",  # run, train and sweep take key=value words: parsed by their own `main`
    "train": "keeptune.cli.train:train",
    "sweep": "keeptune.cli.sweep:sweep",  # listed in --help; WORD_COMMANDS parses it
    "merge": "keeptune.model.commands:merge",
    "report": "keeptune.report.commands:report",
    "runs": "keeptune.report.commands:runs",
    "compare": "keeptune.report.compare:compare",  # compare A B: two positional states; WORD_COMMANDS parses it
    "benchmark": "keeptune.report.benchmark:benchmark",  # benchmark SOURCE...: any number; WORD_COMMANDS parses it
}

WORD_COMMANDS = {"run": "keeptune.cli.run:main", "train": "keeptune.cli.train:main",
                 "sweep": "keeptune.cli.sweep:main", "compare": "keeptune.cli.compare:main",
                 "benchmark": "keeptune.cli.benchmark:main"}


def _load(target):
    """A "module:function" string -> the function, imported now; a dict of them -> a dict of functions."""
    if isinstance(target, dict):
        return {name: _load(inner) for name, inner in target.items()}
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _table(args: list[str]) -> dict:
    """The command table jsonargparse needs for `args`: only the named command's entry, imported; every
    command when `args` names none (`keeptune --help`, a misspelt command), so the listing stays whole."""
    if args and args[0] in COMMANDS:
        return {args[0]: _load(COMMANDS[args[0]])}
    return _load(COMMANDS)


def _positional_folder(args: list[str]) -> list[str]:
    """`keeptune runs DIR` -> `keeptune runs --folder DIR` (jsonargparse has no optional positionals)."""
    if args[:1] == ["runs"] and len(args) > 1 and not args[1].startswith("-"):
        return ["runs", "--folder", *args[1:]]
    return args


def _underscored(arg: str) -> str:
    """`--batch-size=8` -> `--batch_size=8`; values and positional arguments untouched."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + sep + value


def _command(args: list[str]):
    """The typed function `args` name (`eval`, `data stats`, ...), or None."""
    target = COMMANDS.get(args[0]) if args else None
    if isinstance(target, dict):
        target = target.get(args[1]) if len(args) > 1 else None
    return _load(target) if target else None


def _bare_switches(args: list[str]) -> list[str]:
    """`--overwrite` alone -> `--overwrite=true` for the command's boolean options (jsonargparse wants a value)."""
    if args[:1] and args[0] in WORD_COMMANDS:  # run and train parse their own words (--resume, --overwrite)
        return args
    function = _command(args)
    if function is None:
        return args
    switches = {name for name, p in inspect.signature(function).parameters.items() if p.annotation in (bool, "bool", "Optional[bool]", "bool | None")}
    out = []
    for i, arg in enumerate(args):
        following = args[i + 1].lower() if i + 1 < len(args) else None
        if arg.startswith("--") and arg[2:] in switches and following not in ("true", "false", "yes", "no", "1", "0"):
            arg += "=true"
        out.append(arg)
    return out


def _run_with_own_parser(args: list[str]) -> bool:
    """Run a command whose function has a parameter named `config` with a parser of its own; False for others.

    jsonargparse's CLI drops such a parameter's value (4.53: `_run_component` pops
    "config" from every command's arguments), so `keeptune import --config X` parses
    here, with the same function-signature parser the CLI builds."""
    function = None if args[:1] and args[0] in WORD_COMMANDS else _command(args)
    if function is None or "config" not in inspect.signature(function).parameters:
        return False
    depth = 2 if isinstance(COMMANDS[args[0]], dict) else 1
    description = textwrap.dedent(function.__doc__ or "").split("\n    Args:")[0].strip()
    parser = ArgumentParser(prog="keeptune " + " ".join(args[:depth]), description=description)
    parser.add_function_arguments(function, as_group=False, as_positional=True)
    function(**parser.parse_args(args[depth:]).as_dict())
    return True


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 when it succeeds, 2 with one `keeptune: error: ...` line for bad input (a full disk
    included), 130 with one line saying what was saved and how to go on when interrupted (Ctrl-C)."""
    args = _positional_folder([_underscored(a) for a in (sys.argv[1:] if argv is None else argv)])
    args = _bare_switches(args)
    reset_progress()
    try:
        if args and args[0] in WORD_COMMANDS:
            _load(WORD_COMMANDS[args[0]])(args[1:])
        elif not _run_with_own_parser(args):
            CLI(_table(args), args=args)
    except USER_ERRORS as err:
        print(f"keeptune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{interrupted_line()}", file=sys.stderr)
        return 130
    except Exception as err:
        if not no_space(err):  # a writer that did not say where it was writing (writing_to names the place)
            raise
        print(f"keeptune: error: {disk_full('the output', err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
