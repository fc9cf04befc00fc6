"""The layer order of issue 24, enforced by import-linter.

pyproject.toml's `[tool.importlinter]` states keeptune's layers (a module imports
only the layers below its own) and that keeptune.core imports no torch,
transformers or peft. The first test checks them as `.venv/bin/lint-imports`
does, so a change that reaches up fails the default test run with import-linter's
report, which names the offending import and its line. The second proves the
check can fail: a throwaway package whose lower layer imports its upper one.

import-linter is called in-process through `importlinter.application.use_cases
.lint_imports`, the function its command line runs (`importlinter.cli.lint_imports`
would also reconfigure the process's logging and prepend the working directory to
sys.path). The graph is built without import-linter's cache, so nothing is written
to the checkout; it takes well under a second.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

from importlinter import configuration
from importlinter.application import use_cases
from importlinter.application.output import console

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def lint(config: Path) -> tuple[bool, str]:
    """Check the contracts of `config` (a TOML file with `[tool.importlinter]`).

    Returns whether all were kept and import-linter's own report as plain text.
    """
    configuration.configure()
    width = console.width
    console.width = 200  # one import a line, however long its module names
    try:
        with console.capture() as captured:
            kept = use_cases.lint_imports(config_filename=str(config), cache_dir=None, no_logo=True)
    finally:
        console.width = width
    return kept, ANSI.sub("", captured.get())


def test_keeptune_keeps_its_layers():
    kept, report = lint(ROOT / "pyproject.toml")
    assert kept, "import-linter: an import breaks pyproject.toml's [tool.importlinter] contracts\n" + report


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))


def test_an_upward_import_breaks_the_contract_and_is_named(tmp_path, monkeypatch):
    package = "keeptune_layers_demo"
    write(tmp_path / package / "__init__.py", "")
    write(tmp_path / package / "high.py", f"""
        from {package} import low

        VALUE = low.BASE + 1
    """)
    # The lower layer reaches up inside a function (a lazy import counts too), and
    # the light module imports torch the same way.
    write(tmp_path / package / "low.py", f"""
        BASE = 1


        def helper():
            from {package}.high import VALUE
            return VALUE
    """)
    write(tmp_path / package / "light.py", """
        def tensor():
            import torch.nn
            return torch.nn
    """)
    config = tmp_path / "importlinter.toml"
    write(config, f"""
        [tool.importlinter]
        root_package = "{package}"
        include_external_packages = true

        [[tool.importlinter.contracts]]
        name = "demo layers"
        type = "layers"
        layers = ["{package}.high", "{package}.low", "({package}.missing)"]

        [[tool.importlinter.contracts]]
        name = "demo light module"
        type = "forbidden"
        source_modules = ["{package}.light"]
        forbidden_modules = ["torch"]
    """)
    monkeypatch.syspath_prepend(str(tmp_path))

    kept, report = lint(config)
    print(report)

    assert not kept
    assert "Contracts: 0 kept, 2 broken." in report
    # The offending imports, with their lines (low.py line 5, light.py line 2).
    assert f"{package}.low is not allowed to import {package}.high:" in report
    assert f"- {package}.low -> {package}.high (l.5)" in report
    assert f"{package}.light is not allowed to import torch:" in report
    assert f"-   {package}.light -> torch (l.2)" in report
