"""CODEOWNERS parsing and the one path-glob matcher the triage core uses (pure).

The glob semantics are gitignore's, with GitHub's CODEOWNERS exceptions
(https://docs.github.com/en/repositories/managing-your-repositorys-settings-and-features/customizing-your-repository/about-code-owners#codeowners-syntax):

* a leading ``/`` anchors the pattern to the repository root; a pattern with a slash in the middle
  is anchored too; a pattern without a slash (a trailing one aside) matches at any depth;
* ``*`` and ``?`` do not cross ``/``; ``**`` as a whole segment does (``**/x``, ``x/**``,
  ``x/**/y``); other runs of asterisks behave like ``*``;
* a pattern matches a path or any directory above it, so ``apps`` owns ``apps/a/b.py``;
  a trailing ``/`` matches directories only (``apps/`` does not match a file named ``apps``);
* a pattern whose last segment is a lone ``*`` matches direct children only (GitHub:
  ``docs/*`` matches ``docs/a.md`` but not ``docs/build/b.md``);
* ``[...]`` is literal (GitHub does not support ranges) and ``\\`` escapes the next character.

``compile_glob(..., descendants=False)`` gives gitattributes semantics, where a pattern matching a
directory does not match the files inside it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Where GitHub looks for the file; the first one found at the base SHA wins.
CODEOWNERS_LOCATIONS = (".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS")

_SEGMENT_CHARS = re.compile(r"\\.|\*+|\?|[^\\*?]+|\\$")


def _translate_segment(segment: str) -> str:
    out: list[str] = []
    for token in _SEGMENT_CHARS.findall(segment):
        if token.startswith("\\"):
            out.append(re.escape(token[1:] or "\\"))
        elif token.startswith("*"):
            out.append("[^/]*")
        elif token == "?":  # noqa: S105 - a glob token, not a password
            out.append("[^/]")
        else:
            out.append(re.escape(token))
    return "".join(out)


def glob_to_regex(pattern: str, *, descendants: bool = True) -> str:
    """Translate a gitignore-style pattern into a regex source matching whole relative paths.

    ``descendants``: whether a pattern that matches a directory also matches everything beneath
    it (gitignore and CODEOWNERS: yes; gitattributes: no).
    """
    dir_only = pattern.endswith("/") and not pattern.endswith("\\/")
    body = pattern.rstrip("/") if dir_only else pattern
    anchored = "/" in body
    body = body.lstrip("/")
    segments = body.split("/")
    if not body:
        # "/" alone: everything under the root.
        return r"(?s:.*)\Z"

    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            if last:
                # "x/**": everything inside x (at least one more segment).
                parts.append(".*" if index == 0 else "/.*")
            elif index == 0:
                parts.append("(?:.*/)?")
            else:
                parts.append("/(?:.*/)?")
            continue
        if index > 0 and segments[index - 1] != "**":
            parts.append("/")
        parts.append(_translate_segment(segment))

    regex = "".join(parts)
    prefix = "" if anchored else "(?:.*/)?"
    ends_in_globstar = segments[-1] == "**"
    if ends_in_globstar:
        suffix = ""
    elif dir_only:
        # Only a directory can match; a file is inside it.
        suffix = "/.*" if descendants else "(?!)"
    elif not descendants or (segments[-1] == "*" and anchored):
        suffix = ""
    else:
        suffix = "(?:/.*)?"
    return f"(?s:{prefix}{regex}{suffix})\\Z"


def compile_glob(pattern: str, *, descendants: bool = True) -> re.Pattern[str]:
    """Compile ``pattern`` (see the module docstring); use ``.match(path)`` on relative paths."""
    return re.compile(glob_to_regex(pattern, descendants=descendants))


def compile_globs(patterns: Iterable[str], *, descendants: bool = True) -> re.Pattern[str] | None:
    """One regex matching any of ``patterns`` (None when there are none): one call per path."""
    sources = [glob_to_regex(p, descendants=descendants) for p in patterns if p.strip()]
    if not sources:
        return None
    return re.compile("|".join(f"(?:{s})" for s in sources))


@dataclass(frozen=True)
class Rule:
    """One CODEOWNERS line: a pattern and its owners (empty: the matching paths are unowned)."""

    pattern: str
    owners: tuple[str, ...]
    line: int
    regex: re.Pattern[str]

    def matches(self, path: str) -> bool:
        return self.regex.match(path.lstrip("/")) is not None


_TOKEN = re.compile(r"(?:\\.|[^\s\\])+")


def _strip_inline_comment(line: str) -> str:
    # GitHub accepts "pattern @owner # comment"; a "#" inside a token (or escaped) is kept.
    match = re.search(r"(?:^|\s)#", line)
    if match is None:
        return line
    return line[: match.start()]


def parse_codeowners(text: str) -> list[Rule]:
    """Parse a CODEOWNERS file into rules, in file order.

    Comments (``#`` at the start of a line or after whitespace) and blank lines are skipped.
    ``\\#`` and ``\\ `` in a pattern are a literal ``#`` and space; GitHub documents that escaping
    a leading ``#`` is unsupported, so such a line may own nothing on GitHub even though it parses
    here. ``!pattern`` lines (negation, unsupported by GitHub) are ignored, as GitHub ignores
    invalid lines. Owners (``@user``, ``@org/team``, emails) are kept as written.
    """
    rules: list[Rule] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_inline_comment(raw.strip())
        tokens = _TOKEN.findall(line)
        if not tokens:
            continue
        pattern, owners = tokens[0], tuple(tokens[1:])
        if pattern.startswith("!"):
            continue
        rules.append(Rule(pattern, owners, number, compile_glob(pattern)))
    return rules


def owners_for(path: str, rules: Sequence[Rule]) -> tuple[str, ...]:
    """The owners of ``path``: those of the last matching rule (empty when none matches)."""
    for rule in reversed(rules):
        if rule.matches(path):
            return rule.owners
    return ()


def _normalise_owner(owner: str) -> str:
    return owner.lstrip("@").lower()


def suggest_reviewers(
    paths: Iterable[str], rules: Sequence[Rule], *, exclude: set[str]
) -> list[str]:
    """Owners of ``paths``, most files owned first, ties in order of first appearance.

    ``exclude`` (the PR author, the bot) is compared case-insensitively with or without ``@``.
    """
    excluded = {_normalise_owner(e) for e in exclude}
    counts: Counter[str] = Counter()
    for path in paths:
        for owner in owners_for(path, rules):
            if _normalise_owner(owner) not in excluded:
                counts[owner] += 1
    # Counter preserves insertion order and sorted() is stable, so ties keep first appearance.
    return sorted(counts, key=lambda owner: -counts[owner])


def split_reviewers(owners: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split owners into (user logins, team slugs) as the request-reviewers API wants them.

    Emails are dropped: the API takes logins only.
    """
    users: list[str] = []
    teams: list[str] = []
    for owner in owners:
        if not owner.startswith("@"):
            continue
        name = owner[1:]
        if "/" in name:
            teams.append(name.split("/", 1)[1])
        else:
            users.append(name)
    return users, teams
