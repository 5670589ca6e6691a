"""GitHub Actions job-log parsing and distillation (pure, no I/O).

``distill`` turns a raw job log (as ``GET /repos/{o}/{r}/actions/jobs/{id}/logs`` serves it) into a
``DistilledLog``: the failing step, its command, working directory and exit code, and an excerpt of
the error lines with a little context, bounded to a few KB however large the log is.

The log is untrusted text written partly by the pull request's own code: it is only ever searched
with precompiled regular expressions and ``str.find``, never evaluated, and every line shown is
stripped of terminal control sequences and length-capped. A step can fake step boundaries by
printing ``::group::Run …`` (the runner turns that into ``##[group]Run …``); that can only mislead
the distillation of its own job, whose workflow the same author controls anyway.

Speed: logs reach hundreds of thousands of lines, so nothing here loops in Python over every line.
Runner markers are found with ``str.find``; a failing step's output is split into lines only when
it is small, otherwise its head, its tail and the lines around a few error keywords are cut out by
offset.

Format reference: ``../shared/scenarios/real-logs/SOURCES.md``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["ERROR_LINE", "DistilledLog", "clean_line", "distill"]


@dataclass(frozen=True)
class DistilledLog:
    """What a failed job's log says, in a few KB however large the log was."""

    #: Name of the failing step: the ``##[group]Run …`` header without ``Run `` (the raw log does
    #: not carry the workflow's ``name:``), e.g. ``black --check .`` or ``actions/github-script@v7``.
    step: str | None
    #: The failing step's command (the lines after ``##[group]Run`` up to the shell/env lines).
    #: None for a ``uses:`` step (see ``action``): there is no shell command to re-run.
    command: str | None
    #: ``working-directory`` of the failing step when the log shows one, else None.
    working_directory: str | None
    #: Exit code from ``##[error]Process completed with exit code N.``, if present.
    exit_code: int | None
    #: The error lines with a little context: ANSI stripped, timestamps dropped, deduplicated.
    excerpt: str
    #: Lines of the excerpt that carry ``##[error]`` or look like errors (for evidence and
    #: annotations), plus ``##[error]`` lines of the job outside the failing step.
    error_lines: tuple[str, ...] = field(default_factory=tuple)
    raw_bytes: int = 0
    distilled_bytes: int = 0
    #: Estimated tokens of the excerpt (~4 characters per token).
    est_tokens: int = 0
    #: The action reference (``actions/github-script@v7``) when the failing step is a ``uses:`` step.
    action: str | None = None
    #: Output lines of the failing step that the excerpt leaves out (0: the excerpt is complete).
    omitted_lines: int = 0


# ``2026-11-17T07:02:44.9032795Z `` — 7 fractional digits from the API, but copies and other
# runners differ (none, 3, 9 digits, an offset instead of Z); an empty output line may lose its
# trailing space in copies.
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d) ?")
# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks) and two-byte escapes.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
# Control characters left after ANSI removal: a hostile log must not drive a reader's terminal.
#: The excerpt's size. About a screenful: the failing lines, their context and the summary, which
#: is what a reviewer reads and what the LLM is given first (it can read files itself); on the
#: shared scenarios it keeps every line the classifier relies on and is 95 % smaller than the log.
EXCERPT_BYTES = 1280

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")
# Runner markers. Secret masking sometimes mangles the ``]`` into ``***`` (actions/runner#2468).
_MARKER = re.compile(
    r"##\[(group|endgroup|error|warning|notice|debug|command|section)(?:\]|\*\*\*)"
)
_EXIT_CODE = re.compile(r"Process completed with exit code (-?\d+)\.")
_ACTION_REF = re.compile(r"(?:[\w.-]+/[\w./-]+@[\w./-]+|\./[\w./-]+|docker://\S+)")
# Post steps and the job's end follow the last real step; they are not part of it.
_JOB_TAIL = ("Post job cleanup.", "Cleaning up orphan processes")

