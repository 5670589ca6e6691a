"""Table tests of the glob matcher and CODEOWNERS semantics (bot/triage/codeowners.py)."""

from __future__ import annotations

import pytest

from bot.triage.codeowners import (
    CODEOWNERS_LOCATIONS,
    compile_glob,
    owners_for,
    parse_codeowners,
    split_reviewers,
    suggest_reviewers,
)

# (pattern, path, matches) — gitignore/CODEOWNERS semantics as GitHub documents them.
GLOB_CASES = [
    # No slash: any depth, and everything beneath a matching directory.
    ("foo", "foo", True),
    ("foo", "foo.txt", False),
    ("foo", "foo/bar", True),
    ("foo", "bar/foo", True),
    ("foo", "bar/foo/baz", True),
    ("foo", "bar/baz", False),
    # Leading slash anchors.
    ("/foo", "foo/bar/baz", True),
    ("/foo", "bar/foo", False),
    ("/foo", "fool.txt", False),
    # Trailing slash: directories only.
    ("foo/", "foo", False),
    ("foo/", "foo/bar", True),
    ("foo/", "bar/foo/baz", True),
    ("/foo/", "bar/foo/baz", False),
    # A slash in the middle anchors.
    ("foo/bar", "foo/bar/baz", True),
    ("foo/bar", "baz/foo/bar", False),
    ("foo/bar", "foo/bart", False),
    ("foo/bar/", "foo/bar", False),
    # "*" does not cross "/".
    ("*.js", "a/b/c.js", True),
    ("*.js", "a/b/c.jsx", False),
    ("f*", "bar/foo/baz", True),
    ("f*", "bar/baz", False),
    ("/*", "foo", True),
    ("/*", "foo/bar", False),
    ("docs/*", "docs/getting-started.md", True),
    ("docs/*", "docs/build-app/troubleshooting.md", False),
    ("docs/*", "docs", False),
    ("foo/*.txt", "foo/bar/baz.txt", False),
    ("foo/*/baz", "foo/bar/baz", True),
    ("foo/*/baz", "foo/baz", False),
    ("foo/*/baz", "foo/bar/baz/qux", True),
    ("/*/", "foo", False),
    ("/*/", "bar/foo/baz", True),
    ("f*/", "foo", False),
    ("f*/", "bar/foo/baz", True),
    # "?" is one non-slash character.
    ("f?o", "foo", True),
    ("f?o", "fooo", False),
    ("f?o", "f/o", False),
    # Escapes.
    ("f\\*o", "foo", False),
    ("f\\*o", "f*o", True),
    ("f\\?o", "f?o", True),
    # "**" crosses "/".
    ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "qux/foo/bar/baz", True),
    ("**/foo/bar", "qux/foo/baz/bar", False),
    ("**/*bar*", "foo/qux/rebar", True),
    ("foo/bar/**", "foo/bar", False),
    ("foo/bar/**", "foo/bar/baz/qux", True),
    ("foo/bar/**", "qux/foo/bar/baz", False),
    ("foo/**/bar", "foo/bar", True),
    ("foo/**/bar", "foo/qux/quux/bar/baz", True),
    ("foo/**/bar", "qux/foo/bar", False),
    ("foo/**/", "foo", False),
    ("foo/**/", "foo/bar", True),
    ("foo/**/bar/b*", "foo/qux/bar/baz", True),
    ("foo/**/bar/b*", "foo/qux/bar/qux", False),
    ("**", "anything/at/all", True),
    # "[" is literal in CODEOWNERS (no ranges).
    ("[ab].txt", "a.txt", False),
    ("[ab].txt", "[ab].txt", True),
    # Regex metacharacters in paths are literal.
    ("a.b", "axb", False),
    ("a+b(c)", "a+b(c)", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), GLOB_CASES)
def test_glob_match(pattern: str, path: str, expected: bool) -> None:
    assert (compile_glob(pattern).match(path) is not None) is expected


