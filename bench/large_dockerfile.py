"""A 59-stage Dockerfile shaped like the largest public ones, for timing `plan --offline`.

moby/moby's and moby/buildkit's Dockerfiles are the biggest that teams actually build: a row of
global `ARG`s with defaults, a cross-compilation helper stage (`xx`) and base stages pinned to
`$BUILDPLATFORM`, stages picked by a variable (`FROM cross-${CROSS}`), one stage per tool with
its own `ARG <TOOL>_VERSION`, cache, bind and `from=` mounts, heredocs, `scratch` stages that
only gather binaries with `COPY --link --from`, and a final dev stage that copies from nearly
every other one. This module writes a Dockerfile with those shapes (not their text) and the
context files it reads, the same bytes on every call, so a plan of it is comparable across runs.

    python bench/large_dockerfile.py DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

STAGES = 59
GLOBAL_ARGS = {
    "GO_VERSION": "1.21.5",
    "ALPINE_VERSION": "3.18",
    "XX_VERSION": "1.3.0",
    "BASE_DEBIAN_DISTRO": '"bookworm"',
    "GOLANG_IMAGE": '"golang:${GO_VERSION}-${BASE_DEBIAN_DISTRO}"',
    "DEBIAN_FRONTEND": "noninteractive",
    "CROSS": '"false"',
    "SYSTEMD": '"false"',
    "VPNKIT_VERSION": "0.5.0",
    "CNI_VERSION": "v1.3.0",
}
# Tools installed with `go install pkg@version` into /build, moby's way.
GO_TOOLS = {
    "delve": ("github.com/go-delve/delve/cmd/dlv", "v1.21.1", "dlv"),
    "tomll": ("github.com/pelletier/go-toml/cmd/tomll", "v1.9.5", "tomll"),
    "gowinres": ("github.com/tc-hib/go-winres", "v0.3.1", "go-winres"),
    "golangci-lint": ("github.com/golangci/golangci-lint/cmd/golangci-lint", "v1.55.2", None),
    "gotestsum": ("gotest.tools/gotestsum", "v1.10.1", None),
    "shfmt": ("mvdan.cc/sh/v3/cmd/shfmt", "v3.7.0", None),
    "gofumpt": ("mvdan.cc/gofumpt", "v0.5.0", None),
    "protoc-gen-go": ("google.golang.org/protobuf/cmd/protoc-gen-go", "v1.31.0", None),
    "mockery": ("github.com/vektra/mockery/v2", "v2.36.1", None),
    "govulncheck": ("golang.org/x/vuln/cmd/govulncheck", "v1.0.1", None),
    "buf": ("github.com/bufbuild/buf/cmd/buf", "v1.28.1", None),
    "protoc-gen-go-grpc": ("google.golang.org/grpc/cmd/protoc-gen-go-grpc", "v1.3.0", None),
    "swagger": ("github.com/go-swagger/go-swagger/cmd/swagger", "v0.30.5", None),
}
# Tools built from a git checkout: a `<tool>-src` stage clones, `<tool>` mounts it, buildkit's way.
SOURCE_TOOLS = {
    "runc": ("opencontainers/runc", "v1.1.10", "."),
    "containerd": ("containerd/containerd", "v1.7.11", "./cmd/containerd"),
    "rootlesskit": ("rootless-containers/rootlesskit", "v2.0.0", "./cmd/rootlesskit"),
    "dnsname": ("containers/dnsname", "v1.3.1", "./plugins/meta/dnsname"),
    "stargz-snapshotter": ("containerd/stargz-snapshotter", "v0.15.1", "./cmd/ctr-remote"),
    "registry": ("distribution/distribution", "v2.8.3", "./cmd/registry"),
    "nerdctl": ("containerd/nerdctl", "v1.7.2", "./cmd/nerdctl"),
}
# Tools installed by a script from the context, moby's hack/dockerfile/install way.
SCRIPT_TOOLS = ["tini", "dockercli", "buildx", "compose"]
BINARIES = ["dockerd", "docker-proxy", "docker-init-helper", "engine-ctl"]
PACKAGES = ["api", "client", "daemon", "image", "layer", "network", "plugin", "volume"]


def arg_name(tool: str) -> str:
    return tool.upper().replace("-", "_") + "_VERSION"


def cache_mounts(*targets: str) -> str:
    return " ".join(f"--mount=type=cache,target={target}" for target in targets)


def apt_mounts(stage: str) -> str:
    """moby's apt caches: locked, with an id per stage so parallel stages do not share them."""
    return (
        f"--mount=type=cache,sharing=locked,id=bench-{stage}-aptlib,target=/var/lib/apt \\\n"
        f"    --mount=type=cache,sharing=locked,id=bench-{stage}-aptcache,target=/var/cache/apt"
    )


