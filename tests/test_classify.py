"""Tests for ``bot.diagnosis.classify``: the scenario corpus, each rule, the rules' precedence, locations."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.diagnosis.classify import Classification, Location, classify, file_locations
from bot.diagnosis.logs import SET_UP_JOB, DistilledLog, distill
from bot.kernel.problems import Category, Confidence
from fixers.base import FixContext, Fixer, FixResult, NoFiles, WorktreeFiles

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CASES = sorted(p for p in (SHARED / "scenarios" / "cases").iterdir() if p.is_dir())
STAMP = "2026-11-17T07:02:44.9032795Z "


@dataclass
class StubFixer:
    """Matches when the step's command matches ``command`` or the excerpt matches ``output``."""

    name: str
    command: str | None
    output: str

    def matches(self, log: DistilledLog, repo: object) -> bool:
        if self.command is not None and re.search(self.command, log.command or ""):
            return True
        return re.search(self.output, log.excerpt, re.MULTILINE) is not None

    async def apply(self, ctx: FixContext) -> FixResult:
        raise NotImplementedError


# Equivalent to the real fixers' match rules (fixers/), in registry order.
STUBS: tuple[Fixer, ...] = (
    StubFixer("ruff-check", None, r"^Found \d+ errors?\.(?s:.*)\[\*\] [1-9]\d* fixable"),
    StubFixer("ruff-format", r"ruff format --check", r"^Would reformat"),
    StubFixer("black", r"\bblack\b.*--check", r"^would reformat|^Oh no!"),
    StubFixer("isort", r"\bisort\b.*--check", r"Imports are incorrectly sorted"),
    StubFixer("whitespace", None, r"^(?:trim trailing whitespace|fix end of files)\.+Failed"),
    StubFixer("prettier", r"prettier --check", r"\[warn\] Code style issues"),
    StubFixer(
        "lockfile",
        r"uv lock --locked",
        r"lockfile needs to be updated|The lockfile at `uv.lock` needs to be updated",
    ),
)


