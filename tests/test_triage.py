"""Table tests of the pure triage core (bot/triage/rules.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bot.github.resources import PullFile, parse_list
from bot.kernel.errors import ConfigError
from bot.triage.codeowners import parse_codeowners
from bot.triage.rules import (
    AGENT_LABEL,
    SIZE_LABELS,
    ChangedFile,
    GeneratedMatcher,
    PullFacts,
    Triage,
    TriageConfig,
    agent_policy_findings,
    area_labels,
    detect_agent,
    diff_facts,
    files_from_api,
    managed_labels,
    parse_trailers,
    relabel,
    render_triage_markdown,
    risk_flags,
    size_label,
    trailer_values,
    triage,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NO_GENERATED = GeneratedMatcher(well_known=())


# ---------------------------------------------------------------------------- helpers


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def make_repo(tmp_path: Path, before: dict[str, bytes], after: dict[str, bytes | None]) -> Path:
    """A real repo with two commits; ``after`` maps path → new content (None deletes)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "T")
    for path, content in before.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    for path, new_content in after.items():
        if new_content is None:
            git(repo, "rm", "-q", path)
        else:
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_bytes(new_content)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "head")
    return repo


def api_files(repo: Path) -> list[PullFile]:
    """What pulls/list-files returns for HEAD~1..HEAD, built from git's own numstat/name-status."""
    status = git(repo, "diff", "-M", "-z", "--name-status", "HEAD~1", "HEAD").split("\0")
    numstat = git(repo, "diff", "-M", "-z", "--numstat", "HEAD~1", "HEAD").split("\0")
    names = {"A": "added", "D": "removed", "M": "modified", "R": "renamed", "T": "changed"}
    entries: list[dict[str, Any]] = []
    s_index = n_index = 0
    while s_index < len(status) and status[s_index]:
        code = status[s_index]
        renamed = code.startswith("R")
        paths = status[s_index + 1 : s_index + (3 if renamed else 2)]
        s_index += 3 if renamed else 2
        added, deleted = numstat[n_index].split("\t")[:2]
        n_index += 3 if renamed else 1
        entry: dict[str, Any] = {
            "filename": paths[-1],
            "status": names[code[0]],
            "additions": 0 if added == "-" else int(added),
            "deletions": 0 if deleted == "-" else int(deleted),
        }
        entry["changes"] = entry["additions"] + entry["deletions"]
        if renamed:
            entry["previous_filename"] = paths[0]
        if added != "-" and entry["changes"]:
            entry["patch"] = "@@ …"
        entries.append(entry)
    return parse_list(PullFile, entries)


def change(path: str, add: int = 1, delete: int = 0, **kw: Any) -> ChangedFile:
    kw.setdefault("status", "modified")
    kw.setdefault("previous_path", None)
    return ChangedFile(path=path, additions=add, deletions=delete, **kw)


# ---------------------------------------------------------------------------- size


@pytest.mark.parametrize(
    ("lines", "label"),
    [
        (0, "size/XS"),
        (9, "size/XS"),
        (10, "size/S"),
        (29, "size/S"),
        (30, "size/M"),
        (99, "size/M"),
        (100, "size/L"),
        (499, "size/L"),
        (500, "size/XL"),
        (999, "size/XL"),
        (1000, "size/XXL"),
        (10**6, "size/XXL"),
    ],
)
def test_size_label_prow_boundaries(lines: int, label: str) -> None:
    assert size_label(lines) == label


@pytest.mark.parametrize(
    ("lines", "label"),
    [(0, "size/XS"), (1, "size/S"), (2, "size/M"), (3, "size/L"), (4, "size/XL"), (5, "size/XXL")],
)
def test_size_label_custom_thresholds(lines: int, label: str) -> None:
    assert size_label(lines, (1, 2, 3, 4, 5)) == label


@pytest.mark.parametrize(
    "thresholds", [(10, 30, 100, 500), (10, 10, 100, 500, 1000), (5, 4, 3, 2, 1)]
)
def test_size_label_rejects_bad_thresholds(thresholds: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError):
        size_label(5, thresholds)


def test_relabel_only_touches_managed_labels() -> None:
    managed = managed_labels(TriageConfig(area_rules={"area/docs": ["docs/"]}))
    remove, add = relabel(
        ["size/S", "area/docs", "risk/no-tests", "bug", "keep-me"],
        ["size/L", "risk/no-tests", AGENT_LABEL],
        managed=managed,
    )
    assert remove == {"size/S", "area/docs"}
    assert add == {"size/L", AGENT_LABEL}


