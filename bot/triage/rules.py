"""PR triage core (pure): diff facts, size/area labels, risk flags, agent detection, rendering.

Everything here works on data the caller already fetched (the PR diff or its files-API pages, the
base branch's ``.gitattributes`` and CODEOWNERS, the commit messages from compare, the payload).
Nothing here does I/O. Path patterns use the one matcher in :mod:`bot.triage.codeowners`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Literal, cast

from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchedFile, PatchSet

from bot.github.resources import PullFile
from bot.kernel import JSONObject
from bot.kernel.errors import ConfigError
from bot.kernel.target import JOB_TRAILER
from bot.triage.codeowners import Rule, compile_glob, compile_globs, suggest_reviewers

# --------------------------------------------------------------------------------------------
# Diff facts

FileStatus = Literal["added", "removed", "modified", "renamed", "copied", "changed", "unchanged"]
_API_STATUSES: frozenset[str] = frozenset(
    ("added", "removed", "modified", "renamed", "copied", "changed", "unchanged")
)


@dataclass(frozen=True)
class ChangedFile:
    """What one file of a PR changed.

    ``status`` uses the files API's vocabulary (``changed``: mode or type change only);
    ``binary`` is separate because a binary file can also be added, removed or renamed.
    """

    path: str
    previous_path: str | None
    additions: int
    deletions: int
    status: FileStatus
    binary: bool = False
    generated: bool = False

    @property
    def changes(self) -> int:
        return self.additions + self.deletions


@dataclass(frozen=True)
class DiffFacts:
    """The files parsed from a unified diff, and the ``diff --git`` sections that did not parse.

    A malformed or truncated section does not abort the parse: the other files are still
    reported and the section's header path lands in ``unparsed``. A caller that sees ``partial``
    should fall back to the files API (:func:`files_from_api`) for exact numbers.
    """

    files: tuple[ChangedFile, ...]
    unparsed: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.unparsed)


#: Lockfiles and other files that tools write, excluded from the size at any depth.
WELL_KNOWN_GENERATED: tuple[str, ...] = (
    # Lockfiles.
    "uv.lock",
    "poetry.lock",
    "pdm.lock",
    "Pipfile.lock",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lockb",
    "bun.lock",
    "Cargo.lock",
    "go.sum",
    "composer.lock",
    "Gemfile.lock",
    "Podfile.lock",
    "mix.lock",
    "pubspec.lock",
    "flake.lock",
    "packages.lock.json",
    "gradle.lockfile",
    "Package.resolved",
    "conda-lock.yml",
    # Build and codegen output that Linguist also treats as generated.
    "*.min.js",
    "*.min.css",
    "*.js.map",
    "*.css.map",
    "*.pb.go",
    "*_pb2.py",
    "*_pb2.pyi",
    "*_pb2_grpc.py",
)
_LOCKFILE_NAMES: frozenset[str] = frozenset(p for p in WELL_KNOWN_GENERATED if "*" not in p)

_GITATTR = "linguist-generated"


class GeneratedMatcher:
    """Decides which files are generated and so left out of the size.

    Sources, strongest first:

    1. ``globs`` from Shepherd's config and Prow-style ``.generated_files`` statements
       (``path``, ``file-name``, ``path-prefix``, ``file-prefix``; a bare line is a glob);
       a match always counts as generated;
    2. the base branch's ``.gitattributes``: ``linguist-generated`` / ``=true`` marks,
       ``-linguist-generated`` / ``=false`` un-marks, ``!linguist-generated`` forgets; the last
       matching line wins, with gitattributes pattern semantics (no match inside directories);
    3. :data:`WELL_KNOWN_GENERATED` (lockfiles, minified and protobuf output) at any depth,
       unless step 2 un-marked the file, as Linguist's own overrides do.
    """

    def __init__(
        self,
        *,
        gitattributes: str = "",
        globs: Sequence[str] = (),
        generated_files: str = "",
        well_known: Sequence[str] = WELL_KNOWN_GENERATED,
    ) -> None:
        self._attr_rules = _parse_gitattributes(gitattributes)
        prefixes, file_prefixes, extra_globs = _parse_generated_files(generated_files)
        self._path_prefixes = tuple(prefixes)
        self._file_prefixes = tuple(file_prefixes)
        self._config = compile_globs([*globs, *extra_globs])
        self._well_known = compile_globs(well_known)

    def reason(self, path: str) -> str | None:
        """Why ``path`` is generated (``config``, ``gitattributes``, ``lockfile``,
        ``well-known``), or None when it is not."""
        path = path.lstrip("/")
        if self._config is not None and self._config.match(path):
            return "config"
        if self._path_prefixes and path.startswith(self._path_prefixes):
            return "config"
        base = path.rsplit("/", 1)[-1]
        if self._file_prefixes and base.startswith(self._file_prefixes):
            return "config"
        for regex, value in reversed(self._attr_rules):
            if regex.match(path):
                if value is True:
                    return "gitattributes"
                if value is False:
                    return None
                break  # "!linguist-generated": back to unspecified.
        if self._well_known is not None and self._well_known.match(path):
            return "lockfile" if base in _LOCKFILE_NAMES else "well-known"
        return None

    def is_generated(self, path: str) -> bool:
        return self.reason(path) is not None


def _parse_gitattributes(text: str) -> list[tuple[re.Pattern[str], bool | None]]:
    rules: list[tuple[re.Pattern[str], bool | None]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith('"'):
            # A C-quoted pattern (needed for spaces); unquote the common escapes.
            end = line.find('"', 1)
            while end > 0 and line[end - 1] == "\\":
                end = line.find('"', end + 1)
            if end < 0:
                continue
            pattern = line[1:end].replace('\\"', '"').replace("\\\\", "\\")
            attrs = line[end + 1 :].split()
        else:
            pattern, *attrs = line.split()
        if pattern.startswith("!"):
            continue  # Negative patterns are forbidden in gitattributes; git ignores the line.
        value: bool | Literal["absent"] | None = "absent"
        for attr in attrs:
            if attr in (_GITATTR, f"{_GITATTR}=true", f"{_GITATTR}=1"):
                value = True
            elif attr in (f"-{_GITATTR}", f"{_GITATTR}=false", f"{_GITATTR}=0"):
                value = False
            elif attr == f"!{_GITATTR}":
                value = None
        if value != "absent":
            rules.append((compile_glob(pattern, descendants=False), value))
    return rules


def _parse_generated_files(text: str) -> tuple[list[str], list[str], list[str]]:
    """Prow's ``.generated_files`` statements → (path prefixes, file-name prefixes, globs)."""
    prefixes: list[str] = []
    file_prefixes: list[str] = []
    globs: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) == 1:
            globs.append(fields[0])
            continue
        key, value = fields[0], fields[1]
        if key in ("prefix", "path-prefix"):
            prefixes.append(value.lstrip("/"))
        elif key == "file-prefix":
            file_prefixes.append(value)
        elif key == "file-name":
            globs.append(_escape_glob(value))
        elif key == "path":
            globs.append("/" + _escape_glob(value.lstrip("/")))
        # Unknown keys (and "paths-from-repo", which needs a fetch) are the caller's business.
    return prefixes, file_prefixes, globs