def expectation(case: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((case / "expect.json").read_text(encoding="utf-8"))
    return data


def expected_fixers(expect: dict[str, Any]) -> list[str]:
    if expect["category"] != "autofix":
        return []
    fixers: list[str] = expect.get("fixers") or [expect["fixer"]]
    return fixers


def step_log(command: str, output: list[str], *, exit_code: int | None = 1) -> DistilledLog:
    """Distil a one-step job log whose ``run:`` step printed ``output``."""
    lines = [f"{STAMP}##[group]Run {command.splitlines()[0]}"]
    lines += [f"{STAMP}\x1b[36;1m{c}\x1b[0m" for c in command.splitlines()]
    lines += [f"{STAMP}shell: /usr/bin/bash -e {{0}}", f"{STAMP}##[endgroup]"]
    lines += [f"{STAMP}{o}" for o in output]
    if exit_code is not None:
        lines.append(f"{STAMP}##[error]Process completed with exit code {exit_code}.")
    return distill("\n".join(lines))


# --- the scenario corpus ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cases_with_stub_fixers(case: Path) -> None:
    expect = expectation(case)
    result = classify(distill((case / "job.log").read_bytes()), fixers=STUBS)
    assert result.category == Category(expect["category"])
    assert list(result.fixers) == expected_fixers(expect)
    assert result.evidence
    assert all(line and len(line) <= 300 for line in result.evidence)
    assert result.reason.endswith(".")
    assert result.retryable == (result.category is Category.INFRA)
    assert result.owner_action_required == (result.category is Category.HUMAN)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cases_with_the_real_registry_and_repo(case: Path) -> None:
    from fixers import FIXERS

    expect = expectation(case)
    log = distill((case / "job.log").read_bytes())
    result = classify(log, fixers=FIXERS, repo=WorktreeFiles(case / "repo"))
    assert result.category == Category(expect["category"])
    assert list(result.fixers) == expected_fixers(expect)


def test_human_and_infra_cases_never_reach_the_fixers() -> None:
    asked: list[str] = []

    @dataclass
    class Greedy:
        name: str = "greedy"

        def matches(self, log: DistilledLog, repo: object) -> bool:
            asked.append(log.step or "")
            return True

        async def apply(self, ctx: FixContext) -> FixResult:
            raise NotImplementedError

    for case in CASES:
        if case.name.startswith(("hu-", "in-")):
            result = classify(distill((case / "job.log").read_bytes()), fixers=[Greedy()])
            assert result.category is not Category.AUTOFIX
            assert result.fixers == ()
    assert asked == []


# --- one table row per rule ------------------------------------------------------------------

RULES: list[tuple[str, str, list[str], Category]] = [
    # human: must never be patched
    (
        "gitleaks",
        "gitleaks detect --source .",
        ["Finding: aws_secret_access_key = ***", "WRN leaks found: 1"],
        Category.HUMAN,
    ),
    ("trufflehog", "trufflehog git file://.", ["Found verified result 🐷🔑"], Category.HUMAN),
    (
        "licence",
        "./check.sh",
        ["ERROR: license check failed: GPL-3.0 is not allowed"],
        Category.HUMAN,
    ),
    (
        "CLA",
        "./cla.sh",
        ["Contributor License Agreement: @someone has not signed the CLA"],
        Category.HUMAN,
    ),
    (
        "approval",
        "./gate.sh",
        ["Error: this deployment requires approval from a maintainer"],
        Category.HUMAN,
    ),
    (
        "uv resolver",
        "uv sync",
        ["  × No solution found when resolving dependencies:", "  ╰─▶ Because a==1 depends on b<2"],
        Category.HUMAN,
    ),
    (
        "npm resolver",
        "npm ci",
        ["npm ERR! code ERESOLVE", "npm ERR! ERESOLVE unable to resolve dependency tree"],
        Category.HUMAN,
    ),
    (
        "api snapshot",
        "pytest -q",
        [
            "FAILED tests/test_api_contract.py::test_surface - AssertionError: API contract broken",
            "1 failed, 3 passed in 0.10s",
        ],
        Category.HUMAN,
    ),
    # infra: re-run, never patch
    (
        "runner lost",
        "pytest",
        [
            "##[error]The runner has received a shutdown signal.",
            "##[error]The operation was canceled.",
        ],
        Category.INFRA,
    ),
    (
        "dns",
        "curl -fsSL https://example.com/x.sh",
        ["curl: (6) Could not resolve host: example.com"],
        Category.INFRA,
    ),
    (
        "npm reset",
        "npm ci",
        ["npm ERR! code ECONNRESET", "npm ERR! network aborted"],
        Category.INFRA,
    ),
    (
        "registry 503",
        "pip install -r requirements.txt",
        ["ERROR: HTTP error 503 while getting https://files.pythonhosted.org/x.whl"],
        Category.INFRA,
    ),
    (
        "secondary rate limit",
        "gh pr view 1",
        ["HTTP 403: You have exceeded a secondary rate limit."],
        Category.INFRA,
    ),
    (
        "docker pull limit",
        "docker pull node:20",
        ["toomanyrequests: You have reached your pull rate limit."],
        Category.INFRA,
    ),
    (
        "enospc",
        "npm ci",
        ["npm ERR! code ENOSPC", "npm ERR! nospc ENOSPC: no space left on device, write"],
        Category.INFRA,
    ),
    # autofix
    (
        "ruff format",
        "ruff format --check .",
        ["Would reformat: src/a.py", "1 file would be reformatted"],
        Category.AUTOFIX,
    ),
    # agent: a code, type or test failure
    (
        "pyright",
        "pyright",
        ['/home/runner/work/r/r/src/a.py:3:5 - error: "x" is not defined', "1 error"],
        Category.AGENT,
    ),
    (
        "tsc",
        "npx tsc --noEmit",
        ["src/app.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'."],
        Category.AGENT,
    ),
    (
        "rustc",
        "cargo build",
        ["error[E0308]: mismatched types", " --> src/main.rs:4:18"],
        Category.AGENT,
    ),
    (
        "unfixable lint",
        "flake8 src",
        ["src/a.py:10:80: E501 line too long (120 > 79 characters)"],
        Category.AGENT,
    ),
    (
        "own module import",
        "python -m acme.cli",
        [
            "Traceback (most recent call last):",
            '  File "/home/runner/work/acme/acme/src/acme/cli.py", line 3, in <module>',
            "ModuleNotFoundError: No module named 'acme.helpers'",
        ],
        Category.AGENT,
    ),
    # nothing confident: a person looks
    ("pytest exit 5", "pytest", ["collected 0 items", "no tests ran in 0.01s"], Category.HUMAN),
    ("opaque failure", "./build.sh", ["something went sideways"], Category.HUMAN),
]


@pytest.mark.parametrize(
    ("command", "output", "category"),
    [(c, o, cat) for _, c, o, cat in RULES],
    ids=[name for name, *_ in RULES],
)
def test_rules(command: str, output: list[str], category: Category) -> None:
    exit_code = 5 if "no tests ran" in "".join(output) else 1
    result = classify(step_log(command, output, exit_code=exit_code), fixers=STUBS)
    assert result.category is category, result
    assert result.evidence
    if category is Category.AUTOFIX:
        assert result.fixers == ("ruff-format",)
    else:
        assert result.fixers == ()


def test_uses_step_with_runner_error_and_no_exit_code() -> None:
    log = distill(
        f"{STAMP}##[group]Run actions/setup-python@v5\n{STAMP}with:\n{STAMP}##[endgroup]\n"
        f"{STAMP}##[error]Failed to download: read ETIMEDOUT\n"
    )
    result = classify(log, fixers=STUBS)
    assert log.action == "actions/setup-python@v5"
    assert result.category is Category.INFRA
    assert result.retryable
    assert not result.owner_action_required


@pytest.mark.parametrize("conclusion", ["cancelled", "timed_out", "startup_failure"])
def test_job_conclusion_marks_infra(conclusion: str) -> None:
    log = step_log("pytest", ["tests/test_a.py ....", "FAILED tests/test_a.py::test_x"])
    result = classify(log, fixers=STUBS, job_conclusion=conclusion)
    assert result.category is Category.INFRA
    assert f"job conclusion: {conclusion}" in result.evidence
    assert classify(log, fixers=STUBS, job_conclusion="failure").category is Category.AGENT


# --- precedence ------------------------------------------------------------------------------


def test_secret_beats_autofix_in_the_same_pre_commit_run() -> None:
    log = step_log(
        "pre-commit run --all-files",
        [
            "trim trailing whitespace.................................................Failed",
            "- hook id: trailing-whitespace",
            "Detect secrets...........................................................Failed",
            "- hook id: detect-secrets",
            "ERROR: Potential secrets about to be committed to git repo!",
            "Secret Type: Secret Keyword",
            "Location:    config/settings.py:4",
        ],
    )
    assert STUBS[4].matches(log, NoFiles())
    result = classify(log, fixers=STUBS)
    assert result.category is Category.HUMAN
    assert result.fixers == ()
    assert result.owner_action_required
    assert any("Potential secrets" in e for e in result.evidence)


def test_timeouts_beat_no_matching_distribution() -> None:
    retry = (
        "WARNING: Retrying (Retry(total={n}, connect=None, read=None, redirect=None, status=None)) "
        "after connection broken by 'ReadTimeoutError(\"HTTPSConnectionPool(host='pypi.org', "
        "port=443): Read timed out. (read timeout=15.0)\")': /simple/requests/"
    )
    tail = [
        "ERROR: Could not find a version that satisfies the requirement requests==2.99 (from versions: none)",
        "ERROR: No matching distribution found for requests==2.99",
    ]
    with_timeouts = step_log(
        "pip install -r requirements.txt", [retry.format(n=n) for n in (2, 1, 0)] + tail
    )
    assert classify(with_timeouts, fixers=STUBS).category is Category.INFRA
    # Without the timeouts the same lines are a real (if unclear) requirements problem.
    without = classify(step_log("pip install -r requirements.txt", tail), fixers=STUBS)
    assert without.category is Category.HUMAN
    assert not without.retryable


def test_resolver_conflict_beats_network_noise() -> None:
    log = step_log(
        "pip install -r requirements.txt",
        [
            "WARNING: Retrying after connection broken by 'ReadTimeoutError(...)': /simple/flask/",
            "ERROR: Cannot install flask==3.1.3 and werkzeug==2.3.8 because these package versions "
            "have conflicting dependencies.",
            "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/",
        ],
    )
    assert classify(log, fixers=STUBS).category is Category.HUMAN


def test_infra_beats_autofix_and_agent() -> None:
    log = step_log(
        "ruff check . && pytest",
        [
            "Found 2 errors.",
            "[*] 2 fixable with `--fix`.",
            "OSError: [Errno 28] No space left on device",
        ],
    )
    assert STUBS[0].matches(log, NoFiles())
    result = classify(log, fixers=STUBS)
    assert result.category is Category.INFRA
    assert result.fixers == ()


def test_autofix_lists_every_matching_fixer_in_registry_order() -> None:
    log = step_log(
        "black --check . && isort --check-only .",
        [
            "would reformat /home/runner/work/r/r/src/a.py",
            "Oh no! 💥 💔 💥",
            "ERROR: /home/runner/work/r/r/src/a.py Imports are incorrectly sorted and/or formatted.",
        ],
    )
    assert classify(log, fixers=STUBS).fixers == ("black", "isort")
    assert classify(log, fixers=tuple(reversed(STUBS))).fixers == ("isort", "black")


def test_autofix_beats_agent_and_an_empty_registry_falls_to_agent() -> None:
    log = step_log(
        "ruff check .",
        [
            "src/a.py:1:8: F401 [*] `os` imported but unused",
            "Found 1 error.",
            "[*] 1 fixable with `--fix`.",
        ],
    )
    assert classify(log, fixers=STUBS).category is Category.AUTOFIX
    result = classify(log, fixers=())
    assert result.category is Category.AGENT
    assert result.fixers == ()


def test_pytest_failure_only_with_a_test_exit_code() -> None:
    output = ["FAILED tests/test_a.py::test_x - assert 1 == 2", "1 failed in 0.01s"]
    assert (
        classify(step_log("pytest", output, exit_code=1), fixers=STUBS).category is Category.AGENT
    )
    assert (
        classify(step_log("pytest", output, exit_code=2), fixers=STUBS).category is Category.AGENT
    )
    # 137: the runner killed the process (out of memory); an LLM edit would not help.
    assert (
        classify(step_log("pytest", output, exit_code=137), fixers=STUBS).category is Category.HUMAN
    )


def test_connection_refused_without_race_signature_is_a_code_failure() -> None:
    # Refused against a remote host, nothing passed, no service started by the step: not a race.
    log = step_log(
        "pytest",
        [
            "E   ConnectionRefusedError: [Errno 111] Connection refused",
            "FAILED tests/test_client.py::test_fetch - ConnectionRefusedError: [Errno 111] Connection refused",
            "1 failed in 0.20s",
        ],
    )
    assert classify(log, fixers=STUBS).category is Category.AGENT


def test_readiness_race_needs_every_failure_to_be_refused() -> None:
    output = [
        "E   ConnectionRefusedError: [Errno 111] Connection refused",
        "address = ('127.0.0.1', 8080)",
        "FAILED tests/integration/test_a.py::test_one - ConnectionRefusedError: [Errno 111] Connection refused",
        "FAILED tests/integration/test_a.py::test_two - assert 3 == 4",
        "2 failed, 5 passed in 1.50s",
    ]
    command = "python stub.py &\npytest tests/integration"
    assert classify(step_log(command, output), fixers=STUBS).category is Category.AGENT
    race = classify(step_log(command, [o for o in output if "test_two" not in o]), fixers=STUBS)
    assert race.category is Category.INFRA
    assert race.retryable


def test_import_error_of_a_third_party_module_outside_tests_is_not_agent() -> None:
    log = step_log(
        "python scripts/release.py",
        ["ModuleNotFoundError: No module named 'requests'"],
    )
    assert classify(log, fixers=STUBS).category is Category.HUMAN


def test_import_error_of_a_module_the_repo_has(tmp_path: Path) -> None:
    (tmp_path / "src" / "acme").mkdir(parents=True)
    log = step_log(
        "python -c 'import acme.cli'", ["ModuleNotFoundError: No module named 'acme.cli'"]
    )
    assert classify(log, fixers=STUBS).category is Category.HUMAN
    with_repo = classify(log, fixers=STUBS, repo=WorktreeFiles(tmp_path))
    assert with_repo.category is Category.AGENT


def test_classification_is_frozen() -> None:
    result = classify(step_log("true", ["ok"]), fixers=STUBS)
    assert isinstance(result, Classification)
    with pytest.raises(AttributeError):
        result.category = Category.AGENT  # type: ignore[misc]


# --- file_locations --------------------------------------------------------------------------


def test_locations_of_the_cases() -> None:
    cases = SHARED / "scenarios" / "cases"

    def locations(name: str) -> list[Location]:
        return file_locations(distill((cases / name / "job.log").read_bytes()))

    assert Location(
        "src/userdir/service.py",
        17,
        None,
        'error: Item "None" of "User | None" has no attribute "email"  [union-attr]',
    ) in locations("ag-mypy-optional")
    assert Location("tests/test_pagination.py", 10, None, "AssertionError") in locations(
        "ag-pytest-off-by-one"
    )
    zero = locations("ag-zero-division-empty-window")
    assert Location("src/latency_stats/summary.py", 19, None, "in summarize") in zero
    assert not any(loc.path.startswith("/") for loc in zero)
    ruff = locations("af-ruff-check-unused-imports")
    assert (
        Location("src/invoice_tools/render.py", 4, 8, "F401 [*] `os` imported but unused") in ruff
    )
    secrets = locations("hu-secret-detected")
    assert Location("src/s3_sync/settings.py", 10, None, "Secret Type: AWS Access Key") in secrets
    assert len({(loc.path, loc.line, loc.col) for loc in secrets}) == len(secrets)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "src/x.py:1:8: F401 [*] `os` imported but unused",
            Location("src/x.py", 1, 8, "F401 [*] `os` imported but unused"),
        ),
        (
            "src/x.py:3: error: Incompatible types",
            Location("src/x.py", 3, None, "error: Incompatible types"),
        ),
        (
            '  File "/home/runner/work/repo/repo/pkg/mod.py", line 12, in run',
            Location("pkg/mod.py", 12, None, "in run"),
        ),
        (
            "/__w/repo/repo/src/a.py:5:1 - error: bad",
            Location("src/a.py", 5, 1, "error: bad"),
        ),
        (
            "src/app.ts(3,7): error TS2322: Type 'string' is not assignable",
            Location("src/app.ts", 3, 7, "error TS2322: Type 'string' is not assignable"),
        ),
        (
            "./tests/test_a.py:9: AssertionError",
            Location("tests/test_a.py", 9, None, "AssertionError"),
        ),
    ],
)
def test_location_formats(line: str, expected: Location) -> None:
    assert file_locations(step_log("x", [line])) == [expected]


