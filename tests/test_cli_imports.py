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
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
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