def _escape_glob(text: str) -> str:
    return re.sub(r"([\\*?])", r"\\\1", text)


_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def unquote_git_path(name: str) -> str:
    """Undo git's C-style quoting of unusual paths (``"a/\\303\\251.txt"`` → ``a/é.txt``).

    git quotes names with non-ASCII bytes, quotes or control characters (``core.quotePath``).
    """
    if len(name) < 2 or not (name.startswith('"') and name.endswith('"')):
        return name
    out = bytearray()
    body = name[1:-1]
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            octal = body[i + 1 : i + 4]
            if len(octal) == 3 and all(c in "01234567" for c in octal):
                out.append(int(octal, 8) & 0xFF)
                i += 4
                continue
            if nxt in _C_ESCAPES:
                out.append(_C_ESCAPES[nxt])
                i += 2
                continue
        out.extend(char.encode())
        i += 1
    return out.decode("utf-8", errors="replace")


def _strip_prefix(name: str | None) -> str | None:
    if name is None:
        return None
    name = unquote_git_path(name.rstrip("\t"))
    if name == "/dev/null":
        return None
    if name.startswith(("a/", "b/")):
        return name[2:]
    return name


_DIFF_HEADER = re.compile(r"^diff --git ", re.MULTILINE)
_HEADER_PATHS = re.compile(r'^diff --git "?a/(.*?)"? "?b/(.*?)"?$', re.MULTILINE)
_BINARY_MARKERS = ("\nBinary files ", "\nGIT binary patch")


def diff_facts(diff_text: str, *, generated: GeneratedMatcher) -> DiffFacts:
    """Parse a unified diff (``Accept: application/vnd.github.diff``) into per-file facts.

    Handles renames, copies, binary files (``Binary files … differ`` and ``GIT binary patch``),
    new and deleted files and mode-only changes. Each ``diff --git`` section is parsed on its
    own so that one malformed or truncated section costs only itself (see :class:`DiffFacts`).
    """
    files: list[ChangedFile] = []
    unparsed: list[str] = []
    starts = [m.start() for m in _DIFF_HEADER.finditer(diff_text)]
    if not starts:
        # Not a git diff (plain "--- a/x" / "+++ b/x" output) or empty: one unidiff pass.
        sections = [diff_text] if diff_text.strip() else []
    else:
        if diff_text[: starts[0]].strip():
            unparsed.append("(text before the first diff header)")
        sections = [
            diff_text[a:b] for a, b in zip(starts, [*starts[1:], len(diff_text)], strict=True)
        ]
    for section in sections:
        try:
            patch = PatchSet(section)
        except UnidiffParseError:
            unparsed.append(_section_path(section))
            continue
        if len(patch) == 0:
            unparsed.append(_section_path(section))
            continue
        for patched in patch:
            files.append(_from_patched_file(patched, section, generated))
    return DiffFacts(tuple(files), tuple(unparsed))


def _section_path(section: str) -> str:
    match = _HEADER_PATHS.search(section)
    if match is not None:
        return match.group(2)
    first = section.splitlines()[0] if section else ""
    return first[:200]


