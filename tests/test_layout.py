"""The house's rules, read from the code's own imports (``ast``): maths knows no files and no
Dask, io knows no Dask, graph is the only Dask module, one registry knows every reader, the
CLI calls only the library, nobody imports another module's private names, no cycles."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "ddrp_dask"
CLI = ROOT / "cli" / "ddrp_cli"
STDLIB = set(sys.stdlib_module_names)
READERS = {"ddrp_dask.io.npy_reader", "ddrp_dask.io.zarr_reader", "ddrp_dask.io.parquet_reader"}


def _module(path: Path) -> str:
    lib = path.is_relative_to(ROOT / "ddrp_dask")
    rel = path.relative_to(ROOT if lib else ROOT / "cli").with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, names taken) of every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *([node.module] if node.module else [])])
            found.append((mod, [alias.name for alias in node.names]))
    return found


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _top(mod: str) -> str:
    return mod.split(".")[0]


def _violations(files: list[Path], allowed: set[str], own: tuple[str, ...]) -> list[str]:
    """Imports of third-party packages not in ``allowed`` or of ddrp modules outside ``own``."""
    bad = []
    for f in files:
        for mod, _ in _imports(f):
            top = _top(mod)
            if top in STDLIB or top == "__future__":
                continue
            if top in ("ddrp_dask", "ddrp_cli"):
                if not mod.startswith(own):
                    bad.append(f"{f.relative_to(ROOT)} imports {mod}")
            elif top not in allowed:
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    return bad


def test_maths_knows_no_files_and_no_dask() -> None:
    allowed = {"numpy", "scipy", "threadpoolctl", "sklearn"}
    own = ("ddrp_dask.maths", "ddrp_dask.errors", "ddrp_dask.options")
    assert _violations(_files(LIB / "maths"), allowed, own) == []


def test_io_knows_no_dask() -> None:
    allowed = {"numpy", "zarr", "pyarrow", "fsspec", "numcodecs", "threadpoolctl"}
    own = ("ddrp_dask.io", "ddrp_dask.maths", "ddrp_dask.errors", "ddrp_dask.options")
    assert _violations(_files(LIB / "io"), allowed, own) == []


def test_graph_is_the_only_dask_module() -> None:
    users = {str(f.relative_to(ROOT)) for f in _files(LIB)
             for mod, _ in _imports(f) if _top(mod) in ("dask", "distributed")}
    assert users and all(u.startswith("ddrp_dask/graph/") for u in users), sorted(users)


def test_only_the_registry_knows_the_readers() -> None:
    users = {_module(f) for f in _files(LIB) for mod, _ in _imports(f) if mod in READERS}
    assert users <= {"ddrp_dask.io.registry"}, sorted(users)


def test_the_cli_calls_only_click_yaml_and_the_library() -> None:
    assert _violations(_files(CLI), {"click", "yaml"}, ("ddrp_dask", "ddrp_cli")) == []


def test_no_module_imports_another_modules_private_names() -> None:
    bad = [f"{f.relative_to(ROOT)}: {mod}.{name}"
           for f in [*_files(LIB), *_files(CLI)] for mod, names in _imports(f)
           if _top(mod) in ("ddrp_dask", "ddrp_cli")
           for name in names if name.startswith("_") and name != "__version__"]
    assert bad == []


def test_no_import_cycles_between_library_modules() -> None:
    graph: dict[str, set[str]] = {}
    modules = {_module(f) for f in _files(LIB)}
    for f in _files(LIB):
        deps = set()
        for mod, names in _imports(f):
            for target in [mod, *(f"{mod}.{n}" for n in names)]:
                if target in modules and target != _module(f):
                    deps.add(target)
        graph[_module(f)] = deps - {"ddrp_dask"}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state and node != "ddrp_dask":
            visit(node, [])


def test_every_command_is_a_job_module() -> None:
    from ddrp_cli.main import cli

    assert {f.stem for f in (LIB / "jobs").glob("*.py")} >= {
        "fit", "run", "project", "plan", "evaluate", "matmul", "prior"}
    assert set(cli.commands) <= {"fit", "run", "project", "plan", "evaluate", "matmul"}


def _plan_classes(sources: dict[str, str]) -> dict[str, list[str]]:
    """Every class named ``*Plan`` in the given module texts, and the names of its bases
    (``SourcePlan[SketchModel]`` counts as ``SourcePlan``)."""
    found: dict[str, list[str]] = {}
    for text in sources.values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Plan"):
                bases = [b.value if isinstance(b, ast.Subscript) else b for b in node.bases]
                found[node.name] = [b.id if isinstance(b, ast.Name) else
                                    b.attr if isinstance(b, ast.Attribute) else "?"
                                    for b in bases]
    return found


def _not_from_plan(sources: dict[str, str]) -> list[str]:
    """The ``*Plan`` classes of ``sources`` that do not derive from the one ``Plan``."""
    classes = _plan_classes(sources)

    def derives(name: str, seen: frozenset[str] = frozenset()) -> bool:
        return name == "Plan" or (name in classes and name not in seen and any(
            derives(b, seen | {name}) for b in classes[name]))

    return sorted(name for name in classes if name != "Plan" and not derives(name))


def test_every_commands_plan_derives_from_the_one_plan_base() -> None:
    """One job protocol: ``str(plan)`` is ``--dry-run``, ``plan.execute()`` runs it."""
    sources = {f.stem: f.read_text() for f in (LIB / "jobs").glob("*.py")}
    classes = _plan_classes(sources)
    assert {"FitPlan", "RunPlan", "ProjectPlan", "StatsPlan", "ChoosePlan", "EvaluatePlan",
            "MatmulPlan", "PriorPlan"} <= set(classes)
    assert _not_from_plan(sources) == []


def test_the_one_plan_rule_catches_a_plan_of_its_own() -> None:
    """A control: matmul's plan as it was, a dataclass deriving from nothing."""
    old_matmul = ("from dataclasses import dataclass\n\n\n@dataclass(frozen=True)\n"
                  "class MatmulPlan:\n    x: int\n")
    base = "class Plan:\n    pass\n\n\nclass SourcePlan(Plan):\n    pass\n"
    fit = "class FitPlan(SourcePlan):\n    pass\n"
    assert _not_from_plan({"base": base, "fit": fit, "matmul": old_matmul}) == ["MatmulPlan"]
    assert _not_from_plan({"base": base, "fit": fit}) == []