#: Lines that look like errors: kept in excerpts with priority and reported as ``error_lines``.
#: Besides tool errors this covers every signal the classifier uses (timeouts, disk, rate limits,
#: secrets, resolver conflicts), so those survive the distillation of a long step.
ERROR_LINE = re.compile(
    r"\berror\b|\bERR!|\bfail(?:ed|ure|s)?\b|^E {2,}|\w(?:Error|Exception)(?::|$)|Traceback \(most"
    r"|would reformat|\d+ fixable|Found \d+ errors?|Oh no!|Imports are incorrectly sorted"
    r"|Code style issues|needs to be updated|timed out|refused|reset by peer|rate limit|x-ratelimit-(?:remaining|reset)|retry-after"
    r"|No space left|ENOSPC|ECONN|ETIMEDOUT|EAI_AGAIN|Could not resolve|name resolution"
    r"|ResolutionImpossible|conflicting|secrets? (?:detected|found)|Potential secrets|Secret Type|leaks? found|licen[cs]e|shutdown signal|lost communication"
    r"|was canceled|denied|Killed|Segmentation fault|panic:|\bFAIL\b|^\[warn\]"
    # file:line lines; of pytest's traceback frames (``path:N: in func``) only the project's
    # own (relative paths), where the error came from, not the interpreter's or site-packages'.
    r"|^(?!/)\S+:\d+(?::\d+)?: |^/\S+:\d+(?::\d+)?: (?!in )|--> \S+:\d+|^(?:---|\+\+\+) \S",
    re.IGNORECASE,
)
# Error-looking lines that are structure rather than errors: kept as context, not reported.
_HAS_WORDS = re.compile(r"[A-Za-z]{2}")
_STRUCTURE_ONLY = re.compile(r"^(?:---|\+\+\+) \S")
# Error lines that only continue an explanation (pytest's ``E    -  14,`` diff lines, ruff's
# ``-->``): chosen after the lines that name an error, so those fit first.
_WEAK_ERROR = re.compile(
    r"^E {2,}(?! |[\w.]*(?:Error|Exception)\b|assert\b)|^\s*--> |^(?:---|\+\+\+) "
)
# In a long step only these (lower-case) words are searched for over the whole output; the full
# ``ERROR_LINE`` check runs on the head, the tail and the lines found. Each is one C-speed scan.
_LONG_STEP_KEYWORDS = ("error", "fail", "traceback", "timed out", "refused", "no space left")

# A line longer than this is cut (with a count): the message is at its start, and a few long
# lines must not crowd the others out of the excerpt.
_MAX_LINE_CHARS = 240
_MAX_RAW_LINE_CHARS = 8 * _MAX_LINE_CHARS
_CONTEXT_STEPS = (2, 5, 10)
_TAIL_LINES = 20
_GAP_COST = 40
_MAX_ERROR_LINES = 40
_MAX_HEADER_LINES = 400
# Above this many characters a step's output is cut by offset instead of split into lines.
_LONG_STEP_CHARS = 200_000
_LONG_HEAD_LINES = 40
_LONG_TAIL_LINES = 200
_KEYWORD_HITS_PER_END = 150
_MAX_OUTSIDE_ERRORS = 10


def clean_line(text: str) -> str:
    """A log line as shown to people and models: no ANSI/control characters, length-capped."""
    # Cut a giant line before the regexes see it: the cost stays bounded whatever the log holds.
    overflow = max(0, len(text) - _MAX_RAW_LINE_CHARS)
    if overflow:
        text = text[:_MAX_RAW_LINE_CHARS]
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if "\r" in text:
        # Progress bars rewrite the line with carriage returns; a terminal shows the last segment.
        segments = [s for s in text.split("\r") if s.strip()]
        text = segments[-1] if segments else ""
    text = _CONTROL.sub("", text).rstrip()
    if len(text) > _MAX_LINE_CHARS or overflow:
        extra = max(0, len(text) - _MAX_LINE_CHARS) + overflow
        text = f"{text[:_MAX_LINE_CHARS]}…[+{extra} chars]"
    return text


def _body(line: str) -> str:
    """A raw log line without its timestamp prefix."""
    m = _TIMESTAMP.match(line)
    return line[m.end() :] if m is not None else line