@pytest.mark.parametrize(
    "line",
    [
        '  File "/opt/hostedtoolcache/Python/3.11.7/x64/lib/python3.11/socket.py", line 836, in connect',
        "/usr/lib/python3/dist-packages/foo.py:3: DeprecationWarning: x",
        "../../etc/passwd:1: error: nope",
        "2 files would be reformatted, 2 files would be left unchanged.",
    ],
)
def test_locations_outside_the_repository_are_dropped(line: str) -> None:
    assert file_locations(step_log("x", [line])) == []


def test_locations_are_relative_to_the_working_directory() -> None:
    raw = (
        f"{STAMP}##[group]Run mypy .\n{STAMP}\x1b[36;1mmypy .\x1b[0m\n"
        f"{STAMP}shell: /usr/bin/bash -e {{0}}\n{STAMP}working-directory: services/api\n"
        f"{STAMP}##[endgroup]\n{STAMP}app/main.py:4: error: Name 'x' is not defined\n"
        f"{STAMP}##[error]Process completed with exit code 1.\n"
    )
    assert file_locations(distill(raw)) == [
        Location("services/api/app/main.py", 4, None, "error: Name 'x' is not defined")
    ]


# --- one table row per pattern the real-log bench showed (written from the pattern, not copied) --

PATTERNS: list[tuple[str, str, list[str], Category, int | None]] = [
    # human: the build's environment or a dependency, not the code
    (
        "conda package not in the channels",
        "conda env create",
        [
            "PackagesNotFoundError: The following packages are not available from current channels:",
            "  - numpy=1.10.4",
        ],
        Category.HUMAN,
        1,
    ),
    (
        "R package not available",
        "R CMD check pkg",
        ["* checking package dependencies ... ERROR", "Package required but not available: 'zoo'"],
        Category.HUMAN,
        1,
    ),
    (
        "Maven/Leiningen artifact missing",
        "lein test",
        ["Could not find artifact foo:bar:jar:1.0 in central (https://repo1.maven.org/maven2/)"],
        Category.HUMAN,
        1,
    ),
    (
        "composer cannot resolve the requirements",
        "composer update",
        [
            "Your requirements could not be resolved to an installable set of",
            "packages.",
            "  Problem 1",
        ],
        Category.HUMAN,
        2,
    ),
    (
        "JDK too old for a dependency's class files",
        "mvn verify",
        [
            "[ERROR] /w/A.java:[42,46] cannot access org.x.Tool",
            "    class file has wrong version 55.0, should be 52.0",
        ],
        Category.HUMAN,
        1,
    ),
    (
        "C toolchain broken",
        "./configure",
        ["configure: error: C compiler cannot create executables"],
        Category.HUMAN,
        77,
    ),
    (
        "tool missing from the CI image",
        "swift build",
        ["The program 'swift' is currently not installed. To run 'swift' please ask your admin"],
        Category.HUMAN,
        127,
    ),
    (
        "git refuses the workspace (safe.directory)",
        "latexdiff-vc --git -r HEAD~1 cv.tex",
        [
            "fatal: unsafe repository ('/github/workspace' is owned by someone else)",
            "Something went wrong in executing: git archive",
        ],
        Category.HUMAN,
        None,
    ),
    # infra: evidence of the network or the CI system
    (
        "TCP connection refused by a package host",
        "emacs --batch -l init.el",
        ['  signal(error ("Could not create connection to elpa.gnu.org:443"))'],
        Category.INFRA,
        255,
    ),
    (
        "CI time limit",
        "make test",
        ["The job exceeded the maximum time limit for jobs, and has been terminated."],
        Category.INFRA,
        None,
    ),
    # agent: JVM builds
    (
        "Gradle JUnit test FAILED",
        "./gradlew build",
        [
            "LogDifferTest > testGithubParsing() FAILED",
            "    java.lang.IllegalArgumentException at LogDifferTest.java:61",
        ],
        Category.AGENT,
        1,
    ),
    (
        "javac error with [line,col]",
        "mvn -B compile",
        ["[ERROR] /w/src/main/java/A.java:[25,31] cannot find symbol"],
        Category.AGENT,
        1,
    ),
    (
        "Maven COMPILATION ERROR",
        "mvn -B compile",
        ["[ERROR] COMPILATION ERROR :", "[INFO] 1 error"],
        Category.AGENT,
        1,
    ),
    (
        "Gradle task failure",
        "./gradlew build",
        [
            "* What went wrong:",
            "Execution failed for task ':app:checkstyleMain'.",
            "> Unable to create Root Module: config {checkstyle.xml}",
        ],
        Category.AGENT,
        1,
    ),
    (
        "sbt compile error",
        "sbt test:compile",
        ["[error] /w/src/main/scala/A.scala:10:8: object x is not a member of package y"],
        Category.AGENT,
        1,
    ),
    # agent: JavaScript test runners
    (
        "vitest failed tests",
        "npm run test",
        [
            "   × App > renders 8ms",
            "     → localStorage is not defined",
            "      Tests  17 failed | 12 passed (29)",
        ],
        Category.AGENT,
        1,
    ),
    (
        "jest FAIL and ● test",
        "yarn test",
        ["FAIL test/app.test.js (11.4s)", "  ● prevents doubling prefixes", "    expect(received)"],
        Category.AGENT,
        1,
    ),
    (
        "mocha failing count",
        "npm test",
        ["  1 failing", "  1) unit:: general fails:", "     AssertionError: expected 1 to equal 2"],
        Category.AGENT,
        1,
    ),
    # agent: other ecosystems
    (
        "go test FAIL",
        "go test ./...",
        ["--- FAIL: TestSync (0.18s)", "    sync_test.go:679: failed to sync", "FAIL"],
        Category.AGENT,
        1,
    ),
    (
        "cargo test panicked (exit 101)",
        "cargo test",
        ["thread 'grid' panicked at 'Ref test failed', tests/ref.rs:126:9", "test result: FAILED."],
        Category.AGENT,
        101,
    ),
    (
        "flutter test failures",
        "flutter test",
        ["00:45 +90 -61: Some tests failed.", "Error: 90 tests passed, 61 failed."],
        Category.AGENT,
        1,
    ),
    (
        "julia Test Failed",
        "julia --project -e 'using Pkg; Pkg.test()'",
        ["Metadata: Test Failed at /w/test/helpers.jl:90", "  Expression: a == b"],
        Category.AGENT,
        1,
    ),
    (
        "ExUnit numbered failure",
        "mix test",
        [
            "  1) test reloads on every request (Phoenix.CodeReloaderTest)",
            "     ** (ArgumentError) argument error",
        ],
        Category.AGENT,
        1,
    ),
    (
        "Pester [-] failure",
        "pwsh -c Invoke-Pester",
        ["[-] - Running without params runs all files -> Expected and actual values differ!"],
        Category.AGENT,
        1,
    ),
    (
        "PHP run-tests FAIL",
        "php run-tests.php",
        ["001+ ** ERROR: process timed out **", "FAIL Bug #1 (proc_open hangs) [ext/a/bug1.phpt]"],
        Category.AGENT,
        1,
    ),
    (
        "Erlang Common Test failed on line",
        "make ct",
        ["confirms_SUITE:reject failed on line 195", "Reason: expecting_nack_got_ack"],
        Category.AGENT,
        2,
    ),
    (
        "unittest/nose FAIL:",
        "nosetests",
        ["FAIL: tests.api_tests.test_pipeline", "AssertionError:"],
        Category.AGENT,
        1,
    ),
    (
        "TAP not ok",
        "bats test",
        ["not ok 21 podman run docker-archive", "# (in test file test/run.bats, line 30)"],
        Category.AGENT,
        1,
    ),
    (
        "minitest error report",
        "bin/rails test",
        [
            "Error:",
            "HelperTest#test_helper_is_included:",
            "ActionView::Template::Error: undefined method `x' for nil",
            "2048 runs, 4644 assertions, 0 failures, 1 errors, 0 skips",
        ],
        Category.AGENT,
        1,
    ),
    (
        "XCTest assertion",
        "xcodebuild test",
        [
            'testCompact, ((sizeBefore) equal to (sizeAfter)) failed: ("12288") is not equal to ("16384")'
        ],
        Category.AGENT,
        65,
    ),
    (
        "lint finding path:line: message",
        "tldr-lint pages",
        ["pages/common/mat2.md:3: TLDR004 Command descriptions should end in a period"],
        Category.AGENT,
        1,
    ),
    (
        "lint finding without a space",
        "mdlint *.md",
        ["README.md:2186:Line longer than 80 characters."],
        Category.AGENT,
        1,
    ),
    (
        "generated files out of date",
        "./tools/check-generated.sh",
        [" M dist/app.min.js", "Please rebuild the JavaScript and commit the changes."],
        Category.AGENT,
        1,
    ),
]


