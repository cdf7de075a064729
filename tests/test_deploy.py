"""deploy/ and configs/: what can be checked without Docker, Kubernetes or a batch system.

* every YAML parses and has the structure its consumer expects (compose, DaskJob, Helm values,
  Kubernetes Job, dask-jobqueue, ddrp --config files);
* every `ddrp` command in the recipes parses with the real click commands, every flag the docs
  use exists, and the configs/ files load through `--config`;
* every `dask scheduler` / `dask worker` command parses with distributed's own CLI;
* the Dockerfile copies what the package build needs and installs it with the same command the
  docs give; the image's entrypoint dispatches as documented (run for real, with stubs);
* dask-jobqueue renders the SLURM and PBS job scripts from deploy/hpc/jobqueue.yaml;
* slow: the compose services (plain and TLS) and the DaskJob pods run as local processes with
  their exact commands, and submit_slurm.py runs against a stand-in `sbatch`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import dask
import numpy as np
import pytest
import yaml
import zarr
from distributed.cli import dask_scheduler, dask_worker

from ddrp_cli.main import cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "kubernetes"
HPC = DEPLOY / "hpc"
CONFIGS = ROOT / "configs"
ENTRYPOINT_SH = DOCKER / "entrypoint.sh"
BIN = Path(sys.executable).parent  # the venv's bin: ddrp, dask

# --------------------------------------------------------------------------- helpers


def load_yaml(path: Path) -> Any:
    with open(path) as f:
        return yaml.safe_load(f)


def compose() -> dict[str, Any]:
    return load_yaml(DOCKER / "compose.yaml")


def compose_tls() -> dict[str, Any]:
    """compose.yaml with compose.tls.yaml applied the way `docker compose -f A -f B` merges
    them: command replaced, environment merged, volumes merged by target."""
    base, over = compose(), load_yaml(DOCKER / "compose.tls.yaml")
    for name, o in over["services"].items():
        s = base["services"][name]
        if "command" in o:
            s["command"] = o["command"]
        if "environment" in o:
            s["environment"] = {**s.get("environment", {}), **o["environment"]}
        if "volumes" in o:
            vols = {v.split(":")[1]: v for v in s.get("volumes", [])}
            vols.update({v.split(":")[1]: v for v in o["volumes"]})
            s["volumes"] = list(vols.values())
    return base


def daskjob() -> dict[str, Any]:
    return load_yaml(K8S / "daskjob.yaml")


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/docker/Dockerfile, continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, rest = line.partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def image_entrypoint_cmd() -> tuple[list[str], list[str]]:
    df = dockerfile()
    entry = [json.loads(a) for i, a in df if i == "ENTRYPOINT"][-1]
    cmd = [json.loads(a) for i, a in df if i == "CMD"][-1]
    return entry, cmd


PROGRAMS = {"ddrp", "dask", "python", "python3", "sh", "bash", "pip"}


def dispatch(argv: list[str]) -> list[str]:
    """What the image runs for the container argv [ENTRYPOINT..., CMD/args...]: the model of
    deploy/docker/entrypoint.sh (test_entrypoint_dispatch checks the script against it)."""
    if not argv or argv[0] != "ddrp-entrypoint":
        return argv
    rest = argv[1:]
    if rest and rest[0] in ("dask-scheduler", "dask-worker"):
        return ["dask", rest[0].removeprefix("dask-"), *rest[1:]]
    if not rest or rest[0].startswith("-"):
        return ["ddrp", *rest]
    if rest[0] in PROGRAMS:
        return rest
    return ["ddrp", *rest]


def compose_argv(service: dict[str, Any]) -> list[str]:
    entry, cmd = image_entrypoint_cmd()
    entry = service.get("entrypoint", entry)
    return dispatch([*entry, *service.get("command", cmd)])


def k8s_argv(container: dict[str, Any]) -> list[str]:
    """Kubernetes semantics: `command` replaces ENTRYPOINT, `args` replaces CMD."""
    entry, cmd = image_entrypoint_cmd()
    argv = [*container.get("command", entry), *container.get("args", cmd)]
    return dispatch([str(a) for a in argv])


def k8s_expand(argv: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of command and args from the container's environment."""
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                   lambda m: env.get(m.group(1), m.group(0)), a) for a in argv]


OPERATOR_ENV = {  # what the dask-kubernetes operator adds to the job and worker pods
    "DASK_SCHEDULER_ADDRESS": "tcp://ddrp-run-scheduler.default.svc.cluster.local:8786",
    "DASK_WORKER_NAME": "ddrp-run-default-worker-0123456789",
}


def dask_env_config(env: dict[str, str]) -> dict[str, Any]:
    """DASK_* environment variables as dotted Dask config keys, for ``dask.config.set``
    (which, given a nested dict, would replace whole sections)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value

    walk("", dask.config.collect_env(env))
    return flat


def ddrp_options(command: str) -> set[str]:
    cmd = cli.commands[command]
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}


def parse_ddrp(argv: list[str]) -> click.Context:
    """Parse a `ddrp SUBCOMMAND ...` argv with the real click command (nothing runs)."""
    assert argv[0] == "ddrp", argv
    assert argv[1] in cli.commands, f"unknown ddrp command {argv[1]!r}"
    cmd = cli.commands[argv[1]]
    unknown = [a.split("=")[0] for a in argv[2:]
               if a.startswith("--") and a.split("=")[0] not in ddrp_options(argv[1])]
    assert not unknown, f"ddrp {argv[1]} has no option(s) {unknown} (used in {argv})"
    return cmd.make_context(f"ddrp {argv[1]}", list(argv[2:]))


def parse_dask(argv: list[str]) -> click.Context:
    """Parse a `dask scheduler|worker ...` argv with distributed's click commands. Both take
    unknown options into `preload_argv`, so that must stay empty."""
    assert argv[0] == "dask", argv
    cmd = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}[argv[1]]
    ctx = cmd.make_context(f"dask {argv[1]}", list(argv[2:]))
    assert ctx.params["preload_argv"] == (), f"unknown dask {argv[1]} options in {argv}"
    return ctx


def flag_value(argv: list[str], flag: str) -> str:
    i = argv.index(flag)
    return argv[i + 1]


def pip_installs(text: str) -> list[list[str]]:
    """Every `pip install ...` / `python -m pip install ...` command of a text, as tokens
    after `install`, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", text)
    found = []
    for m in re.finditer(r"(?:^|[\s;&`(])(?:\S*python3?\s+-m\s+)?pip\s+install\s+([^\n;&`#]*)",
                         text, flags=re.MULTILINE):
        found.append(shlex.split(m.group(1)))
    return found


def normalize_install(tokens: list[str]) -> tuple[bool, tuple[str, ...]]:
    """(editable, targets) of a pip install: output/cache flags that do not change what is
    installed are dropped; quotes are already gone."""
    neutral = {"-q", "--quiet", "--no-cache-dir", "-v", "--verbose",
               "--disable-pip-version-check", "--progress-bar=off"}
    editable = any(t in ("-e", "--editable") for t in tokens)
    targets = tuple(t for t in tokens if t not in neutral and t not in ("-e", "--editable"))
    return editable, targets


def is_package_target(t: str) -> bool:
    return re.fullmatch(r"\.(\[[\w,-]+\])?", t) is not None


def code_snippets(path: Path) -> list[str]:
    """Shell-ish text of a doc: fenced blocks and inline code of Markdown, comment lines of
    YAML, the docstring lines of Python."""
    text = path.read_text()
    if path.suffix == ".md":
        blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.DOTALL)
        inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
        return blocks + inline
    if path.suffix in (".yaml", ".yml"):
        return [line.lstrip("# ") for line in text.splitlines() if line.lstrip().startswith("#")]
    return [text]


