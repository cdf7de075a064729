"""The documentation site (``make docs``) builds without a warning; its CLI reference holds
every option of every command's ``--help`` with its default; its API reference documents the
estimator's parameters and methods; and every example of its pages runs as written.

A page's examples are its fenced ``python`` and ``sh`` blocks, run in order in a scratch folder
holding the demo data (``scripts/demo_data.py``): the ``python`` blocks of a page share one
namespace, the ``sh`` blocks run in ``bash -euo pipefail`` with ``ddrp`` and ``python`` being
this checkout's. A block preceded by ``<!-- not run: REASON -->`` is shown only (a cluster
address, a benchmark of minutes); the reason is required.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ddrp_cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: The command ``make docs`` runs, less its output folder (the Makefile's SPHINXOPTS).
SPHINX = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q"]
#: Pages whose examples another test runs, with that test.
TESTED_ELSEWHERE: dict[str, str] = {"outputs.md": "tests/test_outputs_doc.py"}

pytest.importorskip("sphinx_click", reason="the docs extra: pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module as ``make docs`` builds it."""
    tmp = tmp_path_factory.mktemp("site")
    # autosummary writes its stubs into the source folder: build from a copy of it, beside
    # the code that docs/conf.py puts on the path
    src = tmp / "docs"
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("_build", "generated"))
    for code in ("ddrp_dask", "cli"):
        (tmp / code).symlink_to(ROOT / code)
    out = tmp / "html"
    res = subprocess.run([*SPHINX, str(src), str(out)], capture_output=True, text=True,
                         timeout=600, cwd=tmp)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    return out


def test_the_site_builds_without_a_warning(site: Path) -> None:
    for page in ("index", "getting-started", "cli", "api", "method"):
        assert (site / f"{page}.html").exists(), page


class _Options(HTMLParser):
    """sphinx-click's option entries of one page: ``(command, option names, description)``.

    An entry is ``<dl class="std option"><dt id="cmdoption-ddrp-CMD-...">`` with the names in
    ``<span class="pre">`` of ``sig-name`` spans, then the ``<dd>`` text."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple[str, list[str], str]] = []
        self._depth = 0  # inside an option's <dl>
        self._where = ""  # "dt" or "dd"
        self._name = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "dl" and a.get("class") == "std option":
            self._depth = 1
            return
        if not self._depth:
            return
        if tag == "dl":
            self._depth += 1
        elif tag == "dt" and self._depth == 1:
            command = (a.get("id") or "").removeprefix("cmdoption-ddrp-").split("-")[0]
            self.entries.append((command, [], ""))
            self._where = "dt"
        elif tag == "dd" and self._depth == 1:
            self._where = "dd"
        elif tag == "span" and "sig-name" in (a.get("class") or ""):
            self._name = True

    def handle_endtag(self, tag: str) -> None:
        if self._depth and tag == "dl":
            self._depth -= 1
        if tag == "span":
            self._name = False

    def handle_data(self, data: str) -> None:
        if not self._depth or not self.entries:
            return
        command, names, text = self.entries[-1]
        if self._where == "dt" and self._name:
            names.extend(n.strip() for n in data.split(",") if n.strip())
        elif self._where == "dd":
            self.entries[-1] = (command, names, text + data)


def _help_options(command: str) -> Iterator[tuple[list[str], str | None]]:
    """Each option ``ddrp COMMAND --help`` lists: its names, and the default it shows."""
    res = CliRunner().invoke(cli, [command, "--help"], terminal_width=400)
    assert res.exit_code == 0, res.output
    body = res.output.split("Options:", 1)[1]
    for line in body.splitlines():
        m = re.match(r"\s{2}(-[\w-]+(?:, -[\w-]+)*(?: / -[\w-]+)?)(.*)$", line)
        if not m:
            continue
        names = [n for n in re.split(r"[ ,/]+", m.group(1)) if n]
        default = re.search(r"\[default: ([^\]]*)\]", m.group(2))
        yield names, default.group(1) if default else None


def test_every_option_of_every_command_is_in_the_cli_reference(site: Path) -> None:
    parser = _Options()
    parser.feed((site / "cli.html").read_text())
    documented = {(c, n): text for c, names, text in parser.entries for n in names}
    assert isinstance(cli, click.Group)
    commands = sorted(cli.commands)
    assert {"fit", "run", "project", "matmul", "evaluate", "plan"} <= set(commands)
    checked = 0
    for command in commands:
        for names, default in _help_options(command):
            if names == ["-h", "--help"]:
                continue
            for name in names:
                assert (command, name) in documented, f"ddrp {command} {name}"
            if default is not None:
                text = html.unescape(documented[command, names[-1]])
                assert default in text, (command, names, default, text)
            checked += 1
    assert checked > 60  # the parser found the options


def test_the_api_reference_documents_the_estimator(site: Path) -> None:
    page = (site / "generated" / "ddrp_dask.AsymmetricRandomProjection.html").read_text()
    for name in ("n_components", "method", "random_state", "shrinkage", "block_rows",
                 "model_", "predicted_mse_"):
        assert f"<strong>{name}</strong>" in page, name
    for method in ("fit", "transform", "transform_w"):
        assert f'id="ddrp_dask.AsymmetricRandomProjection.{method}"' in page, method
    assert "set_fit_request" not in page


def test_the_tests_a_page_cites_exist() -> None:
    """A page that says which test proves a promise names a test file (and function) the
    repository has."""
    cited = 0
    for page in DOCS.glob("*.md"):
        for path, name in re.findall(r"(tests/test_\w+\.py)(?:::(\w+))?", page.read_text()):
            assert (ROOT / path).exists(), (page.name, path)
            if name:
                assert f"def {name}(" in (ROOT / path).read_text(), (page.name, path, name)
            cited += 1
    assert cited


def test_the_readme_links_only_to_files_the_repository_has() -> None:
    links = re.findall(r"\]\(([^)#:]+)\)", (ROOT / "README.md").read_text())
    assert "docs/getting-started.md" in links
    assert [link for link in links if not (ROOT / link).exists()] == []


# --------------------------------------------------------------------------- the examples


NOT_RUN = re.compile(r"<!-- not run: \S.*-->\s*\Z")


def examples(page: Path) -> list[tuple[str, str, int]]:
    """The page's runnable fenced blocks: ``(language, code, line)``, in order."""
    text = page.read_text()
    found = []
    for m in re.finditer(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", text, re.S | re.M):
        lang = m.group(1)
        if lang not in ("python", "sh"):
            continue
        before = text[:m.start()]
        if NOT_RUN.search(before):
            continue
        assert not re.search(r"<!-- not run\s*-->\s*\Z", before), f"{page.name}: a reason"
        found.append((lang, m.group(2), before.count("\n") + 1))
    return found


PAGES = sorted(p for p in DOCS.glob("*.md") if p.name not in TESTED_ELSEWHERE)


def _page(page: Path) -> object:
    """A page as a test parameter, marked ``cluster`` when its examples start one."""
    code = "".join(block for _, block, _ in examples(page))
    starts = re.search(r"LocalCluster\(|--scheduler local", code)
    return pytest.param(page, id=page.stem, marks=[pytest.mark.cluster] if starts else [])


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_data", ROOT / "scripts/demo_data.py")
    assert spec and spec.loader
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = tmp_path_factory.mktemp("demo") / "demo-data"
    demo.write_demo(out)
    return out


def _shims(folder: Path) -> dict[str, str]:
    """An environment whose ``ddrp`` and ``python`` are this checkout's, in this Python."""
    folder.mkdir()
    for name, run in (("ddrp", "-m ddrp_cli.main "), ("python", "")):
        (folder / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" {run}"$@"\n')
        (folder / name).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "cli")])}


