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
    commands = [shlex.split(line, comments=True) for line in text.splitlines()]
    return [c for c in commands if c]


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


#: How far each number of an excerpt line may be from the one printed, ``(relative,
#: absolute)``, by its place in the line. The demo's W comes from classifiers trained with
#: the machine's BLAS, whose kernels (Haswell, SkylakeX) round differently, and the auto
#: build's balanced basis turns last bits into visible changes: on two CPUs the plan's K
#: moved by 0.3 % and evaluate's sampled statistics by up to 7 %.
TOLERANCES = {
    "plan": [(0.02, 0.0)] * 2,  # K; the d in "K ≥ d=64" is a word, compared exactly
    # MSE, predicted, rel MSE, rel err 50/90/99 %, recall@10
    "evaluate": [(0.05, 0.0)] * 3 + [(0.10, 0.0)] * 2 + [(0.15, 0.0), (0.0, 0.03)],
}


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def shows(shown: str, printed: list[str], tols: list[tuple[float, float]]) -> bool:
    """Whether a printed line reads as the README's ``shown`` line: the same words, and
    each number within its tolerance (``TOLERANCES``)."""
    want = shown.split()
    for line in printed:
        got = line.split()
        if len(got) != len(want):
            continue
        k, ok = 0, True
        for a, b in zip(want, got, strict=True):
            x, y = _number(a), _number(b)
            if x is None or y is None:
                ok = a == b
            else:
                rel, tol = tols[k] if k < len(tols) else (0.0, 0.0)
                ok = abs(x - y) <= max(rel * abs(x), tol)
                k += 1
            if not ok:
                break
        if ok:
            return True
    return False


def test_excerpt_lines_match_within_their_tolerances() -> None:
    """What two CPUs printed matches the same excerpt; a K or an MSE off by more does not."""
    ev = TOLERANCES["evaluate"]
    shown = "  auto   0.2254   0.322  0.00611   0.0813 0.582 5.78   0.826"  # Haswell
    skylake = "  auto  0.2256  0.3226  0.00609   0.0802 0.572 6.15   0.820"
    assert shows(shown, ["header", skylake], ev)
    assert not shows(shown, [skylake.replace("0.2256", "0.2456")], ev)  # MSE +9 %
    assert not shows(shown, [skylake.replace("0.820", "0.780")], ev)  # recall -0.046
    assert not shows(shown, [skylake.replace("auto ", "other")], ev)
    plan = "  asymmetric  K = 1137  (K ≥ d=64: storing the raw vectors is as small)"
    assert shows(plan, [plan.replace("1137", "1136")], TOLERANCES["plan"])
    assert not shows(plan, [plan.replace("1137", "1200")], TOLERANCES["plan"])
    assert not shows(plan, [plan.replace("d=64", "d=65")], TOLERANCES["plan"])
    assert not shows("  auto        K = 27", ["  auto        K = 28"], TOLERANCES["plan"])


def test_tour_has_every_step() -> None:
    cmds = tour_commands()
    assert cmds[0] == ["mkdir", "-p", "tour"]  # the outputs go to a scratch folder
    cmds = cmds[1:]
    assert all(c[c.index(opt) + 1].startswith("tour/")
               for c in cmds for opt in ("--out", "--plot") if opt in c)
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
        if cmd[:2] == ["mkdir", "-p"]:
            (tmp_path / cmd[2]).mkdir(parents=True)
            continue
        # the threaded scheduler: the same bytes as a LocalCluster, without starting one
        args = [sys.executable, "-m", "ddrp_cli.main", *cmd[1:], "--scheduler", "threads"]
        res = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, f"{shlex.join(cmd)}\n{res.stderr}"
        printed[cmd[1]] = res.stdout
    for name in ("plan.png", "sketches.zarr/model", "top10.zarr/indices",
                 "new-rows.zarr/sketch", "new-rows.zarr/ids"):
        assert (tmp_path / "tour" / name).exists(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-data", "tour"]
    for command, lines in shown_output().items():
        for line in lines:
            assert shows(line, printed[command].splitlines(), TOLERANCES[command]), \
                (command, line, printed[command])

    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(_block("tour-python"), "README.md", "exec"), scope)
    import numpy as np
    import zarr

    sketch = zarr.open_array(str(tmp_path / "tour/sketches.zarr/x"), mode="r")[...]
    assert np.array_equal(scope["S"], sketch)  # the estimator gives run's bytes
