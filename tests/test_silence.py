"""Never silent: on a terminal, ``ddrp run`` redraws a line at least every few seconds, also
while the build works on the driver (a long factorisation included); the estimator's
``verbose`` draws the same lines."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ddrp_dask.graph.progress import StepLine

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "cli")]))
#: The longest a terminal may go without a new drawing.
MAX_SILENCE = 5.0


def _gaps_on_a_terminal(args: list[str]) -> tuple[str, list[tuple[float, float]]]:
    """Run the CLI with stdout and stderr on a pseudo-terminal: what it printed, and each
    silence as (when it started, how long) between its first output and its last (before
    the first, Python imports its libraries, and after the last, "wrote ...", it exits:
    seconds each on a loaded machine, with nothing left to draw)."""
    leader, follower = pty.openpty()
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ddrp_cli.main", *args],
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=ENV)
    os.close(follower)
    chunks, gaps, last = [], [], t0
    while True:
        ready, _, _ = select.select([leader], [], [], 0.05)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        now = time.monotonic()
        if chunks:
            gaps.append((last - t0, now - last))
        chunks.append(data)
        last = now
    proc.wait(timeout=600)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text
    return text, gaps


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """X and W at d = 768 (few rows: pass 1 is short, the cross-fitted build is not)."""
    root = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(5)
    d = 768
    scales = np.geomspace(3.0, 0.03, d).astype(np.float32)
    x = rng.standard_normal((6000, d), dtype=np.float32) * scales + 0.5
    w = rng.standard_normal((3000, d), dtype=np.float32) * scales[::-1] - 0.2
    paths = {"x": str(root / "x.npy"), "w": str(root / "w.npy")}
    np.save(paths["x"], x)
    np.save(paths["w"], w)
    return paths


def test_run_is_never_silent_on_a_terminal(tmp_path: Path, wide: dict[str, str]) -> None:
    t0 = time.monotonic()
    text, gaps = _gaps_on_a_terminal(["run", "--x", wide["x"], "--w", wide["w"], "-k", "64",
                                      "--scheduler", "threads", "--out",
                                      str(tmp_path / "o.zarr")])
    total = time.monotonic() - t0
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    build = [ln for ln in lines if ln.startswith("build (auto, d=768)")]
    # the build has a line of its own, drawn repeatedly while it works
    assert build and build[-1].endswith("elapsed"), text[-2000:]
    assert len(build) >= 2, text[-2000:]
    when, longest = max(gaps, key=lambda g: g[1])
    assert longest < MAX_SILENCE, (f"silent for {longest:.1f} s from {when:.1f} s of "
                                   f"{total:.1f} s:\n{text[-3000:]}")


def test_a_step_line_redraws_by_itself() -> None:
    """The line redraws every tick without being told anything (what keeps a long
    factorisation from being silent); without the ticker it would be drawn once."""
    out = io.StringIO()
    with StepLine("build (auto, d=8)", stream=out, every=0.05):
        time.sleep(0.4)
    drawn = out.getvalue().split("\r")[1:]
    assert len(drawn) >= 4
    assert all(d.startswith("build (auto, d=8): starting, 0:0") for d in drawn)
    assert out.getvalue().endswith("\n")


def test_estimator_verbose_draws_the_build(capfd: pytest.CaptureFixture[str]) -> None:
    import dask.array as da

    from ddrp_dask import AsymmetricRandomProjection

    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 12))
    w = rng.standard_normal((90, 12))
    quiet = AsymmetricRandomProjection(6, random_state=0).fit(x, W=w)
    assert capfd.readouterr().err == ""
    loud = AsymmetricRandomProjection(6, random_state=0, verbose=1).fit(
        da.from_array(x, chunks=200), W=w)
    err = capfd.readouterr().err
    assert "pass 1: statistics" in err and "build (auto, d=12): K=6" in err
    assert loud.model_.digest == quiet.model_.digest  # verbose changes nothing fitted
    with pytest.raises(ValueError, match="verbose must be an integer"):
        AsymmetricRandomProjection(6, verbose=-1).fit(x, W=w)