def apt_install(stage: str, *packages: str) -> str:
    listed = " \\\n            ".join(packages)
    return (
        f"RUN {apt_mounts(stage)} \\\n"
        f"        apt-get update && apt-get install -y --no-install-recommends \\\n"
        f"            {listed}"
    )


GO_CACHES = cache_mounts("/root/.cache/go-build", "/go/pkg/mod")


def foundation() -> list[str]:
    """Helper and base stages, and the variable-selected cross/runtime layers (11 stages)."""
    return [
        "# xx is a helper for cross-compilation\n"
        "FROM --platform=$BUILDPLATFORM tonistiigi/xx:${XX_VERSION} AS xx",
        "FROM --platform=$BUILDPLATFORM ${GOLANG_IMAGE} AS golatest",
        "FROM --platform=$BUILDPLATFORM alpine:${ALPINE_VERSION} AS git\n"
        "RUN apk add --no-cache git",
        "FROM golatest AS base\n"
        "RUN echo 'Binary::apt::APT::Keep-Downloaded-Packages \"true\";' "
        "> /etc/apt/apt.conf.d/keep-cache\n"
        "ARG APT_MIRROR\n"
        'RUN sed -ri "s/(httpredir|deb).debian.org/${APT_MIRROR:-deb.debian.org}/g" '
        "/etc/apt/sources.list.d/debian.sources\n"
        + apt_install("base", "clang", "file", "lld", "pkg-config", "make")
        + "\nCOPY --link --from=xx / /\nENV GO111MODULE=on GOTOOLCHAIN=local\n"
        "ENV GOFLAGS=-mod=vendor",
        "FROM debian:${BASE_DEBIAN_DISTRO} AS frozen-images\n"
        "ARG DEBIAN_FRONTEND\n"
        + apt_install("frozen-images", "ca-certificates", "curl", "jq")
        + "\nCOPY contrib/download-frozen-image-v2.sh /\n"
        "ARG TARGETARCH\n"
        "RUN /download-frozen-image-v2.sh /build \\\n"
        "        busybox:latest \\\n"
        "        debian:bookworm-slim \\\n"
        "        hello-world:latest",
        "FROM base AS cross-false",
        "FROM --platform=linux/amd64 base AS cross-true\n"
        "ARG DEBIAN_FRONTEND\n"
        + "\n".join(f"RUN dpkg --add-architecture {arch}" for arch in ("arm64", "armhf", "s390x"))
        + "\n"
        + apt_install(
            "cross-true",
            "crossbuild-essential-arm64",
            "crossbuild-essential-armhf",
            "crossbuild-essential-s390x",
        ),
        "FROM cross-${CROSS} AS dev-base",
        "FROM dev-base AS runtime-dev-cross-false\n"
        "ARG DEBIAN_FRONTEND\n"
        + apt_install(
            "runtime-dev", "libapparmor-dev", "libseccomp-dev", "libsystemd-dev", "libudev-dev"
        ),
        "FROM --platform=linux/amd64 runtime-dev-cross-false AS runtime-dev-cross-true\n"
        "ARG DEBIAN_FRONTEND\n"
        + apt_install("runtime-dev-cross", "libapparmor-dev:arm64", "libseccomp-dev:arm64"),
        "FROM runtime-dev-cross-${CROSS} AS runtime-dev",
    ]


def go_tool(tool: str, package: str, version: str, binary: str | None) -> str:
    name = arg_name(tool)
    return (
        f"FROM base AS {tool}\n"
        f"# {name} is the version of {tool} that CI and the dev container use\n"
        f"ARG {name}={version}\n"
        f"RUN {GO_CACHES} \\\n"
        f'        GOBIN=/build/ go install "{package}@${{{name}}}" \\\n'
        f"     && /build/{binary or tool} --version"
    )


def source_tool(tool: str, repo: str, version: str, package: str) -> list[str]:
    name = arg_name(tool)
    source = (
        f"FROM git AS {tool}-src\n"
        f"ARG {name}={version}\n"
        "WORKDIR /usr/src\n"
        f"RUN git clone https://github.com/{repo}.git {tool} \\\n"
        f'  && cd {tool} && git checkout -q "${name}"'
    )
    build = (
        f"FROM base AS {tool}\n"
        f"WORKDIR /go/src/github.com/{repo}\n"
        "ARG TARGETPLATFORM\n"
        "RUN xx-apt-get install -y --no-install-recommends gcc libc6-dev libseccomp-dev\n"
        f"RUN --mount=from={tool}-src,src=/usr/src/{tool},target=.,rw \\\n"
        f"    {cache_mounts('/root/.cache', '/go/pkg/mod')} <<EOT\n"
        "  set -ex\n"
        f"  CGO_ENABLED=0 xx-go build -trimpath -o /build/{tool} {package}\n"
        f"  xx-verify --static /build/{tool}\n"
        "EOT"
    )
    return [source, build]


