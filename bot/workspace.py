"""Git mirror cache and per-job worktrees.

Layout under ``root``::

    mirrors/<owner>/<repo>.git        bare mirror, one per repository, fetched incrementally
    mirrors/<owner>/<repo>.git.lock   flock serializing writers to that mirror across processes
    jobs/<job-id>/                    the job's worktree (``git worktree add --detach``)
    jobs/<job-id>.lock                flock held while the job runs (tells live jobs from leftovers)
    home/                             HOME for git: empty, so no user configuration leaks in

**Credentials.** The installation token is given per call and never reaches ``.git/config``, a
remote URL or any file. It is passed to the one git process that needs it as an
``http.<origin>.extraHeader`` set through ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/
``GIT_CONFIG_VALUE_n`` environment variables: unlike ``git -c ...`` arguments, which any local
user can read in ``/proc/<pid>/cmdline``, a process environment is readable only by the same user
(and root). The header is scoped to the remote's origin so it is never sent to another host, and is
refused over plain http except to the loopback interface.

**Hostile input.** SHAs, branch names, job ids and repository names come from webhooks and PRs.
They are validated before use, git always runs from an argv list (never a shell), and every
user-controlled ref is passed as a full ``refs/heads/...`` refname so it cannot be read as an
option. Hooks are disabled (``core.hooksPath=/dev/null``) and only the https/http/file transports
are allowed (``GIT_ALLOW_PROTOCOL``), so ``ext::`` URLs cannot run commands.

**Concurrency.** Jobs on one repository run in parallel in their own worktrees; everything that
writes the shared mirror (fetch, worktree add/remove/prune) holds an ``asyncio.Lock`` per mirror
(this process) and an ``flock`` on ``<mirror>.lock`` (other processes on the machine).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from bot.errors import PushRejected, WorkspaceError

_SHA_RE = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
# One path component we create from outside input (owner, repo, job id): no separators, no
# leading dot or dash, so it can be neither a hidden/parent directory nor an option.
_COMPONENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
_TRAILER_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_TRAILER_LINE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*: \S.*")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

DEFAULT_TIMEOUT = 600.0
#: How long to wait for another process's fetch into the same mirror.
LOCK_TIMEOUT = 900.0

# Settings forced on every git process: no hooks (a worktree of PR code must not run anything),
# no signing prompts, no filesystem monitor daemons, no credential helpers from anywhere.
_HARDENING: tuple[tuple[str, str], ...] = (
    ("core.hooksPath", os.devnull),
    ("core.fsmonitor", "false"),
    ("commit.gpgSign", "false"),
    ("credential.helper", ""),
)

_MIRROR_CONFIG: tuple[tuple[str, str], ...] = (
    # Only branches by default; PR heads (refs/pull/N/head) are fetched one by one on demand,
    # because fetching every PR head of a busy repository on every job is wasteful.
    ("remote.origin.fetch", "+refs/heads/*:refs/heads/*"),
    # Run `gc --auto` inside the fetch that triggered it, i.e. inside the mirror lock, never as a
    # detached background process racing with the next fetch.
    ("gc.autoDetach", "false"),
    ("core.logAllRefUpdates", "false"),
)


@dataclass(frozen=True)
class Worktree:
    """A checked-out tree. ``sha`` is the commit it was created at (HEAD may move by commits)."""

    path: Path
    sha: str
    #: HOME for git processes run in it; None → no HOME (and no global config) at all.
    home: Path | None = field(default=None, repr=False, compare=False)


class FileChange(NamedTuple):
    """One changed path, ready to become a Git Data API tree entry."""

    path: str
    #: Git file mode: "100644", "100755" or "120000" (symlink). For deletions, the old mode.
    mode: str
    #: New content; None when the file was deleted.
    content: bytes | None


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: bytes
    stderr: str


# -- validation of hostile input (pure) -------------------------------------------------------


def validate_sha(sha: str) -> str:
    """Return ``sha`` lower-cased if it is a full SHA-1 or SHA-256 object name, else raise."""
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise WorkspaceError(f"not a full commit SHA: {sha!r}")
    return sha.lower()


def validate_branch(name: str) -> str:
    """Raise unless ``name`` is a valid branch name (``git check-ref-format --branch`` rules)."""
    problem = _branch_problem(name)
    if problem:
        raise WorkspaceError(f"invalid branch name {name!r}: {problem}")
    return name


def _branch_problem(name: str) -> str | None:
    # The rules of git-check-ref-format(1), applied to refs/heads/<name>.
    if not name:
        return "empty"
    if len(name) > 255:
        return "too long"
    if name.startswith("-"):
        return "starts with '-'"
    if name == "HEAD" or name == "@":
        return f"{name!r} is reserved"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "contains a control character"
    bad = sorted({c for c in name if c in " ~^:?*[\\"})
    if bad:
        return f"contains {''.join(bad)!r}"
    if ".." in name or "@{" in name or "//" in name:
        return "contains '..', '@{' or '//'"
    if name.startswith("/") or name.endswith("/") or name.endswith("."):
        return "starts or ends with '/' or ends with '.'"
    for component in name.split("/"):
        if component.startswith(".") or component.endswith(".lock"):
            return "a component starts with '.' or ends with '.lock'"
    return None


def validate_ref(ref: str) -> str:
    """Raise unless ``ref`` is a full ``refs/...`` refname valid for git."""
    if not ref.startswith("refs/") or _branch_problem(ref.removeprefix("refs/")):
        raise WorkspaceError(f"invalid ref {ref!r}")
    return ref


def _component(value: str, what: str) -> str:
    if not _COMPONENT_RE.fullmatch(value) or value.endswith(".lock"):
        raise WorkspaceError(f"invalid {what}: {value!r}")
    return value


def _check_url(url: str, *, token: str | None) -> str:
    """Allow https (http to loopback for tests), file:// and absolute paths; no userinfo."""
    if not url or url.startswith("-") or any(c in url for c in "\x00\r\n"):
        raise WorkspaceError(f"invalid clone URL: {url!r}")
    parts = urlsplit(url)
    if parts.scheme in ("https", "http"):
        if parts.username or parts.password:
            # A credential in the URL would be written to the mirror's config.
            raise WorkspaceError("clone URL must not contain credentials")
        if not parts.hostname:
            raise WorkspaceError(f"invalid clone URL: {url!r}")
        if token and parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
            raise WorkspaceError("refusing to send a token over plain http")
        return url
    if parts.scheme == "file" or (not parts.scheme and url.startswith("/")):
        return url
    raise WorkspaceError(f"unsupported clone URL scheme: {url!r}")