def _from_patched_file(
    patched: PatchedFile, section: str, generated: GeneratedMatcher
) -> ChangedFile:
    source = _strip_prefix(patched.source_file)
    target = _strip_prefix(patched.target_file)
    binary = bool(patched.is_binary_file) or any(marker in section for marker in _BINARY_MARKERS)
    # unidiff recounts lines on every access, so read them once.
    additions, deletions = int(patched.added), int(patched.removed)
    status: FileStatus
    if patched.is_added_file:
        status, path, previous = "added", target or unquote_git_path(patched.path), None
    elif patched.is_removed_file:
        status, path, previous = "removed", source or unquote_git_path(patched.path), None
    elif patched.is_rename:
        status, path, previous = "renamed", target or unquote_git_path(patched.path), source
    elif "\ncopy from " in section:
        status, path, previous = "copied", target or unquote_git_path(patched.path), source
    else:
        path, previous = target or unquote_git_path(patched.path), None
        has_content = binary or additions or deletions or len(patched) > 0
        status = "modified" if has_content else "changed"
    return ChangedFile(
        path=path,
        previous_path=previous,
        additions=additions,
        deletions=deletions,
        status=status,
        binary=binary,
        generated=generated.is_generated(path),
    )


def files_from_api(files: Sequence[PullFile], *, generated: GeneratedMatcher) -> list[ChangedFile]:
    """The same facts from ``GET /repos/{owner}/{repo}/pulls/{n}/files`` entries (all pages).

    The API has no binary flag: a file whose ``patch`` is absent and which has no line changes
    while its content changed (added, removed, modified) is taken as binary. An empty new file
    looks the same and is reported binary too; it has no lines, so the size is unaffected.
    """
    result: list[ChangedFile] = []
    for entry in files:
        status = cast(FileStatus, entry.status if entry.status in _API_STATUSES else "modified")
        binary = (
            entry.patch is None
            and entry.additions == 0
            and entry.deletions == 0
            and status in ("added", "removed", "modified")
        )
        result.append(
            ChangedFile(
                path=entry.filename,
                previous_path=entry.previous_filename or None,
                additions=entry.additions,
                deletions=entry.deletions,
                status=status,
                binary=binary,
                generated=generated.is_generated(entry.filename),
            )
        )
    return result


# --------------------------------------------------------------------------------------------
# Size

SIZE_LABELS = ("size/XS", "size/S", "size/M", "size/L", "size/XL", "size/XXL")
#: Prow's defaults (prow/plugins/size): XS < 10 ≤ S < 30 ≤ M < 100 ≤ L < 500 ≤ XL < 1000 ≤ XXL.
DEFAULT_SIZE_THRESHOLDS = (10, 30, 100, 500, 1000)


def size_label(changed_lines: int, thresholds: Sequence[int] = DEFAULT_SIZE_THRESHOLDS) -> str:
    """The size label for ``changed_lines`` (additions + deletions of non-generated files).

    ``thresholds`` are the lower bounds of S, M, L, XL and XXL, strictly increasing, as in
    Prow: a count equal to a threshold is in the larger bucket.
    """
    if len(thresholds) != len(SIZE_LABELS) - 1 or any(b <= a for a, b in pairwise(thresholds)):
        raise ConfigError(f"size thresholds must be 5 strictly increasing numbers: {thresholds!r}")
    for label, threshold in zip(SIZE_LABELS, thresholds, strict=False):
        if changed_lines < threshold:
            return label
    return SIZE_LABELS[-1]


def relabel(
    current: Iterable[str], desired: Iterable[str], *, managed: Iterable[str]
) -> tuple[set[str], set[str]]:
    """(labels to remove, labels to add) so that, among ``managed`` labels, exactly ``desired``
    remain; labels Shepherd does not manage are never touched. Size labels are always managed."""
    current_set, desired_set = set(current), set(desired)
    managed_set = set(managed) | set(SIZE_LABELS)
    to_remove = {
        label
        for label in current_set - desired_set
        if label in managed_set or label.startswith("size/")
    }
    return to_remove, desired_set - current_set


# --------------------------------------------------------------------------------------------
# Areas


def area_labels(paths: Iterable[str], rules: Mapping[str, Sequence[str]]) -> list[str]:
    """Labels whose globs match at least one path, in the order of ``rules``."""
    compiled = [(label, compile_globs(globs)) for label, globs in rules.items()]
    path_list = [p.lstrip("/") for p in paths]
    return [
        label
        for label, regex in compiled
        if regex is not None and any(regex.match(path) for path in path_list)
    ]


# --------------------------------------------------------------------------------------------
# Risk

RiskCode = Literal[
    "ci-config", "dependencies", "migrations", "security", "no-tests", "large-deletion"
]


@dataclass(frozen=True)
class RiskFlag:
    code: RiskCode
    label: str
    reason: str
    paths: tuple[str, ...] = ()


DEFAULT_RISK_LABELS: Mapping[RiskCode, str] = {
    "ci-config": "risk/ci-config",
    "dependencies": "risk/dependencies",
    "migrations": "risk/migrations",
    "security": "risk/security",
    "no-tests": "risk/no-tests",
    "large-deletion": "risk/large-deletion",
}