def script_tool(tool: str) -> str:
    installer = "hack/dockerfile/install"
    return (
        f"FROM dev-base AS {tool}\n"
        f"ARG {arg_name(tool)}\n"
        f"COPY {installer}/install.sh {installer}/{tool}.installer /\n"
        f"RUN {GO_CACHES} \\\n"
        f"        PREFIX=/build /install.sh {tool}"
    )


def gathered() -> list[str]:
    """Image-only stages and the buildkit-style CNI plugins with their scratch export."""
    vpnkit = [
        f"FROM --platform=linux/{arch} djs55/vpnkit:${{VPNKIT_VERSION}} AS vpnkit-{arch}"
        for arch in ("amd64", "arm64")
    ]
    return [
        *vpnkit,
        "FROM scratch AS vpnkit\n"
        "COPY --from=vpnkit-amd64 /vpnkit /build/vpnkit.x86_64\n"
        "COPY --from=vpnkit-arm64 /vpnkit /build/vpnkit.aarch64",
        "FROM --platform=$BUILDPLATFORM alpine:${ALPINE_VERSION} AS cni-plugins\n"
        "RUN apk add --no-cache curl\n"
        "COPY --from=xx / /\n"
        "ARG CNI_VERSION\n"
        "ARG TARGETOS\n"
        "ARG TARGETARCH\n"
        "WORKDIR /opt/cni/bin\n"
        "RUN curl -Ls https://github.com/containernetworking/plugins/releases/download/"
        "${CNI_VERSION}/cni-plugins-${TARGETOS}-${TARGETARCH}-${CNI_VERSION}.tgz | tar xzv\n"
        "RUN xx-verify --static bridge loopback host-local\n"
        "COPY --link --from=dnsname /build/dnsname /opt/cni/bin/",
        "FROM scratch AS cni-plugins-export\n"
        + "\n".join(
            f"COPY --link --from=cni-plugins /opt/cni/bin/{plugin} /bench-cni-{plugin}"
            for plugin in ("bridge", "loopback", "host-local", "dnsname")
        ),
    ]


def product() -> list[str]:
    """The project's own binaries: a version stage read through a mount, one stage a binary,
    a scratch stage gathering them and a release tarball."""
    binaries = [
        f"FROM build-base AS {binary}\n"
        "ARG TARGETPLATFORM\n"
        "ARG GOGCFLAGS\n"
        f"RUN --mount=type=bind,target=. \\\n"
        f"    {GO_CACHES} \\\n"
        "    --mount=from=version,source=/tmp/.ldflags,target=/tmp/.ldflags \\\n"
        f'        xx-go build -gcflags="${{GOGCFLAGS}}" -ldflags "$(cat /tmp/.ldflags)" '
        f"-o /out/{binary} ./cmd/{binary} \\\n"
        f"     && xx-verify --static /out/{binary}"
        for binary in BINARIES
    ]
    return [
        "FROM base AS build-base\n"
        "WORKDIR /go/src/github.com/bench/engine\n"
        "ARG TARGETPLATFORM\n"
        "RUN xx-apt-get install -y --no-install-recommends gcc libc6-dev libseccomp-dev\n"
        "ENV CGO_ENABLED=0",
        "FROM build-base AS version\n"
        "RUN --mount=type=bind,target=. <<EOT\n"
        "  set -e\n"
        "  VERSION=$(cat VERSION)\n"
        '  echo "-X github.com/bench/engine/version.Version=${VERSION}" | tee /tmp/.ldflags\n'
        '  echo -n "${VERSION}" | tee /tmp/.version\n'
        "EOT",
        *binaries,
        "FROM scratch AS binary\n"
        + "\n".join(f"COPY --link --from={binary} /out/ /" for binary in BINARIES),
        "FROM --platform=$BUILDPLATFORM alpine:${ALPINE_VERSION} AS releaser\n"
        "RUN apk add --no-cache tar gzip\n"
        "WORKDIR /work\n"
        "ARG TARGETPLATFORM\n"
        "RUN --mount=from=binary \\\n"
        "    --mount=source=/tmp/.version,target=/tmp/.version,from=version \\\n"
        '  mkdir -p /out && tar czf "/out/engine-$(cat /tmp/.version).tar.gz" '
        "--mtime='2015-10-21 00:00Z' --sort=name .",
        "FROM scratch AS release\nCOPY --link --from=releaser /out/ /",
    ]