def with_trailers(message: str, trailers: Sequence[tuple[str, str]]) -> str:
    """Append ``Key: value`` trailers to a commit message, as ``git interpret-trailers`` would:
    into the last paragraph when that already is a trailer block, else as a new paragraph.
    A trailer already present verbatim is not repeated."""
    lines = [line.rstrip() for line in message.strip("\n").splitlines()]
    new: list[str] = []
    for key, value in trailers:
        if not _TRAILER_KEY_RE.fullmatch(key):
            raise ValueError(f"invalid trailer key: {key!r}")
        if not value.strip() or any(c in value for c in "\r\n"):
            raise ValueError(f"invalid trailer value for {key}: {value!r}")
        line = f"{key}: {value.strip()}"
        if line not in lines and line not in new:
            new.append(line)
    if not new:
        return "\n".join(lines) + "\n"
    last_paragraph: list[str] = []
    for line in reversed(lines):
        if not line:
            break
        last_paragraph.append(line)
    has_body_before = len(last_paragraph) < len(lines)
    in_trailer_block = (
        has_body_before
        and bool(last_paragraph)
        and all(_TRAILER_LINE_RE.fullmatch(line) for line in last_paragraph)
    )
    if not in_trailer_block:
        lines.append("")
    return "\n".join([*lines, *new]) + "\n"


# -- running git --------------------------------------------------------------------------------