@pytest.mark.parametrize(
    ("command", "output", "category", "exit_code"),
    [(c, o, cat, code) for _, c, o, cat, code in PATTERNS],
    ids=[name for name, *_ in PATTERNS],
)
def test_patterns(
    command: str, output: list[str], category: Category, exit_code: int | None
) -> None:
    result = classify(step_log(command, output, exit_code=exit_code), fixers=STUBS)
    assert result.category is category, result
    assert result.confidence is Confidence.HIGH, result
    assert result.evidence


def test_timeout_wrapper_exit_124_is_infra_only_with_a_timeout_command() -> None:
    """Pattern: ``timeout 35m build.sh`` exits 124 when time runs out (Travis ``$TIMEOUT``)."""
    output = ["Building 12/80 modules"]
    timed = classify(step_log("$TIMEOUT 35m ci/build.sh", output, exit_code=124), fixers=STUBS)
    assert timed.category is Category.INFRA
    plain = classify(step_log("ci/build.sh", output, exit_code=124), fixers=STUBS)
    assert plain.category is Category.HUMAN


def test_set_up_job_failures_are_infra_only_on_a_server_error() -> None:
    """Pattern: the runner's ``Set up job`` could not download an action."""
    server_error = distill(
        f"{STAMP}Current runner version: '2.331.0'\n{STAMP}Getting action download info\n"
        f"{STAMP}##[error]Response status code does not indicate success: 500 (Internal Server "
        "Error).\n"
    )
    assert server_error.step == SET_UP_JOB
    assert classify(server_error, fixers=STUBS).category is Category.INFRA
    missing = distill(
        f"{STAMP}Current runner version: '2.331.0'\n{STAMP}Getting action download info\n"
        f"{STAMP}##[error]Unable to resolve action `actions/chekout@v4`, repository not found\n"
    )
    assert missing.step == SET_UP_JOB
    result = classify(missing, fixers=STUBS)
    assert result.category is Category.HUMAN
    assert not result.retryable


