"""Faults, for real: a registry that is down or answers 500, a push cut midway, a failing stage
with --fail-fast, signals, two pipelines racing on one cache repo, and secrets that must not
leak into any output, report, image config or layer.

Every build here is Debian's dockerd (BuildKit) through the docker executor, against the
registry on 127.0.0.1:5000 (`scripts/services`); the faulty registries are `faulty_proxy`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import tarfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from pipeline.cache.plan import SPECULATIVE_HINTS
from pipeline.cli import main
from tests.cli import cli_command, run_cli
from tests.docker_env import DockerEnv, read_report
from tests.faulty_proxy import cutting_proxy, error_registry, silent_registry
from tests.registry_server import RegistryServer, free_port, push_image

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BUILD_TIMEOUT = 300
SECRET_FLAG = "id=token,env=TOKEN"

DOCKERFILE = """\
ARG BASE={base}
FROM $BASE AS deps
COPY deps.txt /deps/
RUN cp /deps/deps.txt /deps/installed.txt
FROM $BASE AS assets
COPY assets/ /assets/
RUN ls /assets > /assets.list
FROM deps AS app
COPY --from=assets /assets.list /app/assets.list
COPY src/ /app/src/
FROM app AS test
RUN ls -R /app > /test.out
"""
STAGES = ("deps", "assets", "app", "test")


def write_project(directory: Path, dockerfile: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_text(dockerfile)
    (directory / "deps.txt").write_text("deps 1\n")
    (directory / "assets").mkdir(exist_ok=True)
    (directory / "assets" / "app.css").write_text("body{}\n")
    (directory / "src").mkdir(exist_ok=True)
    (directory / "src" / "main.py").write_text(f"print({uuid.uuid4().hex!r})\n")
    return directory


def render(template: str, docker_env: DockerEnv) -> str:
    """A Dockerfile with the base image and a nonce: its steps are in no engine cache yet."""
    return template.format(base=docker_env.base, nonce=uuid.uuid4().hex)


@pytest.fixture
def project(tmp_path: Path, docker_env: DockerEnv) -> Path:
    """The four-stage project, its source unique to the test so no engine cache is shared."""
    return write_project(tmp_path / "project", DOCKERFILE.format(base=docker_env.base))


def build_args(docker_env: DockerEnv, cache_repo: str, report: Path, *args: str) -> list[str]:
    return docker_env.build_args("--cache-repo", cache_repo, "--report", str(report), *args)


def build(
    project: Path,
    docker_env: DockerEnv,
    cache_repo: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    command = build_args(docker_env, cache_repo, project / "report.json", *args)
    return run_cli(*command, cwd=project, env=env, timeout=BUILD_TIMEOUT)


def statuses(report: Path) -> dict[str, str]:
    return {name: stage["status"] for name, stage in read_report(report).items()}


CONTENT_TAG = re.compile(r"(?P<stage>.+)-[0-9a-f]{32}")
HINT_TAG = re.compile(r"(?P<stage>.+?)--(?P<branch>.+)")


def stage_tags(docker_env: DockerEnv, cache_repo: str) -> dict[str, list[str]]:
    """The cache repo's content tags (`<stage>-<key prefix>`) by stage name.

    Hint tags (`<stage>--<branch>`) may sit beside them; each must point at an image of a stage
    that has a content tag, so a stage without one has no tag of any kind.
    """
    content: dict[str, list[str]] = {}
    hints: dict[str, list[str]] = {}
    for tag in docker_env.tags(cache_repo):
        if match := CONTENT_TAG.fullmatch(tag):
            content.setdefault(match["stage"], []).append(tag)
        elif match := HINT_TAG.fullmatch(tag):
            hints.setdefault(match["stage"], []).append(tag)
        else:
            raise AssertionError(f"{cache_repo}:{tag} is neither a cache nor a hint tag")
    for stage, tags in hints.items():
        assert stage in content, f"hint tags {tags} for {stage}, which has no cache image"
        images = {manifest_of(f"{cache_repo}:{tag}")[1] for tag in content[stage]}
        for tag in tags:
            assert manifest_of(f"{cache_repo}:{tag}")[1] in images, f"{tag} points elsewhere"
    return content


def stray_processes(pattern: str) -> str:
    """Command lines of live processes that mention `pattern` (a docker build or push left over)."""
    found = subprocess.run(
        ["pgrep", "-a", "-f", "--", pattern], capture_output=True, text=True, check=False
    )
    assert found.returncode in (0, 1), found.stderr
    return found.stdout


class Lines:
    """What a process prints, read by a thread, so that waiting for a line has a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.append(line)

    def text(self) -> str:
        """Everything so far; once the process has ended, everything it printed."""
        self._reader.join(timeout=10)
        return "".join(self._lines)

    def wait_for(self, *needles: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = "".join(self._lines)
            if all(needle in text for needle in needles):
                return True
            if not self._reader.is_alive():
                return False
            time.sleep(0.05)
        return False


def registry_get(ref_repository: str, path: str, **headers: str) -> httpx.Response:
    """GET `/v2/<name>/<path>` straight from 127.0.0.1:5000, whatever host the ref names."""
    name = ref_repository.split("/", 1)[1]
    url = f"http://127.0.0.1:5000/v2/{name}/{path}"
    return httpx.get(url, headers=headers, timeout=30, trust_env=False)


def manifest_of(ref: str) -> tuple[dict[str, Any], str]:
    """The image manifest behind a tag, and its digest, read from the registry."""
    repository, _, tag = ref.rpartition(":")
    response = registry_get(
        repository, f"manifests/{tag}", Accept=f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"
    )
    response.raise_for_status()
    digest = response.headers.get("Docker-Content-Digest") or (
        "sha256:" + hashlib.sha256(response.content).hexdigest()
    )
    manifest: dict[str, Any] = response.json()
    return manifest, digest


def blob(repository: str, digest: str) -> bytes:
    response = registry_get(repository, f"blobs/{digest}")
    response.raise_for_status()
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    return response.content


# --- 1. the cache registry down, or answering 500 -------------------------------------------


@pytest.mark.parametrize("fault", ["closed port", "HTTP 500"])
def test_a_dead_cache_registry_is_a_warning_and_everything_is_built(
    project: Path, docker_env: DockerEnv, fault: str
) -> None:
    with error_registry() as failing:
        host = failing.host if fault == "HTTP 500" else f"127.0.0.1:{free_port()}"
        cache_repo = f"{host}/faults-{uuid.uuid4().hex[:12]}/cache"
        result = build(project, docker_env, cache_repo, "--target", "test")
    assert result.returncode == 0, result.stderr
    assert "warning: the cache registry is unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((project / "report.json").read_text())
    assert report["ok"] is True
    assert report["cache_repo"] == cache_repo
    assert [(s["name"], s["status"], s["cache_ref"], s["digest"]) for s in report["stages"]] == [
        (name, "built", None, None) for name in STAGES
    ]
    if fault == "HTTP 500":
        asked = {(r.method, r.path.split("/manifests/")[0]) for r in failing.requests}
        assert asked, "the cache registry was never asked"
        assert {method for method, _ in asked} <= {"HEAD", "GET"}
        assert not [r for r in failing.requests if r.user_agent.startswith("docker/")], (
            "docker itself reached the failing registry"
        )


def test_a_hanging_cache_registry_is_one_deadline_and_one_warning(
    project: Path, docker_env: DockerEnv
) -> None:
    """It takes connections and never answers: the plan gives up at its deadline, and the
    build neither waits for it again nor lets docker reach it."""
    with silent_registry() as silent:
        cache_repo = f"{silent.host}/faults-{uuid.uuid4().hex[:12]}/cache"
        result = build(project, docker_env, cache_repo, "--target", "test")
        connections = silent.connections
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1, warnings
    assert "the cache registry is unreachable" in warnings[0]
    assert "did not answer within 15 s" in warnings[0]
    assert "Traceback" not in result.stderr
    report = json.loads((project / "report.json").read_text())
    assert [(s["name"], s["status"], s["cache_ref"]) for s in report["stages"]] == [
        (name, "built", None) for name in STAGES
    ]
    # one HEAD per stage and the hint lookups sent alongside them (one GET each), then only
    # the retry of the first to time out (`retries` is 2)
    assert connections <= len(STAGES) + min(len(STAGES), SPECULATIVE_HINTS) + 2


def test_plan_against_a_registry_answering_500_is_unknown_and_exit_0(
    tmp_path: Path,
    registry: RegistryServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    push_image(registry.url, "faults/busybox", "1", config={"architecture": "amd64", "os": "linux"})
    dockerfile = DOCKERFILE.format(base=f"{registry.host}/faults/busybox:1")
    monkeypatch.chdir(write_project(tmp_path, dockerfile))
    with error_registry() as failing:
        cache_repo = f"{failing.host}/plan-500/cache"
        args = ["plan", "--json", "--target", "test", "--cache-repo", cache_repo]
        code = main([*args, "--engine", "docker"])  # Dagger would warn of the loopback hosts
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)
    stages = {s["name"]: s for s in document["stages"]}
    assert {name: (s["cache"], s["action"]) for name, s in stages.items()} == dict.fromkeys(
        STAGES, ("unknown", "build")
    )
    assert stages["deps"]["unpinned"] == []  # the base still resolves: it is elsewhere
    assert "warning: cache unknown" in captured.err
    assert "500" in captured.err
    assert [w["line"] for w in document["warnings"]] == [None]
    heads = [r for r in failing.requests if r.method == "HEAD"]
    assert {r.path.rsplit("/", 1)[1] for r in heads} == {
        s["cache_ref"].rsplit(":", 1)[1] for s in stages.values()
    }


# --- 2. a push cut midway -------------------------------------------------------------------

CUT_DOCKERFILE = """\
FROM {base} AS small
RUN echo {nonce} > /small
FROM {base} AS big
RUN head -c 4000000 /dev/urandom > /big && echo {nonce} > /nonce
"""
CUT_AFTER = 2 * 1024 * 1024  # more than the base layer (1 MB), less than the big one (4 MB)


def test_a_push_cut_midway_keeps_the_stage_built_and_leaves_no_tag(
    tmp_path: Path, docker_env: DockerEnv
) -> None:
    """Every upload of the big layer dies after 2 MiB, so docker gives up after its retries."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "Dockerfile").write_text(render(CUT_DOCKERFILE, docker_env))
    name = f"faults-cut-{uuid.uuid4().hex[:12]}/cache"
    with cutting_proxy(("127.0.0.1", 5000), cut_after=CUT_AFTER) as proxy:
        cache_repo = f"{proxy.host}/{name}"
        result = build(project, docker_env, cache_repo, "--target", "small", "--target", "big")
    assert result.returncode == 0, result.stderr
    exchanges = "\n".join(f"{r.method} {r.path.split('?')[0]}" for r in proxy.requests)
    assert proxy.cuts, f"the proxy never cut an upload:\n{exchanges}\n{result.stderr}"
    assert all("/blobs/uploads/" in cut.path for cut in proxy.cuts)
    report = read_report(project / "report.json")
    assert {n: s["status"] for n, s in report.items()} == {"small": "built", "big": "built"}
    assert report["big"]["cache_ref"] is None
    assert report["big"]["digest"] is None
    big_ref = f"{cache_repo}:big-{report['big']['key'][:32]}"
    warning = f"warning: big: cache push to {big_ref} failed"
    assert warning in result.stderr
    assert "Traceback" not in result.stderr
    tags = stage_tags(docker_env, f"{docker_env.registry}/{name}")
    assert "big" not in tags
    assert tags.get("small") == [report["small"]["cache_ref"].rsplit(":", 1)[1]]
    _, digest = manifest_of(f"127.0.0.1:5000/{name}:{tags['small'][0]}")
    assert digest == report["small"]["digest"]


# --- 3. a failing stage with --fail-fast -----------------------------------------------------

FAIL_FAST_DOCKERFILE = """\
ARG BASE={base}
FROM $BASE AS quick
RUN echo {nonce} > /quick
FROM $BASE AS slow
RUN sleep 120 && echo slow > /slow
FROM $BASE AS broken
RUN sleep 3 && echo 'broken on purpose' && exit 3
FROM quick AS all
COPY --from=slow /slow /slow
COPY --from=broken /etc/passwd /broken
"""


def test_fail_fast_cancels_the_others_and_pushes_nothing_for_them(
    tmp_path: Path, docker_env: DockerEnv
) -> None:
    dockerfile = render(FAIL_FAST_DOCKERFILE, docker_env)
    project = write_project(tmp_path / "project", dockerfile)
    cache_repo = docker_env.cache_repo()
    started = time.monotonic()
    result = build(project, docker_env, cache_repo, "--target", "all", "--fail-fast")
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 100, "--fail-fast waited for the 120 s stage"
    assert "broken on purpose" in result.stderr
    assert "Traceback" not in result.stderr
    report = read_report(project / "report.json")
    found = {name: stage["status"] for name, stage in report.items()}
    assert found["broken"] == "failed"
    assert found["slow"] == "cancelled"
    assert found["all"] == "cancelled"
    assert found["quick"] in ("built", "cancelled")  # it may finish before `broken` fails
    assert "fail-fast" in report["slow"]["error"]
    tags = stage_tags(docker_env, cache_repo)
    for name, stage in report.items():
        if stage["status"] == "built":
            assert tags.get(name) == [stage["cache_ref"].rsplit(":", 1)[1]], name
        else:
            assert name not in tags, name
    assert stray_processes(cache_repo) == ""


# --- 4. SIGINT and SIGTERM ------------------------------------------------------------------

SIGNAL_DOCKERFILE = """\
ARG BASE={base}
FROM $BASE AS deps
RUN sleep 120 && echo deps > /deps
FROM $BASE AS assets
RUN echo {nonce} > /assets
FROM deps AS app
COPY --from=assets /assets /app/assets
FROM app AS test
RUN ls -R /app > /test.out
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_build_and_still_writes_the_report(
    tmp_path: Path, docker_env: DockerEnv, signum: signal.Signals
) -> None:
    dockerfile = render(SIGNAL_DOCKERFILE, docker_env)
    project = write_project(tmp_path / "project", dockerfile)
    cache_repo = docker_env.cache_repo()
    report = project / "report.json"
    junit = project / "junit.xml"
    secret = f"tok-{uuid.uuid4().hex}"
    temp = tmp_path / "tmp"
    temp.mkdir()
    command = cli_command(
        *build_args(docker_env, cache_repo, report, "--target", "test", "--junit", str(junit)),
        *("--secret", SECRET_FLAG),
    )
    with subprocess.Popen(
        command,
        cwd=project,
        env={**os.environ, "TOKEN": secret, "TMPDIR": str(temp)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        lines = Lines(process)
        try:
            started = lines.wait_for("[deps] started", "[assets] pushed", timeout=BUILD_TIMEOUT)
            assert started, lines.text()
            time.sleep(1)
            process.send_signal(signum)
            code = process.wait(timeout=30)
        finally:
            process.kill()
    output = lines.text()
    assert code == 130, output
    assert "dagger-stages: interrupted" in output
    assert "Traceback" not in output
    document = json.loads(report.read_text())
    assert document["ok"] is False
    stages = {stage["name"]: stage for stage in document["stages"]}
    assert {name: stage["status"] for name, stage in stages.items()} == {
        "deps": "cancelled",
        "assets": "built",
        "app": "cancelled",
        "test": "cancelled",
    }
    assert {stages[name]["error"] for name in ("deps", "app", "test")} == {"interrupted"}
    assert {stages[name]["digest"] for name in ("deps", "app", "test")} == {None}
    skipped = ET.parse(junit).getroot().findall(".//testcase/skipped")
    assert len(skipped) == 3
    tags = stage_tags(docker_env, cache_repo)
    assert sorted(tags) == ["assets"]
    assert tags["assets"] == [stages["assets"]["cache_ref"].rsplit(":", 1)[1]]
    assert stray_processes(cache_repo) == ""
    # The secret's private 0600 file went with the private folder, interrupted or not.
    assert [path for path in every_file(temp) if secret.encode() in path.read_bytes()] == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_planning_is_exit_130_with_a_report(
    project: Path, docker_env: DockerEnv, signum: signal.Signals
) -> None:
    """The cache registry hangs, so the signal arrives while the plan waits for it.

    The signal receiver used to start only with the builds: SIGTERM then killed the process
    (exit -15) and SIGINT left no report.
    """
    report = project / "report.json"
    with error_registry(delay=120) as hanging:
        cache_repo = f"{hanging.host}/faults-{uuid.uuid4().hex[:12]}/cache"
        command = cli_command(*build_args(docker_env, cache_repo, report, "--target", "test"))
        with subprocess.Popen(
            command,
            cwd=project,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            lines = Lines(process)
            try:
                deadline = time.monotonic() + 60
                while not hanging.requests and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert hanging.requests, "the build never asked the cache registry"
                process.send_signal(signum)
                code = process.wait(timeout=30)
            finally:
                process.kill()
    output = lines.text()
    assert code == 130, output
    assert "dagger-stages: interrupted" in output
    assert "Traceback" not in output
    document = json.loads(report.read_text())
    assert document["ok"] is False
    assert isinstance(document["stages"], list)
    assert stray_processes(cache_repo) == ""


# --- 5. two pipelines at once on one cache repo ---------------------------------------------


@pytest.mark.wipes_engine_cache
def test_two_pipelines_at_once_on_one_cache_repo(project: Path, docker_env: DockerEnv) -> None:
    """Both runs pass, and agree where the first writer of a tag won: a run that found a tag
    written (at its plan, or right before its push) uses that image. Where both found it absent
    and both pushed, the tag holds one of the two, and each run's digest stays pullable.

    The runs share one daemon, yet their images of one stage may differ: a run that restored
    `deps` (the other pushed it before this one planned) builds `app` on the pulled image,
    which gives another image than `app` built along with `deps`. Asserting equal digests
    whenever both ran made this test fail when one run planned late.
    """
    cache_repo = docker_env.cache_repo()
    docker_env.wipe_engine_cache(cache_repo)
    reports = [project / "report-a.json", project / "report-b.json"]
    processes = [
        subprocess.Popen(
            cli_command(*build_args(docker_env, cache_repo, report, "--target", "test")),
            cwd=project,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for report in reports
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=BUILD_TIMEOUT))
    finally:
        for process in processes:
            process.kill()
            process.wait()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    first, second = (read_report(report) for report in reports)
    assert set(first) == set(second) == set(STAGES)
    tags = docker_env.tags(cache_repo)
    for name in STAGES:
        a, b = first[name], second[name]
        assert a["key"] == b["key"], name
        tag = f"{name}-{a['key'][:32]}"
        ran = [stage for stage in (a, b) if stage["status"] in ("built", "cached")]
        digests = {stage["digest"] for stage in ran}
        assert ran, name
        assert None not in digests, (name, a, b)
        _, held = manifest_of(f"{cache_repo}:{tag}")
        assert held in digests, (name, held, a, b)
        both_pushed = len(ran) == 2 and all(
            stage["status"] == "built" and not stage["adopted"] for stage in ran
        )
        if not both_pushed:
            assert digests == {held}, (name, a, b)
        for digest in digests:
            accept = f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"
            pulled = registry_get(cache_repo, f"manifests/{digest}", Accept=accept)
            assert pulled.status_code == 200, (name, digest)
        hints = [t for t in tags if t.startswith(f"{name}--")]
        for hint in hints:
            assert manifest_of(f"{cache_repo}:{hint}")[1] in digests, (name, hint)
    assert sorted(t for t in tags if "--" not in t) == sorted(
        f"{name}-{first[name]['key'][:32]}" for name in STAGES
    )

    third = build(project, docker_env, cache_repo, "--target", "test")
    assert third.returncode == 0, third.stderr
    assert statuses(project / "report.json") == {
        "deps": "skipped",
        "assets": "skipped",
        "app": "skipped",
        "test": "cached",
    }
    assert docker_env.tags(cache_repo) == tags


# --- 6. secrets -----------------------------------------------------------------------------

SECRET_DOCKERFILE = """\
ARG BASE={base}
FROM $BASE AS deps
RUN --mount=type=secret,id=token echo {nonce} && cat /run/secrets/token && echo && echo d > /d
FROM $BASE AS tool
RUN --mount=type=secret,id=token,required=true echo {nonce} && sha256sum /run/secrets/token \
  | cut -c1-64 > /sha
FROM deps AS app
LABEL org.example.stage=app
COPY --from=tool /sha /app/token.sha
RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /app/token.length
FROM app AS test
RUN --mount=type=secret,id=token test -s /run/secrets/token && ls -R /app > /test.out
"""


def layer_files(layer: bytes) -> dict[str, bytes]:
    files = {}
    with tarfile.open(fileobj=io.BytesIO(layer)) as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is not None:
                files[member.name] = handle.read()
    return files


def every_file(directory: Path) -> Iterator[Path]:
    return (path for path in directory.rglob("*") if path.is_file())


def test_a_secret_leaks_nowhere(tmp_path: Path, docker_env: DockerEnv) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    dockerfile = render(SECRET_DOCKERFILE, docker_env)
    project = write_project(tmp_path / "project", dockerfile)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TOKEN": secret, "TMPDIR": str(temp)}
    cache_repo = docker_env.cache_repo()
    junit = project / "junit.xml"
    result = build(
        project,
        docker_env,
        cache_repo,
        "--target",
        "test",
        "--secret",
        SECRET_FLAG,
        "--junit",
        str(junit),
        "--verbose",  # every line of the builds, so that the one `cat` printed is there
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "***" in result.stderr  # `cat` printed it, and it was masked
    assert secret not in result.stdout + result.stderr
    assert secret not in (project / "report.json").read_text()
    assert secret not in junit.read_text()
    leftovers = [path for path in every_file(temp) if secret.encode() in path.read_bytes()]
    assert leftovers == []

    plan = run_cli(
        "plan",
        "--json",
        "--target",
        "test",
        "--cache-repo",
        cache_repo,
        "--secret",
        SECRET_FLAG,
        cwd=project,
        env=env,
        timeout=120,
    )
    assert plan.returncode == 0, plan.stderr
    assert secret not in plan.stdout + plan.stderr
    keys = {stage["name"]: stage["key"] for stage in json.loads(plan.stdout)["stages"]}
    report = read_report(project / "report.json")
    assert keys == {name: stage["key"] for name, stage in report.items()}

    assert {stage["status"] for stage in report.values()} == {"built"}
    needle = secret.encode()
    files: dict[str, bytes] = {}
    for name, stage in report.items():
        repository = stage["cache_ref"].rpartition(":")[0]
        manifest, digest = manifest_of(stage["cache_ref"])
        assert digest == stage["digest"]
        assert needle not in json.dumps(manifest).encode()
        config = blob(repository, manifest["config"]["digest"])
        assert needle not in config, f"{name}: the secret is in the image config"
        parsed = json.loads(config)
        labels = (parsed.get("config") or {}).get("Labels") or {}
        assert all(secret not in f"{k}={v}" for k, v in labels.items())
        assert parsed.get("history"), name
        for layer in manifest["layers"]:
            data = blob(repository, layer["digest"])
            raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            assert needle not in raw, f"{name}: the secret is in layer {layer['digest']}"
            if name == "app":
                files.update(layer_files(raw))
    # The secret did reach the build: its hash and length are in app's layers, not its value.
    assert files["app/token.sha"].decode().strip() == hashlib.sha256(needle).hexdigest()
    assert files["app/token.length"].decode().strip() == str(len(secret))
    assert labels_of(report["app"]["cache_ref"])["org.example.stage"] == "app"


def labels_of(ref: str) -> dict[str, str]:
    repository = ref.rpartition(":")[0]
    manifest, _ = manifest_of(ref)
    config = json.loads(blob(repository, manifest["config"]["digest"]))
    labels: dict[str, str] = (config.get("config") or {}).get("Labels") or {}
    return labels


LOG_DOCKERFILE = """\
FROM {base} AS noisy
RUN --mount=type=secret,id=token echo {nonce} && cat /run/secrets/token && echo
FROM noisy AS failing
RUN --mount=type=secret,id=token cat /run/secrets/token; echo; exit 4
"""


@pytest.mark.parametrize(
    "shape", ["a file ending in a newline", "a multi-line file", "a file without a newline"]
)
def test_a_file_secret_is_masked_in_the_log_the_report_and_junit(
    tmp_path: Path, docker_env: DockerEnv, shape: str
) -> None:
    """Logs arrive a line at a time: the Masker used to mask only the whole value, so a file
    ending in a newline (the usual file) or holding several lines was printed in the clear."""
    lines = [f"line-{n}-{uuid.uuid4().hex}" for n in range(2 if "multi" in shape else 1)]
    value = "\n".join(lines) + ("" if "without" in shape else "\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "Dockerfile").write_text(render(LOG_DOCKERFILE, docker_env))
    (tmp_path / "token.txt").write_text(value)
    junit = project / "junit.xml"
    result = build(
        project,
        docker_env,
        docker_env.cache_repo(),
        "--target",
        "failing",
        "--secret",
        f"id=token,src={tmp_path / 'token.txt'}",
        "--junit",
        str(junit),
    )
    assert result.returncode == 1, result.stderr
    assert statuses(project / "report.json") == {"noisy": "built", "failing": "failed"}
    outputs = {
        "stderr": result.stdout + result.stderr,
        "report": (project / "report.json").read_text(),
        "junit": junit.read_text(),
    }
    leaks = [(where, line) for where, text in outputs.items() for line in lines if line in text]
    assert leaks == []
    assert re.search(r"\*\*\*", result.stderr)


def test_a_binary_file_secret_builds(tmp_path: Path, docker_env: DockerEnv) -> None:
    """BuildKit takes any bytes; reading the file as text made this an internal error."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "Dockerfile").write_text(
        f"FROM {docker_env.base} AS only\n"
        f"RUN --mount=type=secret,id=key echo {uuid.uuid4().hex} "
        "&& wc -c < /run/secrets/key > /key.length\n"
    )
    key = tmp_path / "key.der"
    key.write_bytes(b"\x30\x82\xff\xfe\x00" + os.urandom(32))
    result = build(project, docker_env, docker_env.cache_repo(), "--secret", f"id=key,src={key}")
    assert "internal error" not in result.stderr
    assert result.returncode == 0, result.stderr
    report = read_report(project / "report.json")
    assert report["only"]["status"] == "built"
    manifest, _ = manifest_of(report["only"]["cache_ref"])
    repository = report["only"]["cache_ref"].rpartition(":")[0]
    top = gzip.decompress(blob(repository, manifest["layers"][-1]["digest"]))
    assert layer_files(top)["key.length"].decode().strip() == "37"  # every byte arrived