def _render(body: str) -> str | None:
    """How a line reads in the excerpt (None: runner bookkeeping, left out)."""
    if body.startswith("##["):
        m = _MARKER.match(body)
        if m is not None:
            kind, rest = m.group(1), body[m.end() :]
            if kind in ("error", "warning", "notice"):
                return clean_line(f"{kind.capitalize()}: {rest}")
            if kind == "group":
                return clean_line(rest)
            return None
    return clean_line(body)


# ---------------------------------------------------------------------------------------------
# Steps


@dataclass
class _Step:
    title: str
    #: Offsets into the log text: the group line, the header, the output, the end.
    start: int
    header_start: int
    header_end: int = -1
    out_start: int = -1
    end: int = -1
    exit_code: int | None = None
    has_error: bool = False


@dataclass(frozen=True)
class _Event:
    offset: int
    next_line: int
    kind: str
    rest: str


def _line_end(text: str, pos: int) -> int:
    end = text.find("\n", pos)
    return len(text) if end < 0 else end


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


def _parse(text: str, events: list[_Event]) -> _Parsed:
    """Steps are ``##[group]Run …`` groups and the output after their ``##[endgroup]``."""
    steps: list[_Step] = []
    errors: list[_Event] = []
    current: _Step | None = None
    in_header = False
    for ev in events:
        if ev.kind == "group" and ev.rest.startswith("Run "):
            if current is not None and current.end < 0:
                current.end = ev.offset
            current = _Step(title=ev.rest[4:].strip(), start=ev.offset, header_start=ev.next_line)
            steps.append(current)
            in_header = True
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
            errors.append(ev)
            current.has_error = True
            code = _EXIT_CODE.match(ev.rest)
            if code is not None:
                current.exit_code = int(code.group(1))
                # The runner prints this as the step's last line.
                current.end = min(ev.next_line, len(text))
                in_header = False
    for step in steps:
        if step.end < 0:
            step.end = len(text)
        if step.header_end < 0:
            # No ``##[endgroup]``: a malformed or truncated log; treat it all as output.
            step.header_end = step.out_start = step.header_start
        step.out_start = min(step.out_start, step.end)
    return _Parsed(steps=steps, errors=errors)


@dataclass(frozen=True)
class _Header:
    command: str | None
    action: str | None
    working_directory: str | None


def _parse_header(text: str, step: _Step) -> _Header:
    """Command lines come before ``shell:``; a ``uses:`` step has ``with:``/``env:`` and no shell."""
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
        return _Header("\n".join(command) or step.title, None, working_directory)
    action = step.title if _ACTION_REF.fullmatch(step.title) else None
    return _Header(None, action or step.title, working_directory)


# ---------------------------------------------------------------------------------------------
# Excerpt


@dataclass
class _Lines:
    """Output lines to choose from; ``gaps[k]`` raw lines were already dropped before line k."""

    text: list[str] = field(default_factory=list)
    error: list[bool] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)

    def add(self, line: str, error: bool, gap: int) -> None:
        if gap == 0 and self.text and _base(self.text[-1]) == line:
            # Consecutive duplicates become one line with a count.
            self.text[-1] = f"{line} (×{_count(self.text[-1]) + 1})"
            return
        self.text.append(line)
        self.error.append(error)
        self.gaps.append(gap)


_COUNT_SUFFIX = re.compile(r" \(×(\d+)\)$")


def _base(line: str) -> str:
    return _COUNT_SUFFIX.sub("", line) if line.endswith(")") else line


def _count(line: str) -> int:
    m = _COUNT_SUFFIX.search(line) if line.endswith(")") else None
    return int(m.group(1)) if m is not None else 1


def _short_output(region: str) -> _Lines:
    lines = _Lines()
    for raw in region.split("\n"):
        rendered = _render(_body(raw))
        if rendered is not None:
            lines.add(rendered, bool(ERROR_LINE.search(rendered)), 0)
    return lines


