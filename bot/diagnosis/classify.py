"""Failure classification (pure, no I/O).

``classify`` decides what kind of failure a distilled job log shows, in this order:

1. ``human`` — things a bot must never patch even where a patch would turn CI green: leaked
   secrets, licences, CLA/policy/approval checks, unsatisfiable dependency resolutions (a pin is a
   decision) and API-contract tests that say so. These come first because the other rules would
   happily "fix" them (a fixer can delete a secret, an LLM can regenerate a snapshot).
2. ``infra`` — the runner, the network, rate limits, the disk, a service that was not ready yet.
   Before autofix and agent because a consequence of infra (``No matching distribution found``
   after five read timeouts, a test failing on ``Connection refused``) looks like a code problem.
3. ``autofix`` — any of the passed-in fixers matches (the registry is passed in, never imported
   here, so configuration can narrow it and tests can stub it).
4. ``agent`` — a code, type or test failure an LLM repair may address. Rules cover pytest, JVM
   builds (javac, Maven, Gradle, JUnit, sbt), vitest/jest/mocha, Go, Rust, flutter, julia, ExUnit,
   Pester, PHP's and TAP's runners, compilers and linters that print ``path:line: message``.
5. anything else — the fallback: the failure lines the distiller found (by keywords and structure,
   in any log format) decide between ``agent`` (the code or its tests failed) and ``human`` (a
   dependency or tool is missing or crashed inside a dependency), with ``confidence`` ``low``;
   when there are none, ``human`` (low): a person looks.

Infrastructure is decided on evidence only, and a failure the log shows *before* the runner was
lost wins over the loss: re-running cannot make tests pass that had already failed.

``file_locations`` lists the ``path:line`` references of a distilled log, repository-relative, for
check-run annotations and the LLM context.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.diagnosis.logs import SET_UP_JOB, DistilledLog
from bot.diagnosis.repofiles import NoFiles, RepoFiles
from bot.kernel.problems import Category, Confidence

__all__ = ["Classification", "Location", "Matcher", "classify", "file_locations"]


class Matcher(Protocol):
    """What classification needs of a fixer: its name and its pure ``matches``. Every ``Fixer``
    is one; asking no more keeps diagnosis below the fixers, which run tools."""

    name: str

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool: ...


_MAX_EVIDENCE = 5
_MAX_EVIDENCE_CHARS = 300


@dataclass(frozen=True)
class Classification:
    category: Category
    #: Names of the matching fixers in the order they run; empty unless ``autofix``.
    fixers: tuple[str, ...]
    #: The log lines that led to the decision.
    evidence: tuple[str, ...]
    retryable: bool
    owner_action_required: bool
    #: One sentence for humans.
    reason: str
    #: ``low`` when no rule recognised the failure and the fallback guessed from its lines.
    confidence: Confidence = Confidence.HIGH


@dataclass(frozen=True)
class Location:
    """A ``path:line`` reference found in a log, relative to the repository root."""

    path: str
    line: int
    col: int | None
    message: str


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    reason: str
    #: Whether the rule may also match the step's command (e.g. ``gitleaks detect``).
    on_command: bool = False
    #: Whether the rule looks only at error lines (text that merely mentions the topic in passing
    #: output must not trigger it).
    errors_only: bool = False
    #: Whether network trouble in the same log explains the finding (a package "not found" after
    #: read timeouts): then the infra rules decide.
    unless_network: bool = False


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_HUMAN_RULES = (
    _Rule(
        _rx(
            r"detect-secrets|gitleaks|trufflehog|ggshield|Potential secrets|secrets? (?:detected|found)"
            r"|leaks? found|Secret Type:|credentials? (?:detected|found)|hardcoded (?:secret|password)"
        ),
        "A secret scanner flagged a credential: it must be revoked and scrubbed by a person, "
        "not deleted or allow-listed by a bot.",
        on_command=True,
    ),
    _Rule(
        _rx(
            r"licen[cs]e (?:check|compliance|violation|not allowed|denied|incompatib)"
            r"|incompatible licen[cs]e|(?:disallowed|forbidden|denied|prohibited|unapproved) licen[cs]e"
            r"|licen[cs]es? .{0,40}not (?:allowed|permitted|approved|compatible)"
            r"|reuse lint|\bliccheck\b|license-checker|pip-licenses|cargo.deny"
        ),
        "A licence check failed: accepting or replacing a dependency's licence is a maintainer's call.",
        on_command=True,
    ),
    _Rule(
        re.compile(
            r"\bCLA\b|Contributor License Agreement|(?i:has not signed|not signed the CLA"
            r"|cla-assistant|missing Signed-off-by|DCO (?:check )?fail)"
        ),
        "A contributor agreement or sign-off check failed: only the contributor can sign.",
    ),
    _Rule(
        _rx(
            r"(?:pull request|\bPR\b|merge|deployment|environment|workflow|change)\b.{0,40}"
            r"(?:requires? (?:an? )?approval|not (?:been |yet )?approved|awaiting approval)"
            r"|policy (?:check )?(?:violation|failed)|violates? .{0,20}polic(?:y|ies)"
        ),
        "A policy or approval check failed: that is a decision for the repository's maintainers.",
    ),
    _Rule(
        _rx(
            r"ResolutionImpossible|conflicting dependencies|version solving failed"
            r"|ERESOLVE (?:unable|could not)|No solution found when resolving"
            r"|Could not find compatible versions|dependency conflict|requirements are unsatisfiable"
        ),
        "The dependency resolver reports an unsatisfiable combination of pins: which pin gives way "
        "is a product decision.",
        errors_only=True,
    ),
    _Rule(
        _rx(
            r"No matching distribution found for|PackagesNotFoundError"
            r"|packages are not available from current channels|Package required but not available"
            r"|Could not find artifact \S+|Could not transfer artifact \S+"
            r"|Could not resolve dependencies for project|No matching version found for"
            r"|is not in (?:the|this) (?:npm )?registry|no matching package named"
            r"|Unable to find a specification for|Failed to download remote repository"
            r"|requirements could not be resolved to an installable set"
        ),
        "A dependency the build asks for is not available from its package index, or not in the "
        "version asked for: which version or source to use is a maintainer's decision.",
        unless_network=True,
    ),
    _Rule(
        _rx(
            r"class file has wrong version [\d.]+, should be|UnsupportedClassVersionError"
            r"|Unsupported class file major version|invalid (?:target|source) release"
            r"|C compiler cannot create executables|The program '[^']+' is currently not installed"
            r"|requires? (?:at least |a newer version of )?(?:Java|JDK|Python|Node(?:\.js)?) "
            r"[\d.]+ or (?:newer|later|higher)"
        ),
        "The build's toolchain does not fit the project or a dependency (a JDK, compiler or tool "
        "version, or a tool the CI image lacks): the workflow or the pins need a maintainer's "
        "change, not the code.",
    ),
    _Rule(
        _rx(r"fatal: (?:unsafe repository|detected dubious ownership in repository)"),
        "Git refused to work in the checkout (safe.directory ownership check): the workflow or "
        "the action needs a change, not the code.",
    ),
    _Rule(
        _rx(
            r"public[ _-]?api\b.{0,40}(?:broken|break|changed|removed|incompatib|mismatch)"
            r"|api[ _-]?(?:contract|surface|compat\w*)\b.{0,40}(?:broken|break|changed|removed|fail|violat|mismatch)"
            r"|breaking (?:api )?change detected|test_public_api|test_api_contract|api[ _-]snapshot"
        ),
        "An API-contract test failed: whether to keep compatibility or accept the break needs a "
        "maintainer's decision, and regenerating the snapshot would hide it.",
        errors_only=True,
    ),
)

_RUNNER_LOST = _Rule(
    _rx(
        r"runner has received a shutdown signal|lost communication with the server"
        r"|The operation was canceled|The hosted runner encountered an error"
        r"|The job was not acquired by Runner|runner .{0,40}(?:went offline|disconnected)"
    ),
    "The runner was lost or the job was cancelled under it; re-running should succeed.",
)
_INFRA_RULES = (
    _RUNNER_LOST,
    _Rule(
        _rx(
            r"exceeded the maximum (?:execution )?time(?: limit)?|has exceeded the maximum time"
            r"|No output has been received in the last \d+m"
        ),
        "The job ran into the CI system's time limit; re-running should succeed (if it happens "
        "again, the job is too slow or hangs).",
    ),
    _Rule(
        _rx(
            r"API rate limit exceeded|secondary rate limit"
            r"|x-ratelimit-remaining['\"]?\s*[:=]\s*['\"]?0\b|429 Too Many Requests|toomanyrequests"
            r"|reached your (?:unauthenticated )?pull rate limit"
        ),
        "An API rate limit was exhausted; re-running after the reset should succeed.",
    ),
    _Rule(
        _rx(
            r"No space left on device|\bENOSPC\b|\[Errno 28\]|disk quota exceeded"
            r"|running out of disk space|not enough (?:free )?(?:disk )?space"
        ),
        "The runner ran out of disk space; this is not a problem in the code.",
    ),
    _Rule(
        _rx(
            r"ReadTimeoutError|ConnectTimeoutError|Read timed out|Connection timed out"
            r"|Temporary failure in name resolution|Could not resolve host|Name or service not known"
            r"|\bEAI_AGAIN\b|\bENOTFOUND\b|\bECONNRESET\b|\bETIMEDOUT\b|Connection reset by peer"
            r"|TLS handshake timeout|i/o timeout|Network is unreachable|socket hang up"
            r"|Could not (?:create|establish|open) (?:a )?connection to|Failed to connect to \S+ port"
            r"|Response status code does not indicate success: 5\d\d"
            r"|RemoteDisconnected|Max retries exceeded with url|HTTP error 5\d\d"
            r"|npm ERR! (?:code E)?5\d\d|requested URL returned error: 5\d\d"
            r"|(?:https?://|registry|index)\S*.{0,80}\b50[0-4] (?:Internal Server Error|Bad Gateway"
            r"|Service Unavailable|Gateway Time-?out)"
        ),
        "A network request to a package index or service timed out or failed; re-running should "
        "succeed (later errors such as 'No matching distribution' follow from it).",
    ),
)

_INFRA_CONCLUSIONS = frozenset({"cancelled", "timed_out", "startup_failure"})

# Service-readiness race: tests fail on connection refused against a service the job started.
_REFUSED = _rx(r"Connection refused|ConnectionRefusedError|ECONNREFUSED")
_LOOPBACK = _rx(r"\b(?:127\.0\.0\.1|localhost|0\.0\.0\.0)\b|\[::1\]")
_PYTEST_FAILED = re.compile(r"^(?:FAILED|ERROR) \S")
_SOME_PASSED = re.compile(r"\b[1-9]\d* passed\b")
# ``cmd &`` at the end of a command line (not ``&&``): a service started in the background.
_BACKGROUND = re.compile(r"(?<!&)&\s*$", re.MULTILINE)

#: (what the rule covers, pattern, reason), in order: test failures, then build and compile
#: errors, then lint findings.
_AGENT_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "pytest",
        re.compile(
            r"^FAILED \S|^ERROR \S+\.py|ERROR collecting|^E {2,}\S|\bAssertionError\b"
            r"|Traceback \(most recent call last\)|\b\d+ failed\b|errors? during collection"
            r"|^\S+\.py:\d+: \w+Error$"
        ),
        "Tests failed on a code or test problem an LLM repair may address.",
    ),
    (
        "JUnit (Gradle, Maven)",
        re.compile(
            r"^\S.* > .+ FAILED$|\S \w+\([^)]*\) FAILED$|Tests run: \d+, Failures: [1-9]"
            r"|Tests run: \d+, Failures: \d+, Errors: [1-9]|There were failing tests"
            r"|<<< (?:FAILURE|ERROR)!|\d+ tests completed, [1-9]\d* failed"
        ),
        "JVM tests failed on a code or test problem an LLM repair may address.",
    ),
    (
        "vitest, jest, mocha",
        re.compile(
            r"^\s*FAIL\s+\S|^\s*Tests?:?\s+[1-9]\d* failed|Test Files\s+[1-9]\d* failed"
            r"|^\s*●\s+\S|^\s*(?:×|✕|✗)\s+\S|\b[1-9]\d* failing\b|expect\(received\)"
        ),
        "JavaScript tests failed on a code or test problem an LLM repair may address.",
    ),
    (
        "go test",
        re.compile(r"^--- FAIL: \S|^FAIL\s+\S+\s+[\d.]+s$|^FAIL$|^panic: |^\s+\S+_test\.go:\d+: "),
        "Go tests failed on a code or test problem an LLM repair may address.",
    ),
    (
        "cargo test",
        re.compile(r"test result: FAILED|panicked at |^---- \S+ stdout ----$|^error: test failed"),
        "Rust tests failed on a code or test problem an LLM repair may address.",
    ),
    (
        "flutter test",
        re.compile(
            r"Some tests failed\.|\+\d+(?: ~\d+)? -[1-9]\d*: |Test failed\. See exception logs"
            r"|tests passed, [1-9]\d* failed|EXCEPTION CAUGHT BY FLUTTER TEST FRAMEWORK"
        ),
        "Flutter tests failed on a code or test problem an LLM repair may address.",
    ),
    (
        "julia Test",
        re.compile(
            r"Test Failed at |Error During Test at |Some tests did not pass"
            r"|Test Summary:.*\b(?:Fail|Error)\b"
        ),
        "Julia tests failed on a code or test problem an LLM repair may address.",
    ),
    (
        "other test runners (ExUnit, Pester, TAP, PHP, Common Test, unittest, minitest, XCTest)",
        re.compile(
            r"^\s*\d+\) test .+ \(\S+\)$|\*\* \(\w+(?:\.\w+)*\) |^\s*\[-\] \S|^not ok \d+"
            r"|^FAIL .+\[\S+\.phpt\]|\bfailed on line \d+|\*\*\* FAILED test case"
            r"|^(?:FAIL|ERROR): \S|#test_\w+|\d+ runs?, \d+ assertions?, [1-9]\d* failures"
            r"|\d+ runs?, \d+ assertions?, \d+ failures?, [1-9]\d* errors|^rspec \./\S+:\d+"
            r"|\) failed: \(|XCTAssert\w* failed"
        ),
        "Tests failed on a code or test problem an LLM repair may address.",
    ),
    (
        "JVM builds (javac, Maven, Gradle, sbt)",
        re.compile(
            r"\.java:\[\d+,\d+\]|\.java:\d+: error:|COMPILATION ERROR|Compilation failure"
            r"|Execution failed for task|^\[error\] \S+\.(?:scala|java|kt|sbt):\d+"
            r"|cannot find symbol"
        ),
        "The build failed on the project's code or build configuration, which an LLM repair "
        "may address.",
    ),
    (
        "compilers and type checkers",
        re.compile(
            r"^\S+\.pyi?:\d+(?::\d+)?: error:|\S+\.py:\d+:\d+ - error:|\berror TS\d+|^error(?:\[E\d+\])?: "
            r"|^\S+\.(?:go|rs|c|cc|cpp|h|hpp|java|kt|swift|cs|ts|tsx|js):\d+(?::\d+)?:? (?:error\b|\w)"
            r"|^\S+:\d+(?::\d+)?: (?:fatal )?error:"
        ),
        "The type checker or compiler reports errors in the code, which an LLM repair may address.",
    ),
    (
        "linters",
        re.compile(
            r"^\S+:\d+:\d+: [A-Z]+\d+ |^\s*--> \S+:\d+:\d+|^Found \d+ errors?\.|\u2716 \d+ problems?"
            r"|would reformat|Would reformat|Imports are incorrectly sorted|Code style issues"
            r"|^\s*(?![/\\])(?!\S*://)[\w.][\w./-]*\.\w+:\d+(?::\d+)?:\s*\S"
        ),
        "Lint or format findings that no configured fixer repairs; an LLM repair may address them.",
    ),
    (
        "generated files out of date",
        re.compile(
            r"^ M \S|^\s+modified:\s+\S|Please (?:rebuild|regenerate|re-?run \S+|run \S+)\b.{0,60}"
            r"commit|(?:changed|differ|out of date)\b.{0,80}(?:commit|rebuild|regenerat)"
        ),
        "Generated files are out of date with their sources; regenerating and committing them "
        "(an LLM repair may do it) fixes the check.",
    ),
)

_IMPORT_ERROR = re.compile(
    r"(?:ImportError|ModuleNotFoundError): (?:cannot import name '\w+' from '(?P<from>[\w.]+)'"
    r"|No module named '(?P<module>[\w.]+)')"
)
_WORKSPACE = re.compile(
    r"^(?:/home/runner/work|/Users/runner/work|/__w|[A-Za-z]:[\\/]a)[\\/][^\\/]+[\\/][^\\/]+[\\/]"
)


def _lines(log: DistilledLog) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for line in (*log.error_lines, *log.excerpt.split("\n")):
        if line and line not in seen:
            seen.add(line)
            out.append(line)
    return out


def _matching(pattern: re.Pattern[str], lines: Iterable[str]) -> list[str]:
    return [line for line in lines if pattern.search(line)][:_MAX_EVIDENCE]


def _apply(
    rules: Sequence[_Rule], log: DistilledLog, lines: list[str], *, network: bool = False
) -> tuple[_Rule, list[str]] | None:
    for rule in rules:
        if rule.unless_network and network:
            continue
        haystack = list(log.error_lines) if rule.errors_only else lines
        evidence = _matching(rule.pattern, haystack)
        if not evidence and rule.on_command and log.command and rule.pattern.search(log.command):
            evidence = [f"command: {log.command.splitlines()[0]}"]
        if evidence:
            return rule, evidence
    return None


def _service_readiness_race(log: DistilledLog, lines: list[str]) -> list[str] | None:
    """Tests that fail only on connection refused to a service the job itself starts.

    The signature of a readiness race rather than a code bug: every reported failure is a refused
    connection, the target is local (the loopback address, or a service the step backgrounds with
    ``&``), and other tests in the same run passed once the service was up.
    """
    failed = [line for line in lines if _PYTEST_FAILED.match(line)]
    if not failed or not all(_REFUSED.search(line) for line in failed):
        return None
    backgrounded = bool(log.command and _BACKGROUND.search(log.command))
    local = backgrounded or any(_LOOPBACK.search(line) for line in lines)
    passed = _matching(_SOME_PASSED, lines)
    if not local or not (passed or backgrounded):
        return None
    evidence = failed[:3] + passed[:1]
    if backgrounded and log.command:
        evidence.append("command starts a background service: " + log.command.splitlines()[0])
    return evidence


def _own_import_error(log: DistilledLog, lines: list[str], repo: RepoFiles) -> list[str]:
    """ImportError/ModuleNotFoundError of a module that lives in the repository."""
    evidence: list[str] = []
    for line in lines:
        m = _IMPORT_ERROR.search(line)
        if m is None:
            continue
        module = m.group("from") or m.group("module") or ""
        top = module.split(".")[0]
        in_repo = (
            _WORKSPACE.search(line.split("(")[-1].strip(" ()")) is not None
            or repo.exists(f"src/{top}")
            or repo.exists(top)
            or repo.exists(f"{top}.py")
            or any(f"src/{top}/" in other for other in lines)
        )
        if in_repo:
            evidence.append(line)
    return evidence[:_MAX_EVIDENCE]


def _result(
    category: Category,
    evidence: Sequence[str],
    reason: str,
    fixers: Sequence[str] = (),
    confidence: Confidence = Confidence.HIGH,
) -> Classification:
    return Classification(
        category=category,
        fixers=tuple(fixers),
        evidence=tuple(line[:_MAX_EVIDENCE_CHARS] for line in evidence[:_MAX_EVIDENCE]),
        retryable=category is Category.INFRA,
        owner_action_required=category is Category.HUMAN,
        reason=reason,
        confidence=confidence,
    )


def _agent_may_fix(exit_code: int | None) -> bool:
    """Exit codes of a tool that reported a failure. From 126 up the shell reports a command it
    could not run or a signal (137: killed, out of memory), which an edit would not mend."""
    return exit_code is None or 0 < exit_code < 126


def _agent_evidence(lines: Sequence[str]) -> tuple[list[str], str] | None:
    for _, pattern, reason in _AGENT_RULES:
        evidence = _matching(pattern, lines)
        if evidence:
            return evidence, reason
    return None


def _failure_before_runner_loss(log: DistilledLog) -> list[str]:
    """Test or build failures the excerpt shows before the runner-loss line, if any."""
    before: list[str] = []
    for line in log.excerpt.split("\n"):
        if _RUNNER_LOST.pattern.search(line):
            break
        before.append(line)
    found = _agent_evidence(before)
    return found[0] if found is not None else []


# A timeout wrapper (``timeout 35m make``, ``$TIMEOUT …``) exits with 124 when time runs out.
_TIMEOUT_COMMAND = re.compile(r"(?:^|[\s;&|(])(?:timeout|gtimeout)\s|\$\{?TIMEOUT\b", re.I)
_TIMEOUT_EXIT = 124
_HTTP_5XX = re.compile(
    r"\b50[0-4]\b.{0,40}(?:Internal Server Error|Bad Gateway|Service Unavailable|Gateway Time)"
    r"|\(Internal Server Error\)|\(Service Unavailable\)|\(Bad Gateway\)",
    re.I,
)
# What the fallback reads: failure lines, not the lines that only report an exit status.
_STATUS_ONLY = re.compile(
    r"Process completed with exit code|exited with (?:code )?-?\d+|^make(?:\[\d+\])?: \*\*\* "
    r"|^npm ERR! (?:code|errno|Exit status|Failed at the|\S+@\S+ )|Command failed with (?:exit "
    r"code|status)|^error Command failed|recipe for target|^Done\. Your build exited"
)
# A module or package the code needs that is not installed (not the project's own: that is
# checked before the fallback).
_MISSING_DEPENDENCY = re.compile(
    r"No module named '?[\w.]+|Cannot find module '[^'./][^']*'|cannot load such file -- \S+"
    r"|there is no package called|package \S+ is not installed|command not found"
    r"|is not recognized as an internal or external command"
    r"|(?:error|failed|failure)\b.{0,40}\bwhile (?:installing|downloading|bootstrapping)",
    re.I,
)
# Where installed dependencies live: a failure located only there is a tool or dependency that
# broke, not the project's code.
_DEPENDENCY_DIR = re.compile(
    r"/(?:node_modules|site-packages|dist-packages|vendor/bundle|\.cargo/registry|pkg/mod"
    r"|\.m2/repository|gems/[^/\s]+/gems)/"
)
# A finding about a project file: a relative ``path:line`` at the start of the line.
_FINDING = re.compile(r"^\s*(?![/\\])(?!\S*://)[\w.][\w./-]*\.\w+:\d+\b")
_LOCATION = re.compile(r"(?P<path>[\w./\\@+-]*[\w@+-]\.\w+):(?P<line>\d+)")


def _fallback(log: DistilledLog, lines: Sequence[str]) -> Classification | None:
    """No rule matched: read the failure lines the distiller kept, whatever the log's format."""
    failures = [line for line in log.error_lines if not _STATUS_ONLY.search(line) and line.strip()]
    # A linter that prints only ``path:line`` findings, no error word.
    failures = failures or _matching(_FINDING, lines)
    if not failures:
        return None
    missing = _matching(_MISSING_DEPENDENCY, lines)
    if missing:
        return _result(
            Category.HUMAN,
            missing,
            "A module, package or tool the build needs is not installed in the CI environment; "
            "the workflow or the dependencies need a maintainer's change. (Low confidence: no "
            "rule recognised this log.)",
            confidence=Confidence.LOW,
        )
    located = [m for line in lines for m in _LOCATION.finditer(line) if m["line"] != "0"]
    if located and all(_DEPENDENCY_DIR.search(m["path"]) for m in located):
        return _result(
            Category.HUMAN,
            [line for line in lines if _DEPENDENCY_DIR.search(line)][:_MAX_EVIDENCE],
            "The failure is raised inside an installed dependency or tool, not in the project's "
            "code: a tool or dependency version needs a maintainer's look. (Low confidence: no "
            "rule recognised this log.)",
            confidence=Confidence.LOW,
        )
    return _result(
        Category.AGENT,
        failures,
        "The log shows a failure no rule recognises; an LLM repair may address it. (Low "
        "confidence: the category was read from the failure lines alone.)",
        confidence=Confidence.LOW,
    )