def dev() -> list[str]:
    """The dev container: every tool, the binaries and the source, on the runtime layers."""
    tools = [*GO_TOOLS, *(tool for tool in SOURCE_TOOLS if tool != "dnsname"), *SCRIPT_TOOLS]
    copies = "\n".join(f"COPY --link --from={tool} /build/ /usr/local/bin/" for tool in tools)
    return [
        "FROM runtime-dev AS dev-systemd-false\n"
        "ARG DEBIAN_FRONTEND\n"
        "RUN groupadd -r docker\n"
        "RUN useradd --create-home --gid docker unprivilegeduser \\\n"
        " && mkdir -p /home/unprivilegeduser/.local/share/docker\n"
        + apt_install("dev", "bash-completion", "iptables", "jq", "pigz", "sudo", "xz-utils")
        + "\nARG YAMLLINT_VERSION=1.33.0\n"
        "RUN pip3 install --break-system-packages yamllint==${YAMLLINT_VERSION}\n"
        f"{copies}\n"
        "COPY --from=frozen-images /build/ /docker-frozen-images\n"
        "COPY --from=vpnkit /build/ /usr/local/bin/\n"
        "COPY --link --from=cni-plugins-export / /usr/local/lib/cni/\n"
        "COPY --link --from=binary / /usr/local/bin/\n"
        "COPY --link --from=release / /release/\n"
        "ENV PATH=/usr/local/cli:$PATH\n"
        "ENV CONTAINERD_ADDRESS=/run/docker/containerd/containerd.sock\n"
        "WORKDIR /go/src/github.com/bench/engine\n"
        'VOLUME /var/lib/docker\nENTRYPOINT ["hack/dind"]',
        "FROM dev-systemd-false AS dev-systemd-true\n"
        + apt_install("dev-systemd", "dbus", "dbus-user-session", "systemd", "systemd-sysv")
        + '\nENTRYPOINT ["hack/dind-systemd"]',
        "FROM dev-systemd-${SYSTEMD} AS dev\n"
        "COPY --link --chmod=0755 <<EOF /usr/local/bin/dev-shell\n"
        "#!/bin/sh\n"
        'exec bash -l "$@"\n'
        "EOF\n"
        "COPY --link . .",
    ]


def dockerfile() -> str:
    stages = [
        *foundation(),
        *(go_tool(tool, *spec) for tool, spec in GO_TOOLS.items()),
        *(part for tool, spec in SOURCE_TOOLS.items() for part in source_tool(tool, *spec)),
        *(script_tool(tool) for tool in SCRIPT_TOOLS),
        *gathered(),
        *product(),
        *dev(),
    ]
    assert len(stages) == STAGES, len(stages)
    head = "# syntax=docker/dockerfile:1\n\n" + "".join(
        f"ARG {name}={value}\n" for name, value in GLOBAL_ARGS.items()
    )
    return head + "\n" + "\n\n".join(stages) + "\n"


def context_files() -> dict[str, str]:
    """What the stages COPY and bind-mount: install scripts, the frozen-image script, and a
    small Go tree (one main package a binary, a few files a library package)."""
    files = {
        "VERSION": "25.0.0-dev\n",
        "go.mod": "module github.com/bench/engine\n\ngo 1.21\n",
        ".dockerignore": "bundles\n.git\n",
        "hack/dind": '#!/bin/sh\nexec "$@"\n',
        "hack/dind-systemd": "#!/bin/sh\nexec /sbin/init\n",
        "contrib/download-frozen-image-v2.sh": '#!/bin/sh\nset -e\nmkdir -p "$1"\n',
        "hack/dockerfile/install/install.sh": (
            '#!/bin/sh\nset -e\n. "$(dirname "$0")/$1.installer"\ninstall_"$1"\n'
        ),
    }
    for tool in SCRIPT_TOOLS:
        files[f"hack/dockerfile/install/{tool}.installer"] = (
            f'install_{tool}() {{\n\techo "installing {tool} to ${{PREFIX}}"\n}}\n'
        )
    for binary in BINARIES:
        files[f"cmd/{binary}/main.go"] = f'package main\n\nfunc main() {{ println("{binary}") }}\n'
    for package in PACKAGES:
        for number in range(12):
            files[f"{package}/{package}_{number}.go"] = (
                f"package {package}\n\n// F{number} is part {number} of {package}.\n"
                f"func F{number}() int {{ return {number} }}\n"
            )
    return files


def generate(root: Path) -> None:
    """Write the Dockerfile and its context under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile())
    for relative, text in context_files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


if __name__ == "__main__":
    generate(Path(sys.argv[1]))
