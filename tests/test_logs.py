"""Tests for ``bot.diagnosis.logs.distill`` against the scenario logs, real public logs and synthetic logs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bot.diagnosis.logs import DistilledLog, clean_line, distill, distill_steps, is_error_line

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CASES = sorted(p for p in (SHARED / "scenarios" / "cases").iterdir() if p.is_dir())
REAL_LOGS = sorted((SHARED / "scenarios" / "real-logs").glob("*.log"))
STAMP = "2026-11-17T07:02:44.9032795Z "


def expectation(case: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((case / "expect.json").read_text(encoding="utf-8"))
    return data


def case_log(case: Path) -> DistilledLog:
    return distill((case / "job.log").read_bytes())


def job_log(*steps: tuple[str, list[str], list[str]], stamp: str = STAMP, bom: bool = True) -> str:
    """A raw job log: set-up lines, then ``(title, header lines, output lines)`` per step."""
    lines = [f"{stamp}Current runner version: '2.337.0'", f"{stamp}Complete job name: test"]
    for title, header, output in steps:
        lines.append(f"{stamp}##[group]Run {title}")
        lines += [f"{stamp}{h}" for h in header]
        lines.append(f"{stamp}##[endgroup]")
        lines += [f"{stamp}{o}" for o in output]
    lines += [f"{stamp}Post job cleanup.", f"{stamp}Cleaning up orphan processes"]
    return ("\ufeff" if bom else "") + "\n".join(lines) + "\n"


def run_header(*command: str) -> list[str]:
    return [f"\x1b[36;1m{c}\x1b[0m" for c in command] + ["shell: /usr/bin/bash -e {0}", "env:"]


def big_log(lines: int) -> str:
    """A job whose failing step prints ``lines`` lines of noise before the real error."""
    noise = []
    for i in range(lines):
        if i % 7 == 0:
            noise.append(f"E       AssertionError: flaky value {i % 13}")
        elif i % 5 == 0:
            noise.append("WARNING: DeprecationWarning: utcnow() is deprecated")
        else:
            noise.append(
                f"\x1b[32mDEBUG\x1b[0m processed batch {i} in {i % 97} ms " + "x" * (i % 50)
            )
    output = [
        *noise,
        "FAILED tests/test_final.py::test_real - ValueError: the real error at the end",
        "===== 1 failed, 9 passed in 3.00s =====",
        "##[error]Process completed with exit code 1.",
    ]
    return job_log(("pytest -ra", run_header("pytest -ra"), output))


# --- the scenario corpus ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_failing_step_and_command(case: Path) -> None:
    expect = expectation(case)
    log = case_log(case)
    if log.action is not None:
        # A ``uses:`` step has no shell command; the action name identifies it.
        assert log.command is None
        assert log.action in expect["failing_steps"]
        assert expect["failing_command"].startswith(log.action)
    else:
        assert log.command is not None
        assert log.command == expect["failing_command"]
        assert log.command in expect["failing_steps"]
        assert log.step == log.command.splitlines()[0]
    assert log.working_directory == expect.get("working_directory")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_excerpt_is_clean_small_and_ends_with_the_error(case: Path) -> None:
    log = case_log(case)
    assert log.distilled_bytes == len(log.excerpt.encode("utf-8")) <= 4096
    assert log.distilled_bytes < log.raw_bytes / 3
    assert log.est_tokens == (log.distilled_bytes + 3) // 4
    assert "\x1b" not in log.excerpt
    assert "2026-11-17T" not in log.excerpt.split("\n")[0]
    assert not any(line.startswith("##[") for line in log.excerpt.split("\n"))
    assert log.error_lines, "every scenario has at least one error line"
    last = log.excerpt.rstrip().split("\n")[-1]
    if log.exit_code is not None:
        assert last == f"Error: Process completed with exit code {log.exit_code}."


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("af-black", "Oh no!"),
        ("af-black", "2 files would be reformatted, 2 files would be left unchanged."),
        ("af-isort", "Imports are incorrectly sorted and/or formatted."),
        ("af-lockfile-uv", "The lockfile at `uv.lock` needs to be updated"),
        (
            "af-prettier",
            "[warn] Code style issues found in 3 files. Run Prettier with --write to fix.",
        ),
        ("af-prettier", "> prettier --check ."),
        ("af-ruff-check-unused-imports", "[*] 5 fixable with `--fix`."),
        ("af-ruff-check-unused-imports", "Found 7 errors."),
        (
            "af-whitespace-precommit",
            "trim trailing whitespace.................................................Failed",
        ),
        ("ag-import-error-rename", "E   ImportError: cannot import name 'parse_date'"),
        ("ag-mypy-optional", 'src/userdir/service.py:17: error: Item "None" of "User | None"'),
        ("ag-pytest-off-by-one", "FAILED tests/test_pagination.py::test_last_page_is_partial"),
        ("ag-pytest-off-by-one", "tests/test_pagination.py:10: AssertionError"),
        ("ag-zero-division-empty-window", "E   ZeroDivisionError: division by zero"),
        ("hu-dependency-conflict-pinned", "ERROR: ResolutionImpossible"),
        ("hu-public-api-contract", "v1 public API broken"),
        ("hu-secret-detected", "Potential secrets about to be committed"),
        ("in-flaky-service-race", "3 failed, 2 passed in 2.23s"),
        ("in-flaky-service-race", "FAILED tests/integration/test_rates.py::test_rate_fr"),
        ("in-github-api-rate-limit", "API rate limit exceeded for installation"),
        ("in-github-api-rate-limit", "'x-ratelimit-remaining': '0'"),
        ("in-no-space-left", "[Errno 28] No space left on device"),
        ("in-pip-index-timeout", "ReadTimeoutError"),
        ("in-pip-index-timeout", "No matching distribution found for jinja2==3.1.6"),
    ],
)
def test_case_excerpt_keeps_the_decisive_lines(case: str, needle: str) -> None:
    log = case_log(SHARED / "scenarios" / "cases" / case)
    assert needle in log.excerpt


def test_pytest_ansi_output_is_stripped_but_kept() -> None:
    log = case_log(SHARED / "scenarios" / "cases" / "ag-pytest-off-by-one")
    assert "FORCE_COLOR" not in log.excerpt
    assert "E       assert [] == [41, 42, 43, 44, 45]" in log.excerpt
    assert "\x1b" not in "".join(log.error_lines)


def test_long_step_keeps_head_tail_and_marks_omissions() -> None:
    log = case_log(SHARED / "scenarios" / "cases" / "in-flaky-service-race")
    assert log.omitted_lines > 0
    assert "lines omitted] …" in log.excerpt
    assert log.excerpt.startswith("FFF..")
    # The repeated traceback appears once, counted, not three times.
    assert (
        log.excerpt.count("E               ConnectionRefusedError: [Errno 111] Connection refused")
        == 1
    )
    assert "Connection refused (×3)" in log.excerpt


# --- real public logs ------------------------------------------------------------------------


@pytest.mark.parametrize("path", REAL_LOGS, ids=[p.name for p in REAL_LOGS])
def test_real_logs_distil_bounded(path: Path) -> None:
    log = distill(path.read_bytes(), max_excerpt_bytes=2048)
    assert log.distilled_bytes <= 2048
    assert log.raw_bytes == path.stat().st_size
    assert "\x1b" not in log.excerpt


def test_real_log_exit5_step_and_multiline_command() -> None:
    log = distill(
        (SHARED / "scenarios" / "real-logs" / "ibkr-quality-checks-exit5.log").read_bytes()
    )
    assert log.step == "poetry run pytest tests/ --verbose"
    assert log.exit_code == 5
    assert log.command is not None
    assert log.command.splitlines() == [
        "poetry run pytest tests/ --verbose",
        "exit_code=$?",
        "if [ $exit_code -eq 5 ]; then",
        '  echo "No tests collected."',
        "  exit 0",
        "fi",
        "exit $exit_code",
    ]
    assert "no tests ran in 0.01s" in log.excerpt
    # Post steps after the failure are not part of the failing step.
    assert "git version" not in log.excerpt


def test_real_log_without_ansi_in_header() -> None:
    path = SHARED / "scenarios" / "real-logs" / "isobar-cli-run-tests-failure.excerpt.log"
    log = distill(path.read_bytes())
    assert (log.step, log.command, log.exit_code) == ("pytest", "pytest", 1)
    assert "tests/test_main.py:15: AssertionError" in log.excerpt
    assert "Cleaning up orphan processes" not in log.excerpt


def test_real_log_that_passed_has_no_failing_step() -> None:
    log = distill(
        (SHARED / "scenarios" / "real-logs" / "ibkr-quality-checks-success.log").read_bytes()
    )
    assert (log.step, log.command, log.exit_code) == (None, None, None)
    assert log.distilled_bytes <= 4096


# --- size and formats ------------------------------------------------------------------------


def test_big_log_is_bounded_and_keeps_the_real_error() -> None:
    raw = big_log(200_000)
    assert raw.count("\n") > 200_000
    log = distill(raw)
    assert log.raw_bytes > 10_000_000
    assert log.distilled_bytes <= 4096
    assert (
        "FAILED tests/test_final.py::test_real - ValueError: the real error at the end"
        in log.excerpt
    )
    assert log.excerpt.endswith("Error: Process completed with exit code 1.")
    assert log.excerpt.startswith("E       AssertionError: flaky value 0")
    assert log.omitted_lines > 190_000
    assert log.command == "pytest -ra"


@pytest.mark.parametrize("budget", [256, 1000, 4096, 20_000])
def test_excerpt_respects_any_budget(budget: int) -> None:
    log = distill(big_log(5_000), max_excerpt_bytes=budget)
    assert log.distilled_bytes <= budget
    assert "exit code 1." in log.excerpt


def test_multibyte_output_is_bounded_in_bytes() -> None:
    output = ["ünïcødé ✗ 失败 " * 30 for _ in range(400)] + [
        "##[error]Process completed with exit code 1."
    ]
    log = distill(job_log(("make", run_header("make"), output)), max_excerpt_bytes=1000)
    assert len(log.excerpt.encode("utf-8")) == log.distilled_bytes <= 1000


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-17T07:02:44.9032795Z ",
        "2026-11-17T07:02:44Z ",
        "2026-11-17T07:02:44.903Z ",
        "2026-11-17T07:02:44.903279512Z ",
        "2026-11-17T07:02:44.9032795+00:00 ",
        "",
    ],
)
def test_timestamps_of_any_precision_are_dropped(stamp: str) -> None:
    raw = job_log(
        (
            "ruff check .",
            run_header("ruff check ."),
            ["Found 1 error.", "##[error]Process completed with exit code 1."],
        ),
        stamp=stamp,
    )
    log = distill(raw)
    assert log.command == "ruff check ."
    assert log.excerpt == "Found 1 error.\nError: Process completed with exit code 1."


def test_crlf_bom_and_bytes() -> None:
    raw = job_log(
        (
            "mypy",
            run_header("mypy"),
            ["src/a.py:3: error: bad", "##[error]Process completed with exit code 1."],
        )
    ).replace("\n", "\r\n")
    for given in (raw, raw.encode("utf-8")):
        log = distill(given)
        assert log.command == "mypy"
        assert log.exit_code == 1
        assert "\r" not in log.excerpt
        assert log.excerpt.startswith("src/a.py:3: error: bad")
    assert distill(raw.encode("utf-8")).raw_bytes == len(raw.encode("utf-8"))


def test_masked_secrets_stay_masked_and_mangled_markers_still_parse() -> None:
    raw = job_log(
        (
            "./deploy.sh",
            run_header("./deploy.sh"),
            [
                "Authenticating with token ***",
                # Secret masking can swallow the marker's ``]`` (actions/runner#2468).
                "##[error***The runner has received a shutdown signal.",
                "##[error]The operation was canceled.",
            ],
        )
    )
    log = distill(raw)
    assert log.step == "./deploy.sh"
    assert log.exit_code is None
    assert "Authenticating with token ***" in log.excerpt
    assert "Error: The runner has received a shutdown signal." in log.error_lines
    assert "Error: The operation was canceled." in log.error_lines


def test_working_directory_from_the_group() -> None:
    header = [
        *run_header("npm ci", "npm test")[:-2],
        "shell: /usr/bin/bash -e {0}",
        "working-directory: web/app",
    ]
    raw = job_log(
        (
            "npm ci",
            header,
            ["npm ERR! Test failed.", "##[error]Process completed with exit code 1."],
        )
    )
    log = distill(raw)
    assert log.command == "npm ci\nnpm test"
    assert log.working_directory == "web/app"


def test_uses_step_reports_the_action() -> None:
    raw = job_log(
        (
            "actions/setup-node@v4",
            ["with:", "  node-version: 20", "env:", "  CI: true"],
            ["##[error]Unable to download node 20: ECONNRESET"],
        )
    )
    log = distill(raw)
    assert (log.step, log.action, log.command, log.exit_code) == (
        "actions/setup-node@v4",
        "actions/setup-node@v4",
        None,
        None,
    )
    assert log.error_lines == ("Error: Unable to download node 20: ECONNRESET",)


def test_every_failed_step_is_distilled_and_distill_keeps_the_last() -> None:
    raw = job_log(
        (
            "./lint.sh",
            run_header("./lint.sh"),
            ["##[warning]deprecated option", "##[error]Process completed with exit code 3."],
        ),
        (
            "./test.sh",
            run_header("./test.sh"),
            ["boom", "##[error]Process completed with exit code 4."],
        ),
        ("./never.sh", run_header("./never.sh"), ["##[warning]only a warning here"]),
    )
    steps = distill_steps(raw)
    assert [(s.step, s.exit_code, s.job) for s in steps] == [
        ("./lint.sh", 3, "test"),
        ("./test.sh", 4, "test"),
    ]
    assert steps[0].excerpt == (
        "Warning: deprecated option\nError: Process completed with exit code 3."
    )
    assert steps[1].excerpt == "boom\nError: Process completed with exit code 4."
    log = distill(raw)
    assert (log.step, log.exit_code) == ("./test.sh", 4)
    assert "deprecated option" not in log.excerpt


def test_errors_outside_the_failed_steps_are_reported_with_each() -> None:
    raw = job_log(
        (
            "./test.sh",
            run_header("./test.sh"),
            ["boom", "##[error]Process completed with exit code 4."],
        ),
    ).replace("Post job cleanup.", "Post job cleanup.\n##[error]cache upload failed: 503")
    [log] = distill_steps(raw)
    assert "Error: cache upload failed: 503" in log.error_lines
    assert "cache upload" not in log.excerpt


def test_script_line_that_looks_like_shell_is_part_of_the_command() -> None:
    header = [
        "\x1b[36;1mecho 'shell: not really'\x1b[0m",
        "\x1b[36;1mmake\x1b[0m",
        "shell: /usr/bin/bash -e {0}",
    ]
    log = distill(
        job_log(
            ("echo 'shell: not really'", header, ["##[error]Process completed with exit code 2."])
        )
    )
    assert log.command == "echo 'shell: not really'\nmake"


def test_consecutive_duplicates_are_collapsed_with_a_count() -> None:
    output = ["retrying…"] * 12 + ["done", "##[error]Process completed with exit code 1."]
    log = distill(job_log(("./x", run_header("./x"), output)))
    assert log.excerpt.split("\n")[0] == "retrying… (×12)"


def test_no_steps_at_all_is_tolerated() -> None:
    log = distill("just some text\nerror: something broke\n")
    assert log.step is None
    assert "error: something broke" in log.error_lines
    assert distill("").excerpt == ""
    assert distill(b"\xff\xfe\x00garbage").distilled_bytes >= 0


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[1m\x1b[31mFAILED\x1b[0m x", "FAILED x"),
        ("\x1b]0;title\x07visible", "visible"),
        ("\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("progress 10%\rprogress 100%", "progress 100%"),
        ("bell\x07 and null\x00", "bell and null"),
        ("x" * 10_000, "x" * 240 + "…[+9760 chars]"),
    ],
)
def test_clean_line_removes_terminal_control(raw: str, shown: str) -> None:
    assert clean_line(raw) == shown


def test_hostile_content_is_only_data() -> None:
    output = [
        "__import__('os').system('touch /tmp/pwned')",
        "{{ github.token }} ${{ secrets.X }} $(rm -rf /)",
        "##[group]nested group title",
        "##[endgroup]",
        "##[debug]debug noise",
        "a" * 200_000,
        "##[error]Process completed with exit code 1.",
    ]
    log = distill(job_log(("./x", run_header("./x"), output)), max_excerpt_bytes=2048)
    assert log.distilled_bytes <= 2048
    assert "__import__('os').system('touch /tmp/pwned')" in log.excerpt
    assert "nested group title" in log.excerpt
    assert "debug noise" not in log.excerpt
    assert not Path("/tmp/pwned").exists()


def test_a_giant_single_line_is_bounded() -> None:
    output = ["\x1b[31merror\x1b[0m " * 500_000, "##[error]Process completed with exit code 1."]
    log = distill(job_log(("./x", run_header("./x"), output)))
    assert log.distilled_bytes <= 4096
    first = log.excerpt.split("\n")[0]
    assert first.startswith("error error")
    assert first.endswith(" chars]")
    assert log.excerpt.endswith("Error: Process completed with exit code 1.")


# --- excerpts: what is kept first, and how it is rendered -----------------------------------

MARKER = re.compile(r"^… \[(\d+) lines omitted\] …$")


def noisy_step(output: list[str]) -> str:
    return job_log(("./ci.sh", run_header("./ci.sh"), output))


def rendered_lines(log: DistilledLog) -> list[str]:
    return log.excerpt.split("\n")


def test_failure_lines_come_before_help_passing_tests_and_licence_text() -> None:
    """Pattern: a build that prints a licence banner, passing tests and advice around one failure."""
    output = [
        "gcc (Ubuntu 9.4.0) 9.4.0",
        "This is free software; see the source for copying conditions.  There is NO",
        "warranty; not even for MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.",
        *[f"CalcTest > adds{i}() PASSED" for i in range(40)],
        "CalcTest > divides() FAILED",
        "    java.lang.ArithmeticException at CalcTest.java:61",
        *[f"CalcTest > subtracts{i}() PASSED" for i in range(40)],
        "* What went wrong:",
        "Execution failed for task ':test'.",
        "* Try:",
        "> Run with --stacktrace option to get the stack trace.",
        "> Run with --info or --debug option to get more log output.",
        "* Get more help at https://help.gradle.org",
        "BUILD FAILED in 14s",
        "##[error]Process completed with exit code 1.",
    ]
    log = distill(noisy_step(output), max_excerpt_bytes=420)
    for needed in (
        "CalcTest > divides() FAILED",
        "java.lang.ArithmeticException at CalcTest.java:61",
        "Execution failed for task ':test'.",
        "BUILD FAILED in 14s",
    ):
        assert needed in log.excerpt, log.excerpt
    for dropped in ("PASSED", "free software", "Run with --stacktrace", "help.gradle.org"):
        assert dropped not in log.excerpt, log.excerpt


def test_maven_help_gives_way_to_the_compiler_message() -> None:
    """Pattern: Maven repeats ``[ERROR]`` on its advice lines; the cause must win the budget."""
    output = [
        *[f"[INFO] Compiling module {i}" for i in range(30)],
        "[ERROR] COMPILATION ERROR :",
        "[ERROR] /w/src/A.java:[42,46] cannot access org.x.Compiler",
        "  bad class file: /m2/ecj.jar(org/x/Compiler.class)",
        "    class file has wrong version 55.0, should be 52.0",
        *[f"[INFO] Building module {i}" for i in range(30)],
        "[INFO] BUILD FAILURE",
        "[ERROR] -> [Help 1]",
        "[ERROR] To see the full stack trace of the errors, re-run Maven with the -e switch.",
        "[ERROR] Re-run Maven using the -X switch to enable full debug logging.",
        "[ERROR] [Help 1] http://cwiki.apache.org/confluence/display/MAVEN/MojoFailureException",
        "##[error]Process completed with exit code 1.",
    ]
    log = distill(noisy_step(output), max_excerpt_bytes=700)
    assert "class file has wrong version 55.0, should be 52.0" in log.excerpt
    assert "COMPILATION ERROR" in log.excerpt
    assert "Re-run Maven" not in log.excerpt


def test_repeated_traces_collapse_and_leave_room_for_the_message_and_summary() -> None:
    """Pattern: vitest prints the same stack for every failing test, then its summary."""
    trace = [
        "ReferenceError: document is not defined",
        " ❯ render node_modules/@testing-library/react/dist/pure.js:257:5",
        " ❯ src/Form.test.tsx:67:5",
    ]
    output = [f" FAIL  src/Form.test.tsx > Form > case {i}\n" + "\n".join(trace) for i in range(30)]
    output = [
        *"\n".join(output).split("\n"),
        "      Tests  30 failed | 12 passed (42)",
        "##[error]Process completed with exit code 1.",
    ]
    log = distill(noisy_step(output), max_excerpt_bytes=900)
    assert "ReferenceError: document is not defined (×30)" in log.excerpt
    assert log.excerpt.count("ReferenceError: document is not defined") == 1
    assert "Tests  30 failed | 12 passed (42)" in log.excerpt


def test_counts_sit_on_their_line_and_blank_runs_are_not_counted() -> None:
    output = [
        "retrying",
        "retrying",
        "",
        "",
        "",
        "done",
        "",
        "",
        "##[error]Process completed with exit code 1.",
    ]
    log = distill(noisy_step(output))
    assert log.excerpt == "retrying (×2)\n\ndone\n\nError: Process completed with exit code 1."
    assert not any(line.strip().startswith("(×") for line in rendered_lines(log))


@pytest.mark.parametrize("budget", [256, 300, 400, 555, 700, 1000, 1500, 2222, 3072])
def test_the_budget_never_cuts_a_marker_a_line_or_omits_a_single_line(budget: int) -> None:
    output = []
    for i in range(300):
        if i % 17 == 0:
            output.append(f"E       AssertionError: case {i} expected {i} got {i + 1}")
        elif i % 29 == 0:
            output.append(f"FAILED tests/test_m.py::test_{i} - ValueError: bad value {i}")
        else:
            output.append(f"tests/test_m.py::test_{i} PASSED " + "x" * (i % 40))
    output += [
        "===== 28 failed, 272 passed in 3.00s =====",
        "##[error]Process completed with exit code 1.",
    ]
    raw_lines = {clean_line(line) for line in output} | {
        "Error: Process completed with exit code 1."
    }
    log = distill(noisy_step(output), max_excerpt_bytes=budget)
    assert len(log.excerpt.encode("utf-8")) == log.distilled_bytes <= budget
    omitted = 0
    for line in rendered_lines(log):
        m = MARKER.match(line)
        if m is not None:
            assert int(m.group(1)) >= 2, "a single omitted line is shown, not marked"
            omitted += int(m.group(1))
            continue
        assert "lines omitted" not in line, f"a cut marker: {line!r}"
        base = re.sub(r" \(×\d+\)$", "", line)
        assert base in raw_lines, f"a line that is not one of the log's: {line!r}"
    assert omitted == log.omitted_lines
    assert log.excerpt.endswith("Error: Process completed with exit code 1.")


def test_long_lines_are_cut_between_words() -> None:
    line = "error: " + " ".join(f"word{i}" for i in range(100))
    shown = clean_line(line)
    head, _, tail = shown.partition("…[+")
    assert line.startswith(head)
    assert line[len(head)] == " ", "cut at a space, not inside a word"
    assert tail.endswith(" chars]")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("fatal: unsafe repository ('/github/workspace' is owned by someone else)", True),
        ("fatal: not a git repository (or any of the parent directories): .git", True),
        ("  args: -file-line-error -interaction=nonstopmode -Werror", False),
        ("(5/7) Installing perl-error (0.17029-r1)", False),
        ("This program is distributed under the GNU General Public License", False),
        ("License: MIT", False),
        ("Tests run: 6, Failures: 0, Errors: 0, Skipped: 0", False),
        ("[WARNING] /w/src/A.java:[86,32] deprecated API", False),
        ("src/a.c:3:1: warning: unused variable 'x'", False),
        ("src/a.c:3:1: error: expected ';'", True),
        ("tests/test_a.py::test_x PASSED", False),
    ],
)
def test_what_counts_as_an_error_line(line: str, error: bool) -> None:
    assert is_error_line(line) is error


def test_the_job_name_comes_from_the_log_not_the_command() -> None:
    raw = job_log(
        ("npm test", run_header("npm test"), ["##[error]Process completed with exit code 1."])
    )
    raw = raw.replace("Complete job name: test", "Complete job name: quality-gates")
    [log] = distill_steps(raw)
    assert (log.job, log.step) == ("quality-gates", "npm test")


def test_package_scripts_are_read_from_the_output() -> None:
    output = [
        "> app@1.0.0 lint /home/runner/work/app/app",
        "> prettier --check .",
        "[warn] src/a.js",
        "npm ERR! app@1.0.0 format: `pnpm exec biome check`",
        "$ eslint src",
        "##[error]Process completed with exit code 1.",
    ]
    log = distill(job_log(("npm run lint", run_header("npm run lint"), output)))
    assert log.scripts == ("prettier --check .", "pnpm exec biome check", "eslint src")
    assert log.commands == "npm run lint\nprettier --check .\npnpm exec biome check\neslint src"