def ddrp_commands_in(text: str) -> list[list[str]]:
    """`ddrp SUBCOMMAND ...` commands in a snippet, each cut at a shell operator or comment."""
    text = re.sub(r"\\\n", " ", text)
    found = []
    for line in text.splitlines():
        for m in re.finditer(r"(?:^|[\s`])ddrp\s+(run|fit|project)\b(.*)", line):
            rest = re.split(r"\s(?:#|\||&&|;)\s?", m.group(2))[0]
            try:
                tokens = shlex.split(rest)
            except ValueError:
                tokens = rest.split()
            found.append(["ddrp", m.group(1), *tokens])
    return found


def load_submit_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ddrp_deploy_submit_slurm",
                                                  HPC / "submit_slurm.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- YAML and schemas


ALL_YAML = sorted([*DEPLOY.rglob("*.yaml"), *CONFIGS.glob("*.yaml")])


def test_recipes_exist() -> None:
    for rel in ("README.md", "docker/README.md", "docker/Dockerfile", "docker/compose.yaml",
                "docker/compose.tls.yaml", "docker/entrypoint.sh", "docker/make_certs.sh",
                "kubernetes/README.md", "kubernetes/daskjob.yaml", "kubernetes/pvc.yaml",
                "kubernetes/helm-values.yaml", "kubernetes/helm-job.yaml",
                "kubernetes/networkpolicy.yaml", "kubernetes/helm-networkpolicy.yaml",
                "hpc/README.md",
                "hpc/jobqueue.yaml", "hpc/submit_slurm.py"):
        assert (DEPLOY / rel).is_file(), rel
    index = (DEPLOY / "README.md").read_text()
    for sub in ("docker/README.md", "kubernetes/README.md", "hpc/README.md"):
        assert sub in index, f"deploy/README.md does not link {sub}"
    assert "TLS" in index and "DASK_DISTRIBUTED__COMM__TLS__" in index
    for script in ("entrypoint.sh", "make_certs.sh"):
        assert os.access(DOCKER / script, os.X_OK), f"{script} is not executable"


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses_to_a_mapping(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1 and isinstance(docs[0], dict) and docs[0], path


COMPOSE_TOP = {"name", "services", "volumes", "networks", "configs", "secrets"}
COMPOSE_SERVICE = {
    "image", "build", "command", "entrypoint", "environment", "volumes", "ports", "depends_on",
    "deploy", "healthcheck", "restart", "profiles", "networks", "user", "working_dir",
    "env_file", "secrets", "configs", "container_name", "hostname", "labels", "logging",
    "expose", "init", "stop_grace_period", "pull_policy", "shm_size", "ulimits",
}
COMPOSE_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def test_compose_schema() -> None:
    doc = compose()
    assert set(k for k in doc if not k.startswith("x-")) <= COMPOSE_TOP
    services = doc["services"]
    assert {"scheduler", "worker", "job"} <= set(services)
    declared_volumes = set(doc.get("volumes", {}))
    for name, s in services.items():
        assert set(s) <= COMPOSE_SERVICE, (name, set(s) - COMPOSE_SERVICE)
        assert s["image"] == services["scheduler"]["image"], f"{name}: not the one image"
        assert isinstance(s["command"], list) and all(isinstance(a, str) for a in s["command"])
        build = s["build"]
        assert (DOCKER / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
        assert "/data" in [v.split(":")[1] for v in s["volumes"]], f"{name}: no /data"
        for v in s["volumes"]:
            source = v.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{name}: undeclared volume {source}"
        for dep, cond in s.get("depends_on", {}).items():
            assert dep in services and cond["condition"] in COMPOSE_CONDITIONS, (name, dep)
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
    assert services["worker"]["deploy"]["replicas"] == 2
    assert compose_argv(services["scheduler"])[:2] == ["dask", "scheduler"]
    assert compose_argv(services["worker"]) == [
        "dask", "worker", "tcp://scheduler:8786", "--nthreads", "1", "--memory-limit", "4GiB"]
    job = compose_argv(services["job"])
    assert job[:2] == ["ddrp", "run"]
    assert flag_value(job, "--scheduler") == "tcp://scheduler:8786"
    assert set(services["job"]["depends_on"]) >= {"scheduler", "worker"}


@pytest.mark.parametrize("name", ["compose.yaml", "compose.tls.yaml"])
def test_compose_has_no_variable_interpolation(name: str) -> None:
    # docker compose substitutes $VAR / ${VAR} anywhere in the file; none is meant here.
    text = "\n".join(line for line in (DOCKER / name).read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    assert not re.search(r"(?<!\$)\$(?!\$)", text)


def test_compose_tls_variant(tmp_path: Path) -> None:
    services = compose_tls()["services"]
    tls_flags = ["--tls-ca-file", "--tls-cert", "--tls-key"]
    # distributed's CLI checks that the files exist: stand-ins for the mounted /certs
    for f in ("ca.pem", "cluster.pem", "cluster-key.pem"):
        (tmp_path / f).touch()
    for name in ("scheduler", "worker"):
        argv = compose_argv(services[name])
        for flag in tls_flags:
            assert flag_value(argv, flag).startswith("/certs/"), (name, flag)
        ctx = parse_dask(localize(argv, [("/certs", str(tmp_path))]))
        assert ctx.params["tls_ca_file"] == str(tmp_path / "ca.pem")
        assert "./certs:/certs:ro" in services[name]["volumes"]
        if name == "scheduler":
            assert ctx.params["protocol"] == "tls"
    assert compose_argv(services["worker"])[2] == "tls://scheduler:8786"
    job = compose_argv(services["job"])
    parse_ddrp(job)
    assert flag_value(job, "--scheduler") == "tls://scheduler:8786"
    assert "./certs:/certs:ro" in services["job"]["volumes"]
    # ddrp's Client takes its TLS settings from the Dask config: the job's environment must
    # give distributed.Security the client certificate, key and CA, and require encryption.
    from distributed.security import Security

    env = {k: str(v) for k, v in services["job"]["environment"].items()}
    assert all(k.startswith("DASK_") for k in env)
    with dask.config.set(dask_env_config(env)):
        sec = Security()
    assert sec.require_encryption is True
    assert (sec.tls_ca_file, sec.tls_client_cert, sec.tls_client_key) == (
        "/certs/ca.pem", "/certs/cluster.pem", "/certs/cluster-key.pem")
    # the same files the scheduler and workers are given
    worker = compose_argv(services["worker"])
    assert [flag_value(worker, f) for f in tls_flags] == [
        sec.tls_ca_file, sec.tls_client_cert, sec.tls_client_key]


# --------------------------------------------------------------------------- exposure


LOOPBACK = {"127.0.0.1", "::1"}
COMPOSE_FILES = sorted(DOCKER.glob("compose*.yaml"))


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host_ip, published, target) of a compose service's `ports`, short or long syntax.
    host_ip "" means every interface of the host (compose's default), published "" a random
    host port."""
    out = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append((str(p.get("host_ip", "")), str(p.get("published", "")),
                        str(p["target"])))
            continue
        # an unquoted 8786:8786 is a YAML 1.1 base-60 integer: a container port only
        s, host = str(p).split("/")[0], ""
        if s.startswith("["):  # [::1]:8787:8787
            host, _, s = s[1:].partition("]:")
        parts = s.split(":")
        if len(parts) == 3:
            host, published, target = parts
        elif len(parts) == 2:
            published, target = parts
        else:
            published, target = "", parts[0]
        out.append((host, published, target))
    return out


def test_published_ports_parser_flags_every_interface() -> None:
    # what the exposure tests below must refuse, and what they accept
    bad = [{"ports": ["8786:8786"]}, {"ports": ["0.0.0.0:8787:8787"]}, {"ports": [8787]},
           {"ports": ["8786"]}, {"ports": [{"target": 8786, "published": 8786}]},
           {"ports": ["[::]:8786:8786"]}, {"ports": [{"target": 1, "host_ip": "0.0.0.0"}]}]
    for s in bad:
        assert any(h not in LOOPBACK for h, _, _ in published_ports(s)), s
    good = {"ports": ["127.0.0.1:8787:8787", "[::1]:8787:8787/tcp", "127.0.0.1::8787",
                      {"target": 8787, "published": "8787", "host_ip": "127.0.0.1"}]}
    assert [h for h, _, _ in published_ports(good)] == ["127.0.0.1", "::1", "127.0.0.1",
                                                         "127.0.0.1"]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_publishes_nothing_beyond_loopback(path: Path) -> None:
    assert {"compose.yaml", "compose.tls.yaml"} <= {p.name for p in COMPOSE_FILES}
    for name, s in load_yaml(path)["services"].items():
        for host, published, target in published_ports(s):
            assert host in LOOPBACK, (
                f"{path.name}: {name} publishes {published or '(random)'}:{target} on every "
                f"interface of the host; bind it to 127.0.0.1")
        # host networking or an extra network would bypass the above
        assert s.get("network_mode") in (None, "bridge"), (path.name, name)


def test_compose_scheduler_port_is_not_published() -> None:
    """The job and the workers reach the scheduler inside the compose network: its comm port
    is published nowhere (not even on loopback), with or without the TLS overlay; the
    dashboard only on 127.0.0.1."""
    for services in (compose()["services"], load_yaml(DOCKER / "compose.tls.yaml")["services"]):
        for name, s in services.items():
            targets = {t for _, _, t in published_ports(s)}
            assert "8786" not in targets, f"{name} publishes the scheduler port"
    assert published_ports(compose()["services"]["scheduler"]) == [
        ("127.0.0.1", "8787", "8787")]


K8S_POD = {
    "containers", "initContainers", "volumes", "restartPolicy", "securityContext",
    "serviceAccountName", "nodeSelector", "affinity", "tolerations", "imagePullSecrets",
    "terminationGracePeriodSeconds", "activeDeadlineSeconds", "priorityClassName",
    "automountServiceAccountToken", "enableServiceLinks", "dnsPolicy", "hostname",
}
K8S_CONTAINER = {
    "name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "ports",
    "resources", "volumeMounts", "readinessProbe", "livenessProbe", "startupProbe",
    "securityContext", "workingDir", "lifecycle",
}
K8S_POD_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup",
                    "fsGroupChangePolicy", "supplementalGroups", "seccompProfile"}
QUANTITY = {"memory": r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?", "cpu": r"\d+(\.\d+)?m?"}


def check_pod_spec(spec: dict[str, Any], where: str) -> None:
    assert set(spec) <= K8S_POD, (where, set(spec) - K8S_POD)
    assert set(spec.get("securityContext", {})) <= K8S_POD_SECURITY, where
    volumes = {v["name"] for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        assert set(c) <= K8S_CONTAINER, (where, set(c) - K8S_CONTAINER)
        assert c["name"] and c["image"], where
        assert all(isinstance(a, str) for a in [*c.get("command", []), *c.get("args", [])]), (
            f"{where}: command/args must be strings (quote numbers)")
        for kind in ("requests", "limits"):
            for res, q in c.get("resources", {}).get(kind, {}).items():
                assert re.fullmatch(QUANTITY[res], str(q)), (where, res, q)
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{where}: mount of undeclared volume {m['name']}"


def quantity_bytes(q: str) -> int:
    return int(dask.utils.parse_bytes(q))


def test_daskjob_schema() -> None:
    doc = daskjob()
    assert doc["apiVersion"] == "kubernetes.dask.org/v1" and doc["kind"] == "DaskJob"
    name = doc["metadata"]["name"]
    spec = doc["spec"]
    assert set(spec) == {"job", "cluster"}  # the CRD requires both
    job_pod = spec["job"]["spec"]
    check_pod_spec(job_pod, "spec.job.spec")
    assert job_pod["restartPolicy"] == "Never"  # a finished job pod must stay Succeeded
    cluster = spec["cluster"]["spec"]
    assert set(cluster) == {"worker", "scheduler"}
    worker, scheduler = cluster["worker"], cluster["scheduler"]
    assert isinstance(worker["replicas"], int) and worker["replicas"] >= 1
    check_pod_spec(worker["spec"], "worker.spec")
    check_pod_spec(scheduler["spec"], "scheduler.spec")

    # the job: ddrp run against the operator's scheduler
    job_argv = k8s_argv(job_pod["containers"][0])
    assert job_argv[:2] == ["ddrp", "run"]
    assert flag_value(job_argv, "--scheduler") == "$(DASK_SCHEDULER_ADDRESS)"
    parse_ddrp(k8s_expand(job_argv, OPERATOR_ENV))

    # workers: dask worker with the operator's address, resources covering --memory-limit
    for c in worker["spec"]["containers"]:
        argv = k8s_argv(c)
        ctx = parse_dask(k8s_expand(argv, OPERATOR_ENV))
        assert ctx.params["scheduler"] is None  # taken from DASK_SCHEDULER_ADDRESS
        assert ctx.params["nthreads"] == 1
        limit = quantity_bytes(c["resources"]["limits"]["memory"])
        assert limit >= quantity_bytes(ctx.params["memory_limit"])
        assert c["resources"]["requests"]["cpu"] == c["resources"]["limits"]["cpu"] == "1"

    # scheduler: ports named as the operator expects, service pointing at them
    sc = scheduler["spec"]["containers"][0]
    ctx = parse_dask(k8s_argv(sc))
    ports = {p["name"]: p["containerPort"] for p in sc["ports"]}
    assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}
    assert int(ctx.params["port"] or 8786) == ports["tcp-comm"]
    assert ctx.params["dashboard_address"] == f":{ports['http-dashboard']}"
    for probe in ("readinessProbe", "livenessProbe"):
        assert sc[probe]["httpGet"] == {"port": "http-dashboard", "path": "/health"}
    svc = scheduler["service"]
    assert svc["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    assert {(p["port"], p["targetPort"]) for p in svc["ports"]} == {
        (8786, "tcp-comm"), (8787, "http-dashboard")}

    # one image everywhere, and the volume claim of pvc.yaml
    images = {c["image"] for pod in (job_pod, worker["spec"], scheduler["spec"])
              for c in pod["containers"]}
    assert len(images) == 1
    pvc = load_yaml(K8S / "pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    for pod in (job_pod, worker["spec"]):
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert claims == {pvc["metadata"]["name"]}


# Values of the dask/dask chart (dask/values.yaml): keys the chart reads.
HELM_TOP = {"nameOverride", "fullnameOverride", "scheduler", "webUI", "worker",
            "additional_worker_groups", "jupyter", "label"}
HELM_IMAGE = {"repository", "tag", "pullPolicy", "pullSecrets"}
HELM_SCHEDULER = {
    "name", "enabled", "image", "replicas", "serviceType", "loadBalancerIP", "servicePort",
    "serviceAnnotations", "extraArgs", "resources", "tolerations", "affinity", "nodeSelector",
    "securityContext", "serviceAccountName", "metrics", "livenessProbe", "readinessProbe", "env",
}
HELM_WORKER = {
    "name", "image", "replicas", "strategy", "custom_scheduler_url", "default_resources", "env",
    "extraArgs", "resources", "mounts", "annotations", "tolerations", "affinity",
    "nodeSelector", "securityContext", "serviceAccountName", "port", "portDashboard",
    "threads_per_worker", "metrics", "livenessProbe", "readinessProbe",
}


def helm_fullname(values: dict[str, Any], release: str) -> str:
    if values.get("fullnameOverride"):
        return str(values["fullnameOverride"])
    name = values.get("nameOverride") or "dask"
    return release if name in release else f"{release}-{name}"


def helm_container_args(values: dict[str, Any], release: str) -> dict[str, list[str]]:
    """The scheduler's and worker's `args` as the chart's deployment templates render them."""
    sch, wk = values["scheduler"], values["worker"]
    port = sch.get("servicePort", 8786)
    scheduler = ["dask-scheduler", f"--port={port}", "--dashboard-address=:8787",
                 *sch.get("extraArgs", [])]
    address = wk.get("custom_scheduler_url") or f"{helm_fullname(values, release)}-scheduler:{port}"
    worker = [wk["image"].get("dask_worker", "dask-worker"), address]
    limits = wk.get("resources", {}).get("limits")
    if limits:
        worker += ["--nthreads", str(wk.get("threads_per_worker") or limits["cpu"]),
                   "--memory-limit", str(limits["memory"])]
    worker += ["--no-dashboard", "--dashboard-address", str(wk.get("portDashboard", 8790)),
               *wk.get("extraArgs", [])]
    return {"scheduler": scheduler, "worker": worker}


def test_helm_values_and_job() -> None:
    values = load_yaml(K8S / "helm-values.yaml")
    assert set(values) <= HELM_TOP, set(values) - HELM_TOP
    assert set(values["scheduler"]) <= HELM_SCHEDULER, set(values["scheduler"]) - HELM_SCHEDULER
    assert set(values["worker"]) <= HELM_WORKER, set(values["worker"]) - HELM_WORKER
    assert set(values["scheduler"]["image"]) <= HELM_IMAGE
    assert set(values["worker"]["image"]) <= HELM_IMAGE | {"dask_worker"}
    assert values["jupyter"] == {"enabled": False}
    assert values["worker"]["replicas"] == 2
    assert values["scheduler"]["image"] == {k: v for k, v in values["worker"]["image"].items()
                                            if k != "dask_worker"}
    for c in values["worker"]["mounts"]["volumeMounts"]:
        assert c["name"] in {v["name"] for v in values["worker"]["mounts"]["volumes"]}

    # what the chart runs, through the image's entrypoint, parses with distributed's CLI
    args = helm_container_args(values, release="ddrp-dask")
    sch = parse_dask(dispatch(["ddrp-entrypoint", *args["scheduler"]]))
    assert int(sch.params["port"]) == 8786
    wk = parse_dask(dispatch(["ddrp-entrypoint", *args["worker"]]))
    assert wk.params["nthreads"] == 1
    assert quantity_bytes(wk.params["memory_limit"]) == 4 * 2**30

    # the Job: ddrp run against the chart's scheduler service, same image and claim
    job = load_yaml(K8S / "helm-job.yaml")
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    pod = job["spec"]["template"]["spec"]
    check_pod_spec(pod, "helm-job")
    assert pod["restartPolicy"] == "Never"
    c = pod["containers"][0]
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    argv = k8s_expand(k8s_argv(c), env)
    parse_ddrp(argv)
    address = flag_value(argv, "--scheduler")
    assert address == f"tcp://{helm_fullname(values, 'anything')}-scheduler:" \
                      f"{values['scheduler'].get('servicePort', 8786)}"
    image = values["worker"]["image"]
    assert c["image"] == f"{image['repository']}:{image['tag']}"
    assert c["image"] == daskjob()["spec"]["job"]["spec"]["containers"][0]["image"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claims == {v["persistentVolumeClaim"]["claimName"]
                      for v in values["worker"]["mounts"]["volumes"]}


# --------------------------------------------------------------------------- NetworkPolicy


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) against a pod's labels;
    the empty selector matches every pod."""
    if not set(selector) <= {"matchLabels", "matchExpressions"}:
        raise ValueError(f"not a label selector: {selector}")
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def policy_admits(policy: dict[str, Any], source: dict[str, str], same_namespace: bool = True,
                  from_outside: bool = False) -> bool:
    """Whether a NetworkPolicy's ingress rules admit a connection from a pod with the labels
    `source` (in the policy's namespace or not), or from outside any pod (an IP address)."""
    for rule in policy["spec"].get("ingress", []):
        peers = rule.get("from")
        if not peers:  # a rule without `from` admits every source
            return True
        for peer in peers:
            if "ipBlock" in peer:
                if from_outside:
                    return True
                continue
            if from_outside:
                continue
            if "namespaceSelector" in peer:
                # some namespace's pods: this test gives other namespaces no labels to match
                if same_namespace or peer["namespaceSelector"] == {}:
                    if selector_matches(peer.get("podSelector", {}), source):
                        return True
                continue
            if same_namespace and selector_matches(peer["podSelector"], source):
                return True
    return False


def check_network_policy(policy: dict[str, Any], members: dict[str, dict[str, str]],
                         strangers: dict[str, dict[str, str]]) -> None:
    """`policy` selects every pod of `members` for ingress and admits connections from each of
    them, and from no pod of `strangers`, no pod of another namespace, no outside address."""
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["kind"] == "NetworkPolicy"
    spec = policy["spec"]
    assert set(spec) <= {"podSelector", "policyTypes", "ingress", "egress"}
    assert "Ingress" in spec["policyTypes"]
    assert spec["podSelector"], "an empty podSelector would select every pod of the namespace"
    for name, labels in members.items():
        assert selector_matches(spec["podSelector"], labels), f"{name} is not selected"
        assert policy_admits(policy, labels), f"{name} cannot connect"
    for name, labels in strangers.items():
        assert not policy_admits(policy, labels), f"{name} is admitted"
        assert not selector_matches(spec["podSelector"], labels), f"selects {name}"
    for labels in members.values():
        assert not policy_admits(policy, labels, same_namespace=False), "other namespaces"
    assert not policy_admits(policy, {}, from_outside=True), "admits outside addresses"


def operator_pod_labels(cluster: str, component: str) -> dict[str, str]:
    """The labels the dask-kubernetes operator gives a DaskJob's pods
    (dask_kubernetes.operator.controller: build_scheduler/worker/job_pod_spec)."""
    labels = {"dask.org/cluster-name": cluster, "dask.org/component": component,
              "sidecar.istio.io/inject": "false"}
    if component == "worker":
        labels["dask.org/workergroup-name"] = "default"
    return labels


def helm_pod_labels(values: dict[str, Any], release: str, component: str) -> dict[str, str]:
    """The labels of the Dask Helm chart's scheduler and worker pods (the deployments' pod
    templates, default label style)."""
    return {"app": values.get("nameOverride") or "dask", "release": release,
            "component": component}


STRANGERS = {
    "unlabelled pod": {},
    "a pod of another DaskJob": operator_pod_labels("other-run", "job-runner"),
    "another DaskJob's worker": operator_pod_labels("other-run", "worker"),
    "another release's worker": {"app": "dask", "release": "other", "component": "worker"},
    "some app": {"app": "web"},
}


def test_network_policy_checker_can_fail() -> None:
    members = {"scheduler": operator_pod_labels("ddrp-run", "scheduler")}
    sel = {"matchLabels": {"dask.org/cluster-name": "ddrp-run"}}
    open_policies = [
        {"ingress": [{}]},                                   # every source
        {"ingress": [{"from": [{"podSelector": {}}]}]},      # every pod of the namespace
        {"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
        {"ingress": [{"from": [{"namespaceSelector": {}}]}]},  # every pod of every namespace
        {"ingress": [{"from": [{"podSelector": {"matchExpressions": [
            {"key": "dask.org/cluster-name", "operator": "Exists"}]}}]}]},  # every DaskJob
    ]
    for extra in open_policies:
        policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "spec": {"podSelector": sel, "policyTypes": ["Ingress"], **extra}}
        with pytest.raises(AssertionError):
            check_network_policy(policy, members, STRANGERS)
    closed = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "spec": {"podSelector": sel, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"podSelector": sel}]}]}}
    check_network_policy(closed, members, STRANGERS)
    # a policy that does not select the pods protects nothing
    closed["spec"]["podSelector"] = {"matchLabels": {"app": "ddrp"}}
    with pytest.raises(AssertionError):
        check_network_policy(closed, members, STRANGERS)


