"""Run ``ddrp run`` on a SLURM (or PBS) cluster: Dask workers as batch jobs via dask-jobqueue.

Start it on a login node (or inside an allocation): the Dask scheduler runs in this process,
the workers run as batch jobs built from ``jobqueue.yaml``, and ddrp runs either through the
library (``--via api``, default) or as the ``ddrp`` command with ``--scheduler`` set to the
cluster's address (``--via cli``). Inputs and output must be on a file system that the login
node and the compute nodes share (or be URLs they can all reach).

    pip install ".[s3]"
    pip install dask-jobqueue
    python deploy/hpc/submit_slurm.py --x /scratch/$USER/docs.parquet \\
        --w /scratch/$USER/queries.npy -k 64 --out /scratch/$USER/sketches.zarr \\
        --jobs 2 --queue normal --account myproject
    python deploy/hpc/submit_slurm.py --pbs ...      # PBSCluster instead of SLURMCluster
    python deploy/hpc/submit_slurm.py --via cli ...  # ddrp run ... --scheduler tls://...
    python deploy/hpc/submit_slurm.py --dry-run ...  # print the job script and the ddrp
                                                     # command (and plan); submit nothing
    python deploy/hpc/submit_slurm.py --tls-dir certs ...  # tls:// with your certificates:
                                                     # certs/ca.pem, cluster.pem, cluster-key.pem

Security: the scheduler listens on the login node's network (the compute nodes must reach it)
and runs any code it is sent, so anyone who can reach it can run code as you. By default the
cluster is tls:// with a temporary self-signed certificate made for this run (distributed's
``Security.temporary()``, needs ``cryptography``): the scheduler, the workers and the client
all require it, and dask-jobqueue writes the workers' copy to files readable only by you in
the shared temp directory (jobqueue.yaml's ``shared-temp-directory``, else the current
directory, which the compute nodes must see anyway for ``ddrp-logs/``). ``--tls-dir`` uses
your own certificates instead; ``--no-tls`` (plain tcp://) is for a trusted, single-user
network only. The dashboard (plain HTTP, no authentication) listens on 127.0.0.1 only
(jobqueue.yaml): reach it through ``ssh -L 8787:localhost:8787 LOGIN-NODE``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_JOBQUEUE_CONFIG = HERE / "jobqueue.yaml"
KINDS = ("slurm", "pbs")


def load_jobqueue_config(path: str | Path = DEFAULT_JOBQUEUE_CONFIG) -> dict[str, Any]:
    """The ``jobqueue:`` section of a jobqueue.yaml as dotted Dask config keys
    (``{"jobqueue.slurm.cores": 8, ...}``), for ``dask.config.set``: keys it does not name keep
    dask-jobqueue's defaults."""
    with open(path) as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("jobqueue"), dict):
        raise ValueError(f"{path}: expected a mapping with a 'jobqueue' section")
    flat: dict[str, Any] = {}
    for kind, options in doc["jobqueue"].items():
        if not isinstance(options, dict):
            raise ValueError(f"{path}: jobqueue.{kind} must be a mapping")
        for key, value in options.items():
            flat[f"jobqueue.{kind}.{key}"] = value
    return flat


def make_cluster(kind: str = "slurm", **overrides: Any) -> Any:
    """A ``SLURMCluster`` or ``PBSCluster`` from the Dask config (call it inside
    ``dask.config.set(load_jobqueue_config(...))``); ``overrides`` that are not None win.
    Constructing it submits nothing: jobs are submitted by ``cluster.scale``."""
    from dask_jobqueue import PBSCluster, SLURMCluster

    classes = {"slurm": SLURMCluster, "pbs": PBSCluster}
    if kind not in classes:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    return classes[kind](**kwargs)