def _auth_config(url: str, token: str) -> tuple[tuple[str, str], ...]:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        return ()  # local remotes take no credentials
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    # GitHub's documented form for installation tokens over https: user x-access-token,
    # password the token. Scoped to the origin so a redirect elsewhere does not receive it.
    origin = f"{parts.scheme}://{parts.netloc}/"
    return ((f"http.{origin}.extraHeader", f"Authorization: Basic {basic}"),)


def _secrets(token: str | None) -> list[str]:
    if not token:
        return []
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return [token, basic]


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _env(
    home: Path | None,
    config: Sequence[tuple[str, str]],
    extra: Mapping[str, str] | None,
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home) if home else os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": "https:http:file",
        "LANG": "C",
        "LC_ALL": "C",
    }
    pairs = [*_HARDENING, *config]
    env["GIT_CONFIG_COUNT"] = str(len(pairs))
    for i, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    if extra:
        env.update(extra)
    return env


def _kill(proc: asyncio.subprocess.Process) -> None:
    # git spawns helpers (remote-https, upload-pack, index-pack): kill the whole session.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _git(
    args: Sequence[str],
    *,
    cwd: Path,
    home: Path | None,
    limit: float,
    token: str | None = None,
    url: str | None = None,
    stdin: bytes | None = None,
    extra_env: Mapping[str, str] | None = None,
    check: bool = True,
) -> _Result:
    config = _auth_config(url, token) if token and url else ()
    secrets = _secrets(token)
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            env=_env(home, config, extra_env),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise WorkspaceError(f"cannot run git {args[0]}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), limit)
    except TimeoutError as exc:
        _kill(proc)
        await proc.wait()
        error = WorkspaceError(f"git {args[0]} timed out after {limit:g}s")
        error.retryable = True
        raise error from exc
    except asyncio.CancelledError:
        _kill(proc)
        raise
    stderr = _redact(err.decode("utf-8", errors="replace"), secrets)
    result = _Result(proc.returncode or 0, out, stderr)
    if check and result.returncode != 0:
        raise WorkspaceError(
            f"git {args[0]} failed (exit {result.returncode}): {stderr.strip()[-2000:]}"
        )
    return result


# -- locks ----------------------------------------------------------------------------------------


def _try_flock(path: Path) -> int | None:
    """Take an exclusive flock on ``path`` without blocking; the fd, or None if it is held.

    Lock files are unlinked by their holder on release, so after locking we check that the file
    we locked is still the one at ``path`` (else a waiter could lock an unlinked inode while a
    newcomer locks the new file, and both would think they hold the lock)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _release_flock(path: Path, fd: int, *, unlink: bool) -> None:
    if unlink:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    os.close(fd)  # closing the last fd releases the flock


@contextlib.asynccontextmanager
async def _file_lock(path: Path, wait_limit: float) -> AsyncIterator[None]:
    """flock ``path``, polling without blocking so that cancellation never leaves a thread
    holding (or waiting for) the lock."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_limit
    delay = 0.01
    while True:
        fd = _try_flock(path)
        if fd is not None:
            break
        if loop.time() > deadline:
            error = WorkspaceError(f"timed out waiting for lock {path.name}")
            error.retryable = True
            raise error
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)
    try:
        yield
    finally:
        # Mirror lock files are kept: they are one per repository, and keeping them avoids
        # churn for the many waiters a busy repository has.
        _release_flock(path, fd, unlink=False)


# -- the workspaces -------------------------------------------------------------------------------