def classify(
    log: DistilledLog,
    *,
    fixers: Sequence[Matcher],
    repo: RepoFiles = NoFiles(),  # noqa: B008 - NoFiles is stateless; a shared default is safe.
    job_conclusion: str | None = None,
) -> Classification:
    """Classify one failed step from its distilled log (see the module docstring for the order)."""
    lines = _lines(log)
    decided = _human_or_infra(log, lines, job_conclusion)
    if decided is None:
        decided = _set_up_or_transient(log, lines)
    if decided is None:
        decided = _autofix(log, fixers, repo)
    if decided is None:
        decided = _agent_or_fallback(log, lines, repo)
    return decided


def _human_or_infra(
    log: DistilledLog, lines: list[str], job_conclusion: str | None
) -> Classification | None:
    """Steps 1 and 2 on evidence: the human rules (told whether the network failed), the job's
    conclusion, the infrastructure rules (unless tests had failed before the runner was lost)."""
    infra = _apply(_INFRA_RULES, log, lines)
    human = _apply(_HUMAN_RULES, log, lines, network=infra is not None)
    if human is not None:
        rule, evidence = human
        return _result(Category.HUMAN, evidence, rule.reason)
    if job_conclusion in _INFRA_CONCLUSIONS:
        return _result(
            Category.INFRA,
            [f"job conclusion: {job_conclusion}", *log.error_lines[:2]],
            f"The job ended as {job_conclusion}, which is the runner's doing, not the code's.",
        )
    if infra is None:
        return None
    rule, evidence = infra
    earlier = _failure_before_runner_loss(log) if rule is _RUNNER_LOST else []
    if earlier:
        return _result(
            Category.AGENT,
            [*earlier[:3], *evidence[:1]],
            "Tests or the build had already failed before the runner was lost; re-running "
            "alone cannot make them pass, so the failure is repaired like any other.",
        )
    return _result(Category.INFRA, evidence, rule.reason)