CI_CONFIG_GLOBS = (
    "/.github/workflows/",
    "/.github/actions/",
    "/.github/dependabot.yml",
    "/.github/dependabot.yaml",
    ".gitlab-ci.yml",
    "/.circleci/",
    "Jenkinsfile",
    "/.pre-commit-config.yaml",
    "/.travis.yml",
    "/azure-pipelines.yml",
    "/.buildkite/",
    "/bitbucket-pipelines.yml",
    "/.drone.yml",
)
DEPENDENCY_GLOBS = (
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "requirements*.txt",
    "requirements/*.txt",
    "constraints*.txt",
    "Pipfile",
    "environment.yml",
    "package.json",
    "Cargo.toml",
    "go.mod",
    "Gemfile",
    "*.gemspec",
    "composer.json",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "*.csproj",
    "Directory.Packages.props",
    *(name for name in WELL_KNOWN_GENERATED if "*" not in name),
)
MIGRATION_GLOBS = (
    "migrations/",
    "alembic/versions/",
    "db/migrate/",
    "**/db/**/*.sql",
)
DEFAULT_SECURITY_GLOBS = (
    "auth/",
    "authn/",
    "authz/",
    "crypto/",
    "security/",
    "*secret*",
    "*password*",
    "*credential*",
    "*.pem",
    "*.key",
    "CODEOWNERS",
    "SECURITY.md",
)
#: Paths that are tests: directories named like tests anywhere, and test-file name conventions.
TEST_GLOBS = (
    "tests/",
    "test/",
    "testing/",
    "__tests__/",
    "spec/",
    "test_*.py",
    "*_test.py",
    "conftest.py",
    "*_test.go",
    "*.test.ts",
    "*.test.tsx",
    "*.test.js",
    "*.test.jsx",
    "*.spec.ts",
    "*.spec.tsx",
    "*.spec.js",
    "*.spec.jsx",
    "*_spec.rb",
    "*_test.rb",
    "*Test.java",
    "*Tests.java",
    "*Test.kt",
    "*_test.rs",
    "*Tests.cs",
    "*Test.php",
)
#: Extensions of files whose change is expected to come with a test change.
SOURCE_SUFFIXES = (
    ".py",
    ".pyx",
    ".js",
    ".jsx",
    ".mjs",
    ".cjs",
    ".ts",
    ".tsx",
    ".go",
    ".rs",
    ".java",
    ".kt",
    ".scala",
    ".rb",
    ".php",
    ".c",
    ".cc",
    ".cpp",
    ".h",
    ".hpp",
    ".cs",
    ".swift",
    ".m",
    ".ex",
    ".exs",
)


def is_test_path(path: str) -> bool:
    return _TEST_REGEX.match(path.lstrip("/")) is not None


def is_source_path(path: str) -> bool:
    return path.endswith(SOURCE_SUFFIXES) and not is_test_path(path)


def _compiled(globs: Sequence[str]) -> re.Pattern[str]:
    regex = compile_globs(globs)
    # An empty list matches nothing.
    return regex if regex is not None else re.compile("(?!)")


_TEST_REGEX = _compiled(TEST_GLOBS)
_CI_REGEX = _compiled(CI_CONFIG_GLOBS)
_DEPENDENCY_REGEX = _compiled(DEPENDENCY_GLOBS)
_MIGRATION_REGEX = _compiled(MIGRATION_GLOBS)


def risk_flags(
    changes: Sequence[ChangedFile],
    *,
    security_paths: Sequence[str] = (),
    large_deletion_lines: int = 500,
    labels: Mapping[RiskCode, str] = DEFAULT_RISK_LABELS,
) -> list[RiskFlag]:
    """Risk flags, in a fixed order. ``security_paths`` extend :data:`DEFAULT_SECURITY_GLOBS`.

    Lockfiles count as dependency changes even though they are excluded from the size;
    ``no-tests`` and ``large-deletion`` look at non-generated files only.
    """

    def flag(code: RiskCode, reason: str, paths: Iterable[str] = ()) -> RiskFlag:
        return RiskFlag(code, labels.get(code, DEFAULT_RISK_LABELS[code]), reason, tuple(paths))

    def touching(regex: re.Pattern[str]) -> list[str]:
        return [
            change.path
            for change in changes
            if regex.match(change.path)
            or (change.previous_path and regex.match(change.previous_path))
        ]

    flags: list[RiskFlag] = []
    ci = touching(_CI_REGEX)
    if ci:
        flags.append(flag("ci-config", "changes CI or workflow configuration", ci))
    deps = touching(_DEPENDENCY_REGEX)
    if deps:
        flags.append(flag("dependencies", "changes dependency manifests or lockfiles", deps))
    migrations = touching(_MIGRATION_REGEX)
    if migrations:
        flags.append(flag("migrations", "changes database migrations", migrations))
    security = touching(_compiled([*DEFAULT_SECURITY_GLOBS, *security_paths]))
    if security:
        flags.append(flag("security", "changes security-sensitive paths", security))

    authored = [c for c in changes if not c.generated]
    sources = [c.path for c in authored if c.status != "removed" and is_source_path(c.path)]
    tests_changed = any(is_test_path(c.path) for c in authored)
    if sources and not tests_changed:
        flags.append(flag("no-tests", "source changed but no test file changed", sources))

    deleted = sum(c.deletions for c in authored)
    if deleted >= large_deletion_lines:
        biggest = sorted((c for c in authored if c.deletions), key=lambda c: -c.deletions)
        flags.append(
            flag(
                "large-deletion",
                f"deletes {deleted} lines (threshold {large_deletion_lines})",
                [c.path for c in biggest],
            )
        )
    return flags


