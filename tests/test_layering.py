"""Goal: the architecture's import rules hold. Method: parse every module's imports.

Imports only go down (actors -> plumdb -> runtime), and nothing under a ``core/``
folder touches trio, sockets, ssl, threads or the clock (DESIGN.md, rule 1).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN_UPWARD = {
    "runtime": {"plumdb", "actors"},
    "plumdb": {"actors"},
    "actors": set(),
}
IO_MODULES = {"trio", "socket", "ssl", "asyncio", "time", "threading", "selectors"}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN_UPWARD))
def test_imports_only_go_down(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        upward = _imports(path) & FORBIDDEN_UPWARD[package]
        assert not upward, f"{path} imports {upward}"


def test_cores_are_sans_io() -> None:
    cores = [p for pkg in FORBIDDEN_UPWARD for p in (ROOT / pkg).rglob("core/*.py")]
    assert cores, "no core modules found"
    for path in cores:
        io = _imports(path) & IO_MODULES
        assert not io, f"{path} is a core but imports {io}"
