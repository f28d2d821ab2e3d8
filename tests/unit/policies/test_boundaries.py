"""The policies package stays a pure domain package (DESIGN §2, §8)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import policies

PACKAGE = Path(policies.__file__).resolve().parent
MODULES = sorted(PACKAGE.glob("*.py"))
# The only module that touches the file system is the loader.
PURE = [m for m in MODULES if m.name != "loader.py"]
IO_CALLS = {"open", "read_bytes", "read_text", "write_bytes", "write_text", "urlopen", "connect"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_imports_only_stdlib_policies_and_the_error_base(module: Path) -> None:
    for name in imported_modules(module):
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or top == "policies" or name == "vault.errors", name


@pytest.mark.parametrize("module", PURE, ids=lambda p: p.name)
def test_decisions_do_no_io(module: Path) -> None:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            assert name not in IO_CALLS, f"{module.name}:{node.lineno} calls {name}"
    assert "pathlib" not in imported_modules(module)


def test_public_api_is_exported() -> None:
    for name in policies.__all__:
        assert hasattr(policies, name), name
    assert sorted(policies.__all__) == sorted(set(policies.__all__))