# gitattributes semantics: a pattern matching a directory does not match the files inside.
ATTR_CASES = [
    ("vendor", "vendor/a.go", False),
    ("vendor/**", "vendor/a.go", True),
    ("*.pb.go", "api/v1/x.pb.go", True),
    ("dist/", "dist/app.js", False),
    ("/gen/*.py", "gen/a.py", True),
    ("/gen/*.py", "x/gen/a.py", False),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), ATTR_CASES)
def test_glob_without_descendants(pattern: str, path: str, expected: bool) -> None:
    assert (compile_glob(pattern, descendants=False).match(path) is not None) is expected


CODEOWNERS = """\
# This is a comment.
*                 @global-owner1 @global-owner2
*.js              @js-owner  # inline comment
*.go              docs@example.com
*.txt             @octo-org/octocats
/build/logs/      @doctocat
docs/*            docs@example.com
apps/             @octocat
/docs/            @doctocat
/scripts/         @doctocat @octocat
**/logs           @octocat
/apps/            @octocat
/apps/github
\\#hash.txt       @hashowner
!negated          @nobody
"""

OWNER_CASES = [
    ("README.md", ("@global-owner1", "@global-owner2")),
    ("src/app.js", ("@js-owner",)),
    ("main.go", ("docs@example.com",)),
    ("notes.txt", ("@octo-org/octocats",)),
    # Last match wins: /docs/ comes after docs/*.
    ("docs/getting-started.md", ("@doctocat",)),
    ("docs/build-app/troubleshooting.md", ("@doctocat",)),
    # /build/logs/ is overridden by the later **/logs.
    ("build/logs/out.log", ("@octocat",)),
    ("deeply/nested/logs/x.txt", ("@octocat",)),
    # apps/ matches at any depth; /apps/github has no owners: unowned.
    ("lib/apps/x.py", ("@octocat",)),
    ("apps/web/x.py", ("@octocat",)),
    ("apps/github/x.py", ()),
    ("apps/github", ()),
    ("scripts/deploy.sh", ("@doctocat", "@octocat")),
    ("#hash.txt", ("@hashowner",)),
    # The negation line is ignored, so the catch-all applies.
    ("negated", ("@global-owner1", "@global-owner2")),
]


@pytest.mark.parametrize(("path", "owners"), OWNER_CASES)
def test_owners_for(path: str, owners: tuple[str, ...]) -> None:
    assert owners_for(path, parse_codeowners(CODEOWNERS)) == owners


def test_parse_keeps_line_numbers_and_skips_comments() -> None:
    rules = parse_codeowners(CODEOWNERS)
    assert rules[0].pattern == "*"
    assert rules[0].line == 2
    assert rules[1].owners == ("@js-owner",)  # the inline comment is gone
    assert all(not r.pattern.startswith(("#", "!")) for r in rules)
    assert [r.pattern for r in rules if not r.owners] == ["/apps/github"]


def test_docs_star_only_direct_children() -> None:
    rules = parse_codeowners("docs/* @doc\n")
    assert owners_for("docs/a.md", rules) == ("@doc",)
    assert owners_for("docs/sub/b.md", rules) == ()


def test_no_rules_means_unowned() -> None:
    assert owners_for("any/file.py", parse_codeowners("")) == ()
    assert owners_for("any/file.py", parse_codeowners("# only comments\n\n")) == ()


def test_suggest_reviewers_orders_by_files_owned_and_excludes() -> None:
    rules = parse_codeowners("* @core\n*.py @py @Author\n/docs/ @docs\n")
    paths = ["a.py", "b.py", "docs/x.md", "README.md", "c.py"]
    assert suggest_reviewers(paths, rules, exclude={"author"}) == ["@py", "@docs", "@core"]
    # Ties keep first appearance.
    assert suggest_reviewers(["docs/x.md", "README"], rules, exclude=set()) == ["@docs", "@core"]


def test_split_reviewers() -> None:
    users, teams = split_reviewers(["@alice", "@org/core", "bob@example.com", "@carol"])
    assert users == ["alice", "carol"]
    assert teams == ["core"]


def test_locations_order() -> None:
    assert CODEOWNERS_LOCATIONS == (".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS")
