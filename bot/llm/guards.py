"""Guards on an LLM repair attempt, checked on its unified diff before anything is verified.

Pure. The agent may only make the failing check pass by fixing the cause: it must not touch CI
configuration or Shepherd's policy, delete, skip or loosen tests, silence the type checker or
linter, add binary files, or grow the diff past the configured limit. Each rule is conservative
(a legitimate edit of an assertion is handed off too): a rejected attempt goes to a human with
its diff, which is cheap; a green check obtained by weakening a test is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from unidiff.errors import UnidiffParseError
from unidiff.patch import Line, PatchSet

_TEST_PATH = re.compile(
    r"(?:^|/)(?:tests?|testing|__tests__)/|(?:^|/)(?:test_[^/]*|[^/]*_test\.py|conftest\.py)$"
)
_TEST_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(test\w*)\s*\(")
_TEST_CLASS = re.compile(r"^\s*class\s+(Test\w*)\s*[(:]")
_SKIP = re.compile(
    r"@pytest\.mark\.(?:skip|skipif|xfail)\b|\bpytest\.(?:skip|xfail|importorskip)\s*\(|"
    r"\bunittest\.(?:skip|skipIf|skipUnless|expectedFailure)\b|@(?:skip|skipIf|skipUnless)\b|"
    r"\.skipTest\s*\(|@expectedFailure\b"
)
_SUPPRESSION = re.compile(
    r"#\s*type:\s*ignore|#\s*noqa|#\s*pyright:\s*ignore|#\s*mypy:\s*ignore-errors|"
    r"#\s*pylint:\s*disable|eslint-disable|@ts-ignore|@ts-nocheck"
)
_ASSERT = re.compile(r"^\s*(?:assert\b|self\.assert\w*\s*\(|pytest\.raises\s*\()")
# ``assert True``, ``assert 1``, ``assert not False``, ``assert x == x``, ``assert x is x``.
_TRIVIAL_ASSERT = re.compile(
    r"^\s*assert\s+(?:\(?\s*(?:True|1|not\s+False|not\s+None)\s*\)?\s*(?:,.*)?$|"
    r"(?P<lhs>[\w.\[\]'\"()]+)\s*(?:==|is|>=|<=)\s*(?P=lhs)\s*(?:,.*)?$)"
)


def is_test_path(path: str) -> bool:
    return _TEST_PATH.search(path) is not None


def _line_values(lines: Iterable[Line]) -> list[str]:
    return [str(line.value).rstrip("\n") for line in lines]


def check_attempt(
    diff_text: str, *, failure_paths: Sequence[str], max_diff_lines: int
) -> list[str]:
    """Reasons to reject the attempt whose diff (against the PR head) is ``diff_text``.

    ``failure_paths`` are the repository-relative files the failure names; an attempt that edits
    only test files is rejected when any of them is a source file. Empty list: no objection.
    """
    if not diff_text.strip():
        return []
    try:
        patch = PatchSet(diff_text)
    except UnidiffParseError as exc:
        return [f"the diff could not be parsed ({exc}); refusing an attempt it cannot check"]

    reasons: list[str] = []
    changed_lines = 0
    touched: list[str] = []
    for patched in patch:
        path = str(patched.path)
        touched.append(path)
        added = _line_values(line for hunk in patched for line in hunk if line.is_added)
        removed = _line_values(line for hunk in patched for line in hunk if line.is_removed)
        changed_lines += len(added) + len(removed)

        if path == ".github" or path.startswith(".github/"):
            reasons.append(
                f"{path}: changes under .github/ (CI configuration, policy) are not allowed"
            )
        if patched.is_binary_file:
            reasons.append(f"{path}: binary files may not be added or changed")
        if patched.is_symlink and not patched.is_removed_file:
            reasons.append(f"{path}: symbolic links may not be added or changed")
        reasons += [
            f"{path}: adds a lint/type-check suppression: {line.strip()[:120]}"
            for line in added
            if _SUPPRESSION.search(line)
        ]
        reasons += [
            f"{path}: adds a skip/xfail: {line.strip()[:120]}"
            for line in added
            if _SKIP.search(line)
        ]
        if is_test_path(path):
            reasons += _test_file_reasons(path, added, removed)

    if changed_lines > max_diff_lines:
        reasons.append(
            f"the diff changes {changed_lines} lines, over the limit of {max_diff_lines}"
        )
    failing_source = [p for p in failure_paths if not is_test_path(p)]
    if touched and failing_source and all(is_test_path(p) for p in touched):
        reasons.append(
            "only test files were edited but the failure is in source "
            f"({', '.join(sorted(set(failing_source))[:5])})"
        )
    return reasons


def _test_file_reasons(path: str, added: list[str], removed: list[str]) -> list[str]:
    reasons: list[str] = []
    for pattern, what in ((_TEST_DEF, "test function"), (_TEST_CLASS, "test class")):
        kept = {m.group(1) for line in added if (m := pattern.match(line))}
        gone = sorted({m.group(1) for line in removed if (m := pattern.match(line))} - kept)
        reasons += [f"{path}: deletes {what} {name}" for name in gone]
    added_stripped = {line.strip() for line in added}
    reasons += [
        f"{path}: removes or changes an assertion: {line.strip()[:120]}"
        for line in removed
        if _ASSERT.match(line) and line.strip() not in added_stripped
    ]
    reasons += [
        f"{path}: adds an assertion that cannot fail: {line.strip()[:120]}"
        for line in added
        if _TRIVIAL_ASSERT.match(line)
    ]
    return reasons
