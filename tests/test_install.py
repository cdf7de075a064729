"""A plain ``pip install`` (no extras), as a new user makes it: the wheel built from this tree,
its dependencies from the package index, in a fresh venv. What needs an extra says which."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str | Path, cwd: Path | None = None, check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, check=check, text=True,
                          capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the wheel of this tree and its required dependencies only."""
    t = tmp_path_factory.mktemp("install")
    src = t / "src"  # a copy, so the build leaves nothing in the tree
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("ddrp_dask", "cli"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", t / "dist", src)
    wheel = next((t / "dist").glob("ddrp_dask-*.whl"))
    venv = t / "venv"
    _run(sys.executable, "-m", "venv", venv)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)
    return venv


@pytest.mark.slow
def test_the_estimator_names_its_extra(plain_venv: Path, tmp_path: Path) -> None:
    """Before: ``ModuleNotFoundError: No module named 'sklearn'``."""
    py = plain_venv / "bin" / "python"
    assert _run(py, "-c", "import sklearn", check=False).returncode != 0  # really without
    res = _run(py, "-c", "import ddrp_dask, numpy\n"
               "try:\n    from ddrp_dask import AsymmetricRandomProjection\n"
               "except ImportError as e:\n    print(type(e).__name__, e)\n", cwd=tmp_path)
    assert res.stdout.strip() == ("ImportError AsymmetricRandomProjection needs sklearn, which "
                                  "is not installed: pip install 'ddrp-dask[sklearn]'")


@pytest.mark.slow
def test_plot_fails_before_pass_1_in_one_line(plain_venv: Path, tmp_path: Path) -> None:
    """Before: pass 1 ran, then a traceback (``No module named 'matplotlib'``)."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((200, 6)).astype("f4"))
    np.save(tmp_path / "w.npy", rng.standard_normal((30, 6)).astype("f4"))
    ddrp = plain_venv / "bin" / "ddrp"
    res = _run(ddrp, "plan", "--x", "x.npy", "--w", "w.npy", "--plot", "p.png",
               "--scheduler", "sync", cwd=tmp_path, check=False)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == ("ddrp: error: --plot needs matplotlib, which is not installed: "
                          "pip install 'ddrp-dask[plot]'\n")
    assert not (tmp_path / "p.png").exists()
    # the same plan without --plot runs: nothing else was missing
    res = _run(ddrp, "plan", "--x", "x.npy", "--w", "w.npy", "--scheduler", "sync",
               "--quiet", cwd=tmp_path)
    assert "smallest K" in res.stdout