def _benchmarks_on_their_own(texts: dict[str, str]) -> list[str]:
    """The benchmark scripts (``benchmarks/*.py`` but the helper modules) that do not take
    their shared pieces from ``benchlib``."""
    helpers = {"benchlib", "baselines"}
    return sorted(name for name, text in texts.items() if name not in helpers
                  and not any(isinstance(n, ast.ImportFrom) and n.module == "benchlib"
                              for n in ast.walk(ast.parse(text))))


def test_benchmarks_share_one_helper_module() -> None:
    texts = {f.stem: f.read_text() for f in (ROOT / "benchmarks").glob("*.py")}
    assert _benchmarks_on_their_own(texts) == []
    # a control: a script with its own matplotlib setup and output folder is reported
    assert _benchmarks_on_their_own({"own": "import matplotlib\nOUT = 'bench-out'\n"}) == [
        "own"]


def test_the_rules_catch_todays_kind_of_violation(tmp_path: Path) -> None:
    """A control: a maths module that reads Zarr, and a reader imported outside the registry,
    are both reported."""
    bad = tmp_path / "ddrp_dask" / "maths" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("import zarr\nfrom ..io.zarr_reader import open_zarr_array\n")
    global ROOT
    saved = ROOT
    try:
        ROOT = tmp_path
        found = _violations([bad], {"numpy"}, ("ddrp_dask.maths",))
    finally:
        ROOT = saved
    assert found == ["ddrp_dask/maths/bad.py imports zarr",
                     "ddrp_dask/maths/bad.py imports ddrp_dask.io.zarr_reader"]


def test_no_pickle_in_the_library() -> None:
    """Read the syntax: no import of pickle (or cloudpickle/dill), no ``allow_pickle=True``."""
    bad = []
    for f in [*_files(LIB), *_files(CLI)]:
        tree = ast.parse(f.read_text())
        for mod, _ in _imports(f):
            if _top(mod) in ("pickle", "cloudpickle", "dill", "joblib"):
                bad.append(f"{f.name} imports {mod}")
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and \
                    not (isinstance(node.value, ast.Constant) and node.value.value is False):
                bad.append(f"{f.name}:{node.lineno} allow_pickle={ast.unparse(node.value)}")
    assert bad == []


@pytest.mark.parametrize("source", ["import pickle\n", "np.load(p, allow_pickle=True)\n"])
def test_the_pickle_rule_can_fail(tmp_path: Path, source: str) -> None:
    tree = ast.parse(source)
    hits = [n for n in ast.walk(tree)
            if (isinstance(n, ast.Import) and n.names[0].name == "pickle")
            or (isinstance(n, ast.keyword) and n.arg == "allow_pickle")]
    assert hits


# ---------------------------------------------------------------------------------------
# one home per method, small modules, no citations of absent documents

