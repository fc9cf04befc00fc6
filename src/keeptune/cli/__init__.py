"""The `keeptune` command: a table from command names to typed functions.

Options come from each function's signature and docstring (jsonargparse, as in
litgpt). Both `--batch-size` and `--batch_size` spellings are accepted.
"""
from __future__ import annotations

import inspect
import sys
import textwrap

from jsonargparse import CLI, ArgumentParser

from keeptune.cli import compare as compare_command
from keeptune.cli import data as data_commands
from keeptune.cli import run as experiment_commands
from keeptune.cli import sweep as sweep_command
from keeptune.cli import train as train_commands
from keeptune.core.errors import USER_ERRORS
from keeptune.core.io import disk_full, no_space
from keeptune.core.outputs import interrupted_line, reset_progress
from keeptune.evaluate import commands as eval_commands
from keeptune.interop import commands as model_commands
from keeptune.model import commands as merge_command
from keeptune.report import commands as report_commands

COMMANDS = {
    "eval": eval_commands.eval_task,  # eval TASK: a built-in name (squad, math, ...) or a task spec file
    "data": {"generate": data_commands.generate, "build": data_commands.build, "stats": data_commands.stats},
    "params": model_commands.params,
    "import": model_commands.import_checkpoint,  # a MindFormers .ckpt -> a Hugging Face model or a PEFT adapter
    "export": model_commands.export,  # an adapter or a model -> a MindFormers .ckpt
    "run": experiment_commands.run,  # run, train and sweep take key=value words: parsed by their own `main`
    "train": train_commands.train,
    "sweep": sweep_command.sweep,  # listed in --help; WORD_COMMANDS parses it
    "merge": merge_command.merge,
    "report": report_commands.report,
    "runs": report_commands.runs,
    "compare": compare_command.compare,  # compare A B: two positional states; WORD_COMMANDS parses it
}

WORD_COMMANDS = {"run": experiment_commands.main, "train": train_commands.main, "sweep": sweep_command.main,
                 "compare": compare_command.main}


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
    return target


def _bare_switches(args: list[str]) -> list[str]:
    """`--overwrite` alone -> `--overwrite=true` for the command's boolean options (jsonargparse wants a value)."""

    function = _command(args)
    if function is None or args[0] in WORD_COMMANDS:  # run and train parse their own words (--resume, --overwrite)
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
    import inspect


    function = _command(args)
    if function is None or args[0] in WORD_COMMANDS or "config" not in inspect.signature(function).parameters:
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
            WORD_COMMANDS[args[0]](args[1:])
        elif not _run_with_own_parser(args):
            CLI(COMMANDS, args=args)
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