class Workspaces:
    """Mirror clones and per-job worktrees under ``root`` (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        command_timeout: float = DEFAULT_TIMEOUT,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> None:
        self.root = root.resolve()
        self.command_timeout = command_timeout
        self.lock_timeout = lock_timeout
        self.home = self.root / "home"
        self._locks: dict[Path, asyncio.Lock] = {}

    def mirror_path(self, repo_full_name: str) -> Path:
        owner, sep, name = repo_full_name.partition("/")
        if not sep:
            raise WorkspaceError(f"invalid repository name: {repo_full_name!r}")
        # GitHub names are case-insensitive: one mirror for Owner/Repo and owner/repo.
        owner = _component(owner, "repository owner").lower()
        name = _component(name.removesuffix(".git"), "repository name").lower()
        return self.root / "mirrors" / owner / f"{name}.git"

    def _dirs(self) -> Path:
        jobs = self.root / "jobs"
        for directory in (self.root / "mirrors", jobs, self.home):
            directory.mkdir(parents=True, exist_ok=True)
        return jobs

    @contextlib.asynccontextmanager
    async def _mirror_lock(self, mirror: Path) -> AsyncIterator[None]:
        lock = self._locks.setdefault(mirror, asyncio.Lock())
        async with lock:
            mirror.parent.mkdir(parents=True, exist_ok=True)
            async with _file_lock(mirror.with_name(mirror.name + ".lock"), self.lock_timeout):
                yield

    async def forget(self, repo_full_name: str) -> bool:
        """Delete a repository's mirror clone (the App lost access to it). Waits for jobs that
        are fetching into it; returns whether there was one."""
        mirror = self.mirror_path(repo_full_name)
        async with self._mirror_lock(mirror):
            if not mirror.exists():
                return False
            await asyncio.to_thread(shutil.rmtree, mirror)
            return True

    async def _run(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        token: str | None = None,
        url: str | None = None,
        check: bool = True,
    ) -> _Result:
        return await _git(
            args,
            cwd=cwd,
            home=self.home,
            limit=self.command_timeout,
            token=token,
            url=url,
            check=check,
        )

    async def _has_commit(self, mirror: Path, sha: str) -> bool:
        if not (mirror / "HEAD").is_file():
            return False
        result = await self._run(["cat-file", "-e", f"{sha}^{{commit}}"], cwd=mirror, check=False)
        return result.returncode == 0

    async def _ensure_mirror(self, mirror: Path, url: str) -> None:
        """Create the bare mirror if missing (atomically), and point origin at ``url``."""
        if (mirror / "HEAD").is_file():
            await self._run(["config", "remote.origin.url", url], cwd=mirror)
            return
        staging = mirror.with_name(mirror.name + ".new")
        if staging.exists():
            await asyncio.to_thread(shutil.rmtree, staging)
        await self._run(["init", "--bare", "--quiet", str(staging)], cwd=mirror.parent)
        await self._run(["config", "remote.origin.url", url], cwd=staging)
        for key, value in _MIRROR_CONFIG:
            await self._run(["config", key, value], cwd=staging)
        # A crash during init leaves only the staging directory, never a half-made mirror.
        staging.rename(mirror)

    async def fetch(
        self,
        clone_url: str,
        repo_full_name: str,
        *,
        token: str | None = None,
        refs: Sequence[str] = (),
        sha: str | None = None,
    ) -> Path:
        """Bring the mirror up to date: all branches, plus ``refs`` (full refnames such as
        ``refs/pull/7/head``), plus ``sha`` when it is still missing after that. Returns the
        mirror's path."""
        url = _check_url(clone_url, token=token)
        refspecs = [f"+{ref}:{ref}" for ref in map(validate_ref, refs)]
        wanted = validate_sha(sha) if sha else None
        mirror = self.mirror_path(repo_full_name)
        self._dirs()
        async with self._mirror_lock(mirror):
            await self._ensure_mirror(mirror, url)
            try:
                await self._run(
                    [
                        "fetch",
                        "--prune",
                        "--no-tags",
                        "--quiet",
                        "origin",
                        *_default_refspecs(),
                        *refspecs,
                    ],
                    cwd=mirror,
                    token=token,
                    url=url,
                )
            except WorkspaceError as exc:
                # Network trouble, a GitHub 5xx or an expired token: worth another try later
                # (with a fresh token).
                exc.retryable = True
                raise
            if wanted and not await self._has_commit(mirror, wanted):
                # GitHub serves any reachable commit by SHA (protocol v2); a commit reachable
                # only from a ref we do not fetch (a fork PR's head) arrives this way or through
                # refs/pull/N/head in ``refs``.
                by_sha = await self._run(
                    ["fetch", "--no-tags", "--quiet", "origin", wanted],
                    cwd=mirror,
                    token=token,
                    url=url,
                    check=False,
                )
                if not await self._has_commit(mirror, wanted):
                    raise WorkspaceError(
                        f"commit {wanted} is not available from the remote: "
                        f"{by_sha.stderr.strip()[-500:]}"
                    )
        return mirror

    @contextlib.asynccontextmanager
    async def checkout(
        self,
        clone_url: str,
        repo_full_name: str,
        sha: str,
        *,
        job_id: str,
        token: str | None = None,
        fetch_ref: str | None = None,
    ) -> AsyncIterator[Worktree]:
        """A fresh detached worktree of ``sha`` at ``jobs/<job_id>``, removed on exit (also on
        errors). Fetches only when the mirror lacks the commit."""
        sha = validate_sha(sha)
        job = _component(job_id, "job id")
        url = _check_url(clone_url, token=token)
        if fetch_ref:
            validate_ref(fetch_ref)
        mirror = self.mirror_path(repo_full_name)
        jobs = self._dirs()
        lock_path = jobs / f"{job}.lock"
        job_fd = _try_flock(lock_path)
        if job_fd is None:
            raise WorkspaceError(f"job {job} already has a worktree in use")
        path = jobs / job
        try:
            if not await self._has_commit(mirror, sha):
                await self.fetch(
                    url,
                    repo_full_name,
                    token=token,
                    refs=[fetch_ref] if fetch_ref else (),
                    sha=sha,
                )
            async with self._mirror_lock(mirror):
                if path.exists() or path.is_symlink():
                    # Left over by a crashed run of the same job.
                    await self._remove_worktree_locked(mirror, path)
                await self._run(
                    ["worktree", "add", "--detach", "--quiet", str(path), sha], cwd=mirror
                )
            try:
                yield Worktree(path=path, sha=sha, home=self.home)
            finally:
                async with self._mirror_lock(mirror):
                    await self._remove_worktree_locked(mirror, path)
        finally:
            _release_flock(lock_path, job_fd, unlink=True)

    async def _remove_worktree_locked(self, mirror: Path, path: Path) -> None:
        await self._run(
            ["worktree", "remove", "--force", "--force", str(path)], cwd=mirror, check=False
        )
        await asyncio.to_thread(_remove_path, path)
        await self._run(["worktree", "prune"], cwd=mirror)

    async def prune_stale(self) -> list[str]:
        """Remove worktrees left by crashed jobs (those whose job lock nobody holds) and prune
        the mirrors' worktree records. Safe while other processes run jobs. Returns the job ids
        removed."""
        jobs = self._dirs()
        removed: list[str] = []
        for entry in sorted(jobs.iterdir()):
            if entry.suffix == ".lock" and not entry.with_suffix("").exists():
                job_dir = None
            elif entry.suffix != ".lock":
                job_dir = entry
            else:
                continue  # a lock with its directory: handled with the directory
            lock_path = entry if job_dir is None else jobs / f"{entry.name}.lock"
            fd = _try_flock(lock_path)
            if fd is None:
                continue  # a live job
            try:
                if job_dir is not None:
                    await asyncio.to_thread(_remove_path, job_dir)
                    removed.append(job_dir.name)
            finally:
                _release_flock(lock_path, fd, unlink=True)
        for mirror in sorted((self.root / "mirrors").glob("*/*.git")):
            if (mirror / "HEAD").is_file():
                async with self._mirror_lock(mirror):
                    await self._run(["worktree", "prune"], cwd=mirror)
        return removed