#: The only places that may branch on a method's name: the registry and the option rules.
METHOD_HOMES = (LIB / "maths" / "methods", LIB / "options.py")
#: The longest module of ``ddrp_dask/``, in lines.
MAX_LINES = 600
#: Documents the repository does not contain (developers' notes): the code cites
#: ``docs/method.md §N`` instead.
ABSENT_DOCUMENTS = r"\bDESIGN(?:\.md)?\b|FIELD[-_ ]NOTES|\bwork[- ]log\b"


def _method_branches(source: str, names: set[str]) -> list[str]:
    """Comparisons with a method's name (``method == "auto"``, ``m in ("gaussian", …)``),
    dicts keyed by method names and ``case "auto":`` in ``source``, as ``line: code``."""

    def named(node: ast.AST | None) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return any(named(e) for e in node.elts)
        return False

    hits = []
    for node in ast.walk(ast.parse(source)):
        compare = isinstance(node, ast.Compare) and any(named(o) for o in [node.left,
                                                                           *node.comparators])
        keyed = isinstance(node, ast.Dict) and any(named(k) for k in node.keys)
        case = isinstance(node, ast.MatchValue) and named(node.value)
        if compare or keyed or case:
            hits.append(f"{getattr(node, 'lineno', 0)}: {ast.unparse(node)[:60]}")
    return hits


def test_only_the_registry_and_the_options_branch_on_method_names() -> None:
    """Adding a method is one new module of ``maths/methods``: nobody else asks its name."""
    from ddrp_dask.options import METHODS

    bad = [f"{f.relative_to(ROOT)}:{hit}" for f in [*_files(LIB), *_files(CLI)]
           if not any(f == home or f.is_relative_to(home) for home in METHOD_HOMES)
           for hit in _method_branches(f.read_text(), set(METHODS))]
    assert bad == []


@pytest.mark.parametrize("source", [
    'if method == "auto":\n    pass\n',
    'x = 1 if m in ("gaussian", "orthogonal") else 2\n',
    'low = {"head-tail": 3, "truncated": 2}.get(method, 1)\n',
    'match method:\n    case "truncated":\n        pass\n',
])
def test_the_method_name_rule_can_fail(source: str) -> None:
    """A control: today's kinds of branch on a name (before the registry) are found."""
    assert _method_branches(source, {"auto", "gaussian", "head-tail", "truncated"})


def _too_long(files: list[Path]) -> list[str]:
    return [f"{f.name}: {n} lines" for f in files
            if (n := len(f.read_text().splitlines())) > MAX_LINES]


def test_no_module_of_the_library_is_over_600_lines() -> None:
    assert _too_long(_files(LIB)) == []


def test_the_size_rule_can_fail(tmp_path: Path) -> None:
    """A control: a module of 1,263 lines (``maths/optimal.py`` before its split)."""
    long = tmp_path / "optimal.py"
    long.write_text("x = 1\n" * 1263)
    assert _too_long([long]) == ["optimal.py: 1263 lines"]


def _absent_citations(files: list[Path]) -> list[str]:
    import re

    pattern = re.compile(ABSENT_DOCUMENTS)
    return [f"{f.name}:{i}: {line.strip()[:70]}" for f in files
            for i, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]


def test_the_code_cites_only_documents_of_the_repository() -> None:
    """``ddrp_dask/``, the CLI, the benchmarks, scripts and deployment files cite
    ``docs/method.md §N``, never the developers' notes the repository does not hold."""
    files = [f for d in ("ddrp_dask", "cli", "benchmarks", "scripts", "deploy")
             for f in sorted((ROOT / d).rglob("*")) if f.suffix in (".py", ".md", ".yaml")]
    assert files and _absent_citations(files) == []
    assert "DESIGN" not in (ROOT / ".gitignore").read_text()


def test_the_citation_rule_can_fail(tmp_path: Path) -> None:
    """A control: the kinds of citation the code held before (``DESIGN §7``, ``see
    DESIGN.md``, ``(FIELD-NOTES)``)."""
    old = tmp_path / "old.py"
    old.write_text('"""The construction of DESIGN §7 (see DESIGN.md).\n\n'
                   'Faster (FIELD-NOTES)."""\n')
    assert len(_absent_citations([old])) == 2


def test_every_cited_section_of_the_method_page_exists() -> None:
    """``docs/method.md §N`` in the code names a heading of that page (``## §N …``)."""
    import re

    page = (ROOT / "docs" / "method.md").read_text()
    sections = set(re.findall(r"^#+ §(\d+(?:\.\d+)?) ", page, flags=re.M))
    cited = {m for d in ("ddrp_dask", "cli", "benchmarks") for f in (ROOT / d).rglob("*.py")
             for m in re.findall(r"docs/method\.md §(\d+(?:\.\d+)?)", f.read_text())}
    assert cited and sections and cited <= sections, sorted(cited - sections)
