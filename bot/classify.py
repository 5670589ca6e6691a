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
4. ``agent`` — a code, type or test failure an LLM repair may address.
5. anything else — ``human``: no confident classification, so a person looks.

``file_locations`` lists the ``path:line`` references of a distilled log, repository-relative, for
check-run annotations and the LLM context.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.logs import DistilledLog
from bot.problems import Category
from fixers.base import Fixer, NoFiles, RepoFiles

__all__ = ["Classification", "Location", "classify", "file_locations"]

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
            r"public[ _-]?api\b.{0,40}(?:broken|break|changed|removed|incompatib|mismatch)"
            r"|api[ _-]?(?:contract|surface|compat\w*)\b.{0,40}(?:broken|break|changed|removed|fail|violat|mismatch)"
            r"|breaking (?:api )?change detected|test_public_api|test_api_contract|api[ _-]snapshot"
        ),
        "An API-contract test failed: whether to keep compatibility or accept the break needs a "
        "maintainer's decision, and regenerating the snapshot would hide it.",
        errors_only=True,
    ),
)

_INFRA_RULES = (
    _Rule(
        _rx(
            r"runner has received a shutdown signal|lost communication with the server"
            r"|The operation was canceled|The hosted runner encountered an error"
            r"|The job was not acquired by Runner|runner .{0,40}(?:went offline|disconnected)"
        ),
        "The runner was lost or the job was cancelled under it; re-running should succeed.",
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

_AGENT_RULES = (
    (
        re.compile(
            r"^FAILED \S|^ERROR \S+\.py|ERROR collecting|^E {2,}\S|\bAssertionError\b"
            r"|Traceback \(most recent call last\)|\b\d+ failed\b|errors? during collection"
            r"|^\S+\.py:\d+: \w+Error$"
        ),
        "Tests failed on a code or test problem an LLM repair may address.",
    ),
    (
        re.compile(
            r"^\S+\.pyi?:\d+(?::\d+)?: error:|\S+\.py:\d+:\d+ - error:|\berror TS\d+|^error(?:\[E\d+\])?: "
            r"|^\S+\.(?:go|rs|c|cc|cpp|h|hpp|java|kt|swift|cs|ts|tsx|js):\d+(?::\d+)?:? (?:error\b|\w)"
        ),
        "The type checker or compiler reports errors in the code, which an LLM repair may address.",
    ),
    (
        re.compile(
            r"^\S+:\d+:\d+: [A-Z]+\d+ |^\s*--> \S+:\d+:\d+|^Found \d+ errors?\.|\u2716 \d+ problems?"
            r"|would reformat|Would reformat|Imports are incorrectly sorted|Code style issues"
        ),
        "Lint or format findings that no configured fixer repairs; an LLM repair may address them.",
    ),
)
_AGENT_EXIT_CODES = frozenset({1, 2})

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
    rules: Sequence[_Rule], log: DistilledLog, lines: list[str]
) -> tuple[_Rule, list[str]] | None:
    for rule in rules:
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
    category: Category, evidence: Sequence[str], reason: str, fixers: Sequence[str] = ()
) -> Classification:
    return Classification(
        category=category,
        fixers=tuple(fixers),
        evidence=tuple(line[:_MAX_EVIDENCE_CHARS] for line in evidence[:_MAX_EVIDENCE]),
        retryable=category is Category.INFRA,
        owner_action_required=category is Category.HUMAN,
        reason=reason,
    )


def classify(
    log: DistilledLog,
    *,
    fixers: Sequence[Fixer],
    repo: RepoFiles = NoFiles(),  # noqa: B008 - NoFiles is stateless; a shared default is safe.
    job_conclusion: str | None = None,
) -> Classification:
    """Classify one failed job from its distilled log (see the module docstring for the order)."""
    lines = _lines(log)

    human = _apply(_HUMAN_RULES, log, lines)
    if human is not None:
        rule, evidence = human
        return _result(Category.HUMAN, evidence, rule.reason)

    if job_conclusion in _INFRA_CONCLUSIONS:
        return _result(
            Category.INFRA,
            [f"job conclusion: {job_conclusion}", *log.error_lines[:2]],
            f"The job ended as {job_conclusion}, which is the runner's doing, not the code's.",
        )
    infra = _apply(_INFRA_RULES, log, lines)
    if infra is not None:
        rule, evidence = infra
        return _result(Category.INFRA, evidence, rule.reason)
    race = _service_readiness_race(log, lines)
    if race is not None:
        return _result(
            Category.INFRA,
            race,
            "Tests failed only on connection refused to a service the job starts, while others "
            "passed: a readiness race, so re-run (and consider a readiness wait in the workflow).",
        )

    matching = [fixer.name for fixer in fixers if fixer.matches(log, repo)]
    if matching:
        return _result(
            Category.AUTOFIX,
            [*log.error_lines[:_MAX_EVIDENCE]] or [log.command or ""],
            f"Known deterministic fix: {', '.join(matching)}.",
            matching,
        )

    if log.exit_code is None or log.exit_code in _AGENT_EXIT_CODES:
        for pattern, reason in _AGENT_RULES:
            evidence = _matching(pattern, lines)
            if evidence:
                return _result(Category.AGENT, evidence, reason)
    own_import = _own_import_error(log, lines, repo)
    if own_import:
        return _result(
            Category.AGENT,
            own_import,
            "An import of the project's own module fails; an LLM repair may address it.",
        )

    return _result(
        Category.HUMAN,
        list(log.error_lines),
        "No confident classification of this failure; a person should look at it.",
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