# --------------------------------------------------------------------------------------------
# Trailers and agent detection

_TRAILER_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
#: Keys that make a mostly-prose last paragraph count as trailers (git's "git-generated" rule).
_KNOWN_TRAILER_KEYS = frozenset(
    ("signed-off-by", "co-authored-by", "(cherry picked from commit", "shepherd-job")
)


def parse_trailers(message: str) -> list[tuple[str, str]]:
    """The trailers of a commit message, like ``git interpret-trailers --parse``.

    Trailers are ``Key: value`` lines in the last paragraph (not the subject). Continuation lines
    (starting with whitespace) are folded into the previous value. As in git, the paragraph counts
    if all its lines are trailers, or if at least 25% are and one has a well-known key
    (``Signed-off-by``, ``Co-authored-by``, ...). Keys are returned as written; compare them
    case-insensitively (see :func:`trailer_values`).
    """
    text = message.replace("\r\n", "\n").strip("\n")
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    if len(paragraphs) < 2:
        return []
    lines = paragraphs[-1].split("\n")
    trailers: list[tuple[str, str]] = []
    others = 0
    for line in lines:
        if line[:1] in (" ", "\t") and trailers:
            key, value = trailers[-1]
            trailers[-1] = (key, f"{value} {line.strip()}")
            continue
        match = _TRAILER_LINE.match(line)
        if match is None:
            others += 1
            continue
        trailers.append((match.group(1), match.group(2).strip()))
    if not trailers:
        return []
    if others:
        known = any(key.lower() in _KNOWN_TRAILER_KEYS for key, _ in trailers)
        if not known or len(trailers) * 3 < others:  # fewer than 25% trailer lines
            return []
    return trailers


def trailer_values(message: str, key: str) -> list[str]:
    wanted = key.lower()
    return [value for k, value in parse_trailers(message) if k.lower() == wanted]


AgentKind = Literal["agent", "dependency-bot", "bot", "human"]


@dataclass(frozen=True)
class AgentVerdict:
    """Who wrote the PR. ``is_agent`` is True only for AI coding agents (and Shepherd itself);
    Dependabot/Renovate-style bots are ``kind="dependency-bot"``, other bots ``"bot"``."""

    is_agent: bool
    agent: str | None
    evidence: tuple[str, ...]
    launched_by: str | None
    kind: AgentKind = "human"


@dataclass(frozen=True)
class KnownAgent:
    name: str
    logins: tuple[str, ...] = ()
    #: Regexes searched in a ``Co-authored-by`` value ("Name <email>").
    coauthor: tuple[str, ...] = ()
    #: Literal substrings of the PR body.
    body_markers: tuple[str, ...] = ()
    branch_prefixes: tuple[str, ...] = ()


KNOWN_AGENTS: tuple[KnownAgent, ...] = (
    KnownAgent(
        "GitHub Copilot",
        logins=("Copilot", "copilot-swe-agent[bot]"),
        coauthor=(r"^Copilot <", r"\+Copilot@users\.noreply\.github\.com", r"copilot-swe-agent"),
        body_markers=("START COPILOT CODING AGENT",),
        branch_prefixes=("copilot/",),
    ),
    KnownAgent(
        "Claude",
        logins=("claude[bot]",),
        coauthor=(r"noreply@anthropic\.com", r"claude\[bot\]"),
        body_markers=("Generated with [Claude Code]", "Generated with Claude Code"),
        branch_prefixes=("claude/",),
    ),
    KnownAgent(
        "Codex",
        logins=("chatgpt-codex-connector[bot]", "codex[bot]"),
        coauthor=(r"chatgpt-codex-connector",),
        body_markers=("chatgpt.com/codex",),
        branch_prefixes=("codex/",),
    ),
    KnownAgent(
        "Devin",
        logins=("devin-ai-integration[bot]",),
        coauthor=(r"devin-ai-integration", r"^Devin\b.*devin\.ai"),
        body_markers=("app.devin.ai/sessions",),
        branch_prefixes=("devin/",),
    ),
    KnownAgent(
        "Cursor",
        logins=("cursor[bot]",),
        coauthor=(r"cursoragent@cursor\.com", r"^Cursor Agent\b", r"cursor\[bot\]"),
        body_markers=("cursor.com/background-agent",),
        branch_prefixes=("cursor/",),
    ),
    KnownAgent(
        "OpenHands",
        logins=("openhands-agent", "openhands-ai[bot]", "openhands[bot]"),
        coauthor=(r"openhands@all-hands\.dev", r"openhands-agent"),
        branch_prefixes=("openhands/", "openhands-fix-issue-"),
    ),
    KnownAgent(
        "Sweep",
        logins=("sweep-ai[bot]", "sweep-nightly[bot]"),
        coauthor=(r"sweep-ai", r"sweep@sweep\.dev"),
        body_markers=("sweep.dev",),
        branch_prefixes=("sweep/",),
    ),
)