def test_daskjob_network_policy_admits_only_the_jobs_pods() -> None:
    job = daskjob()
    name = job["metadata"]["name"]
    policy = load_yaml(K8S / "networkpolicy.yaml")
    members = {c: operator_pod_labels(name, c) for c in ("scheduler", "worker", "job-runner")}
    check_network_policy(policy, members, STRANGERS)
    # nothing outside the cluster's network reaches the scheduler service
    assert job["spec"]["cluster"]["spec"]["scheduler"]["service"]["type"] == "ClusterIP"
    for pod in (job["spec"]["job"]["spec"], job["spec"]["cluster"]["spec"]["worker"]["spec"],
                job["spec"]["cluster"]["spec"]["scheduler"]["spec"]):
        assert not pod.get("hostNetwork"), "host networking bypasses the NetworkPolicy"
    text = (K8S / "daskjob.yaml").read_text() + (K8S / "README.md").read_text()
    assert "networkpolicy.yaml" in text


def test_helm_network_policy_admits_only_the_jobs_pods() -> None:
    values = load_yaml(K8S / "helm-values.yaml")
    readme = (K8S / "README.md").read_text()
    release = re.search(r"helm install (\S+) dask/dask", readme)
    assert release, "README: no `helm install RELEASE dask/dask`"
    job = load_yaml(K8S / "helm-job.yaml")
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    members = {c: helm_pod_labels(values, release.group(1), c) for c in ("scheduler", "worker")}
    policy = load_yaml(K8S / "helm-networkpolicy.yaml")
    check_network_policy(policy, members, STRANGERS)
    # the ddrp Job reaches the scheduler; it is not itself a Dask pod
    assert policy_admits(policy, job_labels), "the ddrp Job cannot reach the scheduler"
    assert not selector_matches(policy["spec"]["podSelector"], job_labels)
    assert values["scheduler"]["serviceType"] == "ClusterIP"
    assert values["jupyter"]["enabled"] is False
    assert "helm-networkpolicy.yaml" in readme