def _remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _default_refspecs() -> list[str]:
    return [value for key, value in _MIRROR_CONFIG if key == "remote.origin.fetch"]


# -- operations in a worktree ------------------------------------------------------------------


async def _wt_git(
    wt: Worktree,
    args: Sequence[str],
    *,
    limit: float,
    token: str | None = None,
    url: str | None = None,
    stdin: bytes | None = None,
    extra_env: Mapping[str, str] | None = None,
    check: bool = True,
) -> _Result:
    return await _git(
        args,
        cwd=wt.path,
        home=wt.home,
        limit=limit,
        token=token,
        url=url,
        stdin=stdin,
        extra_env=extra_env,
        check=check,
    )


def _check_identity(name: str, email: str) -> None:
    for value in (name, email):
        if not value.strip() or any(c in value for c in "<>\r\n\x00"):
            raise WorkspaceError(f"invalid commit identity: {value!r}")


async def commit_all(
    wt: Worktree,
    message: str,
    *,
    author_name: str,
    author_email: str,
    exclude: Sequence[str] = (),
    command_timeout: float = DEFAULT_TIMEOUT,
) -> str | None:
    """Stage every change (new, modified, deleted files) except paths matching the ``exclude``
    globs, and commit. Returns the new commit's SHA, or None when nothing changed."""
    _check_identity(author_name, author_email)
    pathspec = ["--", ".", *(f":(exclude,glob){pattern}" for pattern in exclude)]
    await _wt_git(wt, ["add", "--all", *pathspec], limit=command_timeout)
    staged = await _wt_git(wt, ["diff", "--cached", "--quiet"], limit=command_timeout, check=False)
    if staged.returncode == 0:
        return None
    if staged.returncode != 1:
        raise WorkspaceError(f"git diff failed: {staged.stderr.strip()}")
    identity = {
        "GIT_AUTHOR_NAME": author_name,
        "GIT_AUTHOR_EMAIL": author_email,
        "GIT_COMMITTER_NAME": author_name,
        "GIT_COMMITTER_EMAIL": author_email,
    }
    await _wt_git(
        wt,
        # --cleanup=whitespace keeps lines starting with '#' (e.g. "#123"), which the default
        # mode would strip as comments.
        ["commit", "--quiet", "--no-verify", "--cleanup=whitespace", "--file=-"],
        limit=command_timeout,
        stdin=message.encode(),
        extra_env=identity,
    )
    head = await _wt_git(wt, ["rev-parse", "--verify", "HEAD"], limit=command_timeout)
    return head.stdout.decode().strip()