# ---------------------------------------------------------------------------- generated files

GITATTRIBUTES = """\
# generated code
api/gen/** linguist-generated
*.snap linguist-generated=true
api/gen/keep.py -linguist-generated
vendor/** linguist-generated
docs/Cargo.lock linguist-generated=false
"odd name.txt" linguist-generated
"""


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("uv.lock", "lockfile"),
        ("sub/project/poetry.lock", "lockfile"),
        ("web/package-lock.json", "lockfile"),
        ("yarn.lock", "lockfile"),
        ("pnpm-lock.yaml", "lockfile"),
        ("Cargo.lock", "lockfile"),
        ("go.sum", "lockfile"),
        ("Gemfile.lock", "lockfile"),
        ("composer.lock", "lockfile"),
        ("Pipfile.lock", "lockfile"),
        ("static/app.min.js", "well-known"),
        ("api/v1/service.pb.go", "well-known"),
        ("api/gen/models.py", "gitattributes"),
        ("tests/__snapshots__/x.snap", "gitattributes"),
        ("vendor/lib/a.go", "gitattributes"),
        ("odd name.txt", "gitattributes"),
        ("build/out.js", "config"),
        ("pkg/zz_generated.deepcopy.go", "config"),
        ("third_party/x/y.c", "config"),
        ("schema.graphql", "config"),
        # Not generated.
        ("api/gen/keep.py", None),  # un-marked by a later gitattributes line
        ("docs/Cargo.lock", None),  # gitattributes =false beats the well-known list
        ("src/app.js", None),
        ("uv.lock.md", None),
        ("package.json", None),
        ("vendorx/a.go", None),
    ],
)
def test_generated_matcher(path: str, reason: str | None) -> None:
    matcher = GeneratedMatcher(
        gitattributes=GITATTRIBUTES,
        globs=["build/", "/schema.graphql"],
        generated_files="# prow style\nfile-prefix zz_generated.\npath-prefix third_party/\n",
    )
    assert matcher.reason(path) == reason
    assert matcher.is_generated(path) is (reason is not None)


def test_generated_files_excluded_from_size() -> None:
    matcher = GeneratedMatcher(gitattributes="gen/** linguist-generated\n")
    changes = [
        change("src/a.py", 5, 1, generated=matcher.is_generated("src/a.py")),
        change("uv.lock", 900, 300, generated=matcher.is_generated("uv.lock")),
        change("gen/x.py", 400, 0, generated=matcher.is_generated("gen/x.py")),
    ]
    result = triage(changes, PullFacts(author_login="alice"))
    assert result.changed_lines == 6
    assert result.size == "size/XS"
    assert result.excluded == ("uv.lock", "gen/x.py")
    assert (result.additions, result.deletions) == (1305, 301)


# ---------------------------------------------------------------------------- diffs


def test_diff_facts_renames_binary_new_deleted_mode(tmp_path: Path) -> None:
    before = {
        "old_name.py": b"a\nb\nc\nd\ne\n",
        "logo.png": b"\x89PNG\x00\x01\x02",
        "run.sh": b"echo hi\n",
        "gone.txt": b"1\n2\n3\n",
        "pure_old.txt": b"same content\nline two\nline three\n",
        "uv.lock": b"x = 1\n",
    }
    after: dict[str, bytes | None] = {
        "old_name.py": None,
        "new_name.py": b"a\nb\nc\nd\ne\nf\n",
        "logo.png": b"\x89PNG\x00\x09\x08\x07",
        "gone.txt": None,
        "pure_old.txt": None,
        "pure_new.txt": b"same content\nline two\nline three\n",
        "added.bin": b"\x00\x00\x01",
        "src/new.py": b"print(1)\nprint(2)\n",
        "uv.lock": b"x = 2\ny = 3\n",
    }
    repo = make_repo(tmp_path, before, after)
    (repo / "run.sh").chmod(0o755)
    git(repo, "commit", "-qam", "mode")
    for flags in ([], ["--binary"]):
        diff = git(repo, "diff", "-M", *flags, "HEAD~2", "HEAD")
        facts = diff_facts(diff, generated=GeneratedMatcher())
        assert not facts.partial
        by_path = {f.path: f for f in facts.files}
        assert by_path["new_name.py"] == ChangedFile(
            "new_name.py", "old_name.py", 1, 0, "renamed", binary=False, generated=False
        )
        assert by_path["pure_new.txt"].status == "renamed"
        assert by_path["pure_new.txt"].previous_path == "pure_old.txt"
        assert by_path["pure_new.txt"].changes == 0
        assert by_path["logo.png"].binary
        assert by_path["logo.png"].status == "modified"
        assert by_path["added.bin"].binary
        assert by_path["added.bin"].status == "added"
        assert by_path["gone.txt"].status == "removed"
        assert by_path["gone.txt"].deletions == 3
        assert by_path["src/new.py"].additions == 2
        assert by_path["run.sh"].status == "changed"
        assert by_path["uv.lock"].generated
        assert by_path["uv.lock"].changes == 3
        assert len(facts.files) == 8