def _set_up_or_transient(log: DistilledLog, lines: list[str]) -> Classification | None:
    """The job's set-up failed, a command hit its timeout wrapper, or a service was not ready."""
    if log.step == SET_UP_JOB:
        http = _matching(_HTTP_5XX, lines)
        if http:
            return _result(
                Category.INFRA,
                http,
                "GitHub failed to serve the job's set-up (an action download answered 5xx); "
                "re-running should succeed.",
            )
        return _result(
            Category.HUMAN,
            list(log.error_lines) or [SET_UP_JOB],
            "The job failed while being set up, before any step ran (an action or runner "
            "reference in the workflow): a maintainer needs to fix the workflow.",
        )
    if (
        log.exit_code == _TIMEOUT_EXIT
        and log.command is not None
        and _TIMEOUT_COMMAND.search(log.command)
    ):
        return _result(
            Category.INFRA,
            [f"command: {log.command.splitlines()[0]}", f"exit code {_TIMEOUT_EXIT}"],
            "The command ran into its time limit (its timeout wrapper exits with 124); re-running "
            "should succeed unless it hangs every time.",
        )
    race = _service_readiness_race(log, lines)
    if race is None:
        return None
    return _result(
        Category.INFRA,
        race,
        "Tests failed only on connection refused to a service the job starts, while others "
        "passed: a readiness race, so re-run (and consider a readiness wait in the workflow).",
    )


