"""No package cycle: ``gpp_cubes`` builds cubes, ``gpp_models`` reads them, ``gpp`` joins them.

Rules, checked on every import statement of every module (module level and inside functions,
plus module names written as strings for ``importlib.import_module``):

* ``gpp_cubes`` outside ``gpp_cubes/cli/`` never imports ``gpp_models``;
* ``gpp_models`` imports from ``gpp_cubes`` only ``gpp_cubes.errors``,
  ``gpp_cubes.contract`` (the format both sides share), ``gpp_cubes.paper`` (the
  published parameters, plain constants) and ``gpp_cubes.atomic`` (the atomic writes,
  standard library only);
* the ``gpp`` command (``gpp_cubes/cli/``) is the only code that imports both.

One named exception: ``gpp_models.testing``, the synthetic stores of the model tests, writes
them through the cube writer (``gpp_cubes.cube.features``, ``gpp_cubes.cube.store``) on
purpose, so the tests read exactly what real builds write. No other module may use it as a way
round.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_FROM_CUBES = {"gpp_cubes.errors", "gpp_cubes.contract", "gpp_cubes.paper",
                      "gpp_cubes.atomic"}
#: module -> what else it may import from gpp_cubes, and why (see the module docstring)
EXCEPTIONS = {"gpp_models.testing": {"gpp_cubes.cube.features", "gpp_cubes.cube.store"}}
# A string that is exactly a module name of ours (app.py's command modules, lazy export maps
# handed to importlib) counts as an import of that module.
MODULE_NAME = re.compile(r"gpp_(cubes|models)(\.[a-z_0-9]+)+")  # dotted: not a logger


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules (or ``package.name``) that a file imports."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            # `from pkg import mod` may import a submodule: record both readings.
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and MODULE_NAME.fullmatch(node.value) and _exists(node.value)):
            found.add(node.value)
    return found


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _is(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_scanner_sees_function_level_imports() -> None:
    # models_cmd imports gpp_models only inside functions: the scan must see it.
    names = _imports(ROOT / "gpp_cubes" / "cli" / "models_cmd.py")
    assert "gpp_models.runtime" in names and "gpp_models.train" in names
    assert "gpp_cubes.cli.models_cmd" in _imports(ROOT / "gpp_cubes" / "cli" / "app.py")


@pytest.mark.parametrize("path", [p for p in _files("gpp_cubes")
                                  if "cli" not in p.relative_to(ROOT / "gpp_cubes").parts],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_cubes_never_import_models(path: Path) -> None:
    bad = sorted(n for n in _imports(path) if _is(n, "gpp_models"))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}; only gpp_cubes/cli/ may"


@pytest.mark.parametrize("path", _files("gpp_models"), ids=lambda p: str(p.relative_to(ROOT)))
def test_models_import_only_errors_and_contract_from_cubes(path: Path) -> None:
    names = _imports(path)
    allowed = ALLOWED_FROM_CUBES | EXCEPTIONS.get(_module_name(path), set())
    # `from gpp_cubes import errors` records gpp_cubes and gpp_cubes.errors: judge the latter.
    bad = sorted(n for n in names if _is(n, "gpp_cubes")
                 and not any(_is(n, ok) for ok in allowed)
                 and not (n == "gpp_cubes" and any(m in ALLOWED_FROM_CUBES for m in names)))
    assert not bad, (f"{path.relative_to(ROOT)} imports {bad}; gpp_models may import only "
                     f"{sorted(ALLOWED_FROM_CUBES)} from gpp_cubes")


def test_only_the_cli_imports_both() -> None:
    both = [p for p in [*_files("gpp_cubes"), *_files("gpp_models")]
            if _module_name(p) not in EXCEPTIONS
            and any(_is(n, "gpp_models") for n in _imports(p))
            and any(_is(n, "gpp_cubes") and not any(_is(n, ok) for ok in ALLOWED_FROM_CUBES)
                    for n in _imports(p))]
    assert all(p.is_relative_to(ROOT / "gpp_cubes" / "cli") for p in both), both


def test_report_qa_sections_match_the_builder() -> None:
    # gpp_models may not import gpp_cubes.qa: both take the provenance section names from
    # the contract, and must agree.
    from gpp_cubes.qa import SECTIONS
    from gpp_models.report import QA_SECTIONS

    assert QA_SECTIONS == SECTIONS