def test_files_from_api_matches_diff_facts(tmp_path: Path) -> None:
    before = {f"pkg/m{i}.py": "".join(f"line {j}\n" for j in range(20)).encode() for i in range(4)}
    before["img.png"] = b"\x00\x01"
    before["poetry.lock"] = b"a\n"
    after: dict[str, bytes | None] = {
        "pkg/m0.py": b"changed\n" + before["pkg/m0.py"],
        "pkg/m1.py": None,
        "pkg/renamed.py": before["pkg/m2.py"] + b"tail\n",
        "pkg/m2.py": None,
        "img.png": b"\x00\x02\x03",
        "tests/test_new.py": b"def test_x():\n    assert True\n",
        "poetry.lock": b"b\nc\n",
    }
    repo = make_repo(tmp_path, before, after)
    matcher = GeneratedMatcher()
    from_diff = diff_facts(git(repo, "diff", "-M", "HEAD~1", "HEAD"), generated=matcher)
    from_api = files_from_api(api_files(repo), generated=matcher)
    assert sorted(from_diff.files, key=lambda f: f.path) == sorted(from_api, key=lambda f: f.path)
    pull = PullFacts(author_login="alice")
    assert triage(from_diff.files, pull) == triage(from_api, pull)


@pytest.mark.parametrize(
    ("diff", "paths", "unparsed"),
    [
        ("", [], []),
        ("not a diff at all\n", [], ["not a diff at all"]),
        # A hunk cut short (GitHub truncating a huge diff) costs only that file.
        (
            "diff --git a/ok.py b/ok.py\n--- a/ok.py\n+++ b/ok.py\n@@ -1 +1,2 @@\n a\n+b\n"
            "diff --git a/cut.py b/cut.py\n--- a/cut.py\n+++ b/cut.py\n@@ -1,5 +1,9 @@\n a\n+b\n",
            ["ok.py"],
            ["cut.py"],
        ),
        # Plain (non-git) unified diff.
        ("--- a/x.txt\n+++ b/x.txt\n@@ -1 +1 @@\n-a\n+b\n", ["x.txt"], []),
    ],
)
def test_diff_facts_is_robust(diff: str, paths: list[str], unparsed: list[str]) -> None:
    facts = diff_facts(diff, generated=NO_GENERATED)
    assert [f.path for f in facts.files] == paths
    assert list(facts.unparsed) == unparsed
    assert facts.partial is bool(unparsed)


# ---------------------------------------------------------------------------- areas and risk


def test_area_labels() -> None:
    rules = {
        "area/docs": ["docs/", "*.md"],
        "area/api": ["/src/api/**"],
        "area/ci": [".github/workflows/"],
        "area/none": [],
    }
    paths = ["README.md", "src/api/v1/routes.py", "src/core.py"]
    assert area_labels(paths, rules) == ["area/docs", "area/api"]
    assert area_labels(["lib/src/api/x.py"], rules) == []


