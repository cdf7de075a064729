"""fsspec URLs: inputs read and outputs written in an S3-compatible server (moto's server mode
on 127.0.0.1, a real HTTP endpoint; no mocks of pyarrow or zarr) and in fsspec's memory store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

import ddrp_dask as dd

from .conftest import make_pair, write_npy, write_parquet_list

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as fh:
        server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=fh, stderr=fh)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import s3fs

        deadline = time.time() + 30
        while True:
            try:
                fs = s3fs.S3FileSystem(skip_instance_cache=True)
                fs.mkdir("ddrp-test")
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=20)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    t = tmp_path_factory.mktemp("local")
    x, w = make_pair(n=3000, m=500, d=8, seed=2)
    return {"x_npy": write_npy(t / "x.npy", x), "x_pq": write_parquet_list(t / "x.parquet", x, 700),
            "w_npy": write_npy(t / "w.npy", w), "dir": str(t)}


def _reference(local: dict[str, str], tmp: Path) -> bytes:
    plan = dd.plan_run(local["x_npy"], local["w_npy"], 5, str(tmp / "ref.zarr"), block_rows=1000)
    dd.execute(plan, scheduler="threads")
    g = zarr.open_group(str(tmp / "ref.zarr"), mode="r")
    return bytes(g["x"][...].tobytes() + g["w"][...].tobytes())


def _upload(local: dict[str, str], base: str) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(base)
    fs.put(local["x_npy"], f"{root}/x.npy")
    fs.put(local["w_npy"], f"{root}/w.npy")
    fs.mkdirs(f"{root}/xds", exist_ok=True)
    fs.put(local["x_pq"], f"{root}/xds/part-0.parquet")


def test_s3_inputs_and_output_through_the_cli(s3: dict[str, str], local: dict[str, str],
                                              tmp_path: Path) -> None:
    base = "s3://ddrp-test/job"
    _upload(local, base)
    expected = _reference(local, tmp_path)
    for x in (f"{base}/x.npy", f"{base}/xds"):
        out = f"{base}/out-{x.rsplit('/', 1)[-1]}.zarr"
        proc = subprocess.run(
            [str(BIN / "ddrp"), "run", "--x", x, "--w", f"{base}/w.npy", "-k", "5",
             "--block-rows", "1000", "--out", out, "--scheduler", "threads", "--quiet"],
            capture_output=True, text=True, timeout=300, env=dict(os.environ, **s3))
        assert proc.returncode == 0, proc.stderr
        g = zarr.open_group(out, mode="r")
        assert g.attrs["complete"] is True
        assert bytes(g["x"][...].tobytes() + g["w"][...].tobytes()) == expected
    # existing output in the bucket is refused without --overwrite
    with pytest.raises(dd.DdrpError, match="exists; pass --overwrite"):
        dd.plan_run(f"{base}/x.npy", f"{base}/w.npy", 5, f"{base}/out-x.npy.zarr")
    with pytest.raises(dd.DdrpError, match="no such file"):
        dd.plan_run(f"{base}/nope.npy", f"{base}/w.npy", 5, f"{base}/o.zarr")


def test_memory_urls_with_the_library(local: dict[str, str], tmp_path: Path) -> None:
    base = "memory://ddrp-mem"
    _upload(local, base)
    expected = _reference(local, tmp_path)
    plan = dd.plan_run(f"{base}/xds", f"{base}/w.npy", 5, f"{base}/out.zarr", block_rows=1000)
    dd.execute(plan, scheduler="threads")
    g = zarr.open_group(f"{base}/out.zarr", mode="r")
    assert bytes(g["x"][...].tobytes() + g["w"][...].tobytes()) == expected
    with pytest.raises(dd.DdrpError, match="overlaps input"):
        dd.plan_run(f"{base}/xds", f"{base}/w.npy", 5, f"{base}/xds/out.zarr")
    # a truncated remote .npy is named
    import fsspec

    with fsspec.open(f"{base}/bad.npy", "wb") as fh:
        fh.write(open(local["x_npy"], "rb").read()[:1000])
    with pytest.raises(dd.DdrpError, match=r"bad.npy: not a readable .npy array \(truncated"):
        dd.open_source(f"{base}/bad.npy")
    assert np.isfinite(g["w"][...]).all()