def _long_output(region: str) -> _Lines:
    """Head, tail and keyword lines (±2) of a long output, found by offset."""
    n = len(region)
    edges: set[int] = set()
    keyword_lines: set[int] = set()
    pos = 0
    for _ in range(_LONG_HEAD_LINES):
        if pos >= n:
            break
        edges.add(pos)
        pos = _line_end(region, pos) + 1
    end = n
    for _ in range(_LONG_TAIL_LINES):
        if end <= 0:
            break
        start = region.rfind("\n", 0, end - 1) + 1
        edges.add(start)
        end = start
    lower = region.lower()
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
    starts = set(edges)
    for start in keyword_lines:
        starts.add(start)
        before = start
        for _ in range(2):
            if before <= 0:
                break
            before = region.rfind("\n", 0, before - 1) + 1
            starts.add(before)
        after = start
        for _ in range(2):
            after = _line_end(region, after) + 1
            if after >= n:
                break
            starts.add(after)

    lines = _Lines()
    previous_end = 0
    for start in sorted(starts):
        stop = _line_end(region, start)
        gap = region.count("\n", previous_end, start)
        previous_end = stop + 1
        rendered = _render(_body(region[start:stop]))
        if rendered is None:
            continue
        # The full pattern only on the head and tail: it is too slow for thousands of lines.
        error = start in keyword_lines or (start in edges and bool(ERROR_LINE.search(rendered)))
        lines.add(rendered, error, gap)
    trailing = region.count("\n", previous_end, n)
    if trailing:
        lines.add("", False, trailing)
    return lines


def _strip_blank_edges(lines: _Lines) -> None:
    while lines.text and not lines.text[-1]:
        lines.text.pop()
        lines.error.pop()
        lines.gaps.pop()
    first = 0
    while first < len(lines.text) and not lines.text[first]:
        first += 1
    del lines.text[:first], lines.error[:first], lines.gaps[:first]


def _cost(line: str) -> int:
    return (len(line) if line.isascii() else len(line.encode("utf-8"))) + 1


@dataclass(frozen=True)
class _Excerpt:
    text: str
    omitted: int


def _select(lines: _Lines, budget: int) -> _Excerpt:
    """Fit the lines into ``budget`` bytes: tail (summary), head, then error lines with context."""
    text, gaps = lines.text, lines.gaps
    n = len(text)
    total = 0
    for line in text:
        total += _cost(line)
        if total > budget:
            break
    else:
        if not any(gaps):
            return _Excerpt("\n".join(text), 0)

    chosen = bytearray(n)
    used = 0

    def take(i: int, limit: int, extra: int = 0) -> bool:
        nonlocal used
        if chosen[i]:
            return True
        c = _cost(text[i]) + extra
        if used + c > limit:
            return False
        chosen[i] = 1
        used += c
        return True

    usable = budget - 2 * _GAP_COST
    # The tail carries the summary line and the runner's exit-code line.
    tail_limit = usable * 2 // 5
    i = n - 1
    while i >= max(0, n - _TAIL_LINES):
        # Lines with next to no words (``29,``, ``]``: the end of a long repr) say nothing.
        if _HAS_WORDS.search(text[i]) and not take(i, tail_limit):
            break
        i -= 1
    head_limit = used + usable // 10
    j = 0
    while j < i and take(j, head_limit):
        j += 1

    errors = [k for k in range(j, i + 1) if lines.error[k]]
    occurrences = Counter(text[k] for k in errors)
    seen: set[str] = {text[k] for k in range(n) if chosen[k]}
    taken_errors: list[int] = []
    strong = [k for k in errors if not _WEAK_ERROR.match(text[k])]
    weak = [k for k in errors if _WEAK_ERROR.match(text[k])]
    # Continuation lines may use half of what is left; context around the errors needs the rest.
    for tier, limit in ((strong, usable), (weak, -1)):
        if limit < 0:
            limit = used + (usable - used) // 2
        for k in tier:
            line = text[k]
            if line in seen:
                continue
            if not take(k, limit, _GAP_COST):
                break
            seen.add(line)
            taken_errors.append(k)
            if occurrences[line] > 1:
                # Repeated identical lines elsewhere in the output are shown once, counted.
                text[k] = f"{line} (×{occurrences[line]})"
    taken_errors.sort()
    # Widen the context around the errors while the budget lasts (the lines above a pytest ``E``
    # line are the failing test's source), skipping blocks repeated from earlier failures.
    for radius in _CONTEXT_STEPS:
        for k in taken_errors:
            for c in range(max(0, k - radius), min(n, k + radius + 1)):
                if chosen[c] or (len(text[c]) >= 8 and text[c] in seen):
                    continue
                if take(c, usable):
                    seen.add(text[c])
    # Whatever budget is left extends the tail backwards.
    while i >= 0 and take(i, usable):
        i -= 1

    out: list[str] = []
    omitted = 0
    gap = 0
    for k in range(n):
        gap += gaps[k]
        if chosen[k]:
            if gap:
                out.append(f"… [{gap} lines omitted] …")
                omitted += gap
                gap = 0
            out.append(text[k])
        else:
            gap += 1
    if gap:
        out.append(f"… [{gap} lines omitted] …")
        omitted += gap
    return _Excerpt(_fit_bytes("\n".join(out), budget), omitted)


