"""Real clusters: separate `dask scheduler` / `dask worker` processes on 127.0.0.1, a worker
killed mid-pass, a client killed and resumed, TLS with certificates made here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from ddrp_dask.io.lifecycle import staging_path

from .conftest import make_pair, write_npy

pytestmark = pytest.mark.cluster

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_workers(address: str, n: int, env: dict[str, str] | None = None) -> None:
    code = ("import sys; from distributed import Client; c = Client(sys.argv[1], timeout=60); "
            "c.wait_for_workers(int(sys.argv[2]), timeout=60); c.close()")
    subprocess.run([sys.executable, "-c", code, address, str(n)], check=True, timeout=120,
                   env=env)


class Cluster:
    """A scheduler and worker processes started with Dask's own command line."""

    def __init__(self, tmp: Path, n_workers: int = 2, tls: dict[str, str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        proto = "tls" if tls else "tcp"
        self.address = f"{proto}://127.0.0.1:{self.port}"
        self.env = env
        tls_args = [a for key in ("ca-file", "cert", "key") if tls
                    for a in (f"--tls-{key}", tls[key])]
        log = open(tmp / f"cluster-{self.port}.log", "w")  # closed in stop()
        self.log = log
        self.scheduler = subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-dashboard", "--protocol", proto, *tls_args],
            stdout=log, stderr=log, env=env)
        self.workers = [
            subprocess.Popen([str(BIN / "dask"), "worker", self.address, "--nthreads", "1",
                              "--no-nanny", "--no-dashboard", "--memory-limit", "2GiB",
                              "--host", "127.0.0.1", *tls_args],
                             stdout=log, stderr=log, env=env)
            for _ in range(n_workers)]
        _wait_for_workers(self.address, n_workers, env)

    def stop(self) -> None:
        stop_processes([*self.workers, self.scheduler])
        self.log.close()


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate the processes (killing any still there after 20 s)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    t = tmp_path_factory.mktemp("clusterdata")
    x, w = make_pair(n=60_000, m=3_000, d=16, seed=8)
    return {"x": write_npy(t / "x.npy", x), "w": write_npy(t / "w.npy", w), "dir": str(t)}


def _ddrp(*args: str, env: dict[str, str] | None = None,
          wait: bool = True) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    cmd = [str(BIN / "ddrp"), *args]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _run_args(data: dict[str, str], out: Path, *extra: str) -> list[str]:
    return ["run", "--x", data["x"], "--w", data["w"], "-k", "6", "--seed", "2",
            "--block-rows", "500", "--out", str(out), "--quiet", *extra]


@pytest.fixture(scope="module")
def reference(data: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    proc = _ddrp(*_run_args(data, out, "--scheduler", "threads"))
    assert proc.returncode == 0, proc.stderr
    return _sketch_bytes(out)


def _sketch_bytes(out: Path) -> bytes:
    g = zarr.open_group(str(out), mode="r")
    assert g.attrs["complete"] is True
    return bytes(g["x"][...].tobytes() + g["w"][...].tobytes())


def _flags_done(out: Path) -> int:
    """Blocks of x done in the output's staging directory (where a local output is written)."""
    stage = staging_path(out)
    assert stage is not None
    try:
        return int(np.sum(zarr.open_array(f"{stage}/_progress_x", mode="r")[...]))
    except Exception:
        return 0


def _wait_flags(out: Path, n: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    end = time.time() + timeout
    while _flags_done(out) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, "pass 2 did not start in time"
        time.sleep(0.02)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.stop()


def test_separate_processes_byte_identical_to_local(data: dict[str, str], reference: bytes,
                                                    cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    proc = _ddrp(*_run_args(data, out, "--scheduler", cluster.address))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet: not even the scheduler line
    assert _sketch_bytes(out) == reference
    # the address may also come from the environment (DASK_SCHEDULER_ADDRESS)
    env = dict(os.environ, DASK_SCHEDULER_ADDRESS=cluster.address)
    proc = _ddrp(*_run_args(data, tmp_path / "env.zarr"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # --quiet: not even the scheduler line


def test_worker_killed_in_pass_2_job_finishes_identical(data: dict[str, str], reference: bytes,
                                                         cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    proc = _ddrp(*_run_args(data, out, "--scheduler", cluster.address), wait=False)
    assert isinstance(proc, subprocess.Popen)
    _wait_flags(out, 5, proc)
    cluster.workers[0].send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert _flags_done(out) == 0  # flags are dropped once complete
    assert _sketch_bytes(out) == reference


def test_local_path_invisible_to_workers_is_caught(data: dict[str, str], cluster: Cluster,
                                                   tmp_path: Path) -> None:
    missing_dir = tmp_path / "client-only"
    missing_dir.mkdir()
    x = write_npy(missing_dir / "x.npy", np.ones((10, 16), np.float32))
    # the workers run here too, so hide the file from them by removing it after planning:
    # a client-side path that no worker sees is exactly this situation
    code = (
        "import sys, os, ddrp_dask as dd\n"
        "from distributed import Client\n"
        "plan = dd.plan_run(sys.argv[1], sys.argv[2], 6, sys.argv[3])\n"
        "os.remove(sys.argv[1])\n"
        "try:\n"
        "    dd.execute(plan, scheduler=Client(sys.argv[4]))\n"
        "except dd.DdrpError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, x, data["w"], str(tmp_path / "o.zarr"),
                           cluster.address], capture_output=True, text=True, timeout=120)
    assert "is not visible to worker" in proc.stdout, proc.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_client_killed_then_resume(data: dict[str, str], reference: bytes,
                                   tmp_path: Path) -> None:
    out = tmp_path / "o.zarr"
    proc = _ddrp(*_run_args(data, out, "--scheduler", "threads", "--threads-per-worker", "1"),
                 wait=False)
    assert isinstance(proc, subprocess.Popen)
    _wait_flags(out, 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = _flags_done(out)
    assert 10 <= done_before < 120
    stage = Path(str(staging_path(out)))
    assert not out.exists()  # staged: nothing at OUT for a reader to take for data
    assert zarr.open_group(str(stage), mode="r").attrs["complete"] is False
    chunk_dir = stage / "x" / "c"
    kept = {p.relative_to(stage): p.stat().st_mtime_ns for p in chunk_dir.rglob("*")
            if p.is_file()}
    refused = _ddrp(*_run_args(data, out, "--scheduler", "threads"))
    assert refused.returncode == 2 and "incomplete ddrp output" in refused.stderr
    assert "--resume" in refused.stderr
    other = _ddrp(*_run_args(data, out, "--scheduler", "threads", "--resume", "--seed", "3"))
    assert other.returncode == 2 and "cannot resume" in other.stderr
    resumed = _ddrp(*_run_args(data, out, "--scheduler", "threads", "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert _sketch_bytes(out) == reference
    # chunks finished before the kill were kept, not rewritten
    flagged = [p for p, t in kept.items()
               if (out / p).exists() and (out / p).stat().st_mtime_ns == t]
    assert len(flagged) >= done_before - 2


def _make_certs(d: Path) -> dict[str, str]:
    """A CA and one certificate for 127.0.0.1 signed by it (openssl)."""
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=ddrp-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.csr",
        "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca-file": str(d / "ca.pem"), "cert": str(d / "cert.pem"), "key": str(d / "key.pem")}


def test_tls_cluster(data: dict[str, str], reference: bytes, tmp_path: Path) -> None:
    certs = _make_certs(tmp_path)
    env = dict(os.environ,
               DASK_DISTRIBUTED__COMM__TLS__CA_FILE=certs["ca-file"],
               DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT=certs["cert"],
               DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY=certs["key"],
               DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION="True")
    cluster = Cluster(tmp_path, n_workers=1, tls=certs, env=env)
    try:
        out = tmp_path / "o.zarr"
        proc = _ddrp(*_run_args(data, out, "--scheduler", cluster.address), env=env)
        assert proc.returncode == 0, proc.stderr
        assert cluster.address.startswith("tls://")
        assert _sketch_bytes(out) == reference
        # without the client certificate the scheduler refuses the connection
        bare = {k: v for k, v in env.items() if "CLIENT" not in k}
        code = ("import sys; from distributed import Client; "
                "Client(sys.argv[1], timeout=5)")
        refused = subprocess.run([sys.executable, "-c", code, cluster.address],
                                 capture_output=True, text=True, timeout=60, env=bare)
        assert refused.returncode != 0
    finally:
        cluster.stop()


def test_a_worker_that_cannot_answer_does_not_fail_the_visibility_check(
        tmp_path: Path) -> None:
    """The chaos run of test_faults once died with a traceback: the check that every worker
    sees the local paths (``client.run``) reached a worker being killed, and its
    ConnectionResetError came through. A worker that cannot answer is skipped (it runs no
    task either); a path a reachable worker lacks is still named. Real in-process workers,
    one whose ``run`` handler fails the way a dying worker's connection does."""
    from distributed import Client, LocalCluster

    from ddrp_dask.errors import OptionError
    from ddrp_dask.graph.compute import check_visible

    async def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    with LocalCluster(n_workers=2, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        dying = next(iter(cluster.workers.values()))
        dying.handlers["run"] = broken
        with pytest.raises(Exception, match="Connection reset"):  # control: the fault is real
            client.run(os.getpid)
        check_visible([str(tmp_path)], client)
        with pytest.raises(OptionError, match="is not visible to worker"):
            check_visible([str(tmp_path / "nowhere")], client)
