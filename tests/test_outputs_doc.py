"""docs/outputs.md runs as written: its ``sh`` blocks (in bash, with this checkout's ``ddrp``)
and its ``python`` blocks (one namespace), in order, in a folder holding a small stand-in for
the demo data (the same files and columns, fewer and shorter rows). Its examples open every
kind of output with zarr, xarray, Dask, pyarrow, DuckDB, pandas and polars, and check what
they read against each other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .conftest import make_pair

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "outputs.md"


def blocks(text: str) -> list[tuple[str, str, int]]:
    """The runnable fenced blocks of a page: ``(language, code, line)``; a block preceded by
    ``<!-- not run: REASON -->`` is shown only."""
    found = []
    for m in re.finditer(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", text, re.S | re.M):
        before = text[:m.start()]
        if m.group(1) in ("python", "sh") and \
                not re.search(r"<!-- not run: [^>]+-->\s*\Z", before):
            found.append((m.group(1), m.group(2), before.count("\n") + 1))
    return found


def _stand_in(folder: Path) -> None:
    """``digits.parquet`` (id, pixels) and ``weights.npy``, as scripts/demo_data.py writes
    them, of synthetic rows."""
    x, w = make_pair(n=600, m=40, d=24, seed=11)
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"id": np.arange(len(x)), "pixels": pa.FixedSizeListArray
                             .from_arrays(pa.array(x.ravel()), x.shape[1])}),
                   folder / "digits.parquet", row_group_size=256, use_dictionary=False)
    np.save(folder / "weights.npy", w)


def test_the_blocks_are_found() -> None:
    text = "```sh\nddrp x\n```\n<!-- not run: a cluster -->\n```python\ny = 1\n```\n" \
           "```python\nz = 2\n```\n```text\nshown\n```\n"
    assert blocks(text) == [("sh", "ddrp x\n", 1), ("python", "z = 2\n", 8)]
    langs = [lang for lang, _, _ in blocks(PAGE.read_text())]
    assert langs[0] == "sh" and langs.count("python") >= 6


@pytest.mark.slow
def test_the_examples_of_outputs_md_run(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    _stand_in(work / "demo-data")
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, run in (("ddrp", "-m ddrp_cli.main "), ("python", "")):
        (shims / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" {run}"$@"\n')
        (shims / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "cli")])}
    monkeypatch.chdir(work)
    scope: dict[str, object] = {"__name__": "__docs__"}
    for lang, code, line in blocks(PAGE.read_text()):
        where = f"outputs.md, line {line}"
        if lang == "sh":
            res = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, f"{where}\n{code}\n{res.stdout}\n{res.stderr}"
        else:
            exec(compile(code, where, "exec"), scope)
    assert scope["joined"] is not None and (work / "out" / "run.zarr").is_dir()
