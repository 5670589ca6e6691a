"""CI job-log reading and distillation (pure, no I/O).

``read_log`` normalises the forms a job log reaches Shepherd in (see ``JobText``) to the runner's
own form: ``##[group]Run …`` step headers, ``##[error]`` lines, timestamps optional. Other CI
systems' logs (Travis, GitLab, a plain transcript) are cleaned and their steps found from their
``$ command`` prompts and exit-status lines.

``distill_steps`` turns a log into one ``DistilledLog`` per failed step, in log order: the step,
its command, working directory and exit code, and an excerpt of its output bounded to a few KB
however large the log is. ``distill`` keeps the older single-result form (the last failed step).

The excerpt is chosen line by line within a byte budget: the failure lines first (errors,
assertion diffs, the failing test's name, the summary line and the exit-code line), then the
context around them, then the rest; help text, ``PASSED`` lines, licence banners and progress
output last. Identical lines are shown once with a count. Omitted runs of lines are marked
``… [N lines omitted] …``; a single omitted line is shown instead of a marker. The budget is kept
exactly, and no marker or word is ever cut to fit it.

The log is untrusted text written partly by the pull request's own code: it is only ever searched
with precompiled regular expressions and ``str.find``, never evaluated, and every line shown is
stripped of terminal control sequences and length-capped. A step can fake step boundaries by
printing ``::group::Run …`` (the runner turns that into ``##[group]Run …``); that can only mislead
the distillation of its own job, whose workflow the same author controls anyway.

Speed: logs reach hundreds of thousands of lines. In the runner's raw form nothing loops in Python
over every line: markers are found with ``str.find``, and a step's output is split into lines only
when it is small, otherwise its head, its tail and the lines around a few error keywords are cut
out by offset. The other forms are normalised in one pass over the lines (linear).

Format reference: ``../shared/scenarios/real-logs/SOURCES.md``.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "ERROR_LINE",
    "EXCERPT_BYTES",
    "SET_UP_JOB",
    "DistilledLog",
    "JobText",
    "clean_line",
    "distill",
    "distill_steps",
    "is_error_line",
    "read_log",
]

#: The step name GitHub shows for everything before a job's first step (runner set-up, action
#: downloads); a failure there is reported as this step.
SET_UP_JOB = "Set up job"


@dataclass(frozen=True)
class DistilledLog:
    """What one failed step of a job says, in a few KB however large the log was."""

    #: Name of the failing step: the ``##[group]Run …`` header without ``Run `` (the raw log does
    #: not carry the workflow's ``name:``), e.g. ``black --check .`` or ``actions/github-script@v7``;
    #: ``Set up job`` for a failure before the first step; None when the log shows no step.
    step: str | None
    #: The failing step's command (the lines after ``##[group]Run`` up to the shell/env lines).
    #: None for a ``uses:`` step (see ``action``): there is no shell command to re-run.
    command: str | None
    #: ``working-directory`` of the failing step when the log shows one, else None.
    working_directory: str | None
    #: Exit code from ``##[error]Process completed with exit code N.`` (or the CI system's own
    #: exit-status line), if present.
    exit_code: int | None
    #: The failure lines with their context: ANSI stripped, timestamps dropped, deduplicated.
    excerpt: str
    #: Lines of the excerpt that look like errors (for evidence and annotations), plus
    #: ``##[error]`` lines of the job outside its failed steps.
    error_lines: tuple[str, ...] = field(default_factory=tuple)
    #: Size of the whole log this step was read from.
    raw_bytes: int = 0
    distilled_bytes: int = 0
    #: Estimated tokens of the excerpt (~4 characters per token).
    est_tokens: int = 0
    #: The action reference (``actions/github-script@v7``) when the failing step is a ``uses:`` step.
    action: str | None = None
    #: Output lines of the failing step that the excerpt leaves out (0: the excerpt is complete).
    omitted_lines: int = 0
    #: The job's name when the log says it (``Complete job name: lint``, or the job column of
    #: ``gh run view --log``), else None.
    job: str | None = None
    #: Commands the step's package scripts ran, as npm, pnpm and yarn echo them (``> prettier
    #: --check .``): the tool behind ``npm run lint`` that a fixer may recognise.
    scripts: tuple[str, ...] = ()

    @property
    def commands(self) -> str:
        """The step's command and the commands its package scripts ran, one per line: what a
        fixer looks for its tool in."""
        return "\n".join(c for c in (self.command, *self.scripts) if c)


@dataclass(frozen=True)
class JobText:
    """One job's log, normalised to the runner's own form (timestamps optional).

    ``form`` says what it was read from: ``raw`` (the API's job log or the log archive's files:
    ``2026-11-17T07:02:44.9032795Z `` prefixes, ``##[group]``/``##[error]`` markers), ``gh-view``
    (``gh run view --log[-failed]``: job and step columns before the timestamp, one job per
    column value), ``web`` (text copied from the web UI: ``Run …`` headers and ``Error: …``
    lines, no markers, sometimes line numbers) or ``plain`` (another CI system's log or a bare
    transcript, cleaned of terminal control and CI fold markers).
    """

    name: str | None
    text: str
    form: str
    #: ``gh-view`` only: the step column of the first line, for a log that starts mid-step.
    first_step: str | None = None


# ``2026-11-17T07:02:44.9032795Z `` — 7 fractional digits from the API, but copies and other
# runners differ (none, 3, 9 digits, an offset instead of Z); an empty output line may lose its
# trailing space in copies.
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d) ?")
# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks) and two-byte escapes.
_ANSI = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_]|\([0-9A-B])"
)
# What is left of colour codes when a copy dropped the ESC byte (LogChunks, some pastes).
_ANSI_REMNANT = re.compile(r"\[\d{1,3}(?:;\d{1,3})*m|\[[012]K")
# Control characters left after ANSI removal: a hostile log must not drive a reader's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")
# CI bookkeeping at the start of a line: Travis folds and timers, GitLab sections.
_CI_MARKERS = re.compile(
    r"^(?:(?:travis_(?:fold|time):(?:start|end):[^\s\[\x1b]*|section_(?:start|end):\d+:[\w.-]+)"
    r"(?:\x1b\[0?K|\[0?K)?)+"
)

#: The excerpt's size: about a screenful and a half. The failure lines, their context and the
#: summary, which is what a reviewer reads and what the LLM is given first (it can read files
#: itself). On the shared scenarios it keeps every line the classifier relies on and is 95 %
#: smaller than the log; on the real-log bench it keeps the labelled failure chunk's lines.
EXCERPT_BYTES = 3072

# Runner markers. Secret masking sometimes mangles the ``]`` into ``***`` (actions/runner#2468).
_MARKER = re.compile(
    r"##\[(group|endgroup|error|warning|notice|debug|command|section)(?:\]|\*\*\*)"
)
_EXIT_CODE = re.compile(r"Process completed with exit code (-?\d+)\.")
_ACTION_REF = re.compile(r"(?:[\w.-]+/[\w./-]+@[\w./-]+|\./[\w./-]+|docker://\S+)")
# Post steps and the job's end follow the last real step; they are not part of it.
_JOB_TAIL = ("Post job cleanup.", "Cleaning up orphan processes")
# Lines the runner prints while setting up a job, before its first step.
_SET_UP_LINES = (
    "Current runner version",
    "Prepare workflow directory",
    "Getting action download info",
    "Download action repository",
    "Download immutable action package",
    "Complete job name:",
)
_JOB_NAME = "Complete job name: "

# ---------------------------------------------------------------------------------------------
# Line kinds. Every rendered line gets one; the excerpt is filled in order of kind.

#: Lines that look like errors: kept in excerpts with priority and reported as ``error_lines``.
#: Besides tool errors this covers every signal the classifier uses (timeouts, disk, rate limits,
#: secrets, resolver conflicts), so those survive the distillation of a long step. A word that
#: is part of an option or a name (``-Werror``, ``-file-line-error``, ``perl-error``) is not an
#: error; neither is a zero count (``0 failed``, ``Errors: 0``), nor a warning.
ERROR_LINE = re.compile(
    r"(?<![-\w./=])(?:error|errors|fatal|failed|failure|failures|failing|fail|fails)(?![-\w])"
    r"|\bERR!|^E {2,}|(?-i:\w(?:Error|Exception)\b)|Traceback \(most|\bFAIL\b|\bFAILED\b"
    r"|panicked at|\bpanic:|Segmentation fault|\bKilled\b|Test Failed at|Error During Test"
    r"|^\s*(?:✗|✘|×|✖|✕|❌|●)\s|^\s*\[-\] |^\s*not ok \d|^--- FAIL"
    r"|would reformat|\d+ fixable|Oh no!|Imports are incorrectly sorted"
    r"|Code style issues|needs to be updated|timed out|refused|reset by peer|rate limit"
    r"|x-ratelimit-(?:remaining|reset)|retry-after"
    r"|No space left|ENOSPC|ECONN|ETIMEDOUT|EAI_AGAIN|Could not resolve|name resolution"
    r"|ResolutionImpossible|conflicting|secrets? (?:detected|found)|Potential secrets|Secret Type"
    r"|leaks? found|shutdown signal|lost communication|was canceled|denied|^\[warn\]"
    # file:line lines; of pytest's traceback frames (``path:N: in func``) only the project's
    # own (relative paths), where the error came from, not the interpreter's or site-packages'.
    r"|^(?!/)\S+:\d+(?::\d+)?: |^/\S+:\d+(?::\d+)?: (?!in )|--> \S+:\d+|^(?:---|\+\+\+) \S"
    r"|\.java:\[\d+,\d+\]",
    re.IGNORECASE,
)
# Failure lines that name what failed: a failing test, an exception, a compiler or tool error.
# The first of these starts the excerpt's main block.
_STRONG = re.compile(
    r"\bFAIL(?:ED)?\b|\bfailed on line\b|Test Failed at|Error During Test|panicked at|\bpanic:"
    r"|Traceback \(most recent|^E {2,}\S|\b[A-Z]\w*(?:Error|Exception)\b(?=:|$|\s+(?:at|in)\b|\))"
    r"|(?<!\w)(?:[a-z]+\.)+\w*(?:Error|Exception)\b|^\s*(?:✗|✘|×|✖|✕|❌|●)\s|^\s*\[-\] "
    r"|^\s*not ok \d|^--- FAIL|\b(?:error|ERROR)(?:\[E\d+\])?:|\bError: |^\[error\] \S+:\d+"
    r"|COMPILATION ERROR|What went wrong|Execution failed for task|\bfatal(?: error)?:"
    r"|\.java:\[\d+,\d+\]|Segmentation fault|\bERR! (?!code E|errno|Exit status|\S+@\S+ )"
    r"|^\S+:\d+(?::\d+)?: (?:error|[A-Z]+\d+) "
)
# Lines that only report that something failed (the exit of make, npm, yarn, the CI system):
# part of the summary, not the cause.
_CONSEQUENCE = re.compile(
    r"^make(?:\[\d+\])?: \*\*\* |recipe for target .* failed|Error \d+ \(ignored\)"
    r"|^npm ERR! (?:code ELIFECYCLE|errno -?\d|Failed at the|Exit status \d|\S+@\S+ \S+: `)"
    r"|^error Command failed with exit code|^ERROR: \"[^\"]+\" exited with"
    r"|^FAILURE: Build failed with an exception|^\[ERROR\] Failed to execute goal"
    r"|^The command \".*\" exited with|^Done\. Your build exited with|^\" exited with"
    r"|^ERROR: Job failed: exit code|^Exited with code"
)
# A count of zero is not a failure: removed before ``ERROR_LINE`` looks at a line.
_ZERO_COUNT = re.compile(
    r"\b0 (?:failed|failures?|errors?|failing)\b|\b(?:failed|failures?|errors?)[:=]\s*0\b"
    r"|\bno (?:errors?|failures?)\b|\bwithout errors?\b",
    re.IGNORECASE,
)
# Messages that say what went wrong without the word "error": secondary failure lines.
_MESSAGE = re.compile(
    r"\b(?:cannot|can't|could not|couldn't|unable to|not found|no such file|is not defined"
    r"|undefined (?:method|variable|reference|symbol|local|index)|unexpected|invalid|missing"
    r"|not available|not installed|does not exist|doesn't exist|is not a member|not permitted"
    r"|expected .{0,60}(?:got|but|to (?:be|equal))|mismatch|should be|wrong version"
    r"|Expected:|Actual\s*:|assert(?:ion)?\b|did not (?:pass|match|succeed))",
    re.IGNORECASE,
)
# Lines that continue an explanation: a stack frame, a diff line, a location arrow. Context of
# an error rather than errors of their own.
_CONTINUATION = re.compile(
    r"^\s+at \S|^\s*File \"|^\s+\[\d+\] |^\s*@ \S|^\s*Caused by|^\s*\.\.\. \d+ more"
    r"|^E {2,}(?! |[\w.]*(?:Error|Exception)\b|assert\b)|^\s*--> |^(?:---|\+\+\+) |^\s*\|"
    r"|^\s*\d+ \|"
)
# Summary lines: taken before anything else.
_SUMMARY = re.compile(
    r"\b[1-9]\d* (?:failed|failing|failures?|errors?|problems?|broken)\b"
    r"|\bBUILD FAIL(?:ED|URE)\b|\btest result: FAILED|\bFailures: [1-9]"
    r"|Some tests (?:failed|did not pass)|COMPILATION ERROR|\bFound [1-9]\d* errors?"
    r"|\d+ tests? completed, [1-9]\d* failed|\+\d+ -[1-9]\d*: |^FAILED \(|Tests? Summary"
    r"|would be reformatted|fixable with",
    re.IGNORECASE,
)
_EXIT_LINE = re.compile(r"^Error: Process completed with exit code -?\d+\.$")
# Help, passing tests, licence banners, progress: shown last, never as a failure.
_NOISE = re.compile(
    # advice printed after the failure
    r"-> \[Help \d+\]|\[Help \d+\] http|Re-run Maven using|re-run Maven with|To see the full stack"
    r"|For more information about the errors|After correcting the problems|mvn <args>"
    r"|^\* Try:|^> Run with --(?:stacktrace|info|debug|scan)|^\* Get more help at"
    r"|Run with --(?:stacktrace|info|debug|scan) option|A complete log of this run can be found"
    r"|_logs/\S+-debug(?:-\d+)?\.log$|This is probably not a problem with npm"
    r"|^info Visit https://yarnpkg|Use --trace for backtrace|for documentation about this command"
    # passing and skipped tests
    r"|(?-i:\b(?:PASSED|SKIPPED)\b)|^\s*(?:✓|✔|√)\s|^\s*ok \d+ |^ok\s+\S+\s+[\d.]+s$"
    r"|\.{3,} ?(?:ok|passed|SUCCESS|skipped)\b|\bSUCCESS \[|\bTests run: \d+, Failures: 0, Errors: 0"
    r"|\s(?-i:OK|ok|PASS|PASSED)\s*$"
    # licence banners from version output
    r"|WITHOUT ANY WARRANTY|This is free software|General Public License|NO\s+warranty"
    r"|Copyright \(C\) \d{4}|see the source for copying conditions|Permission is hereby granted"
    # progress and downloads
    r"|^\s*(?:Downloading|Downloaded|Fetching|Collecting|Requirement already satisfied"
    r"|Receiving objects|Resolving deltas|Unpacking objects|Progress \()\b"
    r"|^> Task :\S+(?: (?:UP-TO-DATE|NO-SOURCE|SKIPPED|FROM-CACHE))?$|^\s*\d{1,3}%\s*$",
    re.IGNORECASE,
)
# A warning is context, whatever words it uses.
_WARNING = re.compile(
    r"^\s*(?:\[WARN(?:ING)?\]|WARN(?:ING)?\b|Warning:|warning:|\w+ WARN |\[warn\] (?!Code style))"
    r"|^\S+:\d+(?::\d+)?:? (?:warning|Warning|WARNING)\b"
)
_HAS_WORDS = re.compile(r"[A-Za-z]{2}")
# Error-looking lines that are structure rather than errors: kept as context, not reported.
_STRUCTURE_ONLY = re.compile(r"^(?:---|\+\+\+) \S")

# A test runner's verdict on one test (or task), at the start of its report: the failure the
# excerpt is built around.
_VERDICT = re.compile(
    r"^\s*(?:FAIL(?:ED)?\b(?!:? *\d)|--- FAIL\b|not ok \d|(?:✗|✘|×|✖|✕|❌|●)\s|\[-\] |FAIL: |ERROR: test)"
    r"|\S \bFAILED$|<<< (?:FAILURE|ERROR)!"
)

# Kinds, in increasing priority.
_NOISE_KIND = 0
_PLAIN = 1
_CONTEXT = 2
_MESSAGE_KIND = 3
_ERROR = 4
_STRONG_KIND = 5
_VERDICT_KIND = 6
_SUMMARY_KIND = 7
_EXIT = 8


# Python's regular expressions try every alternative at every position, which is slow for
# these long lists; a line is first screened for the words they need (a superset, in C speed).
_NOISE_WORDS = (
    "help", "maven", "full stack", "the errors", "correcting", "mvn", "try:", "run with",
    "complete log", "-debug", "npm", "yarnpkg", "--trace", "documentation", "passed", "skipped",
    "✓", "✔", "√",
    "ok", "success", "tests run", "warranty", "free software", "license", "copyright", "copying",
    "permission", "download", "fetching", "collecting", "requirement", "receiving", "resolving",
    "unpacking", "progress", "> task", "%",
)  # fmt: skip
_ERROR_WORDS = (
    "err", "fail", "fatal", "panic", "exception", "traceback", "segmentation", "killed", "✗",
    "✘", "×", "✖", "✕", "❌", "●", "[-]", "not ok", "reformat", "fixable", "oh no",
    "incorrectly sorted", "code style", "needs to be updated", "timed out", "refused",
    "reset by peer", "rate limit", "ratelimit", "retry-after", "no space", "enospc", "econn",
    "etimedout", "eai_again", "could not resolve", "name resolution", "resolutionimpossible",
    "conflicting", "secret", "leak", "shutdown signal", "lost communication", "canceled",
    "denied", "[warn]", "-->", ".java:[", "what went wrong", "<<<", "problem", "broken",
    "summary", "make", "recipe", "ignored", "exited with", "the command", "your build",
)  # fmt: skip
_MESSAGE_WORDS = (
    "cannot", "can't", "could not", "couldn't", "unable to", "not found", "no such file",
    "not defined", "undefined", "unexpected", "invalid", "missing", "not available",
    "not installed", "exist", "not a member", "not permitted", "expected", "mismatch",
    "should be", "wrong version", "actual", "assert", "did not",
)  # fmt: skip
_FILE_LINE = re.compile(r"\S+:\d+")
_FLUTTER_COUNTS = re.compile(r"\+\d+ -[1-9]")


def _kind(line: str) -> int:
    """How much a rendered line says about the failure (see the ``_*KIND`` constants)."""
    if not line or not _HAS_WORDS.search(line):
        return _PLAIN if line.strip() else _NOISE_KIND
    if _EXIT_LINE.match(line):
        return _EXIT
    low = line.lower()
    if any(w in low for w in _NOISE_WORDS) and _NOISE.search(line):
        return _NOISE_KIND
    if _WARNING.match(line):
        return _PLAIN
    if _CONTINUATION.match(line):
        # A stack frame or a diff line, unless it is itself a failure summary.
        return _SUMMARY_KIND if "fail" in low and _SUMMARY.search(line) else _CONTEXT
    if (
        any(w in low for w in _ERROR_WORDS)
        or line.startswith(("E  ", "---", "+++"))
        or _FILE_LINE.match(line)
        or _FLUTTER_COUNTS.search(line)
    ):
        probe = line
        if ("0" in line or "no " in low or "without" in low) and _ZERO_COUNT.search(line):
            probe = _ZERO_COUNT.sub("", line)
        if _CONSEQUENCE.search(probe) or _SUMMARY.search(probe):
            return _SUMMARY_KIND
        if _VERDICT.search(line):
            return _VERDICT_KIND
        if _STRONG.search(probe):
            return _STRONG_KIND
        if ERROR_LINE.search(probe):
            return _ERROR
    if any(w in low for w in _MESSAGE_WORDS) and _MESSAGE.search(line):
        return _MESSAGE_KIND
    return _PLAIN


def is_error_line(line: str) -> bool:
    """Whether a rendered line looks like an error (not a zero count, advice, a banner, a warning)."""
    if _EXIT_LINE.match(line):
        return True
    return _kind(line) >= _ERROR and not _STRUCTURE_ONLY.match(line)


# ---------------------------------------------------------------------------------------------
# Lines

# A line longer than this is cut (with a count): the message is at its start, and a few long
# lines must not crowd the others out of the excerpt.
_MAX_LINE_CHARS = 240
_MAX_RAW_LINE_CHARS = 8 * _MAX_LINE_CHARS


def _strip_terminal(text: str, *, ci_markers: bool = False) -> str:
    """A line without terminal control: ANSI sequences, carriage-return rewrites, control bytes
    (and, with ``ci_markers``, another CI system's fold and timer markers)."""
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if "\r" in text:
        # Progress bars rewrite the line with carriage returns; a terminal shows the last segment.
        segments = [s for s in text.split("\r") if s.strip()]
        text = segments[-1] if segments else ""
    if ci_markers and text.startswith(("travis_", "section_")):
        text = _CI_MARKERS.sub("", text)
    if "[" in text:
        text = _ANSI_REMNANT.sub("", text)
    return _CONTROL.sub("", text).rstrip()


def clean_line(text: str) -> str:
    """A log line as shown to people and models: no ANSI/control characters, length-capped.

    A long line is cut at a word boundary where there is one, with the count of what was cut.
    """
    return _capped(*_cleaned(text))


def _cleaned(text: str) -> tuple[str, int]:
    """The line without terminal control, and how many characters were cut off a giant line
    before the regexes saw it (the cost stays bounded whatever the log holds)."""
    overflow = max(0, len(text) - _MAX_RAW_LINE_CHARS)
    if overflow:
        text = text[:_MAX_RAW_LINE_CHARS]
    return _strip_terminal(text), overflow


def _capped(text: str, overflow: int = 0) -> str:
    if len(text) > _MAX_LINE_CHARS or overflow:
        cut = _MAX_LINE_CHARS
        space = text.rfind(" ", 0, cut + 1)
        if space > cut * 3 // 4:
            cut = space
        extra = max(0, len(text) - cut) + overflow
        text = f"{text[:cut].rstrip()}…[+{extra} chars]"
    return text


def _body(line: str) -> str:
    """A raw log line without its timestamp prefix."""
    m = _TIMESTAMP.match(line)
    return line[m.end() :] if m is not None else line


def _render(body: str) -> tuple[str, int] | None:
    """How a line reads in the excerpt, before it is capped, with the count of characters cut
    off a giant line (None: runner bookkeeping, left out)."""
    if body.startswith("##["):
        m = _MARKER.match(body)
        if m is not None:
            kind, rest = m.group(1), body[m.end() :]
            if kind in ("error", "warning", "notice"):
                return _cleaned(f"{kind.capitalize()}: {rest}")
            if kind == "group":
                return _cleaned(rest)
            return None
    return _cleaned(body)


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


# ---------------------------------------------------------------------------------------------
# Reading: one pure normaliser for every form a log arrives in

# ``gh run view --log``: ``job<TAB>step<TAB>[BOM]timestamp text``; pasted into a document the
# tabs often become runs of spaces.
# Both are found left to right in one pass (a gap starts after a non-space, so a long run of
# spaces is not tried from each of its positions): a hostile line costs its length, no more.
_GH_VIEW_STAMP = re.compile(r"(?<! )(?:\t| {2,}+)\ufeff?(?=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")
_COLUMN_GAP = re.compile(r"(?<! )(?:\t| {2,}+)")
# Job and step names are short: the columns end within this many characters.
_GH_VIEW_COLUMNS = 400
# The web UI shows ``##[group]Run x`` as ``Run x`` and ``##[error]x`` as ``Error: x``.
_WEB_SIGNS = re.compile(
    r"^\s*Error: Process completed with exit code -?\d+\.\s*$"
    r"|^Run \S[^\n]*\n(?:[^\n]*\n){0,60}?\s*shell: \S",
    re.MULTILINE,
)
_WEB_RUN = re.compile(r"^Run (\S.*)$")
_WEB_MARKER = re.compile(r"^(Error|Warning|Notice): ")
_WEB_RUNNER_ERROR = re.compile(
    r"^Error: (?:Process completed with exit code -?\d+\.|The runner has received a shutdown"
    r"|The operation was canceled|The job running on runner)"
)
# Line numbers the web UI puts before each line in some copies (alone, or as a markdown link).
_WEB_LINE_NUMBER = re.compile(r"^\s*(?:\d{1,7}|\[\d{1,7}\]\(https?://\S+#step:\d+:\d+\))\s*$")
_HEADER_KEY = re.compile(r"^\s{2,}[\w.-]+:(?: |$)")


def read_log(raw: str | bytes) -> list[JobText]:
    """Normalise a job log, whatever form it came in, to one ``JobText`` per job (pure)."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    # Slicing the BOM off also lets CPython store a pure-ASCII log one byte per character.
    if text.startswith("\ufeff"):
        text = text[1:]
    head = text[:4096]
    first_lines = [line for line in head.split("\n")[:6] if line.strip()]
    if first_lines and all(_gh_view_columns(line) for line in first_lines[:3]):
        return _read_gh_view(text)
    if "##[" in text or (first_lines and _TIMESTAMP.match(first_lines[0])):
        if "##[" not in text and _WEB_SIGNS.search(text):
            return [JobText(None, _read_web(text), "web")]
        return [JobText(None, text, "raw")]
    if _WEB_SIGNS.search(text):
        return [JobText(None, _read_web(text), "web")]
    return [JobText(None, _read_plain(text), "plain")]


def _gh_view_columns(line: str) -> tuple[str, str, str] | None:
    """(job, step, the rest) of a ``gh run view --log`` line, or None."""
    stamp = _GH_VIEW_STAMP.search(line, 0, _GH_VIEW_COLUMNS)
    if stamp is None:
        return None
    gap = _COLUMN_GAP.search(line, 0, stamp.start())
    if gap is None:
        return None
    return line[: gap.start()], line[gap.end() : stamp.start()], line[stamp.end() :]


def _read_gh_view(text: str) -> list[JobText]:
    """Split ``gh run view --log`` output by its job column and drop the two columns."""
    jobs: dict[str, list[str]] = {}
    first_step: dict[str, str] = {}
    current: list[str] | None = None
    for line in text.split("\n"):
        columns = _gh_view_columns(line)
        if columns is not None:
            job, step, body = columns
            if job not in jobs:
                jobs[job] = []
                first_step[job] = step
            current = jobs[job]
            current.append(body)
        elif current is not None:
            current.append(line)
        elif line.strip():
            jobs.setdefault("", []).append(line)
            current = jobs[""]
    return [
        JobText(name or None, "\n".join(lines), "gh-view", first_step.get(name) or None)
        for name, lines in jobs.items()
    ]


def _read_web(text: str) -> str:
    """Text copied from the web UI, back in the runner's form: markers instead of ``Run x``."""
    lines = [_body(line.rstrip("\r")) for line in text.split("\n")]
    numbered = sum(1 for line in lines if _WEB_LINE_NUMBER.match(line))
    if numbered * 3 >= sum(1 for line in lines if line.strip()):
        lines = [line for line in lines if not _WEB_LINE_NUMBER.match(line)]
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        m = _WEB_RUN.match(line)
        if m is not None:
            end = _web_header_end(lines, i + 1)
            if end > i + 1:
                header = lines[i + 1 : end]
                indent = min((len(h) - len(h.lstrip()) for h in header if h.strip()), default=0)
                out.append(f"##[group]Run {m.group(1)}")
                out += [h[indent:] for h in header]
                out.append("##[endgroup]")
                i = end
                continue
        if _WEB_RUNNER_ERROR.match(line):
            line = "##[error]" + line[len("Error: ") :]
        out.append(line)
        i += 1
    return "\n".join(out)


def _web_header_end(lines: Sequence[str], start: int) -> int:
    """Where the header under a web UI ``Run x`` line ends (``start``: there is none)."""
    shell = next(
        (
            j
            for j in range(start, min(len(lines), start + 60))
            if lines[j].lstrip().startswith("shell: ")
        ),
        -1,
    )
    if shell >= 0 and not any(
        _WEB_RUN.match(lines[j]) or _WEB_MARKER.match(lines[j]) for j in range(start, shell)
    ):
        j = shell + 1
    elif start < len(lines) and (
        lines[start].strip() in ("with:", "env:") or _HEADER_KEY.match(lines[start])
    ):
        j = start
    else:
        return start
    base = len(lines[start]) - len(lines[start].lstrip())
    while j < len(lines):
        line = lines[j]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        header_key = stripped in ("with:", "env:") or stripped.startswith("working-directory:")
        if not header_key and not (stripped and indent > base):
            break
        j += 1
    return j


def _read_plain(text: str) -> str:
    """Another CI system's log: terminal control and CI fold markers removed, line by line."""
    out: list[str] = []
    for line in text.split("\n"):
        if len(line) > _MAX_RAW_LINE_CHARS * 4:
            line = line[: _MAX_RAW_LINE_CHARS * 4]
        out.append(_strip_terminal(line, ci_markers=True))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Steps


@dataclass
class _Step:
    title: str | None
    #: Offsets into the log text: the group line, the header, the output, the end.
    start: int
    header_start: int
    header_end: int = -1
    out_start: int = -1
    end: int = -1
    exit_code: int | None = None
    has_error: bool = False
    #: Set when the command is known without a header (a transcript's ``$ command``).
    command: str | None = None


@dataclass(frozen=True)
class _Event:
    offset: int
    next_line: int
    kind: str
    rest: str


def _events(text: str) -> list[_Event]:
    """Runner markers and job-tail lines, in order, found without visiting every line."""
    events: list[_Event] = []
    pos = text.find("##[")
    while pos >= 0:
        start = text.rfind("\n", 0, pos) + 1
        end = _line_end(text, pos)
        prefix = text[start:pos]
        if not prefix or _TIMESTAMP.fullmatch(prefix):
            m = _MARKER.match(text, pos, end)
            if m is not None:
                rest = text[m.end() : end].rstrip("\r")
                events.append(_Event(start, end + 1, m.group(1), rest))
        pos = text.find("##[", end)
    for tail in _JOB_TAIL:
        pos = text.find(tail)
        while pos >= 0:
            start = text.rfind("\n", 0, pos) + 1
            end = _line_end(text, pos)
            prefix = text[start:pos]
            if text[pos:end].rstrip() == tail and (not prefix or _TIMESTAMP.fullmatch(prefix)):
                events.append(_Event(start, end + 1, "tail", tail))
            pos = text.find(tail, end)
    events.sort(key=lambda e: e.offset)
    return events


@dataclass(frozen=True)
class _Parsed:
    steps: list[_Step]
    errors: list[_Event]


def _leading_header_end(text: str, events: Sequence[_Event]) -> _Event | None:
    """The ``##[endgroup]`` that closes a step header the log starts in the middle of.

    A log cut at its start (a ``--log-failed`` excerpt, a pasted tail) may begin inside a step's
    header: script lines, ``shell:``, ``with:``/``env:`` entries, then ``##[endgroup]``.
    """
    first = next((e for e in events if e.kind in ("group", "endgroup")), None)
    if first is None or first.kind != "endgroup":
        return None
    lines = [_body(line.rstrip("\r")) for line in text[: first.offset].split("\n")[-400:]]
    if any(
        line.startswith(("shell: ", "with:", "env:")) or _HEADER_KEY.match(line) for line in lines
    ):
        return first
    return None


def _parse(text: str, events: list[_Event]) -> _Parsed:
    """Steps are ``##[group]Run …`` groups and the output after their ``##[endgroup]``."""
    steps: list[_Step] = []
    errors: list[_Event] = []
    current: _Step | None = None
    in_header = False
    leading = _leading_header_end(text, events)
    if leading is not None:
        current = _Step(title=None, start=0, header_start=0, header_end=leading.offset)
        current.out_start = leading.next_line
        steps.append(current)
    for ev in events:
        if leading is not None and ev.offset <= leading.offset:
            continue
        if ev.kind == "group" and ev.rest.startswith("Run "):
            if current is not None and current.end < 0:
                current.end = ev.offset
            current = _Step(title=ev.rest[4:].strip(), start=ev.offset, header_start=ev.next_line)
            steps.append(current)
            in_header = True
        elif current is None and ev.kind == "error" and not steps:
            # A failure before the first step: the job's set-up, or a log cut at its start.
            set_up = any(text.find(s, 0, ev.offset) >= 0 for s in _SET_UP_LINES)
            current = _Step(title=SET_UP_JOB if set_up else None, start=0, header_start=0)
            current.header_end = current.out_start = 0
            steps.append(current)
            _record_error(current, ev, errors, text)
        elif current is None or current.end >= 0:
            if ev.kind == "error":
                errors.append(ev)
        elif ev.kind == "endgroup" and in_header:
            in_header = False
            current.header_end = ev.offset
            current.out_start = ev.next_line
        elif ev.kind == "tail" and not in_header:
            current.end = ev.offset
        elif ev.kind == "error":
            _record_error(current, ev, errors, text)
            if current.exit_code is not None:
                in_header = False
    for step in steps:
        if step.end < 0:
            step.end = len(text)
        if step.header_end < 0:
            # No ``##[endgroup]``: a malformed or truncated log; treat it all as output.
            step.header_end = step.out_start = step.header_start
        step.out_start = min(step.out_start, step.end)
    return _Parsed(steps=steps, errors=errors)


def _record_error(step: _Step, ev: _Event, errors: list[_Event], text: str) -> None:
    errors.append(ev)
    step.has_error = True
    code = _EXIT_CODE.match(ev.rest)
    if code is not None:
        step.exit_code = int(code.group(1))
        # The runner prints this as the step's last line.
        step.end = min(ev.next_line, len(text))


# Another CI system's transcript: ``$ command`` prompts and exit-status lines.
_PROMPT = re.compile(r"^\$ (\S.*)$", re.MULTILINE)
_EXIT_STATUS = re.compile(
    r'^(?:(?:The command "(?P<command>.*))?" exited with (?P<travis>-?\d+)\.'
    r"|ERROR: Job failed: exit code (?P<gitlab>\d+)"
    r"|Exited with code (?:exit status )?(?P<circle>\d+))\s*$",
    re.MULTILINE,
)


def _transcript(text: str) -> _Parsed:
    """The failed commands of a plain transcript, each from its prompt to its exit status."""
    prompts = [(m.start(), m.end() + 1, m.group(1).strip()) for m in _PROMPT.finditer(text)]
    starts = [p[0] for p in prompts]
    steps: list[_Step] = []
    for m in _EXIT_STATUS.finditer(text):
        code = int(m.group("travis") or m.group("gitlab") or m.group("circle") or 0)
        if code == 0:
            continue
        before = bisect.bisect_left(starts, m.start())
        candidates = prompts[max(0, before - 50) : before]
        wanted = (m.group("command") or "").strip()
        prompt = next((p for p in reversed(candidates) if wanted and p[2] == wanted), None)
        if prompt is None and candidates:
            prompt = candidates[-1]
        if prompt is None:
            step = _Step(title=wanted or None, start=0, header_start=0, command=wanted or None)
            step.header_end = step.out_start = 0
        else:
            step = _Step(
                title=prompt[2], start=prompt[0], header_start=prompt[0], command=prompt[2]
            )
            step.header_end = prompt[0]
            step.out_start = min(prompt[1], len(text))
        step.end = min(_line_end(text, m.start()) + 1, len(text))
        step.exit_code = code
        step.has_error = True
        if steps and steps[-1].start == step.start:
            steps[-1] = step
        else:
            steps.append(step)
    if not steps and prompts:
        # No failed exit status: the log ends inside its last command (a cut-off transcript of a
        # failed job), so that command is the one that failed.
        last = prompts[-1]
        step = _Step(title=last[2], start=last[0], header_start=last[0], command=last[2])
        step.header_end = last[0]
        step.out_start = min(last[1], len(text))
        step.end = len(text)
        step.has_error = True
        steps.append(step)
    return _Parsed(steps=steps, errors=[])


@dataclass(frozen=True)
class _Header:
    command: str | None
    action: str | None
    working_directory: str | None


def _parse_header(text: str, step: _Step) -> _Header:
    """Command lines come before ``shell:``; a ``uses:`` step has ``with:``/``env:`` and no shell."""
    if step.command is not None:
        return _Header(step.command, None, None)
    header = text[step.header_start : step.header_end].split("\n", _MAX_HEADER_LINES)
    command: list[str] = []
    working_directory: str | None = None
    seen_shell = False
    for raw in header[:_MAX_HEADER_LINES]:
        body = _body(raw.rstrip("\r"))
        # Script lines are echoed wrapped in ESC[36;1m … ESC[0m; the runner's own lines are not,
        # which tells ``shell: …`` in a script apart from the real one.
        echoed = body.startswith("\x1b[")
        line = clean_line(body)
        if not echoed and line.startswith("working-directory:"):
            working_directory = line.partition(":")[2].strip() or None
        elif seen_shell:
            continue
        elif not echoed and line.startswith("shell: "):
            seen_shell = True
        elif not echoed and line in ("with:", "env:") and not command:
            break
        else:
            command.append(line)
    if seen_shell:
        while command and not command[-1].strip():
            command.pop()
        while command and not command[0].strip():
            command.pop(0)
        return _Header("\n".join(command) or step.title, None, working_directory)
    if step.title is None:
        return _Header(None, None, working_directory)
    action = step.title if _ACTION_REF.fullmatch(step.title) else None
    return _Header(None, action or step.title, working_directory)


_MAX_HEADER_LINES = 400
# When no step carries an error marker, the last step whose final lines look like a failure is
# taken as the failed one (an action that failed without ``##[error]``).
_UNMARKED_TAIL_LINES = 30


def _unmarked_failure(text: str, steps: Sequence[_Step]) -> _Step | None:
    for step in reversed(steps):
        region = text[step.out_start : step.end]
        tail = region[-16_384:].split("\n")[-_UNMARKED_TAIL_LINES:]
        if any(_kind(_cleaned(_body(line))[0]) >= _ERROR for line in tail):
            return step
    return None


# ---------------------------------------------------------------------------------------------
# Candidate lines of a step's output


@dataclass
class _Lines:
    """Output lines to choose from; ``gaps[k]`` raw lines were already dropped before line k."""

    text: list[str] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    #: What each line says about the failure (``_kind`` of the whole line, before capping).
    kinds: list[int] = field(default_factory=list)
    #: Raw lines dropped after the last line.
    trailing: int = 0

    def add(self, rendered: tuple[str, int] | None, gap: int) -> None:
        if rendered is None:
            return
        full, overflow = rendered
        line = _capped(full, overflow)
        if self.text and gap == 0:
            last = self.text[-1]
            if not line.strip() and not last.strip():
                return  # one blank line stands for a run of them
            if line.strip() and _base(last) == line:
                # Consecutive duplicates become one line with a count.
                self.text[-1] = f"{line} (×{_count(last) + 1})"
                return
        self.text.append(line)
        self.gaps.append(gap)
        self.kinds.append(_kind(full))


_COUNT_SUFFIX = re.compile(r" \(×(\d+)\)$")


def _base(line: str) -> str:
    return _COUNT_SUFFIX.sub("", line) if line.endswith(")") else line


def _count(line: str) -> int:
    m = _COUNT_SUFFIX.search(line) if line.endswith(")") else None
    return int(m.group(1)) if m is not None else 1


def _short_output(region: str) -> _Lines:
    lines = _Lines()
    for raw in region.split("\n"):
        lines.add(_render(_body(raw)), 0)
    return lines


# Above this many characters a step's output is cut by offset instead of split into lines.
_LONG_STEP_CHARS = 200_000
_LONG_HEAD_LINES = 40
_LONG_TAIL_LINES = 200
_KEYWORD_HITS_PER_END = 150
# In a long step only these (lower-case) words are searched for over the whole output; the line
# kinds are worked out for the head, the tail and the lines found. Each is one C-speed scan.
_LONG_STEP_KEYWORDS = (
    "error",
    "fail",
    "traceback",
    "exception",
    "fatal",
    "panic",
    "timed out",
    "refused",
    "no space left",
)


def _long_output(region: str) -> _Lines:
    """Head, tail and the lines around a few error keywords of a long output, by offset."""
    starts = _head_and_tail(region)
    for start in _keyword_lines(region.lower()):
        starts.update(_around(region, start))
    return _lines_at(region, sorted(starts))


def _head_and_tail(region: str) -> set[int]:
    """The offsets where the output's first and last lines start."""
    n = len(region)
    starts: set[int] = set()
    pos = 0
    for _ in range(_LONG_HEAD_LINES):
        if pos >= n:
            break
        starts.add(pos)
        pos = _line_end(region, pos) + 1
    end = n
    for _ in range(_LONG_TAIL_LINES):
        if end <= 0:
            break
        start = region.rfind("\n", 0, end - 1) + 1
        starts.add(start)
        end = start
    return starts


def _keyword_lines(lower: str) -> set[int]:
    """The offsets where lines with an error keyword start: the first and the last hits of each."""
    keyword_lines: set[int] = set()
    for keyword in _LONG_STEP_KEYWORDS:
        pos = lower.find(keyword)
        for _ in range(_KEYWORD_HITS_PER_END):
            if pos < 0:
                break
            start = lower.rfind("\n", 0, pos) + 1
            keyword_lines.add(start)
            pos = lower.find(keyword, _line_end(lower, pos))
        pos = lower.rfind(keyword)
        for _ in range(_KEYWORD_HITS_PER_END):
            if pos < 0:
                break
            start = lower.rfind("\n", 0, pos) + 1
            keyword_lines.add(start)
            pos = lower.rfind(keyword, 0, max(0, start - 1)) if start > 0 else -1
    return keyword_lines


def _around(region: str, start: int) -> set[int]:
    """The line at ``start`` with three lines before it and six after."""
    starts = {start}
    before = start
    for _ in range(3):
        if before <= 0:
            break
        before = region.rfind("\n", 0, before - 1) + 1
        starts.add(before)
    after = start
    for _ in range(6):
        after = _line_end(region, after) + 1
        if after >= len(region):
            break
        starts.add(after)
    return starts


def _lines_at(region: str, ordered: list[int]) -> _Lines:
    """The lines starting at these offsets, with the count of lines left out between them."""
    lines = _Lines()
    previous_end = 0
    for start in ordered:
        gap = region.count("\n", previous_end, start)
        if gap == 1:
            # A single dropped line is shown rather than marked as omitted.
            hole_end = _line_end(region, previous_end)
            lines.add(_render(_body(region[previous_end:hole_end])), 0)
            gap = 0
        stop = _line_end(region, start)
        previous_end = stop + 1
        rendered = _render(_body(region[start:stop]))
        if rendered is None:
            continue
        lines.add(rendered, gap)
    lines.trailing = region.count("\n", previous_end, len(region))
    if lines.trailing == 1:
        lines.add(_render(_body(region[previous_end : _line_end(region, previous_end)])), 0)
        lines.trailing = 0
    return lines


def _strip_blank_edges(lines: _Lines) -> None:
    while lines.text and not lines.text[-1].strip():
        lines.text.pop()
        lines.gaps.pop()
        lines.kinds.pop()
    first = 0
    while first < len(lines.text) and not lines.text[first].strip():
        first += 1
    if first:
        dropped = sum(lines.gaps[:first])
        del lines.text[:first], lines.gaps[:first], lines.kinds[:first]
        if lines.gaps:
            lines.gaps[0] += dropped


# Scripts run by package managers, as they echo them: npm/pnpm print ``> pkg@1.0.0 name`` and
# then ``> command``; npm 6 repeats the command in its error (``npm ERR! pkg@1.0.0 name:
# `command```); yarn 1 prints ``$ command``.
_NPM_HEADER = re.compile(r"^> \S+@\S*(?: \S+)+$")
_NPM_COMMAND = re.compile(r"^> (\S.*)$")
_NPM_ERR_SCRIPT = re.compile(r"^npm ERR!\s*\S+@\S+ [\w:.-]+: `(.+)`$")
_YARN_COMMAND = re.compile(r"^\$ (\S.*)$")
_MAX_SCRIPTS = 10


def _scripts(lines: Sequence[str]) -> tuple[str, ...]:
    found: list[str] = []
    previous = ""
    for line in lines:
        m = _NPM_COMMAND.match(line) if _NPM_HEADER.match(previous) else None
        m = m or _NPM_ERR_SCRIPT.match(line) or _YARN_COMMAND.match(line)
        command = _base(m.group(1)) if m is not None else None
        if command and command not in found:
            found.append(command)
            if len(found) >= _MAX_SCRIPTS:
                break
        previous = line
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# Excerpt


def _cost(line: str) -> int:
    return (len(line) if line.isascii() else len(line.encode("utf-8"))) + 1


def _marker(omitted: int) -> str:
    return f"… [{omitted} lines omitted] …"


class _Pick:
    """The chosen lines and the exact size of the excerpt they make, markers included.

    Between two chosen lines the omitted lines cost a marker, or the line itself when only one
    is omitted (it is shown then: a one-line marker says less than the line).
    """

    def __init__(self, lines: _Lines, budget: int) -> None:
        self.text = lines.text
        self.kinds = lines.kinds
        self.n = len(lines.text)
        self.costs = [_cost(t) for t in lines.text]
        # dropped[k]: raw lines dropped before line k (k == n: the trailing ones).
        self.dropped_before = [0] * (self.n + 1)
        total = 0
        for k, gap in enumerate(lines.gaps):
            total += gap
            self.dropped_before[k] = total
        self.dropped_before[self.n] = total + lines.trailing
        self.budget = budget
        self.sorted: list[int] = []
        self.chosen = bytearray(self.n)
        self.used = self._gap_cost(-1, self.n)

    def _omitted(self, a: int, b: int) -> tuple[int, int]:
        """(lines in the candidate list, raw lines dropped) strictly between a and b."""
        dropped = self.dropped_before[b] - (self.dropped_before[a] if a >= 0 else 0)
        # A gap recorded on a chosen line a belongs before a, not after it.
        return b - a - 1, dropped

    def _gap_cost(self, a: int, b: int) -> int:
        listed, dropped = self._omitted(a, b)
        total = listed + dropped
        if total == 0 or (total == 1 and listed == 0):
            # (A single raw line dropped unseen cannot be shown; ``_long_output`` keeps those.)
            return 0
        if total == 1:
            return self.costs[a + 1]
        return _cost(_marker(total))

    def _neighbours(self, k: int) -> tuple[int, int]:
        pos = bisect.bisect_left(self.sorted, k)
        a = self.sorted[pos - 1] if pos > 0 else -1
        b = self.sorted[pos] if pos < len(self.sorted) else self.n
        return a, b

    def take(self, k: int, limit: int | None = None) -> bool:
        if self.chosen[k]:
            return True
        a, b = self._neighbours(k)
        delta = self._gap_cost(a, k) + self.costs[k] + self._gap_cost(k, b) - self._gap_cost(a, b)
        if self.used + delta > min(self.budget, limit if limit is not None else self.budget):
            return False
        bisect.insort(self.sorted, k)
        self.chosen[k] = 1
        self.used += delta
        return True

    def retext(self, k: int, line: str, limit: int | None = None) -> bool:
        """Show line k as ``line`` (a count added), if the budget allows."""
        if self.text[k] == line:
            return True
        old = self.costs[k]
        new = _cost(line)
        if not self.chosen[k]:
            a, b = self._neighbours(k)
            before = self._gap_cost(a, b)
            self.costs[k] = new
            delta = self._gap_cost(a, b) - before
        else:
            delta = new - old
        if self.used + delta > min(self.budget, limit if limit is not None else self.budget):
            self.costs[k] = old
            return False
        self.costs[k] = new
        self.text[k] = line
        self.used += delta
        return True

    def render(self) -> tuple[str, int]:
        out: list[str] = []
        omitted = 0
        previous = -1
        for k in [*self.sorted, self.n]:
            listed, dropped = self._omitted(previous, k)
            total = listed + dropped
            if total == 1 and listed == 1:
                out.append(self.text[previous + 1])
            elif total > 1:
                out.append(_marker(total))
            omitted += total - (1 if total == 1 and listed == 1 else 0)
            if k < self.n:
                out.append(self.text[k])
            previous = k
        return "\n".join(out), omitted


@dataclass(frozen=True)
class _Excerpt:
    text: str
    omitted: int


# Shares of the budget the phases of ``_select`` may fill up to: the first failure's block
# (when there are two, the test verdict's block within the smaller share), then every other
# failure line.
_FIRST_BLOCK_SHARE = 0.6
_VERDICT_BLOCK_SHARE = 0.8
_ERRORS_SHARE = 0.8
_FIRST_BLOCK_LINES = 80
_CONTEXT_STEPS = (1, 2, 4, 8)
_HEADER_LINES = 8
_SUMMARY_LINES = 3


def _select(lines: _Lines, budget: int) -> _Excerpt:
    """Fit the lines into ``budget`` bytes, most telling first (see the module docstring)."""
    text = lines.text
    n = len(text)
    if not any(lines.gaps) and not lines.trailing:
        total = sum(_cost(line) for line in text)
        if total <= budget + 1:
            return _Excerpt("\n".join(text), 0)
    kinds = lines.kinds
    pick = _Pick(lines, budget)
    limit_first = int(budget * _FIRST_BLOCK_SHARE)
    summaries = [k for k in range(n) if kinds[k] == _SUMMARY_KIND]
    tiers = [
        [k for k in range(n) if kinds[k] == kind]
        for kind in (_VERDICT_KIND, _STRONG_KIND, _ERROR, _MESSAGE_KIND)
    ]
    _take_ending(pick, summaries, limit_first // 2)
    _take_first_failure(pick, tiers, limit_first)
    taken, seen = _take_failure_lines(pick, tiers, summaries, int(budget * _ERRORS_SHARE))
    _widen(pick, taken, seen)
    _take_rest(pick)
    excerpt, omitted = pick.render()
    return _Excerpt(_fit_bytes(excerpt, budget), omitted)


def _take_ending(pick: _Pick, summaries: list[int], limit: int) -> None:
    """1. The exit line and the last summary lines: how the step ended."""
    n = pick.n
    for k in range(n - 1, max(-1, n - 6), -1):
        if pick.kinds[k] == _EXIT:
            pick.take(k)
    for k in reversed(summaries[-_SUMMARY_LINES:]):
        pick.take(k, limit)


def _take_first_failure(pick: _Pick, tiers: list[list[int]], limit: int) -> None:
    """2. The first failure, as a block: the first test verdict and, when the first failure
    line of another kind is elsewhere, that one too (a traceback before a summary)."""
    firsts = [tier[0] for tier in tiers if tier]
    if tiers[0] and len(firsts) > 1:
        # The verdict first, within its share, then the other block up to the whole share.
        _take_block(pick, pick.kinds, firsts[0], int(limit * _VERDICT_BLOCK_SHARE))
        if not pick.chosen[firsts[1]]:
            _take_block(pick, pick.kinds, firsts[1], limit)
    elif firsts:
        _take_block(pick, pick.kinds, firsts[0], limit)


def _take_failure_lines(
    pick: _Pick, tiers: list[list[int]], summaries: list[int], limit: int
) -> tuple[list[int], set[str]]:
    """3. Every other failure line once (repeats counted), strongest first. Returns the lines
    taken so far and the texts shown."""
    text = pick.text
    seen: set[str] = {_base(text[k]) for k in pick.sorted}
    occurrences: Counter[str] = Counter()
    for k in [*summaries, *(k for tier in tiers for k in tier)]:
        occurrences[_base(text[k])] += _count(text[k])
    taken: list[int] = list(pick.sorted)
    # Round robin over the kinds, so that a long list of failing tests' names does not crowd
    # out the one message they share.
    queues = [list(reversed(tier)) for tier in (tiers[0], tiers[1], tiers[2], summaries, tiers[3])]
    while any(queues):
        for queue in queues:
            while queue:
                k = queue.pop()
                base = _base(text[k])
                if pick.chosen[k] or base in seen:
                    continue
                if pick.take(k, limit):
                    seen.add(base)
                    taken.append(k)
                    break
    counted: set[str] = set()
    for k in sorted(taken):
        base = _base(text[k])
        if occurrences[base] > 1 and base not in counted and _count(text[k]) < occurrences[base]:
            counted.add(base)
            pick.retext(k, f"{base} (×{occurrences[base]})")
    return sorted(taken), seen


def _widen(pick: _Pick, taken: list[int], seen: set[str]) -> None:
    """4. Widen the context around what was taken while the budget lasts, skipping lines
    repeated from earlier failures and noise."""
    text, kinds, n = pick.text, pick.kinds, pick.n
    for radius in _CONTEXT_STEPS:
        for k in taken:
            for c in range(max(0, k - radius), min(n, k + radius + 1)):
                if pick.chosen[c] or kinds[c] == _NOISE_KIND:
                    continue
                if len(text[c]) >= 8 and _base(text[c]) in seen:
                    continue
                if pick.take(c):
                    seen.add(_base(text[c]))


def _take_rest(pick: _Pick) -> None:
    """5. Whatever is left: the tail backwards and the head forwards as far as they fit, noise
    last."""
    for wanted_noise in (False, True):
        for order in (range(pick.n - 1, -1, -1), range(pick.n)):
            for k in order:
                if pick.chosen[k] or (pick.kinds[k] == _NOISE_KIND) != wanted_noise:
                    continue
                if not pick.take(k):
                    break


def _take_block(pick: _Pick, kinds: Sequence[int], first: int, limit: int) -> None:
    """Line ``first``, what follows it until two blank lines or a noise line, and the lines that
    lead up to it (a test's diff or source before its verdict), within ``limit``."""
    text = pick.text
    n = len(text)
    if not pick.take(first, limit):
        return
    k = first + 1
    blanks = 0
    while k < n and k <= first + _FIRST_BLOCK_LINES:
        if (kinds[k] == _NOISE_KIND and text[k].strip()) or kinds[k] == _VERDICT_KIND:
            break  # advice, or the next test's report
        blanks = blanks + 1 if not text[k].strip() else 0
        if blanks >= 2 or not pick.take(k, limit):
            break
        k += 1
    blanks = 0
    for h in range(first - 1, max(-1, first - 1 - _HEADER_LINES), -1):
        if kinds[h] == _NOISE_KIND and text[h].strip():
            break
        blanks = blanks + 1 if not text[h].strip() else 0
        if blanks >= 2 or kinds[h] >= _VERDICT_KIND or not pick.take(h, limit):
            break


def _fit_bytes(text: str, budget: int) -> str:
    """Hard bound, at line granularity: drop middle lines for one marker, never cutting one."""
    if len(text.encode("utf-8")) <= budget:
        return text
    lines = text.split("\n")
    while len(lines) > 2:
        del lines[len(lines) // 2]
        candidate = [*lines[: len(lines) // 2], "… [lines omitted] …", *lines[len(lines) // 2 :]]
        joined = "\n".join(candidate)
        if len(joined.encode("utf-8")) <= budget:
            return joined
    joined = "\n".join(lines)
    data = joined.encode("utf-8")
    if len(data) <= budget:
        return joined
    # Two lines longer than the budget (only with a budget near its minimum): the last one, cut
    # at a space.
    last = lines[-1].encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    space = last.rfind(" ")
    return last[:space] if space > 0 else last


# ---------------------------------------------------------------------------------------------

_MAX_ERROR_LINES = 40
_MAX_OUTSIDE_ERRORS = 10


def distill_steps(
    raw: str | bytes, *, max_excerpt_bytes: int = EXCERPT_BYTES
) -> list[DistilledLog]:
    """Distil a job log to one ``DistilledLog`` per failed step, in log order (never empty).

    A failed step is one whose output ends in ``##[error]Process completed with exit code N.``
    (or its CI system's exit-status line), or that has other ``##[error]`` lines (a ``uses:``
    step, a lost runner); a failure before the first step is reported as ``Set up job``. When
    no step carries an error marker, the last step whose final lines look like a failure is
    taken. A log with several jobs (``gh run view --log``) gives the failed steps of each. When
    nothing in the log points at a step, the one result covers the whole log with ``step`` None.
    Each excerpt is bounded to ``max_excerpt_bytes`` UTF-8 bytes (at least 256).
    """
    raw_bytes = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", errors="replace"))
    budget = max(256, max_excerpt_bytes)
    results: list[DistilledLog] = []
    jobs = read_log(raw)
    for job in jobs:
        results += _distil_job(job, budget=budget, raw_bytes=raw_bytes)
    failed = [r for r in results if r.step is not None or r.exit_code is not None]
    if failed:
        return failed
    return results[-1:] or [_distil_region("", None, [], JobText(None, "", "raw"), budget, 0)]


def distill(raw: str | bytes, *, max_excerpt_bytes: int = EXCERPT_BYTES) -> DistilledLog:
    """The last failed step of a job log (see ``distill_steps``, which gives every one)."""
    return distill_steps(raw, max_excerpt_bytes=max_excerpt_bytes)[-1]


def _job_name(job: JobText, text: str, before: int) -> str | None:
    if job.name:
        return job.name
    pos = text.find(_JOB_NAME, 0, before if before > 0 else len(text))
    if pos < 0:
        return None
    start = text.rfind("\n", 0, pos) + 1
    if not _TIMESTAMP.fullmatch(text[start:pos]) and start != pos:
        return None
    name = clean_line(text[pos + len(_JOB_NAME) : _line_end(text, pos)])
    return name or None


def _distil_job(job: JobText, *, budget: int, raw_bytes: int) -> list[DistilledLog]:
    text = job.text
    parsed = _transcript(text) if job.form == "plain" else _parse(text, _events(text))
    failed = [s for s in parsed.steps if s.exit_code is not None or s.has_error]
    if not failed and not parsed.errors:
        unmarked = _unmarked_failure(text, parsed.steps)
        failed = [unmarked] if unmarked is not None else []
    first_step = parsed.steps[0].start if parsed.steps else len(text)
    name = _job_name(job, text, first_step)
    if not failed:
        return [_distil_region(text, None, parsed.errors, job, budget, raw_bytes, name)]
    regions = [(s.out_start, s.end) for s in failed]
    outside = [
        ev for ev in parsed.errors if not any(start <= ev.offset < end for start, end in regions)
    ]
    return [_distil_region(text, step, outside, job, budget, raw_bytes, name) for step in failed]


def _distil_region(
    text: str,
    step: _Step | None,
    outside_errors: Sequence[_Event],
    job: JobText,
    budget: int,
    raw_bytes: int,
    name: str | None = None,
) -> DistilledLog:
    header = _Header(None, None, None)
    region_start, region_end = 0, len(text)
    title: str | None = None
    if step is not None:
        header = _parse_header(text, step)
        region_start, region_end = step.out_start, step.end
        title = step.title
        if title is None and step.start == 0 and job.first_step:
            # A log cut inside its first step: ``gh run view`` still names the step.
            title = job.first_step
        if title is None and header.command:
            title = header.command.splitlines()[0]
    region = text[region_start:region_end]
    lines = _long_output(region) if len(region) > _LONG_STEP_CHARS else _short_output(region)
    _strip_blank_edges(lines)
    scripts = _scripts(lines.text)
    excerpt = _select(lines, budget)

    outside = [
        clean_line(f"Error: {ev.rest}")
        for ev in outside_errors
        if not region_start <= ev.offset < region_end
    ][:_MAX_OUTSIDE_ERRORS]
    error_lines: list[str] = []
    seen: set[str] = set()
    for line in [*outside, *excerpt.text.split("\n")]:
        if line not in seen and is_error_line(line) and len(error_lines) < _MAX_ERROR_LINES:
            seen.add(line)
            error_lines.append(line)
    distilled_bytes = len(excerpt.text.encode("utf-8"))
    return DistilledLog(
        step=title,
        command=header.command,
        working_directory=header.working_directory,
        exit_code=step.exit_code if step is not None else None,
        excerpt=excerpt.text,
        error_lines=tuple(error_lines),
        raw_bytes=raw_bytes,
        distilled_bytes=distilled_bytes,
        est_tokens=(distilled_bytes + 3) // 4,
        action=header.action,
        omitted_lines=excerpt.omitted,
        job=name,
        scripts=scripts,
    )