def _autofix(
    log: DistilledLog, fixers: Sequence[Matcher], repo: RepoFiles
) -> Classification | None:
    matching = [fixer.name for fixer in fixers if fixer.matches(log, repo)]
    if not matching:
        return None
    return _result(
        Category.AUTOFIX,
        [*log.error_lines[:_MAX_EVIDENCE]] or [log.command or ""],
        f"Known deterministic fix: {', '.join(matching)}.",
        matching,
    )


def _agent_or_fallback(log: DistilledLog, lines: list[str], repo: RepoFiles) -> Classification:
    """Steps 4 and 5: the agent rules, an import of the project's own module, the fallback."""
    agent_may_fix = _agent_may_fix(log.exit_code)
    if agent_may_fix:
        found = _agent_evidence(lines)
        if found is not None:
            return _result(Category.AGENT, *found)
    own_import = _own_import_error(log, lines, repo)
    if own_import:
        return _result(
            Category.AGENT,
            own_import,
            "An import of the project's own module fails; an LLM repair may address it.",
        )
    if agent_may_fix:
        guess = _fallback(log, lines)
        if guess is not None:
            return guess
    return _result(
        Category.HUMAN,
        list(log.error_lines),
        "No confident classification of this failure; a person should look at it.",
        confidence=Confidence.LOW,
    )