@pytest.mark.slow
@pytest.mark.parametrize("page", [_page(p) for p in PAGES])
def test_the_examples_of_a_page_run(page: Path, demo_data: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = examples(page)
    if not blocks:
        pytest.skip(f"{page.name} has no examples")
    env = _shims(tmp_path / "bin")
    work = tmp_path / "work"
    shutil.copytree(demo_data, work / "demo-data")
    monkeypatch.chdir(work)
    scope: dict[str, object] = {"__name__": "__docs__"}
    for lang, code, line in blocks:
        where = f"{page.name}, line {line}"
        if lang == "sh":
            res = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, f"{where}\n{code}\n{res.stdout}\n{res.stderr}"
        else:
            exec(compile(code, where, "exec"), scope)


def test_a_block_without_a_reason_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("<!-- not run: a cluster address -->\n```sh\nddrp x\n```\n\n"
                    "```python\nx = 1\n```\n\n```text\nshown\n```\n")
    assert examples(page) == [("python", "x = 1\n", 6)]
    page.write_text("<!-- not run -->\n```sh\nddrp x\n```\n")
    with pytest.raises(AssertionError, match="a reason"):
        examples(page)


# --------------------------------------------------------------------------- citations
# tests/test_layout.py forbids the developers' notes (DESIGN, FIELD-NOTES) and checks the
# sections of docs/method.md the code cites; these check every other document it names.

#: A document named in the code (a path or a file name ending in .md, .rst or .txt), and the
#: section that follows it, if any (``docs/quantized.md §6``, ````docs/quantized.md`` §1``).
DOCUMENT = re.compile(r"(?<![\w/.-])([\w./-]*\w\.(?:md|rst|txt))\b(?:`*\s*§\s*(\d+(?:\.\d+)*))?")


def _sections(doc: Path) -> set[str]:
    """The numbers of a page's numbered headings (``## §5 …``, ``### §5.2 …``, ``## 6. …``)."""
    return set(re.findall(r"^#+\s+§?(\d+(?:\.\d+)*)\.?\s", doc.read_text(), re.M))


def absent_citations(text: str, where: str) -> list[str]:
    """The documents ``text`` names that the repository does not hold, and the sections the
    named pages lack."""
    bad = []
    for m in DOCUMENT.finditer(text):
        name, section = m.group(1), m.group(2)
        found = [ROOT / name] if (ROOT / name).exists() else sorted(ROOT.glob(f"*/{name}"))
        if not found:
            bad.append(f"{where}: {name} is not in the repository")
        elif section and section not in _sections(found[0]):
            bad.append(f"{where}: {name} has no §{section}")
    return bad


def test_the_code_names_only_documents_the_repository_has() -> None:
    code = sorted([*(ROOT / "ddrp_dask").rglob("*.py"), *(ROOT / "cli").rglob("*.py")])
    assert code
    bad = [b for path in code for b in absent_citations(path.read_text(),
                                                         str(path.relative_to(ROOT)))]
    assert not bad, "\n".join(bad)


def test_control_absent_documents_and_sections_are_found() -> None:
    assert absent_citations("docs/method.md §5, ``docs/quantized.md`` §1 and RESULTS.md",
                            "ok") == []
    assert absent_citations("see DESIGN.md and docs/nothing.md", "x") == [
        "x: DESIGN.md is not in the repository", "x: docs/nothing.md is not in the repository"]
    assert absent_citations("docs/method.md §99", "x") == ["x: docs/method.md has no §99"]
