"""`build` for real: Debian's dockerd (BuildKit) and a real registry, via the docker executor."""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pipeline.cli import main
from pipeline.engines import docker_engine, runner
from tests.cli import cli_command, run_cli
from tests.docker_env import DockerEnv, read_report
from tests.e2e_project import (
    SECRET,
    assert_only_the_test_stage_failed,
    interrupt_while_building,
    make_the_test_stage_fail,
    statuses,
    write_project,
)
from tests.faulty_proxy import CuttingProxy, cutting_proxy
from tests.registry_server import RegistryServer, free_port


@pytest.fixture
def project(tmp_path: Path, docker_env: DockerEnv) -> Path:
    return write_project(tmp_path, docker_env.base)


def build(
    project: Path, docker_env: DockerEnv, cache_repo: str, *args: str
) -> subprocess.CompletedProcess[str]:
    command = docker_env.build_args("--cache-repo", cache_repo, "--secret", "id=token,env=TOKEN")
    command += ["--report", str(project / "report.json"), *args]
    return run_cli(*command, cwd=project, env={"TOKEN": SECRET})


@pytest.mark.wipes_engine_cache
def test_cold_then_warm_then_one_change(project: Path, docker_env: DockerEnv) -> None:
    cache_repo = docker_env.cache_repo()
    cold = build(project, docker_env, cache_repo, "--target", "test")
    assert cold.returncode == 0, cold.stderr
    assert statuses(project) == dict.fromkeys(["deps", "assets", "app", "test"], "built")
    report = read_report(project / "report.json")
    tags = docker_env.tags(cache_repo)
    assert [tag for tag in tags if "--" not in tag] == sorted(
        stage["cache_ref"].rsplit(":", 1)[1] for stage in report.values()
    )
    assert [tag for tag in tags if "--" in tag] == sorted(f"{name}--local" for name in report)
    assert all(stage["digest"].startswith("sha256:") for stage in report.values())

    docker_env.wipe_engine_cache(cache_repo)
    warm = build(project, docker_env, cache_repo, "--target", "test")
    assert warm.returncode == 0, warm.stderr
    assert statuses(project) == {
        "deps": "skipped",
        "assets": "skipped",
        "app": "skipped",
        "test": "cached",
    }
    assert "[internal] load build definition" not in warm.stderr

    (project / "src" / "main.py").write_text("print(2)\n")
    docker_env.wipe_engine_cache(cache_repo)
    changed = build(project, docker_env, cache_repo, "--target", "test")
    assert changed.returncode == 0, changed.stderr
    assert statuses(project) == {
        "deps": "cached",
        "assets": "cached",
        "app": "built",
        "test": "built",
    }


def test_a_run_that_builds_nothing_does_not_wait_for_the_engine_checks(
    project: Path, docker_env: DockerEnv, tmp_path: Path
) -> None:
    """With every stage restored, the checks are not waited for: next to the cache they are
    not even started, and behind a distant one they are stopped (`test_build_engine_checks`).
    A CLI whose checks never answer would otherwise hold the run."""
    cache_repo = docker_env.cache_repo()
    assert build(project, docker_env, cache_repo, "--target", "app").returncode == 0
    slow = tmp_path / "slow-bin" / "docker"
    slow.parent.mkdir()
    slow.write_text("#!/bin/sh\nexec sleep 600\n")
    slow.chmod(0o755)
    command = ["build", "--engine", "docker", "--docker", str(slow), "--cache-repo", cache_repo]
    command += ["--secret", "id=token,env=TOKEN", "--report", str(project / "report.json")]
    warm = run_cli(*command, "--target", "app", cwd=project, env={"TOKEN": SECRET}, timeout=120)
    assert warm.returncode == 0, warm.stderr
    assert statuses(project)["app"] == "cached"


def test_a_failing_stage_keeps_the_passing_stages_cache(
    project: Path, docker_env: DockerEnv
) -> None:
    make_the_test_stage_fail(project)
    cache_repo = docker_env.cache_repo()
    result = build(project, docker_env, cache_repo, "--target", "test")
    assert_only_the_test_stage_failed(result, project, docker_env.tags(cache_repo))