# --------------------------------------------------------------------------- ddrp flags


def recipe_ddrp_commands() -> dict[str, list[str]]:
    """Every ddrp command the executable recipes run, by where it comes from."""
    dj = daskjob()["spec"]["job"]["spec"]["containers"][0]
    hj = load_yaml(K8S / "helm-job.yaml")["spec"]["template"]["spec"]["containers"][0]
    hj_env = {e["name"]: e["value"] for e in hj.get("env", [])}
    submit = load_submit_module()
    args = submit.parse_args(["--x", "x.npy", "--w", "w.npy", "-k", "8", "--out", "o.zarr",
                              "--x-columns", "vec", "--overwrite"])
    return {
        "compose job": compose_argv(compose()["services"]["job"]),
        "compose.tls job": compose_argv(compose_tls()["services"]["job"]),
        "DaskJob job": k8s_expand(k8s_argv(dj), OPERATOR_ENV),
        "helm Job": k8s_expand(k8s_argv(hj), hj_env),
        "submit_slurm --via cli": submit.ddrp_argv(args, "tcp://10.0.0.1:8786"),
    }


RECIPES = ["compose job", "compose.tls job", "DaskJob job", "helm Job", "submit_slurm --via cli"]


@pytest.mark.parametrize("where", RECIPES)
def test_recipe_ddrp_commands_parse(where: str) -> None:
    commands = recipe_ddrp_commands()
    assert sorted(commands) == sorted(RECIPES)
    argv = commands[where]
    ctx = parse_ddrp(argv)
    sched = ctx.params["scheduler"]
    assert re.fullmatch(r"(tcp|tls)://[\w.-]+:\d+", sched), f"{where}: --scheduler {sched}"