async def changed_files(wt: Worktree, *, command_timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Paths with uncommitted changes (modified, added, deleted, untracked), sorted."""
    result = await _wt_git(
        wt,
        ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames"],
        limit=command_timeout,
    )
    paths = {
        entry[3:].decode("utf-8", errors="surrogateescape")
        for entry in result.stdout.split(b"\0")
        if len(entry) > 3
    }
    return sorted(paths)


async def _snapshot_tree(wt: Worktree, command_timeout: float) -> str:
    """The tree of HEAD plus every uncommitted change, built in a throwaway index so that the
    worktree's own index is left as it was."""
    with tempfile.TemporaryDirectory(prefix="shepherd-index-") as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        await _wt_git(wt, ["read-tree", "HEAD"], limit=command_timeout, extra_env=index)
        await _wt_git(wt, ["add", "--all", "--", "."], limit=command_timeout, extra_env=index)
        tree = await _wt_git(wt, ["write-tree"], limit=command_timeout, extra_env=index)
    return tree.stdout.decode().strip()


async def diff(wt: Worktree, base_sha: str, *, command_timeout: float = DEFAULT_TIMEOUT) -> str:
    """The patch from ``base_sha`` to the worktree's current state (commits and uncommitted
    changes, new files included), applicable with ``git apply``."""
    base = validate_sha(base_sha)
    tree = await _snapshot_tree(wt, command_timeout)
    result = await _wt_git(
        wt,
        [
            "diff",
            "--binary",
            "--full-index",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            base,
            tree,
        ],
        limit=command_timeout,
    )
    return result.stdout.decode("utf-8", errors="replace")


async def file_changes(
    wt: Worktree, base_sha: str, *, command_timeout: float = DEFAULT_TIMEOUT
) -> list[FileChange]:
    """Every path that differs between ``base_sha`` and the worktree's current state, with its
    new mode and content (None for deletions), sorted by path."""
    base = validate_sha(base_sha)
    tree = await _snapshot_tree(wt, command_timeout)
    raw = await _wt_git(
        wt,
        ["diff-tree", "-r", "-z", "--no-renames", "--no-ext-diff", base, tree],
        limit=command_timeout,
    )
    fields = raw.stdout.split(b"\0")
    entries: list[tuple[str, str, str, str]] = []  # path, old mode, new mode, new blob
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(b":"):
            continue
        old_mode, new_mode, _, new_sha, _status = meta[1:].decode().split(" ")
        name = path.decode("utf-8", errors="surrogateescape")
        if "160000" in (old_mode, new_mode):
            raise WorkspaceError(f"submodule change at {name!r} is not supported")
        entries.append((name, old_mode, new_mode, new_sha))
    wanted = [blob for _, _, mode, blob in entries if mode != "000000"]
    blobs = await _read_blobs(wt, wanted, command_timeout)
    changes = [
        FileChange(name, old_mode, None)
        if new_mode == "000000"
        else FileChange(name, new_mode, blobs[blob])
        for name, old_mode, new_mode, blob in entries
    ]
    return sorted(changes, key=lambda change: change.path)


async def _read_blobs(
    wt: Worktree, shas: Sequence[str], command_timeout: float
) -> dict[str, bytes]:
    if not shas:
        return {}
    result = await _wt_git(
        wt,
        ["cat-file", "--batch"],
        limit=command_timeout,
        stdin="".join(f"{s}\n" for s in shas).encode(),
    )
    out = result.stdout
    blobs: dict[str, bytes] = {}
    pos = 0
    for sha in shas:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].decode().split(" ")
        if len(header) != 3 or header[1] != "blob":
            raise WorkspaceError(f"cannot read blob {sha}: {' '.join(header)}")
        size = int(header[2])
        blobs[sha] = out[header_end + 1 : header_end + 1 + size]
        pos = header_end + 1 + size + 1
    return blobs