def test_the_secret_never_leaks(project: Path, docker_env: DockerEnv) -> None:
    """The step that prints the secret is this run's own (a nonce in it): BuildKit keys a
    secret mount by its id, never its value, so another run's identical step on a shared
    daemon would be CACHED and print nothing to mask."""
    dockerfile = project / "Dockerfile"
    nonce = uuid.uuid4().hex
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "RUN ls -R /app > /test.out",
            f"RUN --mount=type=secret,id=token echo {nonce} && cat /run/secrets/token"
            " && ls -R /app > /test.out",
        )
    )
    cache_repo = docker_env.cache_repo()
    result = build(project, docker_env, cache_repo, "--target", "test", "--verbose")
    assert result.returncode == 0, result.stderr
    report_text = (project / "report.json").read_text()
    assert SECRET not in result.stdout + result.stderr + report_text
    assert "***" in result.stderr
    for stage in read_report(project / "report.json").values():
        config = docker_env.image_config(stage["cache_ref"])
        assert SECRET not in repr(config)
    length = docker_env.run(
        "run",
        "--rm",
        read_report(project / "report.json")["app"]["cache_ref"],
        "cat",
        "/app/token.length",
    )
    assert length.stdout.strip() == str(len(SECRET))


def filesystem(docker_env: DockerEnv, image: str) -> dict[str, bytes]:
    """Every regular file of an image with its content, read from `docker export`."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(docker_env.export(image))) as archive:
        for member in archive.getmembers():
            if member.isfile() and not member.name.startswith(("proc/", "sys/", "etc/")):
                handle = archive.extractfile(member)
                assert handle is not None
                files[member.name] = handle.read()
    return files


def test_the_rewritten_dockerfile_builds_the_same_files(
    project: Path, docker_env: DockerEnv
) -> None:
    cache_repo = docker_env.cache_repo()
    assert build(project, docker_env, cache_repo, "--target", "app").returncode == 0
    (project / "src" / "main.py").write_text("print(3)\n")
    rebuilt = build(project, docker_env, cache_repo, "--target", "test")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert statuses(project)["deps"] == "cached"
    via_cache = read_report(project / "report.json")["test"]["cache_ref"]

    secret_file = project / "token.txt"
    secret_file.write_text(SECRET)
    original = f"e2e-original-{uuid.uuid4().hex[:12]}:test"
    docker_env.build_clean(
        "--target",
        "test",
        "-t",
        original,
        "--secret",
        f"id=token,src={secret_file}",
        str(project),
    )
    try:
        expected = filesystem(docker_env, original)
    finally:
        docker_env.run("rmi", "-f", original, check=False)
    assert filesystem(docker_env, via_cache) == expected
    assert expected["app/src/main.py"] == b"print(3)\n"


def test_sigint_stops_the_build_and_pushes_no_tag_for_it(
    project: Path, docker_env: DockerEnv
) -> None:
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("sleep 1 && cp", "sleep 60 && cp"))
    cache_repo = docker_env.cache_repo()
    args = docker_env.build_args("--cache-repo", cache_repo, "--secret", "id=token,env=TOKEN")
    command = cli_command(*args, "--target", "test")
    code, _ = interrupt_while_building(command, cwd=project, env={"TOKEN": SECRET})
    assert code == 130
    tags = docker_env.tags(cache_repo)
    assert not any(tag.startswith(("deps-", "app-", "test-")) for tag in tags)
    running = subprocess.run(["pgrep", "-f", "--", cache_repo], capture_output=True, check=False)
    assert running.returncode == 1


def test_an_unreachable_cache_registry_builds_everything_and_exits_0(
    project: Path, docker_env: DockerEnv
) -> None:
    result = build(project, docker_env, f"127.0.0.1:{free_port()}/gone/cache", "--target", "app")
    assert result.returncode == 0, result.stderr
    assert "the cache registry is unreachable" in result.stderr
    report = read_report(project / "report.json")
    assert {(s["status"], s["cache_ref"]) for s in report.values()} == {("built", None)}


def test_no_cache_rebuilds_and_still_pushes(project: Path, docker_env: DockerEnv) -> None:
    cache_repo = docker_env.cache_repo()
    assert build(project, docker_env, cache_repo, "--target", "deps").returncode == 0
    again = build(project, docker_env, cache_repo, "--target", "deps", "--no-cache")
    assert again.returncode == 0, again.stderr
    assert statuses(project) == {"deps": "built"}
    assert read_report(project / "report.json")["deps"]["digest"] is not None


def test_a_docker_cli_that_refuses_buildkit_is_exit_3(project: Path, tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  version) echo 28.2.2 ;;\n"
        '  *) echo "docker: unknown command: docker $1" >&2; exit 1 ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    result = run_cli(
        "build", "--engine", "docker", "--docker", str(fake), "--target", "deps", cwd=project
    )
    assert result.returncode == 3, result.stderr
    assert f"{fake} (docker 28.2.2) refuses to build with BuildKit" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.wipes_engine_cache
def test_a_missed_stage_reuses_layers_from_its_branch_hint_and_says_why(
    project: Path, docker_env: DockerEnv
) -> None:
    cache_repo = docker_env.cache_repo()
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "FROM deps AS app\n", "FROM $BASE AS app\nRUN sleep 3 && echo slow > /app.slow\n"
        )
    )
    ci = {
        "GITLAB_CI": "true",
        "CI_COMMIT_BRANCH": "main",
        "CI_DEFAULT_BRANCH": "main",
        "CI_COMMIT_SHA": "ab" * 20,
        "TOKEN": SECRET,
    }

    def build_on(branch: str) -> subprocess.CompletedProcess[str]:
        command = docker_env.build_args(
            "--cache-repo", cache_repo, "--secret", "id=token,env=TOKEN"
        )
        command += ["--target", "app", "--report", str(project / "report.json")]
        return run_cli(*command, cwd=project, env={**ci, "CI_COMMIT_BRANCH": branch})

    assert build_on("main").returncode == 0
    hint = "app--main"
    assert hint in docker_env.tags(cache_repo)

    (project / "src" / "main.py").write_text("print('changed')\n")
    docker_env.wipe_engine_cache(cache_repo)
    second = build_on("feature/x")
    assert second.returncode == 0, second.stderr
    assert "missed: COPY src/ changed: 1 file (src/main.py)" in second.stderr
    assert f"importing cache manifest from {cache_repo}:{hint}" in second.stderr
    step = re.search(r"#(\d+) \[app \d+/\d+\] RUN sleep 3", second.stderr)
    assert step is not None
    assert f"#{step.group(1)} CACHED" in second.stderr
    report = read_report(project / "report.json")
    assert report["app"]["why"] == ["COPY src/ changed: 1 file (src/main.py)"]
    assert "app--feature-x" in docker_env.tags(cache_repo)


@pytest.mark.wipes_engine_cache
def test_layers_are_reused_on_every_change_not_every_second_one(
    project: Path, docker_env: DockerEnv
) -> None:
    """dockerd's BuildKit loses the reused layers of a lazily imported inline cache, so the
    image it builds makes the next build miss (moby/buildkit#1981); hints are pulled first."""
    cache_repo = docker_env.cache_repo()
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "FROM deps AS app\n", "FROM $BASE AS app\nRUN sleep 1 && echo slow > /app.slow\n"
        )
    )
    ci = {"GITLAB_CI": "true", "CI_COMMIT_BRANCH": "main", "CI_DEFAULT_BRANCH": "main"}
    command = docker_env.build_args("--cache-repo", cache_repo, "--secret", "id=token,env=TOKEN")
    command += ["--target", "app"]
    assert run_cli(*command, cwd=project, env={**ci, "TOKEN": SECRET}).returncode == 0
    for change in range(3):
        (project / "src" / "main.py").write_text(f"print('change {change}')\n")
        docker_env.wipe_engine_cache(cache_repo)
        result = run_cli(*command, cwd=project, env={**ci, "TOKEN": SECRET})
        assert result.returncode == 0, result.stderr
        step = re.search(r"#(\d+) \[app \d+/\d+\] RUN sleep 1", result.stderr)
        assert step is not None, result.stderr
        assert f"#{step.group(1)} CACHED" in result.stderr, f"change {change}:\n{result.stderr}"