RISK_CASES: list[tuple[list[ChangedFile], set[str]]] = [
    ([change(".github/workflows/ci.yml"), change("tests/test_a.py")], {"ci-config"}),
    ([change(".gitlab-ci.yml")], {"ci-config"}),
    ([change(".pre-commit-config.yaml")], {"ci-config"}),
    ([change("pyproject.toml")], {"dependencies"}),
    ([change("requirements-dev.txt")], {"dependencies"}),
    ([change("web/package.json")], {"dependencies"}),
    ([change("uv.lock", generated=True)], {"dependencies"}),
    ([change("app/migrations/0002_x.py"), change("tests/test_m.py")], {"migrations"}),
    ([change("alembic/versions/abc.py"), change("tests/test_m.py")], {"migrations"}),
    ([change("db/schema/001.sql")], {"migrations"}),
    ([change("svc/auth/login.go"), change("svc/auth/login_test.go")], {"security"}),
    ([change("config/secrets.yaml")], {"security"}),
    ([change("lib/crypto/aes.rs"), change("lib/crypto/aes_test.rs")], {"security"}),
    ([change("src/app.py")], {"no-tests"}),
    ([change("src/app.py"), change("tests/test_app.py")], set()),
    ([change("src/app.ts"), change("src/app.spec.ts")], set()),
    ([change("pkg/x.go"), change("pkg/x_test.go")], set()),
    ([change("web/a.js"), change("web/__tests__/a.js")], set()),
    ([change("src/app.py", status="removed", add=0, delete=5)], set()),
    ([change("README.md")], set()),
    ([change("gen/api.py", generated=True)], set()),
    ([change("src/old.py", add=0, delete=600, status="removed")], {"large-deletion"}),
    ([change("a.txt", add=0, delete=499)], set()),
]


@pytest.mark.parametrize(("changes", "codes"), RISK_CASES)
def test_risk_flags(changes: list[ChangedFile], codes: set[str]) -> None:
    flags = risk_flags(changes)
    assert {f.code for f in flags} == codes
    for flag in flags:
        assert flag.label == f"risk/{flag.code}"
        assert flag.paths


def test_risk_flags_config_security_paths_and_labels() -> None:
    flags = risk_flags(
        [change("billing/charge.py"), change("billing/test_charge.py")],
        security_paths=["billing/"],
        labels={"security": "sensitive"},
    )
    assert [(f.code, f.label, f.paths) for f in flags] == [
        ("security", "sensitive", ("billing/charge.py", "billing/test_charge.py"))
    ]


def test_risk_flags_rename_out_of_ci_dir_counts() -> None:
    moved = change("old-ci.yml", status="renamed", previous_path=".github/workflows/ci.yml")
    assert [f.code for f in risk_flags([moved])] == ["ci-config"]


# ---------------------------------------------------------------------------- trailers


@pytest.mark.parametrize(
    ("message", "trailers"),
    [
        ("Subject only", []),
        ("Co-authored-by: a <a@x>", []),  # the subject is never a trailer block
        ("Fix\n\nBody text.\n\nSigned-off-by: A <a@x>\n", [("Signed-off-by", "A <a@x>")]),
        (
            "Fix\n\nco-authored-by: Claude <noreply@anthropic.com>\nShepherd-Job: 42\n",
            [("co-authored-by", "Claude <noreply@anthropic.com>"), ("Shepherd-Job", "42")],
        ),
        ("Fix\r\n\r\nCo-authored-by: B <b@x>\r\n", [("Co-authored-by", "B <b@x>")]),
        ("Fix\n\nKey: a long\n  value continued\n", [("Key", "a long value continued")]),
        # Prose with a colon is not a trailer block.
        ("Fix\n\nNote: this is prose\nand more prose here\nand more\nand more\n", []),
        # Mixed block: a known trailer among a little prose still counts.
        ("Fix\n\n(cleanup)\nSigned-off-by: A <a@x>\n", [("Signed-off-by", "A <a@x>")]),
        # Only the last paragraph.
        ("Fix\n\nFixes: #1\n\nplain closing words\n", []),
    ],
)
def test_parse_trailers(message: str, trailers: list[tuple[str, str]]) -> None:
    assert parse_trailers(message) == trailers


def test_trailer_values_is_case_insensitive() -> None:
    message = "x\n\nCO-AUTHORED-BY: a <a@x>\nCo-authored-by: b <b@x>\n"
    assert trailer_values(message, "co-authored-by") == ["a <a@x>", "b <b@x>"]


# ---------------------------------------------------------------------------- agent detection


def pr(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "author_login": "alice",
        "author_type": "User",
        "body": "A change.",
        "commit_messages": ["Do a thing"],
        "head_ref": "feature/x",
    }
    base.update(kw)
    return base