# ``path:line[:col]: message`` (pytest, mypy, ruff concise, compilers), traceback frames, and the
# ``--> path:line:col`` of ruff's and rustc's full format (its message is the line above).
_COLON_LOCATION = re.compile(
    r"^(?:Location:\s+)?(?P<path>[\w./\\@+-]+\.\w+):(?P<line>\d+)(?::(?P<col>\d+))?"
    r"(?:(?::|\s+-)\s*(?P<msg>.*))?$"
)
_ARROW_LOCATION = re.compile(
    r"^\s*-->\s+(?P<path>[\w./\\@+-]+\.\w+):(?P<line>\d+)(?::(?P<col>\d+))?"
)
_TRACEBACK_FRAME = re.compile(
    r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)(?:, in (?P<msg>.+))?'
)
_TSC_LOCATION = re.compile(
    r"^(?P<path>[\w./\\@+-]+\.\w+)\((?P<line>\d+),(?P<col>\d+)\): (?P<msg>.+)$"
)
_OUTSIDE_REPO = re.compile(r"(?:^/|site-packages/|dist-packages/|^[A-Za-z]:)")


def _repo_path(path: str, working_directory: str | None) -> str | None:
    """Repository-relative form of a path printed by a tool, or None when it is outside the repo."""
    path = path.replace("\\", "/")
    m = _WORKSPACE.match(path)
    if m is not None:
        path = path[m.end() :]
    elif _OUTSIDE_REPO.search(path):
        return None
    elif working_directory and working_directory not in (".", "./"):
        path = posixpath.join(working_directory, path)
    path = posixpath.normpath(path)
    if path.startswith("../") or path in ("..", ".") or path.startswith("/"):
        return None
    return path


