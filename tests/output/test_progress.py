from __future__ import annotations

import pytest

from pipeline.output.progress import BuildProgress, Step, shorten

DIGEST = "sha256:" + "9" * 64


def test_steps_are_read_from_vertex_names_without_ids_or_digests() -> None:
    progress = BuildProgress()
    started = [
        progress.feed(line)
        for line in [
            "#1 [internal] load build definition from Dockerfile",
            f"#1 {DIGEST}",
            "#1 DONE 0.0s",
            "",
            f"#4 [deps 1/3] FROM localhost:5000/busybox:1@{DIGEST}",
            "#7 [app 2/5] RUN composer install",
            "#7 0.412 Installing dependencies",
            "#7 [app 2/5] RUN composer install",  # named again after another vertex's lines
        ]
    ]
    assert [str(step) for step in started if step is not None] == [
        "[deps 1/3] FROM localhost:5000/busybox:1",
        "[app 2/5] RUN composer install",
    ]
    assert progress.current("app") == "[2/5] RUN composer install"
    assert progress.current("test") == "[app 2/5] RUN composer install"


def test_current_is_the_latest_step_still_running_else_buildkit_s_own_work() -> None:
    progress = BuildProgress()
    assert progress.current("app") is None
    for line in [
        "#5 [app 1/2] COPY . .",
        "#6 [app 2/2] RUN make",
        "#6 DONE 1.2s",
    ]:
        progress.feed(line)
    assert progress.current("app") == "[1/2] COPY . ."
    progress.feed("#5 CACHED")
    assert progress.current("app") is None
    progress.feed(f"#8 exporting to image@{DIGEST}")
    assert progress.current("app") == "exporting to image"
    progress.feed("#8 ERROR: failed to export")
    assert progress.current("app") is None


def test_a_single_stage_dockerfile_s_steps_have_no_stage() -> None:
    step = Step.parse("[2/3] RUN echo hi")
    assert step == Step(None, "2/3", "RUN echo hi")
    assert step is not None
    assert step.label == str(step) == "[2/3] RUN echo hi"
    assert Step.parse("[internal] load .dockerignore") is None


@pytest.mark.parametrize(
    ("text", "width", "expected"),
    [
        ("RUN composer install", 40, "RUN composer install"),
        ("RUN composer install --no-dev", 24, "RUN composer install …"),
        (f"app-1: digest: {DIGEST} size: 942", 30, "app-1: digest: …"),
        ("averyveryverylongword and more", 10, "averyvery…"),
        ("a   b\tc", 10, "a b c"),
    ],
)
def test_shorten_cuts_at_a_word_boundary(text: str, width: int, expected: str) -> None:
    assert shorten(text, width) == expected
    assert len(shorten(text, width)) <= width
