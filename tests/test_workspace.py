"""Workspaces against real git: a bare repository on disk (or served over HTTP by
``git http-backend`` on 127.0.0.1) stands in for GitHub."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.git.workspace import (
    FileChange,
    Workspaces,
    Worktree,
    changed_files,
    changes_between,
    commit,
    diff,
    push,
    snapshot_tree,
    validate_branch,
    validate_ref,
    validate_sha,
    with_trailers,
)
from bot.kernel.errors import PushRejected, WorkspaceError

TOKEN = "ghs_s3cretT0kenValue1234567890abcdef"
BOT_NAME = "shepherd[bot]"
BOT_EMAIL = "1+shepherd[bot]@users.noreply.github.com"


# -- helpers ----------------------------------------------------------------------------------


async def bot_commit(wt: Worktree, message: str) -> str | None:
    return await commit(wt, message, author_name=BOT_NAME, author_email=BOT_EMAIL)


def git(*args: str, cwd: Path) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Dev",
        "GIT_AUTHOR_EMAIL": "dev@example.com",
        "GIT_COMMITTER_NAME": "Dev",
        "GIT_COMMITTER_EMAIL": "dev@example.com",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@dataclass
class Remote:
    """A bare repository playing GitHub, and a working clone used to push to it."""

    bare: Path
    work: Path
    shas: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def commit(self, files: dict[str, str], message: str = "change", push: bool = True) -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        sha = git("rev-parse", "HEAD", cwd=self.work)
        if push:
            git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=self.work)
        self.shas.append(sha)
        return sha

    def branch_sha(self, branch: str) -> str | None:
        try:
            return git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=self.bare)
        except subprocess.CalledProcessError:
            return None


def make_remote(base: Path) -> Remote:
    bare = base / "remote" / "octo" / "demo.git"
    bare.mkdir(parents=True)
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=base)
    work = base / "seed"
    git("clone", "-q", bare.as_uri(), str(work), cwd=base)
    git("checkout", "-q", "-b", "main", cwd=work)
    remote = Remote(bare, work)
    remote.commit({"README.md": "hello\n", "src/app.py": "x = 1\n"}, "initial")
    return remote


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return make_remote(tmp_path)


@pytest.fixture
def ws(tmp_path: Path) -> Workspaces:
    return Workspaces(tmp_path / "ws")


def all_bytes_under(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def list_matching(root: Path, pattern: str) -> list[Path]:
    return list(root.rglob(pattern))


def assert_secret_absent(root: Path, *secrets: str) -> None:
    for path, data in all_bytes_under(root):
        for secret in secrets:
            assert secret.encode() not in data, f"secret found in {path}"


# -- validation of hostile input --------------------------------------------------------------

BRANCH_NAMES = [
    "main",
    "feat/x",
    "feat/$(touch_pwned)",
    "feat/`id`",
    "a;rm",
    "release-1.2",
    "user/fix#12",
    "feat/$(touch pwned)",
    "a;rm -rf ~",
    "x\ny",
    "x\ty",
    "a..b",
    "a/.hidden",
    "a.lock",
    "a/b.lock/c",
    "a//b",
    "/a",
    "a/",
    "a.",
    "a@{1}",
    "a^b",
    "a:b",
    "a?b",
    "a*b",
    "a[b",
    "a\\b",
    "a\x7fb",
    "",
]


@pytest.mark.parametrize("name", BRANCH_NAMES)
def test_branch_validation_matches_git(name: str, tmp_path: Path) -> None:
    git_ok = (
        subprocess.run(
            ["git", "check-ref-format", "--branch", name],
            cwd=tmp_path,
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        validate_branch(name)
        ours = True
    except WorkspaceError:
        ours = False
    assert ours == git_ok


# Stricter than git: '@' alone is a valid refs/heads/@ but means HEAD to most git commands.
@pytest.mark.parametrize("name", ["--upload-pack=evil", "-f", "HEAD", "@"])
def test_branch_names_that_git_would_misread_are_rejected(name: str) -> None:
    with pytest.raises(WorkspaceError):
        validate_branch(name)


@pytest.mark.parametrize(
    ("sha", "ok"),
    [
        ("a" * 40, True),
        ("A" * 40, True),
        ("0123456789abcdef" * 4, True),  # SHA-256
        ("a" * 39, False),
        ("a" * 41, False),
        ("g" * 40, False),
        ("HEAD", False),
        ("--all", False),
        ("a" * 40 + "\n", False),
    ],
)
def test_validate_sha(sha: str, ok: bool) -> None:
    if ok:
        assert validate_sha(sha) == sha.lower()
    else:
        with pytest.raises(WorkspaceError):
            validate_sha(sha)


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        ("refs/pull/7/head", True),
        ("refs/heads/main", True),
        ("pull/7/head", False),
        ("refs/../x", False),
        ("--upload-pack=x", False),
        ("refs/pull/7/head:refs/heads/main", False),
    ],
)
def test_validate_ref(ref: str, ok: bool) -> None:
    if ok:
        assert validate_ref(ref) == ref
    else:
        with pytest.raises(WorkspaceError):
            validate_ref(ref)


@pytest.mark.parametrize(
    ("repo", "url", "job"),
    [
        ("../etc", None, None),
        ("octo/..", None, None),
        ("-x/demo", None, None),
        ("octo", None, None),
        ("octo/demo/extra", None, None),
        (None, "ext::sh -c touch% /tmp/pwned", None),
        (None, "https://user:pw@github.com/octo/demo.git", None),
        (None, "--upload-pack=touch /tmp/pwned", None),
        (None, "ssh://git@github.com/octo/demo.git", None),
        (None, None, "../x"),
        (None, None, "-rf"),
        (None, None, "a/b"),
        (None, None, ".hidden"),
    ],
)
async def test_hostile_names_and_urls_are_refused(
    ws: Workspaces, remote: Remote, repo: str | None, url: str | None, job: str | None
) -> None:
    with pytest.raises(WorkspaceError):
        async with ws.checkout(
            url or remote.url, repo or "octo/demo", remote.shas[0], job_id=job or "job-1"
        ):
            pass
    assert not (ws.root / "mirrors" / "octo" / "demo.git").exists()


async def test_token_over_plain_http_only_to_loopback(tmp_path: Path) -> None:
    ws = Workspaces(tmp_path)
    with pytest.raises(WorkspaceError, match="plain http"):
        async with ws.checkout(
            "http://github.example.com/octo/demo.git",
            "octo/demo",
            "a" * 40,
            job_id="j",
            token=TOKEN,
        ):
            pass


@pytest.mark.parametrize(
    ("message", "trailers", "expected"),
    [
        ("fix lint", [("Shepherd-Job", "42")], "fix lint\n\nShepherd-Job: 42\n"),
        (
            "fix lint\n\nbody text\n",
            [("Shepherd-Job", "42"), ("Signed-off-by", "Bot <b@x>")],
            "fix lint\n\nbody text\n\nShepherd-Job: 42\nSigned-off-by: Bot <b@x>\n",
        ),
        (
            "fix\n\nCo-authored-by: A <a@x>",
            [("Shepherd-Job", "42")],
            "fix\n\nCo-authored-by: A <a@x>\nShepherd-Job: 42\n",
        ),
        ("fix\n\nShepherd-Job: 42\n", [("Shepherd-Job", "42")], "fix\n\nShepherd-Job: 42\n"),
        ("Key: looks like a trailer", [("A", "b")], "Key: looks like a trailer\n\nA: b\n"),
        ("fix", [], "fix\n"),
    ],
)
def test_with_trailers(message: str, trailers: list[tuple[str, str]], expected: str) -> None:
    assert with_trailers(message, trailers) == expected


@pytest.mark.parametrize(("key", "value"), [("Bad Key", "v"), ("K", "a\nEvil: 1"), ("K", " ")])
def test_with_trailers_rejects_injection(key: str, value: str) -> None:
    with pytest.raises(ValueError, match="trailer"):
        with_trailers("m", [(key, value)])


# -- checkout -----------------------------------------------------------------------------------


async def head_of(wt: Worktree) -> str:
    return git("rev-parse", "HEAD", cwd=wt.path)


async def test_checkout_gives_fresh_worktree_and_removes_it(ws: Workspaces, remote: Remote) -> None:
    sha = remote.shas[0]
    async with ws.checkout(remote.url, "octo/demo", sha, job_id="job-1") as wt:
        assert wt.sha == sha
        assert await head_of(wt) == sha
        assert (wt.path / "src" / "app.py").read_text() == "x = 1\n"
        assert wt.path == ws.root / "jobs" / "job-1"
    assert not wt.path.exists()
    mirror = ws.mirror_path("octo/demo")
    assert git("config", "--get", "core.bare", cwd=mirror) == "true"
    assert git("worktree", "list", "--porcelain", cwd=mirror).count("worktree ") == 1


async def test_worktree_removed_on_exception(ws: Workspaces, remote: Remote) -> None:
    paths: list[Path] = []

    async def failing_job() -> None:
        async with ws.checkout(remote.url, "octo/demo", remote.shas[0], job_id="job-2") as wt:
            paths.append(wt.path)
            (wt.path / "scratch.txt").write_text("dirty")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing_job()
    assert paths
    assert not paths[0].exists()
    assert "job-2" not in git("worktree", "list", cwd=ws.mirror_path("octo/demo"))


async def test_warm_mirror_needs_no_remote(ws: Workspaces, remote: Remote, tmp_path: Path) -> None:
    sha = remote.shas[0]
    async with ws.checkout(remote.url, "octo/demo", sha, job_id="a"):
        pass
    remote.bare.rename(tmp_path / "gone.git")  # a fetch would now fail
    async with ws.checkout(remote.url, "Octo/Demo", sha, job_id="b") as wt:
        assert await head_of(wt) == sha


async def test_new_commits_are_fetched_incrementally(ws: Workspaces, remote: Remote) -> None:
    async with ws.checkout(remote.url, "octo/demo", remote.shas[0], job_id="a"):
        pass
    new = remote.commit({"src/app.py": "x = 2\n"})
    async with ws.checkout(remote.url, "octo/demo", new, job_id="b") as wt:
        assert (wt.path / "src" / "app.py").read_text() == "x = 2\n"
    assert git("rev-parse", "refs/heads/main", cwd=ws.mirror_path("octo/demo")) == new


@pytest.mark.parametrize("use_ref", [True, False])
async def test_fork_pr_head_only_under_refs_pull(
    ws: Workspaces, remote: Remote, use_ref: bool
) -> None:
    fork_sha = remote.commit({"fork.txt": "from a fork\n"}, push=False)
    git("push", "-q", "origin", f"{fork_sha}:refs/pull/7/head", cwd=remote.work)
    async with ws.checkout(remote.url, "octo/demo", remote.shas[0], job_id="warm"):
        pass  # the mirror exists and has main only
    async with ws.checkout(
        remote.url,
        "octo/demo",
        fork_sha,
        job_id="fork",
        fetch_ref="refs/pull/7/head" if use_ref else None,
    ) as wt:
        assert (wt.path / "fork.txt").read_text() == "from a fork\n"


async def test_unknown_sha_is_a_workspace_error(ws: Workspaces, remote: Remote) -> None:
    with pytest.raises(WorkspaceError, match="not available"):
        async with ws.checkout(remote.url, "octo/demo", "b" * 40, job_id="x"):
            pass
    assert not (ws.root / "jobs" / "x").exists()


async def test_same_job_id_twice_at_once_is_refused(ws: Workspaces, remote: Remote) -> None:
    async with ws.checkout(remote.url, "octo/demo", remote.shas[0], job_id="dup"):
        with pytest.raises(WorkspaceError, match="already"):
            async with ws.checkout(remote.url, "octo/demo", remote.shas[0], job_id="dup"):
                pass


async def test_a_job_rerun_after_its_crash_starts_clean(ws: Workspaces, remote: Remote) -> None:
    mirror = ws.mirror_path("octo/demo")
    sha = remote.shas[0]
    async with ws.checkout(remote.url, "octo/demo", sha, job_id="first"):
        pass  # the mirror exists
    # What a crashed process leaves: a registered worktree with files in it, and no lock holder.
    git("worktree", "add", "--detach", "-q", str(ws.root / "jobs" / "again"), sha, cwd=mirror)
    (ws.root / "jobs" / "again" / "junk").write_text("x")
    async with ws.checkout(remote.url, "octo/demo", sha, job_id="again") as wt:
        assert not (wt.path / "junk").exists()


# -- concurrency --------------------------------------------------------------------------------


async def test_concurrent_checkouts_and_fetches_keep_mirror_sound(
    tmp_path: Path, remote: Remote
) -> None:
    for i in range(5):
        remote.commit({f"f{i}.txt": f"{i}\n"})
    # Two instances on one root: their asyncio locks are separate, so only the file lock
    # serializes them, as between two worker processes.
    first, second = Workspaces(tmp_path / "ws"), Workspaces(tmp_path / "ws")
    seen: dict[str, str] = {}

    async def job(n: int) -> None:
        ws = first if n % 2 else second
        sha = remote.shas[n % len(remote.shas)]
        async with ws.checkout(remote.url, "octo/demo", sha, job_id=f"job-{n}") as wt:
            seen[f"job-{n}"] = await head_of(wt)
            assert wt.sha == sha
            await ws.fetch(remote.url, "octo/demo")
            (wt.path / f"out-{n}.txt").write_text(str(n))
            new = await bot_commit(wt, f"job {n}")
            assert new is not None

    await asyncio.gather(*(job(n) for n in range(12)))
    mirror = first.mirror_path("octo/demo")
    fsck = await asyncio.create_subprocess_exec(
        "git", "fsck", "--full", "--strict", cwd=mirror, stderr=asyncio.subprocess.PIPE
    )
    _, fsck_err = await fsck.communicate()
    assert fsck.returncode == 0, fsck_err
    assert b"error" not in fsck_err.lower()
    assert seen == {f"job-{n}": remote.shas[n % len(remote.shas)] for n in range(12)}
    assert list((tmp_path / "ws" / "jobs").iterdir()) == []
    assert git("worktree", "list", cwd=mirror).count("\n") == 0


async def test_fetch_waits_for_another_process_holding_the_mirror_lock(
    ws: Workspaces, remote: Remote
) -> None:
    mirror = await ws.fetch(remote.url, "octo/demo")
    lock = mirror.with_name(mirror.name + ".lock")
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import fcntl,sys\n"
        f"f=open({str(lock)!r},'a')\n"
        "fcntl.flock(f,fcntl.LOCK_EX)\n"
        "print('locked',flush=True)\n"
        "sys.stdin.readline()\n",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    assert (await holder.stdout.readline()).strip() == b"locked"
    new = remote.commit({"later.txt": "1\n"})
    fetching = asyncio.create_task(ws.fetch(remote.url, "octo/demo"))
    await asyncio.sleep(0.5)
    assert not fetching.done()
    assert git("rev-parse", "refs/heads/main", cwd=mirror) != new
    holder.stdin.write(b"\n")
    await holder.stdin.drain()
    await holder.wait()
    await fetching
    assert git("rev-parse", "refs/heads/main", cwd=mirror) == new


# -- changes, commit, diff ------------------------------------------------------------------


async def test_commit_changed_files_diff_and_changes_between(
    ws: Workspaces, remote: Remote, tmp_path: Path
) -> None:
    base = remote.shas[0]
    async with ws.checkout(remote.url, "octo/demo", base, job_id="c") as wt:
        assert await changed_files(wt) == []
        assert await bot_commit(wt, "nothing") is None

        (wt.path / "src" / "app.py").write_text("x = 1  # fixed\n")
        (wt.path / "README.md").unlink()
        (wt.path / "new dir").mkdir()
        (wt.path / "new dir" / "tool.sh").write_text("#!/bin/sh\necho hi\n")
        (wt.path / "new dir" / "tool.sh").chmod(0o755)
        (wt.path / "link").symlink_to("src/app.py")
        (wt.path / "blob.bin").write_bytes(bytes(range(256)))
        (wt.path / "secret.env").write_text("do not commit\n")
        expected_paths = [
            "README.md",
            "blob.bin",
            "link",
            "new dir/tool.sh",
            "secret.env",
            "src/app.py",
        ]
        assert await changed_files(wt) == expected_paths

        patch = await diff(wt, base)
        tree = await asyncio.to_thread(snapshot_tree, wt)
        changes = await asyncio.to_thread(changes_between, wt, base, tree)
        assert changes == [
            FileChange("README.md", "100644", None),
            FileChange("blob.bin", "100644", bytes(range(256))),
            FileChange("link", "120000", b"src/app.py"),
            FileChange("new dir/tool.sh", "100755", b"#!/bin/sh\necho hi\n"),
            FileChange("secret.env", "100644", b"do not commit\n"),
            FileChange("src/app.py", "100644", b"x = 1  # fixed\n"),
        ]
        # Computing the diff did not stage anything in the worktree's index.
        assert git("diff", "--cached", "--name-only", cwd=wt.path) == ""

        message = with_trailers("shepherd: ruff-check\n\n#123 stays", [("Shepherd-Job", "c")])
        new = await bot_commit(wt, message)
        assert new is not None
        assert new != base
        assert await head_of(wt) == base  # a commit object only: the worktree stays put
        assert git("rev-parse", f"{new}~1", cwd=wt.path) == base
        assert git("log", "-1", "--format=%B", new, cwd=wt.path) == message.strip()
        assert git("log", "-1", "--format=%an <%ae>|%cn", new, cwd=wt.path) == (
            "shepherd[bot] <1+shepherd[bot]@users.noreply.github.com>|shepherd[bot]"
        )
        committed = git("show", "--name-only", "--format=", new, cwd=wt.path).splitlines()
        assert sorted(committed) == expected_paths

    # The patch reproduces the same tree on a plain clone of the base.
    other = tmp_path / "other"
    git("clone", "-q", remote.url, str(other), cwd=tmp_path)
    git("checkout", "-q", base, cwd=other)
    (other / "patch.diff").write_text(patch)
    git("apply", "--index", "patch.diff", cwd=other)
    (other / "patch.diff").unlink()
    assert (other / "blob.bin").read_bytes() == bytes(range(256))
    assert os.access(other / "new dir" / "tool.sh", os.X_OK)
    assert not (other / "README.md").exists()
    assert (other / "link").is_symlink()


async def test_commit_refuses_identity_injection(ws: Workspaces, remote: Remote) -> None:
    async with ws.checkout(remote.url, "octo/demo", remote.shas[0], job_id="id") as wt:
        (wt.path / "a.txt").write_text("a")
        with pytest.raises(WorkspaceError, match="identity"):
            await commit(wt, "m", author_name="x>\nevil", author_email="e@x")


async def test_hooks_in_repository_never_run(ws: Workspaces, remote: Remote) -> None:
    # A hook planted in the mirror (e.g. by a compromised earlier step) is ignored.
    mirror = await ws.fetch(remote.url, "octo/demo")
    hook = mirror / "hooks" / "pre-commit"
    marker = ws.root / "hook-ran"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    async with ws.checkout(remote.url, "octo/demo", remote.shas[0], job_id="h") as wt:
        (wt.path / "a.txt").write_text("a")
        assert await bot_commit(wt, "m") is not None
    assert not marker.exists()


# -- push ---------------------------------------------------------------------------------------


async def _fixed_commit(wt: Worktree, name: str = "fix.txt") -> str:
    (wt.path / name).write_text("fixed\n")
    sha = await bot_commit(wt, "shepherd: fix")
    assert sha is not None
    return sha


async def test_push_with_lease_updates_branch(ws: Workspaces, remote: Remote) -> None:
    head = remote.shas[0]
    async with ws.checkout(remote.url, "octo/demo", head, job_id="p") as wt:
        new = await _fixed_commit(wt)
        await push(wt, remote.url, "main", commit_sha=new, expected_sha=head, token=None)
    assert remote.branch_sha("main") == new


async def test_push_with_stale_lease_is_rejected(ws: Workspaces, remote: Remote) -> None:
    head = remote.shas[0]
    async with ws.checkout(remote.url, "octo/demo", head, job_id="p") as wt:
        new = await _fixed_commit(wt)
        someone_else = remote.commit({"human.txt": "pushed meanwhile\n"})
        with pytest.raises(PushRejected, match="rejected"):
            await push(wt, remote.url, "main", commit_sha=new, expected_sha=head, token=None)
    assert remote.branch_sha("main") == someone_else


async def test_push_to_missing_branch_with_lease_is_rejected(
    ws: Workspaces, remote: Remote
) -> None:
    async with ws.checkout(remote.url, "octo/demo", remote.shas[0], job_id="p") as wt:
        new = await _fixed_commit(wt)
        with pytest.raises(PushRejected):
            await push(
                wt,
                remote.url,
                "deleted-branch",
                commit_sha=new,
                expected_sha=remote.shas[0],
                token=None,
            )
    assert remote.branch_sha("deleted-branch") is None


async def test_push_refused_by_remote_hook_is_rejected(ws: Workspaces, remote: Remote) -> None:
    # Stands in for branch protection: the server declines the update.
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch hook declined' >&2\nexit 1\n")
    hook.chmod(0o755)
    async with ws.checkout(remote.url, "octo/demo", remote.shas[0], job_id="p") as wt:
        new = await _fixed_commit(wt)
        with pytest.raises(PushRejected, match="pre-receive hook declined"):
            await push(
                wt, remote.url, "main", commit_sha=new, expected_sha=remote.shas[0], token=None
            )
    assert remote.branch_sha("main") == remote.shas[0]


async def test_push_to_unreachable_remote_is_workspace_error(
    ws: Workspaces, remote: Remote, tmp_path: Path
) -> None:
    async with ws.checkout(remote.url, "octo/demo", remote.shas[0], job_id="p") as wt:
        new = await _fixed_commit(wt)
        with pytest.raises(WorkspaceError) as info:
            await push(
                wt,
                (tmp_path / "nowhere.git").as_uri(),
                "main",
                commit_sha=new,
                expected_sha=remote.shas[0],
                token=None,
            )
        assert not isinstance(info.value, PushRejected)


@pytest.mark.parametrize(
    "branch", ["feat/$(touch_pwned)", "feat/`touch_pwned`", "a;touch_pwned", "x|y&z"]
)
async def test_hostile_but_valid_branch_names_are_pushed_verbatim(
    ws: Workspaces, remote: Remote, tmp_path: Path, branch: str
) -> None:
    base = remote.shas[0]
    git("push", "-q", "origin", f"{base}:refs/heads/{branch}", cwd=remote.work)
    async with ws.checkout(remote.url, "octo/demo", base, job_id="hb") as wt:
        new = await _fixed_commit(wt)
        await push(wt, remote.url, branch, commit_sha=new, expected_sha=base, token=None)
        assert not any(p.name.startswith("touch_pwned") for p in wt.path.iterdir())
    assert remote.branch_sha(branch) == new
    assert not list_matching(tmp_path, "touch_pwned*")


@pytest.mark.parametrize(
    "branch",
    ["--upload-pack=touch pwned", "feat/$(touch pwned)", "a;rm -rf ~", "x\ny", "-", "a..b", "HEAD"],
)
async def test_invalid_branch_names_never_reach_git(
    ws: Workspaces, remote: Remote, tmp_path: Path, branch: str
) -> None:
    before = git("for-each-ref", cwd=remote.bare)
    async with ws.checkout(remote.url, "octo/demo", remote.shas[0], job_id="ib") as wt:
        new = await _fixed_commit(wt)
        with pytest.raises(WorkspaceError, match="invalid branch"):
            await push(
                wt, remote.url, branch, commit_sha=new, expected_sha=remote.shas[0], token=None
            )
    assert git("for-each-ref", cwd=remote.bare) == before
    assert not list_matching(tmp_path, "pwned")


# -- the token over HTTP (git http-backend behind an aiohttp server on 127.0.0.1) -------------


@dataclass
class GitHTTP:
    url: str
    authorizations: list[str | None]


async def _http_backend(projects: Path, request: web.Request) -> web.StreamResponse:
    body = await request.read()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(projects),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_PROJECT_ROOT": str(projects),
        "GIT_HTTP_EXPORT_ALL": "1",
        "REMOTE_USER": "x-access-token",  # enables receive-pack (push)
        "REMOTE_ADDR": "127.0.0.1",
        "PATH_INFO": request.path,
        "QUERY_STRING": request.query_string,
        "REQUEST_METHOD": request.method,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
    }
    if body[:2] == b"\x1f\x8b":  # aiohttp did not inflate it: let git do it
        env["HTTP_CONTENT_ENCODING"] = "gzip"
    proc = await asyncio.create_subprocess_exec(
        "git",
        "http-backend",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(body)
    head, _, payload = out.partition(b"\r\n\r\n")
    status, headers = 200, {}
    for line in head.decode().split("\r\n"):
        key, _, value = line.partition(": ")
        if key.lower() == "status":
            status = int(value.split()[0])
        elif key:
            headers[key] = value
    return web.Response(status=status, body=payload, headers=headers)


@pytest.fixture
async def git_http(remote: Remote) -> AsyncIterator[GitHTTP]:
    projects = remote.bare.parent.parent
    seen: list[str | None] = []
    good = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()

    async def handler(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        seen.append(auth)
        if auth != good:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="gh"'})
        return await _http_backend(projects, request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield GitHTTP(f"http://127.0.0.1:{server.port}/octo/demo.git", seen)
    finally:
        await server.close()


async def test_token_is_sent_but_never_stored(
    ws: Workspaces, remote: Remote, git_http: GitHTTP
) -> None:
    head = remote.shas[0]
    async with ws.checkout(git_http.url, "octo/demo", head, job_id="t", token=TOKEN) as wt:
        new = await _fixed_commit(wt)
        await ws.fetch(git_http.url, "octo/demo", token=TOKEN)
        await push(wt, git_http.url, "main", commit_sha=new, expected_sha=head, token=TOKEN)
        basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
        assert_secret_absent(ws.root, TOKEN, basic)  # mirror and live worktree
    assert remote.branch_sha("main") == new
    assert git_http.authorizations
    assert all(a and a.startswith("Basic ") for a in git_http.authorizations)
    mirror = ws.mirror_path("octo/demo")
    assert git("config", "--get", "remote.origin.url", cwd=mirror) == git_http.url
    assert_secret_absent(ws.root, TOKEN, basic)


async def test_wrong_token_fails_without_leaking_it(
    ws: Workspaces, remote: Remote, git_http: GitHTTP
) -> None:
    wrong = "ghs_wrongWrongWrong000000000000000000"
    with pytest.raises(WorkspaceError) as info:
        async with ws.checkout(git_http.url, "octo/demo", remote.shas[0], job_id="w", token=wrong):
            pass
    assert wrong not in str(info.value)
    assert_secret_absent(ws.root, wrong)


async def test_hung_remote_times_out_as_retryable(tmp_path: Path, remote: Remote) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        ws = Workspaces(tmp_path / "ws", command_timeout=1.0)
        with pytest.raises(WorkspaceError, match="timed out") as info:
            await ws.fetch(f"http://127.0.0.1:{server.port}/octo/demo.git", "octo/demo")
        assert info.value.retryable
    finally:
        release.set()
        await server.close()