async def push(
    wt: Worktree,
    clone_url: str,
    branch: str,
    *,
    expected_sha: str,
    token: str | None,
    command_timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Push the worktree's HEAD to ``branch`` only if the remote branch is still at
    ``expected_sha`` (a lease), so a push by someone else in the meantime is never overwritten.

    Raises PushRejected when the remote refuses (moved branch, protection, no permission) and
    WorkspaceError for anything else (network, timeout)."""
    ref = f"refs/heads/{validate_branch(branch)}"
    expected = validate_sha(expected_sha)
    url = _check_url(clone_url, token=token)
    result = await _wt_git(
        wt,
        [
            "push",
            "--porcelain",
            "--no-verify",
            f"--force-with-lease={ref}:{expected}",
            url,
            f"HEAD:{ref}",
        ],
        limit=command_timeout,
        token=token,
        url=url,
        check=False,
    )
    if result.returncode == 0:
        return
    stdout = _redact(result.stdout.decode("utf-8", errors="replace"), _secrets(token))
    rejected = [line for line in stdout.splitlines() if line.startswith("!")]
    if rejected:
        raise PushRejected(f"push to {branch!r} rejected: {rejected[0]}", status=None)
    if re.search(r"\b403\b|[Pp]ermission to .* denied", result.stderr):
        raise PushRejected(
            f"push to {branch!r} refused: {result.stderr.strip()[-500:]}", status=403
        )
    raise WorkspaceError(
        f"git push failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
    )


async def read_tree_files(
    wt: Worktree,
    sha: str,
    directory: str,
    *,
    limit: float = DEFAULT_TIMEOUT,
    max_bytes: int = 256_000,
) -> dict[str, str]:
    """The text files under ``directory`` at commit ``sha`` (e.g. the base branch's workflows),
    read from the object store, not the worktree: what the PR changed does not show."""
    commit = validate_sha(sha)
    listing = await _wt_git(
        wt,
        ["ls-tree", "-r", "-z", "--", commit, directory.rstrip("/") + "/"],
        limit=limit,
        check=False,
    )
    if listing.returncode != 0:
        return {}
    files: dict[str, str] = {}
    for entry in listing.stdout.split(b"\0"):
        meta, _, path = entry.partition(b"\t")
        fields = meta.split()
        if len(fields) != 3 or fields[1] != b"blob":
            continue
        blob = await _wt_git(wt, ["cat-file", "blob", fields[2].decode()], limit=limit)
        if len(blob.stdout) <= max_bytes:
            files[path.decode("utf-8", "replace")] = blob.stdout.decode("utf-8", "replace")
    return files