def test_tests_that_failed_before_the_runner_was_lost_win() -> None:
    """Pattern: tests fail, then the runner gets a shutdown signal in the same step."""
    output = [
        "Voxel Data Comparison: Test Failed at /w/test/helpers.jl:117",
        "  Expression: a == b",
        "##[error]The runner has received a shutdown signal.",
        "##[error]The operation was canceled.",
    ]
    result = classify(step_log("julia test/runtests.jl", output, exit_code=None), fixers=STUBS)
    assert result.category is Category.AGENT
    assert any("Test Failed at" in e for e in result.evidence)
    assert any("shutdown signal" in e for e in result.evidence)
    # The loss alone, or a loss before any failure, stays infrastructure.
    lost_first = [output[2], output[0], output[1], output[3]]
    assert (
        classify(
            step_log("julia test/runtests.jl", lost_first, exit_code=None), fixers=STUBS
        ).category
        is Category.INFRA
    )


@pytest.mark.parametrize(
    ("name", "command", "output", "category"),
    [
        (
            "an unknown tool's error line",
            "test/sass-compile-tester.sh",
            ['Error: Invalid CSS after "x": expected media query list', "  on line 7 of a.sass"],
            Category.AGENT,
        ),
        (
            "a linter printing only path:line findings",
            "pep257 src",
            ["src/a.py:105 in public method `run`:", "        D200: One-line docstring"],
            Category.AGENT,
        ),
        (
            "a module the code needs is not installed",
            "python scripts/release.py",
            ["ModuleNotFoundError: No module named 'requests'"],
            Category.HUMAN,
        ),
        (
            "a tool crashed inside its own dependency",
            "standard",
            [
                "  /w/lib/a.js:0:0: /w/node_modules/babel-eslint/toToken.js:56",
                "Unexpected token ILLEGAL",
                "npm ERR! Test failed.  See above for more details.",
            ],
            Category.HUMAN,
        ),
        (
            "a tool's bootstrap failed while installing itself",
            "./build.sh",
            ["Installing .NET CLI...", "An error occured while installing Cake."],
            Category.HUMAN,
        ),
    ],
)
def test_the_fallback_reads_the_failure_lines_and_says_it_is_unsure(
    name: str, command: str, output: list[str], category: Category
) -> None:
    result = classify(step_log(command, output), fixers=STUBS)
    assert result.category is category, result
    assert result.confidence is Confidence.LOW
    assert "Low confidence" in result.reason or "low" in result.reason.lower()


def test_nothing_to_go_on_is_a_low_confidence_hand_off() -> None:
    result = classify(step_log("./build.sh", ["something went sideways"]), fixers=STUBS)
    assert result.category is Category.HUMAN
    assert result.confidence is Confidence.LOW