AGENT_CASES: list[tuple[str, dict[str, Any], str, str | None, str | None]] = [
    # (case, inputs, kind, agent, launched_by)
    (
        "copilot login",
        pr(author_login="Copilot", author_type="Bot"),
        "agent",
        "GitHub Copilot",
        None,
    ),
    (
        "copilot swe bot with human co-author",
        pr(
            author_login="copilot-swe-agent[bot]",
            author_type="Bot",
            commit_messages=["Fix\n\nCo-authored-by: alice <12345+alice@users.noreply.github.com>"],
        ),
        "agent",
        "GitHub Copilot",
        "alice",
    ),
    ("copilot branch", pr(head_ref="copilot/fix-123"), "agent", "GitHub Copilot", "alice"),
    (
        "copilot trailer",
        pr(
            commit_messages=[
                "x\n\nCo-authored-by: Copilot <175728472+Copilot@users.noreply.github.com>"
            ]
        ),
        "agent",
        "GitHub Copilot",
        "alice",
    ),
    (
        "claude bot login",
        pr(author_login="claude[bot]", author_type="Bot"),
        "agent",
        "Claude",
        None,
    ),
    (
        "claude code trailer",
        pr(commit_messages=["Add x\n\nCo-Authored-By: Claude <noreply@anthropic.com>"]),
        "agent",
        "Claude",
        "alice",
    ),
    (
        "claude code body marker",
        pr(body="Summary\n\n🤖 Generated with [Claude Code](https://claude.com/claude-code)"),
        "agent",
        "Claude",
        "alice",
    ),
    (
        "codex connector",
        pr(author_login="chatgpt-codex-connector[bot]", author_type="Bot"),
        "agent",
        "Codex",
        None,
    ),
    ("codex branch", pr(head_ref="codex/add-tests"), "agent", "Codex", "alice"),
    (
        "codex body",
        pr(body="https://chatgpt.com/codex/tasks/task_e_123"),
        "agent",
        "Codex",
        "alice",
    ),
    (
        "devin login",
        pr(author_login="devin-ai-integration[bot]", author_type="Bot"),
        "agent",
        "Devin",
        None,
    ),
    (
        "devin body",
        pr(body="Link to Devin run: https://app.devin.ai/sessions/abc"),
        "agent",
        "Devin",
        "alice",
    ),
    ("cursor login", pr(author_login="cursor[bot]", author_type="Bot"), "agent", "Cursor", None),
    (
        "cursor trailer",
        pr(commit_messages=["x\n\nCo-authored-by: Cursor Agent <cursoragent@cursor.com>"]),
        "agent",
        "Cursor",
        "alice",
    ),
    ("cursor branch", pr(head_ref="cursor/fix-bug-1a2b"), "agent", "Cursor", "alice"),
    ("openhands login", pr(author_login="openhands-agent"), "agent", "OpenHands", None),
    (
        "openhands trailer",
        pr(commit_messages=["x\n\nCo-authored-by: openhands <openhands@all-hands.dev>"]),
        "agent",
        "OpenHands",
        "alice",
    ),
    ("sweep login", pr(author_login="sweep-ai[bot]", author_type="Bot"), "agent", "Sweep", None),
    (
        "shepherd login",
        pr(author_login="shepherd[bot]", author_type="Bot"),
        "agent",
        "Shepherd",
        None,
    ),
    (
        "shepherd trailer",
        pr(commit_messages=["style: ruff format\n\nShepherd-Job: 17"]),
        "agent",
        "Shepherd",
        "alice",
    ),
    (
        "shepherd fix commit on a human PR",
        pr(commit_messages=["Add feature", "style: ruff format\n\nShepherd-Job: 17"]),
        "human",
        None,
        None,
    ),
    (
        "shepherd fix commit on a dependabot PR",
        pr(
            author_login="dependabot[bot]",
            author_type="Bot",
            commit_messages=["Bump x", "fix lockfile\n\nShepherd-Job: 3"],
        ),
        "dependency-bot",
        None,
        None,
    ),
    (
        "configured login",
        pr(author_login="our-agent", configured_logins=["Our-Agent"]),
        "agent",
        "configured agent",
        None,
    ),
    (
        "human PR with unknown bot co-author",
        pr(
            commit_messages=[
                "x\n\nCo-authored-by: helper[bot] <9+helper[bot]@users.noreply.github.com>"
            ]
        ),
        "agent",
        "helper[bot]",
        "alice",
    ),
    (
        "dependabot",
        pr(author_login="dependabot[bot]", author_type="Bot", head_ref="dependabot/pip/x-1.2"),
        "dependency-bot",
        None,
        None,
    ),
    (
        "renovate",
        pr(author_login="renovate[bot]", author_type="Bot", head_ref="renovate/x"),
        "dependency-bot",
        None,
        None,
    ),
    ("other bot", pr(author_login="release-please[bot]", author_type="Bot"), "bot", None, None),
    ("bot by type only", pr(author_login="some-app", author_type="Bot"), "bot", None, None),
    ("plain human", pr(), "human", None, None),
    (
        "human named Claude is not an agent",
        pr(
            author_login="claude",
            commit_messages=["x\n\nCo-authored-by: Claude Monet <claude@monet.fr>"],
        ),
        "human",
        None,
        None,
    ),
    (
        "github-actions co-author is plumbing",
        pr(
            commit_messages=[
                "x\n\nCo-authored-by: github-actions[bot]"
                " <41898282+github-actions[bot]@users.noreply.github.com>"
            ]
        ),
        "human",
        None,
        None,
    ),
    (
        "prose mention is not a marker",
        pr(body="Compared with Copilot and Claude, this..."),
        "human",
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("inputs", "kind", "agent", "launched_by"),
    [case[1:] for case in AGENT_CASES],
    ids=[case[0] for case in AGENT_CASES],
)
def test_detect_agent(
    inputs: dict[str, Any], kind: str, agent: str | None, launched_by: str | None
) -> None:
    verdict = detect_agent(**inputs)
    assert verdict.kind == kind
    assert verdict.is_agent is (kind == "agent")
    assert verdict.agent == agent
    assert verdict.launched_by == launched_by
    if kind != "human":
        assert verdict.evidence
    else:
        assert verdict.evidence == ()


def test_detect_agent_evidence_is_safe_markdown() -> None:
    verdict = detect_agent(**pr(head_ref="copilot/`<!-- x -->`\n"))
    assert verdict.is_agent
    assert verdict.evidence == ("branch `copilot/'<!- x -->' `",)


def test_detect_agent_collects_every_signal() -> None:
    verdict = detect_agent(
        author_login="Copilot",
        author_type="Bot",
        body="x",
        commit_messages=["x\n\nCo-authored-by: Claude <noreply@anthropic.com>"],
        head_ref="copilot/x",
    )
    assert verdict.agent == "GitHub Copilot"
    assert len(verdict.evidence) == 3


def webhook_examples() -> list[Path]:
    return sorted((SHARED / "github" / "webhooks" / "pull_request").glob("*.json"))


def test_webhook_examples_exist() -> None:
    assert len(webhook_examples()) > 5


@pytest.mark.parametrize("payload_path", webhook_examples(), ids=lambda p: p.name)
def test_real_pull_request_payloads_through_detect_agent(payload_path: Path) -> None:
    payload = json.loads(payload_path.read_text())
    pull = payload["pull_request"]
    verdict = detect_agent(
        author_login=pull["user"]["login"],
        author_type=pull["user"]["type"],
        body=pull["body"],
        commit_messages=[],
        head_ref=pull["head"]["ref"],
    )
    # The published examples are all opened by people (Codertocat and friends).
    assert verdict.kind == ("bot" if pull["user"]["type"] == "Bot" else "human")
    assert not verdict.is_agent


# ---------------------------------------------------------------------------- triage + rendering


def agent_triage(**config: Any) -> Triage:
    changes = [
        change("src/app.py", 100, 20),
        change("pyproject.toml", 2, 1),
        change("uv.lock", 300, 100, generated=True),
        change(".github/workflows/ci.yml", 5, 0),
    ]
    return triage(
        changes,
        PullFacts(
            author_login="claude[bot]",
            author_type="Bot",
            body="🤖 Generated with [Claude Code](https://claude.com/claude-code)",
            commit_messages=("x\n\nCo-authored-by: bob <7+bob@users.noreply.github.com>",),
            head_ref="claude/issue-5",
        ),
        config=TriageConfig(area_rules={"area/ci": [".github/"]}, **config),
        codeowners=parse_codeowners("* @core\n*.py @py-team @claude[bot]\n"),
    )


def test_triage_ties_it_together() -> None:
    t = agent_triage()
    assert (t.files, t.changed_lines, t.size) == (4, 128, "size/L")
    assert t.excluded == ("uv.lock",)
    assert t.areas == ("area/ci",)
    assert [f.code for f in t.risks] == ["ci-config", "dependencies", "no-tests"]
    assert t.agent.agent == "Claude"
    assert t.agent.launched_by == "bob"
    assert t.reviewers == ("@core", "@py-team")  # the author (the agent) is excluded
    assert t.labels == (
        "size/L",
        "area/ci",
        "risk/ci-config",
        "risk/dependencies",
        "risk/no-tests",
        AGENT_LABEL,
    )
    assert t.policy_findings == ()
    assert set(t.labels) <= managed_labels(TriageConfig(area_rules={"area/ci": [".github/"]}))


def test_agent_policy_findings() -> None:
    t = agent_triage(require_tests=True, max_changed_lines=100, forbid_github_dir=True)
    assert len(t.policy_findings) == 3
    assert t.policy_findings[0].startswith("Tests required")
    assert "128 changed lines (limit 100)" in t.policy_findings[1]
    assert "`.github/workflows/ci.yml`" in t.policy_findings[2]
    assert (
        agent_policy_findings(
            t, require_tests=False, max_changed_lines=200, forbid_github_dir=False
        )
        == []
    )


def test_agent_policy_does_not_apply_to_humans() -> None:
    t = triage([change("src/a.py", 5000)], PullFacts(author_login="alice"))
    findings = agent_policy_findings(
        t, require_tests=True, max_changed_lines=1, forbid_github_dir=True
    )
    assert findings == []


def test_render_triage_markdown() -> None:
    t = agent_triage(require_tests=True)
    text = render_triage_markdown(t)
    first, *rest = text.splitlines()
    assert first == (
        "**size/L** · 4 files, +407 −121 (1 generated file excluded) · agent: Claude"
        " · risk: ci-config, dependencies, no-tests"
    )
    body = "\n".join(rest)
    assert "- Areas: area/ci" in body
    assert "- Suggested reviewers: @core, @py-team" in body
    assert "- Launched by: @bob" in body
    assert "- ❌ Tests required" in body
    assert "Excluded from size: `uv.lock`" in body
    assert len(text.splitlines()) < 15


def test_render_human_pr_is_one_short_block() -> None:
    t = triage([change("README.md", 3, 1)], PullFacts(author_login="alice"))
    assert render_triage_markdown(t) == "**size/XS** · 1 file, +3 −1\n"
    assert t.labels == ("size/XS",)


@pytest.mark.parametrize("label", SIZE_LABELS)
def test_every_size_label_is_managed(label: str) -> None:
    assert label in managed_labels(TriageConfig())


def test_diff_facts_unusual_names(tmp_path: Path) -> None:
    before = {"sp ace.txt": b"a\n", "é.txt": b"a\n", "ü.bin": b"\x00", "ren é.txt": b"x\ny\nz\n"}
    after: dict[str, bytes | None] = {
        "sp ace.txt": None,
        "new sp.txt": b"a\nb\n",
        "é.txt": b"a\nb\n",
        "ü.bin": b"\x00\x01",
        "ren é.txt": None,
        "renamed ü.txt": b"x\ny\nz\n",
        "ñew.png": b"\x00\x02",
    }
    repo = make_repo(tmp_path, before, after)
    diff = git(repo, "diff", "-M", "HEAD~1", "HEAD")
    assert '"b/\\303\\251.txt"' in diff  # git really quoted it
    facts = diff_facts(diff, generated=NO_GENERATED)
    got = {(f.path, f.previous_path, f.status, f.binary) for f in facts.files}
    assert got == {
        ("new sp.txt", "sp ace.txt", "renamed", False),
        ("é.txt", None, "modified", False),
        ("ü.bin", None, "modified", True),
        ("renamed ü.txt", "ren é.txt", "renamed", False),
        ("ñew.png", None, "added", True),
    }
    assert sorted(facts.files, key=lambda f: f.path) == sorted(
        files_from_api(api_files(repo), generated=NO_GENERATED), key=lambda f: f.path
    )


def test_triage_as_json_round_trips() -> None:
    t = agent_triage(require_tests=True)
    data = json.loads(json.dumps(t.as_json()))
    assert data["size"] == "size/L"
    assert data["agent"] == {
        "kind": "agent",
        "is_agent": True,
        "name": "Claude",
        "evidence": list(t.agent.evidence),
        "launched_by": "bob",
    }
    assert [r["code"] for r in data["risks"]] == ["ci-config", "dependencies", "no-tests"]
    assert data["excluded"] == ["uv.lock"]
    assert data["labels"][-1] == AGENT_LABEL
    assert data["policy_findings"] == list(t.policy_findings)