DEPENDENCY_BOTS = frozenset(
    login.lower()
    for login in (
        "dependabot[bot]",
        "dependabot-preview[bot]",
        "renovate[bot]",
        "renovate-bot",
        "pre-commit-ci[bot]",
        "greenkeeper[bot]",
        "depfu[bot]",
        "snyk-bot",
        "pyup-bot",
        "mend-for-github-com[bot]",
    )
)
#: Bots that co-author commits as plumbing, not as authors (merge-queue, formatting workflows).
_PLUMBING_BOTS = frozenset(("github-actions[bot]", "web-flow"))

SHEPHERD_AGENT = "Shepherd"
CONFIGURED_AGENT = "configured agent"

_NOREPLY_LOGIN = re.compile(r"<(?:\d+\+)?([A-Za-z0-9-]+(?:\[bot\])?)@users\.noreply\.github\.com>")


def _code(text: str, limit: int = 120) -> str:
    """Hostile text (branch names, trailers, paths) as a safe markdown code span."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).replace("`", "'")
    cleaned = cleaned.replace("<!--", "<!-")
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "…"
    return f"`{cleaned}`"


def _known_by_login(login: str) -> KnownAgent | None:
    lowered = login.lower()
    for agent in KNOWN_AGENTS:
        if lowered in (candidate.lower() for candidate in agent.logins):
            return agent
    return None


def detect_agent(
    *,
    author_login: str,
    author_type: str,
    body: str | None,
    commit_messages: Sequence[str],
    head_ref: str | None,
    configured_logins: Sequence[str] = (),
    shepherd_login: str = "shepherd[bot]",
) -> AgentVerdict:
    """Decide whether a PR was written by an AI coding agent, and show why.

    Signals, strongest first: the author's login (a known agent, Shepherd, a configured login),
    ``Co-authored-by`` trailers of known agents or of any other ``[bot]`` account (one commit
    is enough), a ``Shepherd-Job`` trailer on every commit (Shepherd's fix commits on someone
    else's PR do not make it an agent PR), PR body markers, branch prefixes. The verdict's ``agent`` is the
    one with the strongest signal; ``evidence`` lists every signal found.

    ``launched_by`` is the human who started the agent when the PR shows it: the human author of
    a PR co-authored by an agent, or a human ``Co-authored-by`` with a GitHub noreply address
    on an agent-authored PR. Otherwise None, and the caller falls back to the assignee/config.
    """
    login = author_login.strip()
    lowered = login.lower()
    is_bot_account = author_type.lower() == "bot" or lowered.endswith("[bot]")
    configured = {c.lower() for c in configured_logins}
    evidence: list[str] = []
    candidates: list[str] = []  # agent names, strongest signal first
    known = _author_signals(login, shepherd_login, configured, candidates, evidence)
    human_coauthors = _commit_signals(commit_messages, candidates, evidence)
    _text_signals(body, head_ref, candidates, evidence)

    if lowered in DEPENDENCY_BOTS and not candidates:
        return AgentVerdict(
            False, None, (f"author {_code(login)} is a dependency bot",), None, "dependency-bot"
        )
    if candidates:
        if not is_bot_account and known is None and lowered not in configured:
            launched_by: str | None = login  # a human opened the PR the agent helped write
        else:
            launched_by = human_coauthors[0] if human_coauthors else None
        return AgentVerdict(True, candidates[0], tuple(evidence), launched_by, "agent")
    if is_bot_account:
        return AgentVerdict(False, None, (f"author {_code(login)} is a bot account",), None, "bot")
    return AgentVerdict(False, None, (), None, "human")


def _author_signals(
    login: str,
    shepherd_login: str,
    configured: set[str],
    candidates: list[str],
    evidence: list[str],
) -> KnownAgent | None:
    """The author's login: Shepherd, a known agent, a configured one. Returns the known agent."""
    lowered = login.lower()
    if lowered == shepherd_login.lower():
        candidates.append(SHEPHERD_AGENT)
        evidence.append(f"author is Shepherd ({_code(login)})")
    known = _known_by_login(login)
    if known is not None:
        candidates.append(known.name)
        evidence.append(f"author {_code(login)} is {known.name}")
    if lowered in configured:
        candidates.append(CONFIGURED_AGENT if known is None else known.name)
        evidence.append(f"author {_code(login)} is listed as an agent in the config")
    return known


def _commit_signals(
    commit_messages: Sequence[str], candidates: list[str], evidence: list[str]
) -> list[str]:
    """Agent ``Co-authored-by`` trailers and Shepherd-only commits. Returns the human
    co-authors with a GitHub noreply address (who may have launched the agent)."""
    human_coauthors: list[str] = []
    shepherd_commits = 0
    for message in commit_messages:
        trailers = parse_trailers(message)
        if any(key.lower() == JOB_TRAILER.lower() for key, _ in trailers):
            shepherd_commits += 1
        for key, value in trailers:
            if key.lower() != "co-authored-by":
                continue
            agent = _agent_for_coauthor(value)
            if agent is not None:
                _add(candidates, agent)
                _add(evidence, f"commit trailer {_code(f'{key}: {value}')}")
                continue
            noreply = _NOREPLY_LOGIN.search(value)
            if noreply is not None and not noreply.group(1).lower().endswith("[bot]"):
                _add(human_coauthors, noreply.group(1))
    # Shepherd's fix commits land on other people's PRs too; only a PR made of nothing but
    # Shepherd commits is Shepherd's own.
    if commit_messages and shepherd_commits == len(commit_messages):
        _add(candidates, SHEPHERD_AGENT)
        evidence.append(f"every commit carries a {_code(JOB_TRAILER)} trailer")
    return human_coauthors


def _text_signals(
    body: str | None, head_ref: str | None, candidates: list[str], evidence: list[str]
) -> None:
    """Known agents' markers in the PR body and prefixes of the head branch."""
    if body:
        for agent_def in KNOWN_AGENTS:
            for marker in agent_def.body_markers:
                if marker in body:
                    _add(candidates, agent_def.name)
                    _add(evidence, f"PR body contains {_code(marker)}")
    if head_ref:
        for agent_def in KNOWN_AGENTS:
            if head_ref.startswith(agent_def.branch_prefixes):
                _add(candidates, agent_def.name)
                _add(evidence, f"branch {_code(head_ref)}")


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


def _agent_for_coauthor(value: str) -> str | None:
    for agent in KNOWN_AGENTS:
        if any(re.search(pattern, value, re.IGNORECASE) for pattern in agent.coauthor):
            return agent.name
    noreply = _NOREPLY_LOGIN.search(value)
    if noreply is not None:
        bot = noreply.group(1).lower()
        if bot.endswith("[bot]") and bot not in DEPENDENCY_BOTS and bot not in _PLUMBING_BOTS:
            return noreply.group(1)
    return None


# --------------------------------------------------------------------------------------------
# The triage result

AGENT_LABEL = "agent-authored"


@dataclass(frozen=True)
class TriageConfig:
    """The triage part of the repository config, already validated by the config loader."""

    size_thresholds: tuple[int, ...] = DEFAULT_SIZE_THRESHOLDS
    area_rules: Mapping[str, Sequence[str]] = field(default_factory=dict)
    security_paths: tuple[str, ...] = ()
    large_deletion_lines: int = 500
    risk_labels: Mapping[RiskCode, str] = field(default_factory=lambda: dict(DEFAULT_RISK_LABELS))
    agent_logins: tuple[str, ...] = ()
    shepherd_login: str = "shepherd[bot]"
    agent_label: str = AGENT_LABEL
    # Agent policy (checked for agent PRs only).
    require_tests: bool = False
    max_changed_lines: int | None = None
    forbid_github_dir: bool = False


@dataclass(frozen=True)
class PullFacts:
    """The PR facts agent detection and reviewer suggestion need, from the payload and compare."""

    author_login: str
    author_type: str = "User"
    body: str | None = None
    commit_messages: tuple[str, ...] = ()
    head_ref: str | None = None


@dataclass(frozen=True)
class Triage:
    files: int
    additions: int
    deletions: int
    #: Additions + deletions of non-generated files: what the size label measures.
    changed_lines: int
    excluded: tuple[str, ...]
    size: str
    areas: tuple[str, ...]
    risks: tuple[RiskFlag, ...]
    agent: AgentVerdict
    reviewers: tuple[str, ...]
    policy_findings: tuple[str, ...] = ()
    changes: tuple[ChangedFile, ...] = ()
    partial: bool = False
    agent_label: str = AGENT_LABEL

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels this triage wants on the PR: size, areas, risks, agent."""
        labels = [self.size, *self.areas, *(flag.label for flag in self.risks)]
        if self.agent.is_agent:
            labels.append(self.agent_label)
        return tuple(dict.fromkeys(labels))

    def as_json(self) -> JSONObject:
        """The triage part of the JSON outcome (per-file details left out; paths capped)."""
        return {
            "files": self.files,
            "additions": self.additions,
            "deletions": self.deletions,
            "changed_lines": self.changed_lines,
            "excluded": list(self.excluded[:_JSON_PATHS]),
            "excluded_count": len(self.excluded),
            "size": self.size,
            "areas": list(self.areas),
            "risks": [
                {
                    "code": flag.code,
                    "label": flag.label,
                    "reason": flag.reason,
                    "paths": list(flag.paths[:_JSON_PATHS]),
                }
                for flag in self.risks
            ],
            "agent": {
                "kind": self.agent.kind,
                "is_agent": self.agent.is_agent,
                "name": self.agent.agent,
                "evidence": list(self.agent.evidence),
                "launched_by": self.agent.launched_by,
            },
            "reviewers": list(self.reviewers),
            "policy_findings": list(self.policy_findings),
            "labels": list(self.labels),
            "partial": self.partial,
        }


_JSON_PATHS = 50


def managed_labels(config: TriageConfig) -> frozenset[str]:
    """Every label triage may set, so stale ones can be removed on re-triage."""
    return frozenset(
        (*SIZE_LABELS, *config.area_rules, *config.risk_labels.values(), config.agent_label)
    )


def triage(
    changes: Sequence[ChangedFile],
    pull: PullFacts,
    *,
    config: TriageConfig | None = None,
    codeowners: Sequence[Rule] = (),
    partial: bool = False,
) -> Triage:
    """Tie the pieces together from already-fetched inputs."""
    config = config or TriageConfig()
    counted = [c for c in changes if not c.generated]
    changed_lines = sum(c.changes for c in counted)
    paths = [c.path for c in changes]
    agent = detect_agent(
        author_login=pull.author_login,
        author_type=pull.author_type,
        body=pull.body,
        commit_messages=pull.commit_messages,
        head_ref=pull.head_ref,
        configured_logins=config.agent_logins,
        shepherd_login=config.shepherd_login,
    )
    result = Triage(
        files=len(changes),
        additions=sum(c.additions for c in changes),
        deletions=sum(c.deletions for c in changes),
        changed_lines=changed_lines,
        excluded=tuple(c.path for c in changes if c.generated),
        size=size_label(changed_lines, config.size_thresholds),
        areas=tuple(area_labels(paths, config.area_rules)),
        risks=tuple(
            risk_flags(
                changes,
                security_paths=config.security_paths,
                large_deletion_lines=config.large_deletion_lines,
                labels=config.risk_labels,
            )
        ),
        agent=agent,
        reviewers=tuple(
            suggest_reviewers(paths, codeowners, exclude={pull.author_login, config.shepherd_login})
        ),
        changes=tuple(changes),
        partial=partial,
        agent_label=config.agent_label,
    )
    findings = agent_policy_findings(
        result,
        require_tests=config.require_tests,
        max_changed_lines=config.max_changed_lines,
        forbid_github_dir=config.forbid_github_dir,
    )
    return replace(result, policy_findings=tuple(findings))


def agent_policy_findings(
    t: Triage, *, require_tests: bool, max_changed_lines: int | None, forbid_github_dir: bool
) -> list[str]:
    """One line per failing agent-policy check; empty for human PRs and when all pass."""
    if not t.agent.is_agent:
        return []
    findings: list[str] = []
    no_tests = next((flag for flag in t.risks if flag.code == "no-tests"), None)
    if require_tests and no_tests is not None:
        findings.append(
            f"Tests required: source changed ({_paths(no_tests.paths)}) but no test file changed."
        )
    if max_changed_lines is not None and t.changed_lines > max_changed_lines:
        findings.append(
            f"Too large for an agent PR: {t.changed_lines} changed lines "
            f"(limit {max_changed_lines})."
        )
    if forbid_github_dir:
        github_paths = [
            c.path
            for c in t.changes
            if c.path.startswith(".github/") or (c.previous_path or "").startswith(".github/")
        ]
        if github_paths:
            findings.append(f"Agent PRs may not change .github/: {_paths(github_paths)}.")
    return findings


def _paths(paths: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(_code(p) for p in paths[:limit])
    more = len(paths) - limit
    return f"{shown} and {more} more" if more > 0 else shown


def render_triage_markdown(t: Triage) -> str:
    """The triage section: one headline saying what the PR is, then a short list."""
    headline = [
        f"**{t.size}**",
        f"{t.files} file{'s' if t.files != 1 else ''}, +{t.additions} −{t.deletions}"
        + (
            f" ({len(t.excluded)} generated file{'s' if len(t.excluded) != 1 else ''} excluded)"
            if t.excluded
            else ""
        ),
    ]
    if t.agent.is_agent:
        headline.append(f"agent: {t.agent.agent}")
    elif t.agent.kind == "dependency-bot":
        headline.append("dependency bot")
    if t.risks:
        headline.append("risk: " + ", ".join(flag.code for flag in t.risks))
    lines = [" · ".join(headline), ""]

    if t.partial:
        lines.append("- Some of the diff could not be parsed; the numbers may be incomplete.")
    if t.areas:
        lines.append("- Areas: " + ", ".join(t.areas))
    for flag in t.risks:
        lines.append(
            f"- Risk **{flag.code}**: {flag.reason}"
            + (f" ({_paths(flag.paths)})" if flag.paths else "")
        )
    if t.agent.is_agent:
        evidence = "; ".join(t.agent.evidence)
        lines.append(f"- Agent: {t.agent.agent} ({evidence})")
        if t.agent.launched_by:
            lines.append(f"- Launched by: @{t.agent.launched_by}")
    for finding in t.policy_findings:
        lines.append(f"- ❌ {finding}")
    if t.reviewers:
        lines.append("- Suggested reviewers: " + ", ".join(t.reviewers))
    if t.excluded:
        lines.append("- Excluded from size: " + _paths(t.excluded))
    return "\n".join(lines).rstrip() + "\n"