@pytest.mark.wipes_engine_cache
@pytest.mark.parametrize("distant", [True, False], ids=["distant", "nearby"])
def test_a_distant_build_finds_the_images_it_reads_in_the_image_store(
    project: Path,
    docker_env: DockerEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    distant: bool,
) -> None:
    """`app` builds FROM the restored `deps`: from a distant registry (`PULL_BESIDE`), that
    image is pulled beside app's hint, and BuildKit takes it from the image store instead of
    resolving it through the registry; the hint's layers are still reused."""
    monkeypatch.setattr(docker_engine, "PULL_BESIDE", 0.0 if distant else 3600.0)
    monkeypatch.chdir(project)
    monkeypatch.setenv("TOKEN", SECRET)
    cache_repo = docker_env.cache_repo()
    command = docker_env.build_args("--cache-repo", cache_repo, "--secret", "id=token,env=TOKEN")
    command += ["--target", "app", "--verbose", "--report", str(project / "report.json")]
    assert main(command) == 0, capsys.readouterr().err
    (project / "src" / "main.py").write_text("print('changed')\n")
    docker_env.wipe_engine_cache(cache_repo)
    capsys.readouterr()
    assert main(command) == 0
    err = capsys.readouterr().err
    assert statuses(project) == {"deps": "cached", "assets": "cached", "app": "built"}
    deps = read_report(project / "report.json")["deps"]
    restored = f"{cache_repo}@{deps['digest']}"
    assert f"FROM {restored}" in err
    assert (f"resolve {restored}" in err) is not distant, err
    inspect = docker_env.run("image", "inspect", restored, check=False)
    assert (inspect.returncode == 0) is distant
    assert f"importing cache manifest from {cache_repo}:app--local" in err