def tls_security(tls_dir: str | Path) -> Any:
    """distributed ``Security`` for scheduler, workers and client from ``tls_dir`` (the files
    deploy/docker/make_certs.sh writes: ca.pem, cluster.pem, cluster-key.pem)."""
    from distributed.security import Security

    d = Path(tls_dir).resolve()
    ca, cert, key = str(d / "ca.pem"), str(d / "cluster.pem"), str(d / "cluster-key.pem")
    for f in (ca, cert, key):
        if not os.path.exists(f):
            raise FileNotFoundError(f)
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key,
                    tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)


def temporary_security() -> Any:
    """A distributed ``Security`` with a self-signed certificate and key made for this run, in
    memory (``Security.temporary()``): the default of ``submit_slurm.py``."""
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError as e:
        raise SystemExit(
            "submit_slurm.py uses tls:// by default and makes a temporary certificate with "
            "the `cryptography` package, which is not installed: `pip install cryptography`, "
            "or pass --tls-dir DIR with your own certificates (--no-tls: plain tcp://, for a "
            "trusted single-user network only)") from e


def cluster_security(tls_dir: str | Path | None = None, no_tls: bool = False) -> Any:
    """The cluster's ``Security``: the certificates of ``tls_dir``, else a temporary one; None
    (plain tcp://) only when ``no_tls`` is asked for."""
    if no_tls:
        if tls_dir:
            raise ValueError("--no-tls and --tls-dir exclude each other")
        return None
    return tls_security(tls_dir) if tls_dir else temporary_security()


def tls_env(security: Any, directory: str | Path | None = None) -> dict[str, str]:
    """The Dask config of ``security``'s client side as environment variables: what a ``ddrp``
    process needs to connect to a tls:// scheduler. Certificates and keys held in memory (a
    temporary ``Security``) are written to files in ``directory`` (mode 0600; required then),
    so that no key travels in the environment."""
    values = {"CA_FILE": security.tls_ca_file, "CLIENT__CERT": security.tls_client_cert,
              "CLIENT__KEY": security.tls_client_key}
    env = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    for name, value in values.items():
        if "\n" in value:  # PEM contents, not a path
            if directory is None:
                raise ValueError("an in-memory certificate needs a directory to be written to")
            path = Path(directory) / f"{name.lower().replace('__', '-')}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value)
            value = str(path)
        env[f"DASK_DISTRIBUTED__COMM__TLS__{name}"] = value
    return env


