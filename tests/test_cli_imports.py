"""`isa --help` and `--version` stay fast: building the CLI imports no heavy library.

Each check runs in a fresh interpreter, since this test session has long imported torch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.conftest import run_isa

HEAVY = ("torch", "numpy", "scipy", "matplotlib")


def _heavy_modules_after(code: str) -> list[str]:
    """The HEAVY libraries that ``code``, run in a fresh interpreter, leaves imported."""
    script = (
        f"import json, sys\n{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def loaded_by_the_cli() -> list[str]:
    """Heavy libraries imported by building the whole click command tree of `isa`."""
    return _heavy_modules_after("import isa_cli.main\nisa_cli.main._click_command()")


@pytest.mark.parametrize("module", HEAVY)
def test_building_the_cli_does_not_import(loaded_by_the_cli: list[str], module: str) -> None:
    assert module not in loaded_by_the_cli


def test_command_modules_besides_sweep_and_plot_import_nothing_heavy() -> None:
    code = (
        "import typer\n"
        "from isa_cli import data, evaluate, prior, toy, train\n"
        "from isa_cli.app import app\n"
        "typer.main.get_command(app)\n"
        "import isa_core.data, isa_core.priors, isa_cli.options\n"
    )
    assert _heavy_modules_after(code) == []


def test_version_through_the_entry_point() -> None:
    from isa_core import __version__

    result = run_isa(["--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == f"isa {__version__}"


def test_every_help_page_renders() -> None:
    """Command annotations resolve without the lazily imported modules: each --help works."""
    import isa_cli.main
    from isa_cli.app import app

    def paths(command, prefix: list[str]):
        yield prefix
        for name, sub in getattr(command, "commands", {}).items():
            yield from paths(sub, [*prefix, name])

    runner = CliRunner()
    pages = list(paths(isa_cli.main._click_command(), []))
    assert len(pages) > 10
    for path in pages:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_lazy_package_names_still_import() -> None:
    import isa_core.data
    import isa_core.priors
    from isa_core.data import DSprites, GroundTruthData
    from isa_core.data.base import GroundTruthData as BaseData
    from isa_core.priors import (
        LpNested,
        LpNestedPrior,
        lpnested,
        sample_isa,
        sample_nested,
        sampling,
        standard_gamma,
    )

    assert (LpNested, LpNestedPrior) == (lpnested.LpNested, lpnested.LpNestedPrior)
    assert (sample_isa, sample_nested) == (sampling.sample_isa, sampling.sample_nested)
    assert standard_gamma is sampling.standard_gamma
    assert GroundTruthData is BaseData and issubclass(DSprites, GroundTruthData)
    assert set(isa_core.priors.__all__) <= set(dir(isa_core.priors))
    assert set(isa_core.data.__all__) <= set(dir(isa_core.data))
    with pytest.raises(AttributeError):
        _ = isa_core.priors.NoSuchName
    with pytest.raises(ImportError):
        from isa_core.data import NoSuchName  # noqa: F401


SHARED_CLI = {"isa_cli.app", "isa_cli.options", "isa_cli.progress"}


def _imported_modules(path) -> set[str]:
    """Every module a source file imports (absolute names), at any depth of the file."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_command_modules_import_only_the_shared_cli_modules() -> None:
    """Each command group stands alone: besides the app, options and progress, no isa_cli
    module imports another (the entry point, main.py, imports them all to register them)."""
    from pathlib import Path

    import isa_cli

    folder = Path(isa_cli.__file__).parent
    for path in sorted(folder.glob("*.py")):
        if path.name in ("main.py", "__main__.py", "__init__.py"):
            continue
        others = {
            name
            for name in _imported_modules(path)
            if name.startswith("isa_cli.")
            and name.rsplit(".", 1)[0] not in SHARED_CLI
            and name not in SHARED_CLI
        }
        assert not others, f"{path.name} imports {sorted(others)}"


def test_the_library_never_imports_the_cli() -> None:
    from pathlib import Path

    import isa_core

    for path in sorted(Path(isa_core.__file__).parent.rglob("*.py")):
        cli = {name for name in _imported_modules(path) if name.split(".")[0] == "isa_cli"}
        assert not cli, f"{path} imports {sorted(cli)}"
