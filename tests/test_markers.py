"""The ``cluster`` marker sits on every test that starts a cluster, read from the tests' own
code (``ast``), so ``-m "not cluster"`` really skips them.

Best effort, statically. A function *starts a cluster* when its body calls ``LocalCluster(``
or ``Client(`` (connecting to one started for it), runs a ``dask scheduler`` / ``dask worker``
command (a list literal whose first two items are ``"dask"`` (or ``... / "dask"``) and
``"scheduler"``/``"worker"``, passed to a call), calls a function of the same module that
starts one, or takes a fixture (from the module or ``conftest.py``) that does. A test that
starts a cluster must carry ``@pytest.mark.cluster`` (on itself or its class) or sit in a
module whose ``pytestmark`` holds it. Not seen: clusters started through another module's
helpers, and CLI runs that fall back to the default LocalCluster because their arguments
(built elsewhere) lack ``--scheduler``; those were checked by hand.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CLUSTER_CALLS = {"LocalCluster", "Client"}


def _name(node: ast.AST) -> str:
    """The last name of a call's function (``distributed.Client`` -> ``Client``)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _is_dask_cli(node: ast.AST) -> bool:
    """``["dask", "scheduler", ...]`` or ``[str(BIN / "dask"), "worker", ...]``."""
    if not isinstance(node, ast.List) or len(node.elts) < 2:
        return False
    first, second = node.elts[0], node.elts[1]
    strings = [c.value for c in ast.walk(first) if isinstance(c, ast.Constant)]
    return "dask" in strings and isinstance(second, ast.Constant) and \
        second.value in ("scheduler", "worker")


def _direct(func: ast.AST) -> bool:
    """Whether ``func``'s own body starts a cluster."""
    for node in ast.walk(func):
        if isinstance(node, ast.Call):
            if _name(node.func) in CLUSTER_CALLS:
                return True
            if any(_is_dask_cli(a) for a in node.args):
                return True
    return False


def _is_fixture(func: ast.FunctionDef) -> bool:
    return any("fixture" in ast.unparse(d) for d in func.decorator_list)


def _marked(decorators: list[ast.expr]) -> bool:
    return any(ast.unparse(d).endswith("mark.cluster") for d in decorators)


def _functions(tree: ast.Module) -> list[tuple[ast.FunctionDef, ast.ClassDef | None]]:
    out: list[tuple[ast.FunctionDef, ast.ClassDef | None]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out.append((node, None))
        elif isinstance(node, ast.ClassDef):
            out += [(f, node) for f in node.body if isinstance(f, ast.FunctionDef)]
    return out


def _starters(tree: ast.Module, fixtures: set[str]) -> set[str]:
    """Names of the module's functions (and classes) that start a cluster, transitively
    through calls of each other and through the cluster ``fixtures``."""
    funcs = {f.name: f for f, _ in _functions(tree)}
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
    bodies: dict[str, ast.AST] = {**funcs, **classes}
    starts = {n for n, b in bodies.items() if _direct(b)}
    starts |= {n for n, f in funcs.items() if {a.arg for a in f.args.args} & fixtures}
    changed = True
    while changed:
        changed = False
        for name, body in bodies.items():
            if name in starts:
                continue
            called = {_name(c.func) for c in ast.walk(body) if isinstance(c, ast.Call)}
            args = {a.arg for a in body.args.args} if isinstance(body, ast.FunctionDef) else set()
            if called & starts or args & (fixtures | starts):
                starts.add(name)
                changed = True
    return starts


def _cluster_fixtures(tree: ast.Module, known: set[str]) -> set[str]:
    return {f.name for f, _ in _functions(tree) if _is_fixture(f)} & _starters(tree, known)


def unmarked_cluster_tests(source: str, fixtures: set[str]) -> list[str]:
    """Tests of ``source`` that start a cluster (see the module docstring) without the marker;
    ``fixtures``: names of conftest fixtures that start one."""
    tree = ast.parse(source)
    fixtures = fixtures | _cluster_fixtures(tree, fixtures)
    starts = _starters(tree, fixtures)
    module_marked = any(
        isinstance(n, ast.Assign) and any(_name(t) == "pytestmark" for t in n.targets)
        and "mark.cluster" in ast.unparse(n.value) for n in tree.body)
    bad = []
    for func, cls in _functions(tree):
        if not func.name.startswith("test") or func.name not in starts or module_marked:
            continue
        if not (_marked(func.decorator_list) or (cls is not None and _marked(cls.decorator_list))):
            bad.append(f"{cls.name + '.' if cls else ''}{func.name}")
    return bad


def _conftest_fixtures() -> set[str]:
    return _cluster_fixtures(ast.parse((TESTS / "conftest.py").read_text()), set())


def test_conftest_cluster_fixtures_are_seen() -> None:
    assert {"cluster1", "cluster2"} <= _conftest_fixtures()


@pytest.mark.parametrize("path", sorted(TESTS.glob("test_*.py")), ids=lambda p: p.name)
def test_tests_that_start_clusters_are_marked(path: Path) -> None:
    bad = unmarked_cluster_tests(path.read_text(), _conftest_fixtures())
    assert not bad, f"{path.name}: start a cluster without @pytest.mark.cluster: {bad}"
    # a marker on a helper marks nothing (pytest reads marks of tests only)
    misplaced = [f.name for f, _ in _functions(ast.parse(path.read_text()))
                 if not f.name.startswith("test") and _marked(f.decorator_list)]
    assert not misplaced, f"{path.name}: mark.cluster on non-tests: {misplaced}"


def test_the_checker_finds_unmarked_cluster_tests() -> None:
    """Control: each way of starting a cluster is flagged when unmarked, and not when marked."""
    source = '''
import subprocess
import pytest
from distributed import Client, LocalCluster

def _helper():
    return LocalCluster(n_workers=1)

@pytest.fixture
def own_cluster():
    with _helper() as c:
        yield c

def test_direct():
    LocalCluster()

def test_client():
    Client("tcp://127.0.0.1:8786")

def test_dask_cli(tmp_path):
    subprocess.Popen([str(BIN / "dask"), "scheduler", "--port", "0"])

def test_through_a_helper():
    _helper()

def test_conftest_fixture(cluster2):
    pass

def test_module_fixture(own_cluster):
    pass

@pytest.mark.cluster
def test_marked():
    LocalCluster()

def test_no_cluster():
    assert ["dask", "scheduler"] == ["dask", "scheduler"]
'''
    assert unmarked_cluster_tests(source, {"cluster2"}) == [
        "test_direct", "test_client", "test_dask_cli", "test_through_a_helper",
        "test_conftest_fixture", "test_module_fixture"]
    assert unmarked_cluster_tests("import pytest\npytestmark = pytest.mark.cluster\n"
                                  + source.split("import pytest", 1)[1], {"cluster2"}) == []