DOC_FILES = sorted([*DEPLOY.rglob("README.md"), *DEPLOY.rglob("*.yaml"), *CONFIGS.glob("*.yaml"),
                    HPC / "submit_slurm.py"])


def test_doc_commands_use_existing_flags() -> None:
    seen, missing = 0, {}
    for path in DOC_FILES:
        for snippet in code_snippets(path):
            for argv in ddrp_commands_in(snippet):
                seen += 1
                for a in argv[2:]:
                    flag = a.split("=")[0]
                    if a.startswith("--") and flag not in ddrp_options(argv[1]):
                        missing.setdefault(flag, set()).add(str(path.relative_to(ROOT)))
    assert seen >= 5, "no ddrp commands found in the docs: the scanner is broken"
    missing_sorted = {f: sorted(p) for f, p in missing.items()}
    assert not missing_sorted, f"docs use ddrp flags that do not exist: {missing_sorted}"


def config_to_argv(cfg: dict[str, Any]) -> list[str]:
    argv = []
    for key, value in cfg.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return argv


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_config_files_hold_real_run_options(path: Path) -> None:
    cfg = load_yaml(path)
    options = ddrp_options("run")
    unknown = [k for k in cfg if "--" + k.replace("_", "-") not in options]
    assert not unknown, f"{path.name}: keys that are no `ddrp run` option: {unknown}"
    # the same options given as flags parse, with their types and choices
    ctx = parse_ddrp(["ddrp", "run", *config_to_argv(cfg)])
    assert ctx.params["k"] == cfg["k"]
    # and `ddrp run --config FILE` loads the file to the same values; flags still win
    via_config = parse_ddrp(["ddrp", "run", "--config", str(path)])
    assert via_config.params == ctx.params
    flags_win = parse_ddrp(["ddrp", "run", "--config", str(path), "-k", "7", "--seed", "3"])
    assert (flags_win.params["k"], flags_win.params["seed"]) == (7, 3)


# --------------------------------------------------------------------------- image