def _fit_bytes(text: str, budget: int) -> str:
    """Hard bound: cut the middle out when the estimates above were too generous."""
    data = text.encode("utf-8")
    if len(data) <= budget:
        return text
    marker = "\n… [truncated] …\n"
    keep = max(0, budget - len(marker.encode("utf-8")))
    head = data[: keep // 3].decode("utf-8", errors="ignore")
    tail = data[len(data) - (keep - keep // 3) :].decode("utf-8", errors="ignore")
    return head + marker + tail


# ---------------------------------------------------------------------------------------------


def distill(raw: str | bytes, *, max_excerpt_bytes: int = EXCERPT_BYTES) -> DistilledLog:
    """Distil a raw GitHub Actions job log to its failing step and error lines.

    The failing step is the one in which ``##[error]Process completed with exit code N.``
    appears (the last such, when ``continue-on-error`` let earlier ones pass), else the last step
    with any ``##[error]`` line. The excerpt is that step's output (or, when no step failed, the
    whole log's), bounded to ``max_excerpt_bytes`` UTF-8 bytes (at least 256).
    """
    if isinstance(raw, bytes):
        raw_bytes = len(raw)
        text = raw.decode("utf-8", errors="replace")
    else:
        text = raw
        raw_bytes = len(raw.encode("utf-8", errors="replace"))
    # Slicing the BOM off also lets CPython store a pure-ASCII log one byte per character.
    if text.startswith("\ufeff"):
        text = text[1:]
    budget = max(256, max_excerpt_bytes)

    parsed = _parse(text, _events(text))
    failing = next((s for s in reversed(parsed.steps) if s.exit_code is not None), None)
    if failing is None:
        failing = next((s for s in reversed(parsed.steps) if s.has_error), None)

    header = _Header(None, None, None)
    region_start, region_end = 0, len(text)
    if failing is not None:
        header = _parse_header(text, failing)
        region_start, region_end = failing.out_start, failing.end
    region = text[region_start:region_end]
    long_output = len(region) > _LONG_STEP_CHARS
    lines = _long_output(region) if long_output else _short_output(region)
    _strip_blank_edges(lines)
    excerpt = _select(lines, budget)

    outside = [
        clean_line(f"Error: {ev.rest}")
        for ev in parsed.errors
        if not region_start <= ev.offset < region_end
    ][:_MAX_OUTSIDE_ERRORS]
    error_lines: list[str] = []
    seen: set[str] = set()
    for line in [*outside, *excerpt.text.split("\n")]:
        if (
            line not in seen
            and ERROR_LINE.search(line)
            and not _STRUCTURE_ONLY.match(line)
            and len(error_lines) < _MAX_ERROR_LINES
        ):
            seen.add(line)
            error_lines.append(line)
    distilled_bytes = len(excerpt.text.encode("utf-8"))
    return DistilledLog(
        step=failing.title if failing is not None else None,
        command=header.command,
        working_directory=header.working_directory,
        exit_code=failing.exit_code if failing is not None else None,
        excerpt=excerpt.text,
        error_lines=tuple(error_lines),
        raw_bytes=raw_bytes,
        distilled_bytes=distilled_bytes,
        est_tokens=(distilled_bytes + 3) // 4,
        action=header.action,
        omitted_lines=excerpt.omitted,
    )
