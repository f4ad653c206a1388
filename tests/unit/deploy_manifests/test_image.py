"""The Dockerfile, .dockerignore and CI workflow agree with pyproject.toml and the manifests.

No Docker daemon here: the Dockerfile is parsed and checked for what the spec requires
(multi-stage, locked uv install, uid 1000, /data, ports, HEALTHCHECK, entry point).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay_deploy import platform
from tests.tools import IN_CI, ServiceProcess, free_port, require_tool

from .conftest import REPO_ROOT, find

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@dataclass
class Instruction:
    op: str
    args: str
    stage: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments dropped; ARGs in FROM expanded."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "Dockerfile ends inside a continuation line"
    args: dict[str, str] = {}
    stage = ""
    out: list[Instruction] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op = op.upper()
        rest = rest.strip()
        if op == "ARG" and not stage:
            name, _, default = rest.partition("=")
            args[name] = default
        if op == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            parts = rest.split()
            stage = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else parts[0]
        out.append(Instruction(op, rest, stage))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((REPO_ROOT / "Dockerfile").read_text())


def _final(dockerfile: list[Instruction]) -> list[Instruction]:
    last = dockerfile[-1].stage
    return [i for i in dockerfile if i.stage == last]


def test_multi_stage_with_pinned_bases(dockerfile: list[Instruction]) -> None:
    froms = [i.args.split()[0] for i in dockerfile if i.op == "FROM"]
    assert len(froms) >= 3  # uv, builder, runtime
    for image in froms:
        assert ":" in image and not image.endswith(":latest"), image
    stages = [i.stage for i in dockerfile if i.op == "FROM"]
    for i in dockerfile:
        if i.op == "COPY" and "--from=" in i.args:
            source = re.search(r"--from=(\S+)", i.args)
            assert source and source.group(1) in stages[: stages.index(i.stage)], i.args


def test_python_version_matches_pyproject(dockerfile: list[Instruction]) -> None:
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    pythons = [i.args.split()[0] for i in dockerfile
               if i.op == "FROM" and i.args.startswith("python:")]
    assert len(pythons) == 2, "builder and runtime share one Python base"
    assert len(set(pythons)) == 1, "the venv's interpreter path must exist in the runtime stage"
    version = pythons[0].split(":")[1]
    assert version.startswith(minimum + "."), (version, minimum)


def test_locked_dependencies_via_uv(dockerfile: list[Instruction]) -> None:
    runs = [i.args for i in dockerfile if i.op == "RUN" and "uv sync" in i.args]
    assert runs, "dependencies are installed with uv sync"
    for run in runs:
        assert "--locked" in run and "--no-dev" in run
    # the extras named exist in pyproject (redis for scale-out)
    extras = set(PYPROJECT["project"].get("optional-dependencies", {}))
    for run in runs:
        for extra in re.findall(r"--extra[ =](\S+)", run):
            assert extra in extras, extra
    copied = [i.args for i in dockerfile if i.op == "COPY" and "--from" not in i.args]
    assert any("uv.lock" in c and "pyproject.toml" in c for c in copied)


def test_copied_sources_exist_and_are_in_the_build_context(dockerfile: list[Instruction]) -> None:
    patterns = [p.strip() for p in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def included(path: str) -> bool:
        result = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
                result = negate
        return result

    for i in dockerfile:
        if i.op != "COPY" or "--from" in i.args:
            continue
        sources = [a for a in shlex.split(i.args) if not a.startswith("--")][:-1]
        for src in sources:
            assert (REPO_ROOT / src).exists(), src
            assert included(src.rstrip("/")), f"{src} excluded by .dockerignore"
    assert (REPO_ROOT / PYPROJECT["project"]["readme"]).is_file()
    assert not included(".venv") and not included(".git") and not included("tests")


def test_runtime_user_data_and_env(dockerfile: list[Instruction]) -> None:
    final = _final(dockerfile)
    users = [i.args for i in final if i.op == "USER"]
    assert users and users[-1].split(":")[0] == "1000"
    run = " ".join(i.args for i in final if i.op == "RUN")
    assert "--uid 1000" in run and "mkdir -p /data" in run and "chown 1000:1000 /data" in run
    assert any(i.op == "VOLUME" and "/data" in i.args for i in final)
    env = " ".join(i.args for i in final if i.op == "ENV")
    cm = find(platform.app_objects(domain="example.com"), "ConfigMap", "metadata-relay-config")
    assert f"SQLITE_DB_PATH={cm['data']['SQLITE_DB_PATH']}" in env
    # the pod's uid (deployment securityContext) is the image's user
    dep = find(platform.app_objects(domain="example.com"), "Deployment", "metadata-relay")
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(
        users[-1].split(":")[0])


def test_exposed_ports_match_configmap(dockerfile: list[Instruction]) -> None:
    exposed = set(" ".join(i.args for i in _final(dockerfile) if i.op == "EXPOSE").split())
    data = find(platform.app_objects(domain="example.com"), "ConfigMap",
                "metadata-relay-config")["data"]
    port, turn = data["PORT"], data["TURN_PORT"]
    assert exposed == {port, f"{turn}/udp", f"{turn}/tcp"}
    env = " ".join(i.args for i in _final(dockerfile) if i.op == "ENV")
    assert f"PORT={port}" in env and f"TURN_PORT={turn}" in env


def test_entrypoint_is_the_console_script(dockerfile: list[Instruction]) -> None:
    entry = [i.args for i in _final(dockerfile) if i.op == "ENTRYPOINT"]
    assert entry
    command = json.loads(entry[-1])
    assert command[0] in PYPROJECT["project"]["scripts"]
    target = PYPROJECT["project"]["scripts"][command[0]]
    module, _, func = target.partition(":")
    assert module.startswith("metadata_relay.")
    path = REPO_ROOT / "src" / (module.replace(".", "/") + ".py")
    assert re.search(rf"^def {func}\(", path.read_text(), re.M), target


def test_healthcheck_probes_health(dockerfile: list[Instruction]) -> None:
    checks = [i.args for i in _final(dockerfile) if i.op == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/health" in checks[0] and "CMD" in checks[0]
    # exec form (no shell in the command), and it uses the interpreter the image has
    cmd = json.loads(checks[0].split("CMD", 1)[1])
    assert cmd[0] == "python"
    compile(cmd[2], "healthcheck", "exec")


def test_parser_sees_broken_dockerfiles() -> None:
    with pytest.raises(AssertionError):
        parse_dockerfile("FROM a:1 AS b\nRUN x \\\n")
    parsed = parse_dockerfile("ARG P=python:3.11-slim\nFROM ${P} AS rt\nUSER root\n")
    assert [(i.op, i.stage) for i in parsed] == [("ARG", ""), ("FROM", "rt"), ("USER", "rt")]
    assert parsed[1].args == "python:3.11-slim AS rt"


# --- GitHub Actions workflow -----------------------------------------------------------------


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((REPO_ROOT / ".github/workflows/ci.yml").read_text())
    return data


def test_workflow_tests_then_builds_multiarch_on_tags(workflow: dict[Any, Any]) -> None:
    on = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as True
    assert "v*" in on["push"]["tags"]
    assert "pull_request" in on
    jobs = workflow["jobs"]
    assert any(".ci/run" in s.get("run", "") for s in jobs["test"]["steps"])
    image = jobs["image"]
    assert image["needs"] == "test"
    assert image["permissions"]["packages"] == "write"
    build = next(s for s in image["steps"] if s.get("uses", "").startswith(
        "docker/build-push-action@"))
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert "refs/tags/" in build["with"]["push"]
    meta = next(s for s in image["steps"] if s.get("uses", "").startswith(
        "docker/metadata-action@"))
    assert meta["with"]["images"].startswith("ghcr.io/")
    assert meta["with"]["images"].endswith("/metadata-relay")
    assert "latest=false" in meta["with"]["flavor"]
    # the image the kustomization deploys is the one this workflow publishes
    dep = find(platform.app_objects(domain="example.com"), "Deployment", "metadata-relay")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0].endswith(
        "/metadata-relay")


def test_workflow_actions_are_pinned(workflow: dict[Any, Any]) -> None:
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                ref = step["uses"].split("@")[1]
                assert re.fullmatch(r"v\d+(\.\d+)*|[0-9a-f]{40}", ref), step["uses"]


def test_workflow_installs_the_ci_apt_packages(workflow: dict[Any, Any]) -> None:
    ci_run = (REPO_ROOT / ".ci" / "run").read_text()
    assert re.search(r"^apt_packages=\((.*)\)$", ci_run, re.M), "apt list format changed"
    step = next(s for s in workflow["jobs"]["test"]["steps"] if "apt_packages" in s.get(
        "run", ""))
    assert "sudo apt-get install" in step["run"]


# --- what the builder stage installs, and the HEALTHCHECK against the real service ----------


def test_non_editable_install_carries_entry_point_and_data(tmp_path: Path) -> None:
    """The builder installs the project as a wheel (--no-editable): it must hold the console
    script the ENTRYPOINT names and every data file the service reads (SQL migrations)."""
    uv = require_tool("uv")
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(tmp_path), str(REPO_ROOT)],
                   check=True, capture_output=True, timeout=180)
    (wheel,) = tmp_path.glob("metadata_relay-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    assert re.search(r"^metadata-relay = metadata_relay\.cli:main$", entry_points, re.M)
    src = REPO_ROOT / "src"
    data_files = [p.relative_to(src).as_posix() for p in (src / "metadata_relay").rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc")
                  and "__pycache__" not in p.parts]
    assert any(f.endswith(".sql") for f in data_files)
    assert {f for f in data_files if not f.endswith(".so")} <= names  # .so: built in place
    # the TURN C forwarder is compiled into the wheel (hatch_build.py), which is then
    # platform-specific; without a compiler the build only warns (pure-Python fallback)
    if shutil.which("gcc") or IN_CI:
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        assert f"metadata_relay/turn/_forward{suffix}" in names
        assert not wheel.name.endswith("-none-any.whl"), wheel.name


def _healthcheck_command(dockerfile: list[Instruction]) -> list[str]:
    check = next(i.args for i in _final(dockerfile) if i.op == "HEALTHCHECK")
    cmd: list[str] = json.loads(check.split("CMD", 1)[1])
    return [sys.executable, *cmd[1:]]


def test_healthcheck_passes_on_the_running_service(dockerfile: list[Instruction],
                                                   service: ServiceProcess) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PORT": str(service.port)}
    ok = subprocess.run(_healthcheck_command(dockerfile), env=env, capture_output=True,
                        timeout=30)
    assert ok.returncode == 0, ok.stderr


def test_healthcheck_fails_without_a_service(dockerfile: list[Instruction]) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PORT": str(free_port())}
    bad = subprocess.run(_healthcheck_command(dockerfile), env=env, capture_output=True,
                         timeout=30)
    assert bad.returncode != 0
