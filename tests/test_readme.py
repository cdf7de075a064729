"""The README's tour runs as written: its shell commands in order on freshly written demo data,
then its Python snippet; the output excerpts it shows are what the commands print."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block(marker: str) -> str:
    """The fenced code between ``<!-- marker -->`` and ``<!-- /marker -->``."""
    m = re.search(rf"<!-- {marker} -->\n```\w*\n(.*?)```\n<!-- /{marker} -->", README, re.S)
    assert m, f"README.md has no <!-- {marker} --> block"
    return m.group(1)


def tour_commands() -> list[list[str]]:
    """The tour's shell commands, continuation lines joined, comments dropped."""
    text = _block("tour").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def shown_output() -> dict[str, list[str]]:
    """The excerpts the README shows after the tour: command name → lines."""
    m = re.search(r"<!-- /tour -->\n.*?```\n(.*?)```", README, re.S)
    assert m
    shown: dict[str, list[str]] = {}
    for line in m.group(1).splitlines():
        if line.startswith("$ ddrp "):
            current = shown.setdefault(line.split()[2], [])
        else:
            current.append(line)
    return shown


def test_tour_has_every_step() -> None:
    cmds = tour_commands()
    assert [c[:2] for c in cmds] == [["ddrp", "plan"], ["ddrp", "run"], ["ddrp", "evaluate"],
                                     ["ddrp", "matmul"], ["ddrp", "project"]]
    assert "--plot" in cmds[0] and "--top" in cmds[3]
    assert "AsymmetricRandomProjection(" in _block("tour-python")


@pytest.mark.slow
def test_readme_tour_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("demo_data", ROOT / "scripts/demo_data.py")
    assert spec and spec.loader
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.write_demo(tmp_path / "demo-data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "cli")])}
    printed: dict[str, str] = {}
    for cmd in tour_commands():
        # the threaded scheduler: the same bytes as a LocalCluster, without starting one
        args = [sys.executable, "-m", "ddrp_cli.main", *cmd[1:], "--scheduler", "threads"]
        res = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, f"{shlex.join(cmd)}\n{res.stderr}"
        printed[cmd[1]] = res.stdout
    for name in ("plan.png", "sketches.zarr/model", "top10.zarr/indices",
                 "new-rows.zarr/sketch", "new-rows.zarr/ids"):
        assert (tmp_path / name).exists(), name
    for command, lines in shown_output().items():
        for line in lines:
            assert line in printed[command].splitlines(), (command, line)

    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(_block("tour-python"), "README.md", "exec"), scope)
    import numpy as np
    import zarr

    sketch = zarr.open_array(str(tmp_path / "sketches.zarr/x"), mode="r")[...]
    assert np.array_equal(scope["S"], sketch)  # the estimator gives run's bytes