def ddrp_argv(args: argparse.Namespace, scheduler_address: str) -> list[str]:
    """The ``ddrp run`` command line that ``--via cli`` runs against ``scheduler_address``."""
    argv = ["ddrp", "run", "--x", args.x, "--w", args.w, "-k", str(args.k),
            "--method", args.method, "--seed", str(args.seed), "--out", args.out,
            "--scheduler", scheduler_address]
    if args.x_columns:
        argv += ["--x-columns", args.x_columns]
    if args.w_columns:
        argv += ["--w-columns", args.w_columns]
    if args.overwrite:
        argv.append("--overwrite")
    return argv


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run `ddrp run` on Dask workers submitted as SLURM/PBS jobs.")
    p.add_argument("--x", required=True, help="Source of X rows (shared path or URL).")
    p.add_argument("--w", required=True, help="Source of W rows (shared path or URL).")
    p.add_argument("-k", "--k", type=int, required=True, help="Stored columns per sketch.")
    p.add_argument("--out", required=True, help="Zarr group to write (shared path or URL).")
    p.add_argument("--method", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--x-columns", default=None)
    p.add_argument("--w-columns", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--pbs", action="store_true", help="PBSCluster instead of SLURMCluster.")
    p.add_argument("--jobqueue-config", default=str(DEFAULT_JOBQUEUE_CONFIG),
                   help="jobqueue.yaml to use (default: the one beside this script).")
    p.add_argument("--jobs", type=int, default=2, help="Batch jobs to submit.")
    p.add_argument("--queue", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--walltime", default=None)
    p.add_argument("--cores", type=int, default=None, help="Cores per job.")
    p.add_argument("--processes", type=int, default=None, help="Workers per job.")
    p.add_argument("--memory", default=None, help="Memory per job, e.g. 32GiB.")
    p.add_argument("--wait", type=float, default=3600.0,
                   help="Seconds to wait for the first worker (jobs may queue).")
    p.add_argument("--tls-dir", default=None,
                   help="Directory with ca.pem, cluster.pem, cluster-key.pem for tls:// "
                        "(default: tls:// with a temporary certificate made for this run).")
    p.add_argument("--no-tls", action="store_true",
                   help="Plain tcp:// (unsafe: anyone who can reach the scheduler's port can "
                        "run code as you); for a trusted single-user network only.")
    p.add_argument("--via", choices=("api", "cli"), default="api",
                   help="Run ddrp through the library or the `ddrp` command.")
    p.add_argument("--dry-run", action="store_true",
                   help="Print the job script and the ddrp command; submit nothing.")
    return p.parse_args(argv)


def run_api(args: argparse.Namespace, client: Any) -> None:
    import ddrp_dask as dd
    from ddrp_dask.report import format_report

    plan = dd.plan_run(args.x, args.w, k=args.k, out=args.out, method=args.method,
                       seed=args.seed, x_columns=args.x_columns, w_columns=args.w_columns,
                       overwrite=args.overwrite)
    print(plan, flush=True)
    dd.execute(plan, scheduler=client, progress=sys.stderr.isatty(),
               on_model=lambda model: print(format_report(model), flush=True))


def run_cli(args: argparse.Namespace, scheduler_address: str, security: Any = None) -> None:
    argv = ddrp_argv(args, scheduler_address)
    exe = shutil.which("ddrp")
    cmd = [exe, *argv[1:]] if exe else [sys.executable, "-m", "ddrp_cli.main", *argv[1:]]
    with tempfile.TemporaryDirectory(prefix="ddrp-tls-") as d:  # mode 0700
        env = {**os.environ, **(tls_env(security, d) if security is not None else {})}
        subprocess.run(cmd, check=True, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kind = "pbs" if args.pbs else "slurm"
    overrides = {"queue": args.queue, "account": args.account, "walltime": args.walltime,
                 "cores": args.cores, "processes": args.processes, "memory": args.memory}
    if args.no_tls and args.tls_dir:
        raise SystemExit("--no-tls and --tls-dir exclude each other")
    jobqueue_config = load_jobqueue_config(args.jobqueue_config)
    security = cluster_security(args.tls_dir, args.no_tls)
    if security is not None:
        overrides.update(security=security, protocol="tls://")
        key = f"jobqueue.{kind}.shared-temp-directory"
        if jobqueue_config.get(key, dask.config.get(key, None)) is None:
            # where dask-jobqueue writes the workers' copy of a temporary certificate (0600
            # files): the current directory, as dask-jobqueue does, without its warning
            overrides["shared_temp_directory"] = os.getcwd()
    else:
        print("warning: --no-tls: the scheduler accepts plain tcp:// from anyone who can "
              "reach it", file=sys.stderr)
    # The config stays set while the cluster lives: jobs read it when they are created.
    with dask.config.set(jobqueue_config), \
            make_cluster(kind, **overrides) as cluster:
        if args.dry_run:
            print(cluster.job_script())
            print(" ".join(ddrp_argv(args, cluster.scheduler_address)))
            if args.via == "api":
                import ddrp_dask as dd

                print(dd.plan_run(args.x, args.w, k=args.k, out=args.out, method=args.method,
                                  seed=args.seed, x_columns=args.x_columns,
                                  w_columns=args.w_columns, overwrite=args.overwrite))
            return 0
        from distributed import Client

        print(f"scheduler {cluster.scheduler_address}, dashboard {cluster.dashboard_link}",
              file=sys.stderr, flush=True)
        cluster.scale(jobs=args.jobs)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=args.wait)
            if args.via == "api":
                run_api(args, client)
            else:
                run_cli(args, cluster.scheduler_address, security)
    return 0


if __name__ == "__main__":
    sys.exit(main())
