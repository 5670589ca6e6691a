"""The one log reader: every form a job log reaches Shepherd in, as a table of small excerpts.

Each row is written after the shape of a real log in ``../shared/real-logs-bench`` (the API's raw
log, ``gh run view --log[-failed]``, a paste with its tabs turned to spaces, text copied from the
web UI, Travis and GitLab transcripts); none is copied from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bot.diagnosis.logs import SET_UP_JOB, JobText, distill_steps, read_log

STAMP = "2025-08-02T02:48:14.4841357Z "
ESC = "\x1b"


def raw(*lines: str, bom: bool = True) -> str:
    return ("\ufeff" if bom else "") + "\n".join(STAMP + line for line in lines) + "\n"


RUFF_STEP = [
    "##[group]Run ruff check .",
    f"{ESC}[36;1mruff check .{ESC}[0m",
    "shell: /usr/bin/bash -e {0}",
    "##[endgroup]",
    "src/a.py:1:8: F401 [*] `os` imported but unused",
    "Found 1 error.",
    "[*] 1 fixable with the `--fix` option.",
    "##[error]Process completed with exit code 1.",
]


def gh_view(job: str, step: str, lines: list[str], *, sep: str = "\t") -> str:
    body = [f"{job}{sep}{step}{sep}{STAMP}{line}" for line in lines]
    # gh keeps the API log's BOM: it sits after the columns on a job's first line.
    body[0] = body[0].replace(STAMP, "\ufeff" + STAMP, 1)
    return "\n".join(body)


@dataclass(frozen=True)
class Case:
    name: str
    log: str
    #: (job, step, command, exit code) of each failed step, in order.
    steps: list[tuple[str | None, str | None, str | None, int | None]]
    #: Text each excerpt must contain, in order.
    needles: list[str]


CASES = [
    Case(
        "raw API log: BOM, timestamps, echoed script",
        raw("Current runner version: '2.331.0'", "Complete job name: lint", *RUFF_STEP),
        [("lint", "ruff check .", "ruff check .", 1)],
        ["F401 [*] `os` imported but unused"],
    ),
    Case(
        "log archive step file: no BOM, starts at the step's group",
        raw(*RUFF_STEP, bom=False),
        [(None, "ruff check .", "ruff check .", 1)],
        ["Found 1 error."],
    ),
    Case(
        "gh run view --log-failed: job and step columns, two matrix jobs",
        gh_view(
            "build (3.10)",
            "Install",
            [
                "##[group]Run pip install .",
                "pip install .",
                "shell: /usr/bin/bash -e {0}",
                "##[endgroup]",
                "ERROR: No matching distribution found for x",
                "##[error]Process completed with exit code 1.",
            ],
        )
        + "\n"
        + gh_view(
            "build (3.12)",
            "Install",
            [
                "##[group]Run pip install .",
                "pip install .",
                "shell: /usr/bin/bash -e {0}",
                "##[endgroup]",
                "ERROR: No matching distribution found for x",
                "##[error]Process completed with exit code 1.",
            ],
        ),
        [
            ("build (3.10)", "pip install .", "pip install .", 1),
            ("build (3.12)", "pip install .", "pip install .", 1),
        ],
        ["No matching distribution found for x", "No matching distribution found for x"],
    ),
    Case(
        "gh run view pasted into a document: the tabs became spaces",
        gh_view("lint", "Ruff", RUFF_STEP, sep="    "),
        [("lint", "ruff check .", "ruff check .", 1)],
        ["[*] 1 fixable with the `--fix` option."],
    ),
    Case(
        "gh run view excerpt that starts inside the step's header (no group line)",
        gh_view(
            "lint",
            "Ruff lint + format",
            [
                "  exit 0",
                "fi",
                'uvx ruff check "${FILES[@]}"',
                "shell: /usr/bin/bash -e {0}",
                "env:",
                "  UV_PYTHON: 3.12",
                "##[endgroup]",
                "F401 [*] `app.x` imported but unused",
                "Found 1 error.",
                "##[error]Process completed with exit code 1.",
            ],
        ),
        [("lint", "Ruff lint + format", '  exit 0\nfi\nuvx ruff check "${FILES[@]}"', 1)],
        ["F401 [*] `app.x` imported but unused"],
    ),
    Case(
        "raw tail without any step header",
        raw(
            "Would reformat: app/main.py",
            "1 file would be reformatted, 12 files already formatted",
            "##[error]Process completed with exit code 1.",
            "Post job cleanup.",
            bom=False,
        ),
        [(None, None, None, 1)],
        ["Would reformat: app/main.py"],
    ),
    Case(
        "text copied from the web UI: Run header, indented script, Error line",
        "\n".join(
            [
                "Run npm test",
                "  npm test",
                "  shell: /usr/bin/bash -e {0}",
                "  env:",
                "    CI: true",
                "> app@1.0.0 test",
                "> jest",
                "FAIL src/a.test.js",
                "  ● adds",
                "Error: Process completed with exit code 1.",
            ]
        ),
        [(None, "npm test", "npm test", 1)],
        ["● adds"],
    ),
    Case(
        "web UI copy with a line number before every line",
        "\n".join(
            f"{n}\n{line}"
            for n, line in enumerate(
                [
                    "Run make",
                    "make",
                    "shell: /usr/bin/bash -e {0}",
                    "main.c:3:1: error: expected ';'",
                    "Error: Process completed with exit code 2.",
                ],
                start=1,
            )
        ),
        [(None, "make", "make", 2)],
        ["main.c:3:1: error: expected ';'"],
    ),
    Case(
        "Travis transcript: fold and timer markers, ANSI, the command's exit status",
        "\n".join(
            [
                f"travis_fold:start:install\r{ESC}[0Ktravis_time:start:1a\r{ESC}[0K$ npm ci",
                "added 10 packages",
                f"travis_time:end:1a:start=1,finish=2\r{ESC}[0K",
                f'{ESC}[32;1mThe command "npm ci" exited with 0.{ESC}[0m',
                f"travis_time:start:2b\r{ESC}[0K$ npm test",
                "> app@1.0.0 test /home/travis/build/o/app",
                "> mocha",
                "  1 failing",
                "  1) adds: AssertionError: expected 1 to equal 2",
                f"travis_time:end:2b:start=3,finish=4\r{ESC}[0K",
                f'{ESC}[31;1mThe command "npm test" exited with 1.{ESC}[0m',
                "Done. Your build exited with 1.",
            ]
        ),
        [(None, "npm test", "npm test", 1)],
        ["AssertionError: expected 1 to equal 2"],
    ),
    Case(
        "Travis transcript stored without its ESC bytes, a multi-line command",
        "\n".join(
            [
                "travis_time:end:0a:start=1,finish=2[0Ktravis_time:start:3c[0K$ docker run img \\",
                '       sh -c "./run-tests.sh"',
                "FAIL: tests.test_api.test_pipeline",
                "[1m[31mAssertionError[0m",
                "travis_time:end:3c:start=5,finish=6[0K",
                '[31;1mThe command "docker run img \\',
                '       sh -c "./run-tests.sh"',
                '" exited with 1.[0m',
            ]
        ),
        [(None, "docker run img \\", "docker run img \\", 1)],
        ["FAIL: tests.test_api.test_pipeline"],
    ),
    Case(
        "GitLab job log: prompts and the job's exit status",
        "\n".join(
            [
                f"section_start:1:step_script\r{ESC}[0K{ESC}[0K$ go test ./...",
                "--- FAIL: TestAdd (0.00s)",
                "    add_test.go:9: got 3, want 4",
                "FAIL",
                f"section_end:2:step_script\r{ESC}[0K",
                f"{ESC}[31;1mERROR: Job failed: exit code 1{ESC}[0;m",
            ]
        ),
        [(None, "go test ./...", "go test ./...", 1)],
        ["--- FAIL: TestAdd (0.00s)"],
    ),
    Case(
        "a transcript cut off inside its last command",
        "\n".join(
            [
                "$ ./lint.sh",
                "src/util.h seems to be missing the expected include guard:",
                "  #ifndef UTIL_H",
                "^---- failure generated from lint-include-guards.sh",
            ]
        ),
        [(None, "./lint.sh", "./lint.sh", None)],
        ["#ifndef UTIL_H"],
    ),
    Case(
        "a failure in Set up job: an action download answered 500",
        raw(
            "Current runner version: '2.331.0'",
            "Getting action download info",
            "##[warning]Failed to download action 'https://api.github.com/repos/a/b/tarball/c'. "
            "Error: Response status code does not indicate success: 500 (Internal Server Error).",
            "##[error]Response status code does not indicate success: 500 (Internal Server Error).",
        ),
        [(None, SET_UP_JOB, None, None)],
        ["500 (Internal Server Error)"],
    ),
    Case(
        "no error marker at all: the last step whose final lines show a failure",
        raw(
            "##[group]Run actions/checkout@v4",
            "with:",
            "##[endgroup]",
            "Syncing repository",
            "##[group]Run org/latex-action@v2",
            "with:",
            "  root_file: cv.tex",
            "##[endgroup]",
            "fatal: unsafe repository ('/github/workspace' is owned by someone else)",
            "Something went wrong in executing: git archive",
            "Post job cleanup.",
        ),
        [(None, "org/latex-action@v2", None, None)],
        ["fatal: unsafe repository"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_log_form(case: Case) -> None:
    logs = distill_steps(case.log)
    assert [(d.job, d.step, d.command, d.exit_code) for d in logs] == case.steps
    for log, needle in zip(logs, case.needles, strict=False):
        assert needle in log.excerpt, log.excerpt
    for log in logs:
        assert "\x1b" not in log.excerpt
        assert "travis_" not in log.excerpt
        assert "section_" not in log.excerpt
        assert "[0K" not in log.excerpt
        assert "[31;1m" not in log.excerpt


@pytest.mark.parametrize(
    ("log", "form"),
    [
        (raw(*RUFF_STEP), "raw"),
        (gh_view("lint", "Ruff", RUFF_STEP), "gh-view"),
        (
            "Run pytest\n  pytest\n  shell: /usr/bin/bash -e {0}\nError: Process completed with exit code 1.",
            "web",
        ),
        ('$ make\ncc -c a.c\nThe command "make" exited with 2.', "plain"),
        ("", "plain"),
    ],
)
def test_the_form_is_recognised(log: str, form: str) -> None:
    assert [job.form for job in read_log(log)] == [form]


def test_gh_view_becomes_the_runner_form_per_job() -> None:
    text = gh_view("a", "Run x", ["##[group]Run x", "one"]) + "\n" + gh_view("b", "Run y", ["two"])
    assert read_log(text.encode("utf-8")) == [
        JobText("a", f"{STAMP}##[group]Run x\n{STAMP}one", "gh-view", "Run x"),
        JobText("b", f"{STAMP}two", "gh-view", "Run y"),
    ]


def test_web_copy_becomes_the_runner_form() -> None:
    [job] = read_log(
        "Run ./build.sh\n  ./build.sh --fast\n  shell: /usr/bin/bash -e {0}\nbuilding\n"
        "Error: Process completed with exit code 3."
    )
    assert job.text.split("\n") == [
        "##[group]Run ./build.sh",
        "./build.sh --fast",
        "shell: /usr/bin/bash -e {0}",
        "##[endgroup]",
        "building",
        "##[error]Process completed with exit code 3.",
    ]


def test_plain_lines_lose_terminal_control_and_ci_markers() -> None:
    [job] = read_log(
        f"travis_fold:start:x\r{ESC}[0Ktravis_time:start:1\r{ESC}[0K$ make\n"
        "[1m[31mError[0m: boom\nprogress 10%\rprogress 100%\n"
    )
    assert job.text.split("\n") == ["$ make", "Error: boom", "progress 100%", ""]


def test_a_passing_log_has_no_failed_step() -> None:
    log = raw(
        "##[group]Run pytest",
        "pytest",
        "shell: /usr/bin/bash -e {0}",
        "##[endgroup]",
        "3 passed in 0.10s",
        "Post job cleanup.",
    )
    [only] = distill_steps(log)
    assert (only.step, only.exit_code) == (None, None)