def file_locations(log: DistilledLog) -> list[Location]:
    """``path:line`` references in the excerpt, repository-relative, in order, deduplicated."""
    found: list[Location] = []
    seen: set[tuple[str, int, int | None]] = set()
    previous = ""
    for line in log.excerpt.split("\n"):
        candidate: tuple[str, str, str | None, str] | None = None
        stripped = line.strip()
        m = _ARROW_LOCATION.match(line)
        if m is not None:
            candidate = (m["path"], m["line"], m["col"], previous.strip())
        elif (m := _TRACEBACK_FRAME.match(line)) is not None:
            candidate = (m["path"], m["line"], None, f"in {m['msg']}" if m["msg"] else "")
        elif (m := _TSC_LOCATION.match(stripped)) is not None:
            candidate = (m["path"], m["line"], m["col"], m["msg"])
        elif (m := _COLON_LOCATION.match(stripped)) is not None:
            message = m["msg"] or ""
            if stripped.startswith("Location:"):
                # detect-secrets prints ``Secret Type: …`` on the line above.
                message = previous.strip()
            candidate = (m["path"], m["line"], m["col"], message)
        if stripped:
            previous = line
        if candidate is None:
            continue
        raw_path, line_no, col, message = candidate
        path = _repo_path(raw_path, log.working_directory)
        if path is None:
            continue
        key = (path, int(line_no), int(col) if col else None)
        if key in seen:
            continue
        seen.add(key)
        found.append(Location(path, key[1], key[2], message.strip()[:300]))
    return found