STAMPED = """\
FROM {base} AS stamp
RUN head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /stamp
"""


def stamp_of(docker_env: DockerEnv, root: Path) -> str:
    ref = read_report(root / "report.json")["stamp"]["cache_ref"]
    return docker_env.run("run", "--rm", ref, "cat", "/stamp").stdout


def test_no_cache_runs_every_step_again_as_docker_build_no_cache_does(
    tmp_path: Path, docker_env: DockerEnv
) -> None:
    """The engine's own cache is bypassed too: a RUN writing a random value gives a new one."""
    (tmp_path / "Dockerfile").write_text(STAMPED.format(base=docker_env.base))
    cache_repo = docker_env.cache_repo()
    command = [*docker_env.build_args("--cache-repo", cache_repo, "--no-cache")]
    command += ["--report", str(tmp_path / "report.json")]
    stamps = []
    try:
        for _ in range(2):
            result = run_cli(*command, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            assert statuses(tmp_path) == {"stamp": "built"}
            stamps.append(stamp_of(docker_env, tmp_path))
    finally:
        docker_env.remove_images(cache_repo)
    assert len(stamps[0]) == 32
    assert stamps[0] != stamps[1]


MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def pushed_manifest(registry: str, name: str, reference: str) -> tuple[str, dict[str, object]]:
    """The digest and the document of the manifest a tag or digest names, as a pull reads it."""
    response = httpx.get(
        f"http://{registry}/v2/{name}/manifests/{reference}", headers={"Accept": MANIFEST}
    )
    response.raise_for_status()
    document: dict[str, object] = response.json()
    return response.headers["Docker-Content-Digest"], document


def build_through_proxy(
    project: Path,
    docker_env: DockerEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[str, CuttingProxy]:
    """`build --target app` in this process (so monkeypatches hold), its cache in a fresh
    repository behind a proxy that records every request; the repository's name, and the
    proxy."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("TOKEN", SECRET)
    name = f"e2e-{uuid.uuid4().hex[:12]}/cache"
    with cutting_proxy(("127.0.0.1", 5000), cut_after=1 << 40) as proxy:
        command = docker_env.build_args("--cache-repo", f"{proxy.host}/{name}", "--target", "app")
        command += ["--secret", "id=token,env=TOKEN", *args]
        code = main(command)
    assert code == 0, capsys.readouterr().err
    return name, proxy


def blob_uploads(proxy: CuttingProxy) -> list[str]:
    """The digest of each blob upload the proxy saw completed, in order."""
    return [
        parse_qs(urlsplit(r.path).query)["digest"][0]
        for r in proxy.requests
        if r.method == "PUT" and "/blobs/uploads/" in r.path
    ]


def test_hint_tags_are_pushed_with_the_cache_tags_and_no_layer_twice(
    project: Path,
    docker_env: DockerEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each stage's hint tag is pushed beside its cache tag, by dockerd, which shares the layer
    uploads of concurrent pushes to one repository: the hint ends at the digest the cache push
    produced, each layer is uploaded once, and the run copies no hint through the registry.

    The local registry is as close as can be: it counts as distant here (`runner.DISTANT`), and
    the images count as too big to push from `docker save` (`docker_engine.uploads_faster`)."""
    monkeypatch.setattr(runner, "DISTANT", 0.0)
    monkeypatch.setattr(docker_engine, "uploads_faster", lambda size, round_trip: False)
    report_file = str(project / "report.json")
    name, proxy = build_through_proxy(
        project, docker_env, monkeypatch, capsys, "--report", report_file
    )
    report = read_report(project / "report.json")
    assert statuses(project) == dict.fromkeys(["deps", "assets", "app"], "built")
    layers: set[str] = set()
    for stage, found in report.items():
        digest, document = pushed_manifest(docker_env.registry, name, f"{stage}--local")
        assert digest == found["digest"], stage
        assert document == pushed_manifest(docker_env.registry, name, digest)[1]
        layers |= {layer["digest"] for layer in document["layers"]}  # type: ignore[attr-defined]
    uploads = blob_uploads(proxy)
    assert layers <= set(uploads)
    assert sorted(d for d in uploads if d in layers) == sorted(layers)
    # The local registry's filesystem driver writes a blob's link in place: a HEAD racing the
    # concurrent push that writes it reads it empty and is answered 500 ("invalid checksum
    # digest format"), which fails that `docker push`. A hint push beside that failed is said,
    # and the hint is then moved by our client: a GET of the stage's manifest, which dockerd
    # pushed, and a PUT; the only such requests of ours allowed.
    failed = re.findall(r"hint tag \S+:(\S+)--local not pushed: ", capsys.readouterr().err)
    moved = {f"PUT /v2/{name}/manifests/{stage}--local" for stage in failed}
    read = {f"GET /v2/{name}/manifests/{report[stage]['digest']}" for stage in failed}
    ours = [f"{r.method} {r.path}" for r in proxy.requests if r.user_agent.startswith("dagger")]
    assert {r for r in ours if r.startswith(("PUT ", "POST "))} == moved, ours
    assert {r for r in ours if "/manifests/sha256:" in r} <= read, ours


@pytest.mark.parametrize("distant", [False, True], ids=["hint-copied", "hint-beside"])
def test_small_images_are_pushed_from_docker_save_each_layer_once(
    project: Path,
    docker_env: DockerEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    distant: bool,
) -> None:
    """Where `uploads_faster` says so (a distant registry), the run pushes each stage's image
    itself, from `docker save`: dockerd pushes nothing, each layer is uploaded once though
    stages share the base layer, and the config pushed is the image's own (its digest is the
    local image's ID). A hint tag costs one manifest PUT, after the push (its manifest is not
    read back) or, with a distant registry, beside it (sharing the push's save and uploads)."""
    monkeypatch.setattr(docker_engine, "uploads_faster", lambda size, round_trip: True)
    if distant:
        monkeypatch.setattr(runner, "DISTANT", 0.0)
    report_file = str(project / "report.json")
    name, proxy = build_through_proxy(
        project, docker_env, monkeypatch, capsys, "--report", report_file
    )
    assert statuses(project) == dict.fromkeys(["deps", "assets", "app"], "built")
    report = read_report(project / "report.json")
    docker = [r for r in proxy.requests if not r.user_agent.startswith("dagger")]
    assert not [r for r in docker if r.method in ("PUT", "POST", "PATCH")]
    uploads = blob_uploads(proxy)
    assert len(uploads) == len(set(uploads)), uploads
    layers: set[str] = set()
    for stage, found in report.items():
        digest, document = pushed_manifest(
            docker_env.registry, name, found["cache_ref"].split(":")[-1]
        )
        assert digest == found["digest"], stage
        assert pushed_manifest(docker_env.registry, name, f"{stage}--local")[0] == digest
        config = document["config"]["digest"]  # type: ignore[index]
        local = docker_env.run("image", "inspect", "--format", "{{.Id}}", found["cache_ref"])
        assert local.stdout.strip() == config, stage
        layers |= {layer["digest"] for layer in document["layers"]}  # type: ignore[attr-defined]
    assert layers <= set(uploads)
    ours = [f"{r.method} {r.path}" for r in proxy.requests if r.user_agent.startswith("dagger")]
    assert not [r for r in ours if r.startswith("GET ") and "/manifests/sha256:" in r], ours


def test_a_run_that_pushes_no_cache_uploads_nothing_ahead(
    project: Path,
    docker_env: DockerEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The blobs that go ahead of a push (as a build ends) go only where the cache is pushed:
    `--no-push-cache` writes nothing to the registry, however far it is."""
    monkeypatch.setattr(docker_engine, "uploads_faster", lambda size, round_trip: True)
    _, proxy = build_through_proxy(project, docker_env, monkeypatch, capsys, "--no-push-cache")
    writes = [
        f"{r.method} {r.path}" for r in proxy.requests if r.method in ("PUT", "POST", "PATCH")
    ]
    assert writes == []


def test_base_layers_the_cache_registry_holds_are_mounted_not_uploaded(
    tmp_path: Path,
    docker_env: DockerEnv,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A base image mirrored in the cache's registry (as an ECR pull-through cache keeps
    one): where the run pushes from `docker save`, each stage's base layers are mounted from
    the base's repository, one POST each, and never uploaded; the manifests name the base's
    own blobs, and the images pull back."""
    monkeypatch.setattr(docker_engine, "uploads_faster", lambda size, round_trip: True)
    monkeypatch.setenv("TOKEN", SECRET)
    name = f"e2e-{uuid.uuid4().hex[:12]}/cache"
    with cutting_proxy(("127.0.0.1", 5000), cut_after=1 << 40) as proxy:
        project = write_project(tmp_path, f"{proxy.host}/busybox:1")
        monkeypatch.chdir(project)
        command = docker_env.build_args("--cache-repo", f"{proxy.host}/{name}", "--target", "app")
        report = ["--report", str(project / "report.json")]
        code = main([*command, "--secret", "id=token,env=TOKEN", *report])
    assert code == 0, capsys.readouterr().err
    assert statuses(project) == dict.fromkeys(["deps", "assets", "app"], "built")
    _, base = pushed_manifest(docker_env.registry, "busybox", "1")
    base_layers = {layer["digest"] for layer in base["layers"]}  # type: ignore[attr-defined]
    assert not base_layers & set(blob_uploads(proxy))
    mounted = {
        parse_qs(urlsplit(r.path).query)["mount"][0]
        for r in proxy.requests
        if r.method == "POST" and "from=busybox" in r.path
    }
    assert mounted == base_layers
    for stage in ("deps", "assets", "app"):
        _, document = pushed_manifest(docker_env.registry, name, f"{stage}--local")
        layers = [layer["digest"] for layer in document["layers"]]  # type: ignore[attr-defined]
        assert layers[: len(base_layers)] == [layer["digest"] for layer in base["layers"]]  # type: ignore[attr-defined]
    pulled = docker_env.run("pull", "-q", f"{docker_env.registry}/{name}:app--local", check=False)
    assert pulled.returncode == 0, pulled.stderr


@pytest.mark.wipes_engine_cache
def test_a_cache_behind_a_login_is_pushed_and_its_hints_pulled_with_the_runs_credentials(
    tmp_path: Path,
    docker_env: DockerEnv,
    auth_registry: RegistryServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A cache registry that wants a login, whose credentials only the environment holds
    (a CI's token), not the user's Docker config: the run logs dockerd in through its own
    private config, for its pushes and for the hint it pulls (while planning: see
    test_prefetches_log_in_with_the_runs_credentials_once_for_the_run), whose layers a
    changed stage then reuses. dockerd never asks for the hint without them, and the
    password is never printed."""
    host, port = auth_registry.host.rsplit(":", 1)
    project = write_project(tmp_path, docker_env.base)
    monkeypatch.chdir(project)
    monkeypatch.setenv("TOKEN", SECRET)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty-docker-config"))
    monkeypatch.setenv("REGISTRY_USER", auth_registry.username or "")
    monkeypatch.setenv("REGISTRY_PASSWORD", auth_registry.password or "")
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace(
            "FROM deps AS app\n", "FROM $BASE AS app\nRUN sleep 1 && echo slow > /app.slow\n"
        )
    )
    name = f"e2e-{uuid.uuid4().hex[:12]}/cache"
    with cutting_proxy((host, int(port)), cut_after=1 << 40) as proxy:
        command = docker_env.build_args("--cache-repo", f"{proxy.host}/{name}", "--target", "app")
        command += ["--secret", "id=token,env=TOKEN"]
        assert main(command) == 0, capsys.readouterr().err
        (project / "src" / "main.py").write_text("print('changed')\n")
        docker_env.wipe_engine_cache(f"{proxy.host}/{name}")
        first = len(proxy.requests)
        capsys.readouterr()
        assert main([*command, "--verbose"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    step = re.search(r"#(\d+) \[app \d+/\d+\] RUN sleep 1", err)
    assert step is not None, err
    assert f"#{step.group(1)} CACHED" in err
    assert "not pulled" not in err
    hint = [r for r in proxy.requests[first:] if r.path.endswith("/manifests/app--local")]
    by_docker = [r for r in hint if r.user_agent.startswith("docker/")]
    assert by_docker, hint
    assert all(r.authorized for r in by_docker)
    assert auth_registry.password not in err