def test_dockerfile_base_user_entrypoint() -> None:
    df = dockerfile()
    assert df[0] == ("FROM", "python:3.11-slim")
    users = [a for i, a in df if i == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    last_run = max(n for n, (i, _) in enumerate(df) if i == "RUN")
    assert max(n for n, (i, _) in enumerate(df) if i == "USER") > last_run
    assert [a for i, a in df if i == "WORKDIR"][-1] == "/data"
    entry, cmd = image_entrypoint_cmd()
    assert entry == ["ddrp-entrypoint"]
    copies = [a.split() for i, a in df if i == "COPY"]
    assert ["deploy/docker/entrypoint.sh", "/usr/local/bin/ddrp-entrypoint"] in copies
    assert dispatch([*entry, *cmd]) == ["ddrp", "--help"]  # ddrp by default


def dockerfile_package_install() -> tuple[bool, tuple[str, ...]]:
    installs = [normalize_install(t) for i, a in dockerfile() if i == "RUN"
                for t in pip_installs(a)]
    package = [x for x in installs if any(is_package_target(t) for t in x[1])]
    assert len(package) == 1, f"expected one install of the package in the Dockerfile: {package}"
    return package[0]


def test_dockerfile_install_is_the_documented_install() -> None:
    editable, targets = dockerfile_package_install()
    assert not editable
    sources = [ROOT / "README.md", ROOT / "Makefile", *sorted(DEPLOY.rglob("README.md"))]
    documented: dict[tuple[str, ...], list[str]] = {}
    for path in sources:
        for tokens in pip_installs(path.read_text()):
            ed, tg = normalize_install(tokens)
            if not ed and any(is_package_target(t) for t in tg):
                documented.setdefault(tg, []).append(str(path.relative_to(ROOT)))
    assert documented, "no non-editable `pip install .` in README.md, Makefile or deploy/"
    # the README names several installs (plain, with extras); the image's must be one of them
    assert targets in documented, (
        f"Dockerfile installs {targets}; the docs say {documented}")
    assert "deploy/README.md" in documented[targets]
    # extras named in the install exist in pyproject.toml
    extras = set(re.findall(r"\[([\w,-]+)\]", " ".join(targets)))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for group in extras:
        assert set(group.split(",")) <= set(project.get("optional-dependencies", {}))


def test_dockerfile_copies_what_the_build_needs() -> None:
    """`pip install .` in /src needs pyproject.toml, the readme and every package that
    setuptools finds; the Dockerfile must COPY them and its .dockerignore keep them."""
    from setuptools import find_packages

    copied = set()
    for i, a in dockerfile():
        if i == "COPY" and not a.startswith("--from"):
            *srcs, _dest = a.split()
            copied |= {s.rstrip("/") for s in srcs if not s.startswith("--")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    for where in find.get("where", ["."]):
        for pkg in find_packages(where=str(ROOT / where), include=find.get("include", ["*"])):
            top = (Path(where) / pkg.split(".")[0]).as_posix().removeprefix("./")
            needed.add(top)
    for n in sorted(needed):
        assert any(n == c or n.startswith(c + "/") for c in copied), f"{n} is not copied"
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    for c in copied:
        assert c in kept, f"{c} is copied but excluded from the build context"


@pytest.fixture(scope="module")
def stub_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH whose ddrp, dask and python only print their argv."""
    d = tmp_path_factory.mktemp("stubs")
    for prog in ("ddrp", "dask", "python"):
        f = d / prog
        f.write_text(f'#!/bin/sh\nprintf "%s\\n" "{prog}" "$@"\n')
        f.chmod(0o755)
    return f"{d}:/usr/bin:/bin"


@pytest.mark.parametrize("args", [
    [], ["--help"], ["--version"], ["run", "--x", "a b", "-k", "4"], ["fit", "--out", "m"],
    ["project", "--side", "w"], ["ddrp", "run", "--x", "x"], ["dask", "scheduler", "--port", "1"],
    ["dask-scheduler", "--port=8786", "--dashboard-address=:8787"],
    ["dask-worker", "ddrp-dask-scheduler:8786", "--nthreads", "1"],
    ["python", "-c", "print(1)"], ["nosuchcommand", "x"],
], ids=lambda a: " ".join(a) or "(none)")
def test_entrypoint_dispatch(args: list[str], stub_path: str) -> None:
    out = subprocess.run(["sh", str(ENTRYPOINT_SH), *args], capture_output=True, text=True,
                         env={"PATH": stub_path}, timeout=30, check=True).stdout
    ran = out.split("\n")[:-1]
    expected = dispatch(["ddrp-entrypoint", *args])
    assert ran == expected


# --------------------------------------------------------------------------- HPC


def test_jobqueue_yaml_structure() -> None:
    doc = load_yaml(HPC / "jobqueue.yaml")
    assert set(doc) == {"jobqueue"} and set(doc["jobqueue"]) == {"slurm", "pbs"}
    for kind, c in doc["jobqueue"].items():
        for key in ("cores", "processes", "memory", "walltime"):
            assert c.get(key) is not None, (kind, key)
        # one thread per worker process (ddrp pins BLAS to one thread per task)
        assert c["cores"] == c["processes"], kind
        per_worker = dask.utils.parse_bytes(c["memory"]) / c["processes"]
        assert per_worker == 4 * 2**30, kind  # the 4GiB workers of the other recipes
        assert re.fullmatch(r"\d\d:\d\d:\d\d", c["walltime"]), kind
    flat = load_submit_module().load_jobqueue_config(HPC / "jobqueue.yaml")
    assert flat["jobqueue.slurm.cores"] == doc["jobqueue"]["slurm"]["cores"]


def test_jobqueue_keys_are_dask_jobqueue_keys() -> None:
    djq = pytest.importorskip("dask_jobqueue")
    defaults = load_yaml(Path(djq.__file__).parent / "jobqueue.yaml")["jobqueue"]
    doc = load_yaml(HPC / "jobqueue.yaml")["jobqueue"]
    for kind, c in doc.items():
        unknown = set(c) - set(defaults[kind])
        assert not unknown, f"jobqueue.{kind}: unknown keys {unknown}"


def worker_command(script: str) -> list[str]:
    """The worker command line of a job script, as `dask worker` arguments."""
    lines = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    assert len(lines) == 1, script
    argv = shlex.split(lines[0])
    i = argv.index("distributed.cli.dask_worker")
    assert argv[i - 1] == "-m"
    return ["dask", "worker", *argv[i + 1:]]


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_jobqueue_builds_job_script(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("dask_jobqueue")
    submit = load_submit_module()
    with dask.config.set(submit.load_jobqueue_config(HPC / "jobqueue.yaml")):
        cluster = submit.make_cluster(kind, queue="normal", account="proj", walltime=None,
                                      scheduler_options={"dashboard_address": ":0",
                                                         "host": "127.0.0.1"})
        try:
            script = cluster.job_script()
            address = cluster.scheduler_address
        finally:
            cluster.close()
    if kind == "slurm":
        for line in ("#SBATCH -J ddrp-worker", "#SBATCH -p normal", "#SBATCH -A proj",
                     "#SBATCH -n 1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G",
                     "#SBATCH -t 02:00:00", "#SBATCH -o ddrp-logs/"):
            assert any(s.startswith(line) for s in script.splitlines()), (line, script)
    else:
        for line in ("#PBS -N ddrp-worker", "#PBS -q normal", "#PBS -A proj",
                     "#PBS -l select=1:ncpus=8:mem=32GB", "#PBS -l walltime=02:00:00"):
            assert line in script.splitlines(), (line, script)
    assert address.startswith("tcp://127.0.0.1:")  # the test's scheduler: loopback only
    assert f"{sys.executable} -m distributed.cli.dask_worker {address}" in script
    ctx = parse_dask(worker_command(script))
    assert ctx.params["scheduler"] == address
    assert int(ctx.params["nthreads"]) == 1 and int(ctx.params["n_workers"]) == 8
    assert quantity_bytes(ctx.params["memory_limit"]) == 4 * 2**30
    assert ctx.params["lifetime"] == "115m" and ctx.params["death_timeout"] == "120"
    assert ctx.params["local_directory"] == "${TMPDIR:-/tmp}"  # expanded by the job's shell


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if subprocess.run(["sh", "-c", "command -v openssl"], capture_output=True).returncode:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("certs")
    subprocess.run([str(DOCKER / "make_certs.sh"), str(d)], check=True, capture_output=True,
                   timeout=60)
    return d


def test_make_certs_writes_a_usable_ca_and_certificate(certs: Path) -> None:
    assert sorted(p.name for p in certs.iterdir()) == ["ca.pem", "cluster-key.pem", "cluster.pem"]
    submit = load_submit_module()
    sec = submit.tls_security(certs)
    # builds SSL contexts: certificate and key match, CA loads
    for role in ("client", "scheduler", "worker"):
        assert sec.get_connection_args(role)["ssl_context"] is not None
    env = submit.tls_env(sec)
    with dask.config.set(dask_env_config(env)):
        from distributed.security import Security

        s2 = Security()
    assert (s2.tls_ca_file, s2.tls_client_cert, s2.tls_client_key) == (
        sec.tls_ca_file, sec.tls_client_cert, sec.tls_client_key)
    assert s2.require_encryption is True


def test_jobqueue_tls_job_script(certs: Path) -> None:
    pytest.importorskip("dask_jobqueue")
    submit = load_submit_module()
    with dask.config.set(submit.load_jobqueue_config(HPC / "jobqueue.yaml")):
        cluster = submit.make_cluster("slurm", security=submit.tls_security(certs),
                                      protocol="tls://",
                                      scheduler_options={"dashboard_address": ":0",
                                                         "host": "127.0.0.1"})
        try:
            script, address = cluster.job_script(), cluster.scheduler_address
        finally:
            cluster.close()
    assert address.startswith("tls://")
    ctx = parse_dask(worker_command(script))
    assert ctx.params["tls_ca_file"] == str(certs / "ca.pem")
    assert ctx.params["tls_cert"] == str(certs / "cluster.pem")
    assert ctx.params["tls_key"] == str(certs / "cluster-key.pem")


def test_submit_slurm_security_defaults_to_tls(tmp_path: Path) -> None:
    """No flag: tls:// with a temporary certificate; --tls-dir: those files; --no-tls only on
    request. In-memory certificates reach a `ddrp` process as 0600 files, not as keys in its
    environment."""
    pytest.importorskip("cryptography")
    submit = load_submit_module()
    args = submit.parse_args(["--x", "x", "--w", "w", "-k", "4", "--out", "o"])
    assert args.tls_dir is None and args.no_tls is False
    sec = submit.cluster_security(args.tls_dir, args.no_tls)
    assert sec is not None and sec.require_encryption is True
    for role in ("client", "scheduler", "worker"):
        assert sec.get_connection_args(role)["ssl_context"] is not None
    assert submit.cluster_security(None, no_tls=True) is None
    with pytest.raises(ValueError):
        submit.cluster_security("certs", no_tls=True)
    env = submit.tls_env(sec, tmp_path)
    for key in ("CA_FILE", "CLIENT__CERT", "CLIENT__KEY"):
        path = Path(env[f"DASK_DISTRIBUTED__COMM__TLS__{key}"])
        assert path.parent == tmp_path and path.stat().st_mode & 0o777 == 0o600
        assert "-----BEGIN" in path.read_text()
    assert not any("\n" in v for v in env.values())
    with dask.config.set(dask_env_config(env)):
        from distributed.security import Security

        assert Security().get_connection_args("client")["ssl_context"] is not None


def test_jobqueue_default_cluster_is_tls_with_private_certificate_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `submit_slurm.py` builds without TLS flags: a tls:// scheduler, workers given the
    temporary certificate as files only the user can read, and the dashboard on loopback."""
    pytest.importorskip("dask_jobqueue")
    pytest.importorskip("cryptography")
    submit = load_submit_module()
    monkeypatch.chdir(tmp_path)
    with dask.config.set(submit.load_jobqueue_config(HPC / "jobqueue.yaml")):
        assert dask.config.get("jobqueue.slurm.scheduler-options") == {
            "dashboard_address": "127.0.0.1:8787"}
        # the test's scheduler listens on loopback (a real one, on the cluster's network)
        with dask.config.set({"jobqueue.slurm.scheduler-options.host": "127.0.0.1"}):
            cluster = submit.make_cluster("slurm", security=submit.cluster_security(),
                                          protocol="tls://",
                                          shared_temp_directory=str(tmp_path))
        try:
            script, address = cluster.job_script(), cluster.scheduler_address
            ctx = parse_dask(worker_command(script))
            files = [Path(ctx.params[k]) for k in ("tls_ca_file", "tls_cert", "tls_key")]
            modes = [f.stat().st_mode & 0o777 for f in files]
            # where the dashboard listens (its link names the scheduler's host instead)
            http = cluster.scheduler.http_server
            dashboard = {s.getsockname()[0] for s in http._sockets.values()}
        finally:
            cluster.close()
    assert address.startswith("tls://127.0.0.1:")
    assert ctx.params["protocol"] == "tls://"
    assert all(f.parent == tmp_path for f in files) and modes == [0o600] * 3
    assert dashboard == {"127.0.0.1"}, dashboard


# --------------------------------------------------------------------------- local runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


class Processes:
    """Processes this test started, each in its own session; stopped by their ids."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.logdir / f"{name}.log", "wb") as log:
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}"
                         for f in sorted(self.logdir.glob("*.log")))


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    (tmp_path / "logs").mkdir()
    p = Processes(tmp_path / "logs")
    try:
        yield p
    finally:
        p.stop()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the scheduler exited"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def certless_security(ca_file: str) -> Any:
    """A client side that trusts the cluster's CA but has no certificate of its own: what an
    outsider who knows the CA can do. distributed's Security builds no TLS context without a
    certificate, so this one hands `connect` a context made here."""
    import ssl

    from distributed.security import Security

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.check_hostname = False

    class CertlessSecurity(Security):  # type: ignore[misc]
        def get_connection_args(self, role: str) -> dict[str, Any]:
            return {"ssl_context": ctx, "require_encryption": True, "extra_conn_args": {}}

    return CertlessSecurity(require_encryption=True)


@pytest.mark.cluster
def test_tls_scheduler_refuses_a_client_without_a_certificate(
        tmp_path: Path, procs: Processes, certs: Path) -> None:
    """The scheduler of compose.tls.yaml (its exact command, certificates from make_certs.sh,
    on 127.0.0.1) refuses a client without a certificate, with a certificate of another CA,
    and over plain tcp://; a client with the recipe's certificate connects."""
    import ssl

    from distributed import Client
    from distributed.security import Security

    services = compose_tls()["services"]
    port, dport = free_port(), free_port()
    subs = [("8786", str(port)), (":8787", f"127.0.0.1:{dport}"), ("/certs", str(certs))]
    argv = [*localize(compose_argv(services["scheduler"]), subs), "--host", "127.0.0.1"]
    env = {k: localize([str(v)], subs)[0] for k, v in services["scheduler"]["environment"].items()}
    sched = procs.start("scheduler", ["sh", str(ENTRYPOINT_SH), *argv], clean_env(**env))
    wait_http(f"http://127.0.0.1:{dport}/health", sched)
    address = f"tls://127.0.0.1:{port}"

    other = tmp_path / "other-ca"  # a certificate signed by another CA
    subprocess.run([str(DOCKER / "make_certs.sh"), str(other)], check=True, capture_output=True,
                   timeout=60)

    def handshake(cert: Path | None) -> str:
        """A raw TLS connection that trusts the cluster's CA, with `cert` (or none) as the
        client certificate: "ok", or the server's TLS alert."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs / "ca.pem"))
        ctx.check_hostname = False
        if cert is not None:
            ctx.load_cert_chain(str(cert / "cluster.pem"), str(cert / "cluster-key.pem"))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            try:
                with ctx.wrap_socket(raw) as tls:
                    # TLS 1.3: the server's verdict on the client certificate comes after the
                    # client's side of the handshake, with the first read
                    tls.settimeout(2)
                    try:
                        tls.recv(1)
                    except TimeoutError:
                        pass  # accepted: the scheduler waits for the client to speak first
                    return "ok"
            except ssl.SSLError as e:
                return str(e.reason)
            except ConnectionResetError:
                return "reset"

    # 1. the TLS handshake: no certificate, or another CA's, is refused by the server
    assert handshake(None) in ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE",
                               "reset")
    assert handshake(other) in ("TLSV1_ALERT_UNKNOWN_CA", "reset")
    assert handshake(certs) == "ok"  # the recipe's certificate

    # 2. distributed clients, as ddrp would connect (short connect timeout)
    strangers: list[Any] = [
        certless_security(str(certs / "ca.pem")),
        # trusts the scheduler, but its own certificate is from another CA
        Security(tls_ca_file=str(certs / "ca.pem"), tls_client_cert=str(other / "cluster.pem"),
                 tls_client_key=str(other / "cluster-key.pem"), require_encryption=True),
    ]
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        for sec in strangers:
            with pytest.raises((OSError, TimeoutError)):
                Client(address, security=sec, timeout=3)
        with pytest.raises((OSError, TimeoutError)):
            Client(f"tcp://127.0.0.1:{port}", timeout=3)
    # control: the job's environment from the recipe (the Dask config) connects
    job_env = {k: localize([str(v)], subs)[0]
               for k, v in services["job"]["environment"].items()}
    with dask.config.set(dask_env_config(job_env)):
        with Client(address, security=Security(), timeout=20) as client:
            assert client.scheduler_info()["address"] == address
    assert sched.poll() is None


def make_data(data: Path, env: dict[str, str]) -> None:
    """Run compose's make-data service (its python -c program) with small sizes."""
    svc = compose()["services"]["make-data"]
    argv = compose_argv(svc)
    assert argv[:2] == ["python", "-c"]
    svc_env = {**{k: str(v) for k, v in svc["environment"].items()},
               "DATA_DIR": str(data / "in"), "N_X": "3000", "N_W": "300"}
    subprocess.run([sys.executable, *argv[1:]], env={**env, **svc_env}, check=True,
                   capture_output=True, timeout=120)


def localize(argv: list[str], subs: list[tuple[str, str]]) -> list[str]:
    """Point a container's command at this machine: a port number or `:port` is replaced when
    it is the whole argument, a host:port or a path wherever it occurs."""
    out = []
    for a in argv:
        for old, new in subs:
            whole = re.fullmatch(r":?\d+", old) is not None
            a = (new if a == old else a) if whole else a.replace(old, new)
        out.append(a)
    return out


def run_compose_locally(services: dict[str, Any], tmp: Path, procs: Processes,
                        env: dict[str, str], certs: Path | None) -> Path:
    """Start the scheduler and 2 workers with their compose commands (host `scheduler` =
    127.0.0.1, free ports, /data and /certs = local directories) through the image's
    entrypoint, check the healthcheck, then run the job service's command."""
    port, dport = free_port(), free_port()
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    subs = [("scheduler:8786", f"127.0.0.1:{port}"), ("8786", str(port)),
            (":8787", f":{dport}"), ("/data", str(data))]
    if certs is not None:
        subs.append(("/certs", str(certs)))

    def service_env(name: str) -> dict[str, str]:
        e = {k: str(v) for k, v in services[name].get("environment", {}).items()}
        return {**env, **{k: localize([v], subs)[0] for k, v in e.items()}}

    def entry(name: str) -> list[str]:
        return ["sh", str(ENTRYPOINT_SH), *localize(services[name]["command"], subs)]

    make_data(data, env)
    sched = procs.start("scheduler", entry("scheduler"), service_env("scheduler"))
    wait_http(f"http://127.0.0.1:{dport}/health", sched)
    check = services["scheduler"]["healthcheck"]["test"]
    assert check[0] == "CMD"
    subprocess.run(localize(check[1:], [("localhost:8787", f"127.0.0.1:{dport}")]),
                   env=env, check=True, timeout=30)
    for i in range(services["worker"]["deploy"]["replicas"]):
        procs.start(f"worker{i}", entry("worker"), service_env("worker"))
    job = subprocess.run(entry("job"), env=service_env("job"), capture_output=True, text=True,
                         timeout=240)
    assert job.returncode == 0, job.stderr + procs.logs()
    assert "predicted gain over gaussian" in job.stdout
    return data / "sketches.zarr"


def check_sketches(out: Path, k: int) -> tuple[np.ndarray, np.ndarray]:
    g = zarr.open_group(str(out), mode="r")
    assert g.attrs["complete"] is True
    x, w = g["x"][...], g["w"][...]
    assert x.shape == (3000, k) and w.shape == (300, k)
    return x, w


@pytest.mark.slow
@pytest.mark.cluster
def test_compose_services_run_locally(tmp_path: Path, procs: Processes, certs: Path) -> None:
    env = clean_env()
    plain = run_compose_locally(compose()["services"], tmp_path / "plain", procs, env, None)
    k = int(flag_value(compose_argv(compose()["services"]["job"]), "-k"))
    x1, w1 = check_sketches(plain, k)
    procs.stop()
    tls = run_compose_locally(compose_tls()["services"], tmp_path / "tls", procs, env, certs)
    x2, w2 = check_sketches(tls, k)
    # same data and seed over tcp:// and tls://: the same bytes
    assert np.array_equal(x1, x2) and np.array_equal(w1, w2)
    logs = procs.logs()
    assert "tls://" in logs


@pytest.mark.slow
@pytest.mark.cluster
def test_daskjob_pods_run_locally(tmp_path: Path, procs: Processes) -> None:
    """The DaskJob's scheduler, worker and job containers as local processes, with the
    environment the operator gives them (DASK_SCHEDULER_ADDRESS, DASK_WORKER_NAME)."""
    spec = daskjob()["spec"]
    port, dport = free_port(), free_port()
    data = tmp_path / "data"
    data.mkdir()
    env = clean_env()
    make_data(data, env)
    subs = [("8786", str(port)), (":8787", f":{dport}"), ("/data", str(data))]
    cluster = spec["cluster"]["spec"]
    sc = cluster["scheduler"]["spec"]["containers"][0]
    sched = procs.start("scheduler", localize(k8s_argv(sc), subs), env)
    wait_http(f"http://127.0.0.1:{dport}/health", sched)
    operator = {"DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{port}"}
    wc = cluster["worker"]["spec"]["containers"][0]
    for i in range(cluster["worker"]["replicas"]):
        wenv = {**operator, "DASK_WORKER_NAME": f"ddrp-run-default-worker-{i}"}
        procs.start(f"worker{i}", localize(k8s_expand(k8s_argv(wc), wenv), subs), {**env, **wenv})
    jc = spec["job"]["spec"]["containers"][0]
    argv = localize(k8s_expand(k8s_argv(jc), operator), subs)
    job = subprocess.run(argv, env={**env, **operator}, capture_output=True, text=True,
                         timeout=240)
    assert job.returncode == 0, job.stderr + procs.logs()
    check_sketches(data / "sketches.zarr", int(flag_value(argv, "-k")))
    assert "ddrp-run-default-worker-0" in procs.logs()  # the worker used its pod name


FAKE_SBATCH = """#!/bin/sh
# stand-in for sbatch: run the job script in the background, in its own session
n=$(date +%s%N)
cp "$1" "$FAKE_SLURM_DIR/job-$n.sh"
setsid sh "$FAKE_SLURM_DIR/job-$n.sh" > "$FAKE_SLURM_DIR/job-$n.log" 2>&1 < /dev/null &
echo $! >> "$FAKE_SLURM_DIR/pids"
echo "Submitted batch job $!"
"""
FAKE_SCANCEL = """#!/bin/sh
for id in "$@"; do kill -TERM -- "-$id" 2>/dev/null || kill -TERM "$id" 2>/dev/null; done
exit 0
"""


@pytest.mark.slow
@pytest.mark.cluster
def test_submit_slurm_runs_against_a_stand_in_sbatch(tmp_path: Path) -> None:
    """--dry-run submits nothing; a real run submits 2 jobs whose workers (started by the
    stand-in sbatch from dask-jobqueue's job script) run ddrp through the library. (--via cli
    runs the command line that test_recipe_ddrp_commands_parse checks.)"""
    pytest.importorskip("dask_jobqueue")
    fake = tmp_path / "fake-slurm"
    (fake / "bin").mkdir(parents=True)
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (fake / "bin" / name).write_text(text)
        (fake / "bin" / name).chmod(0o755)
    data = tmp_path / "data"
    env = clean_env(FAKE_SLURM_DIR=str(fake))
    env["PATH"] = f"{fake / 'bin'}{os.pathsep}{env['PATH']}"
    make_data(data, env)
    out = data / "sketches.zarr"
    common = ["--x", str(data / "in" / "x.npy"), "--w", str(data / "in" / "w.npy"), "-k", "12",
              "--out", str(out), "--queue", "debug"]
    try:
        dry = subprocess.run([sys.executable, str(HPC / "submit_slurm.py"), "--dry-run",
                              *common], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
        assert dry.returncode == 0, dry.stderr
        assert "#SBATCH -p debug" in dry.stdout and "distributed.cli.dask_worker" in dry.stdout
        assert not (fake / "pids").exists(), "--dry-run submitted a job"
        cmd = next(line for line in dry.stdout.splitlines() if line.startswith("ddrp run "))
        parse_ddrp(shlex.split(cmd))
        # tls:// by default: the workers get the run's temporary certificate as files
        assert flag_value(shlex.split(cmd), "--scheduler").startswith("tls://")
        assert "--protocol tls://" in dry.stdout and "--tls-key" in dry.stdout
        run = subprocess.run([sys.executable, str(HPC / "submit_slurm.py"), "--via", "api",
                              "--jobs", "2", "--cores", "1", "--processes", "1",
                              "--memory", "1GiB", "--wait", "120", *common],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        logs = "\n".join(p.read_text()[-2000:] for p in fake.glob("job-*.log"))
        assert run.returncode == 0, run.stderr + run.stdout + logs
        assert "predicted gain over gaussian" in run.stdout
        assert "scheduler tls://" in run.stderr
        assert len((fake / "pids").read_text().split()) == 2  # two batch jobs submitted
        assert (tmp_path / "ddrp-logs").is_dir()  # jobqueue.yaml's log-directory
        check_sketches(out, 12)
    finally:
        pids = (fake / "pids").read_text().split() if (fake / "pids").exists() else []
        for pid in pids:  # the stand-in jobs this test started, by their ids
            try:
                os.killpg(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
