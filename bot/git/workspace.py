"""Git mirror cache, per-job worktrees, and what Shepherd reads back from a worktree.

Layout under ``root``::

    mirrors/<owner>/<repo>.git        bare mirror, one per repository, fetched incrementally
    mirrors/<owner>/<repo>.git.lock   flock serializing writers to that mirror across processes
    jobs/<job-id>/                    the job's worktree (``git worktree add --detach``)
    jobs/<job-id>.lock                flock held while the job runs (tells live jobs from leftovers)
    home/                             HOME for git: empty, so no user configuration leaks in

Every git process starts in ``bot.git.runner``, on the repository named by Shepherd's own record
(``Worktree.git``), never on whatever the tree's ``.git`` file says.

**The worktree is hostile after PR code ran in it.** Snapshots and comparisons of the tree
(``snapshot_tree``, ``changed_paths``, ``restore_paths``, ``diff``, ``changes_between``) therefore run
nothing the tree controls: git only lists paths (``ls-files``, which reads ``.gitignore``) and
stores bytes Shepherd read itself (``hash-object --no-filters``), so no filter, hook or attribute
changes what is seen; trees are built from a throwaway index and compared as objects, as in a bare
repository. Files are read and written without following symbolic links in any path component,
so a link planted by the PR cannot make Shepherd read or write outside the worktree. Before any
of that, the tree is checked for git metadata the sandbox should have made impossible (a changed
``.git`` pointer, a nested repository): finding any raises ``UnsafeWorktree`` and the job stops.

**Credentials.** The installation token is given per call and never reaches ``.git/config``, a
remote URL or any file (``bot.git.runner.auth_config``), and is refused over plain http except to the
loopback interface.

**Hostile input.** SHAs, branch names, job ids and repository names come from webhooks and PRs.
They are validated before use, git always runs from an argv list (never a shell), every
user-controlled ref is passed as a full ``refs/heads/...`` refname so it cannot be read as an
option, pathspecs are literal, and only the https/http/file transports are allowed.

**Concurrency.** Jobs on one repository run in parallel in their own worktrees; everything that
writes the shared mirror (fetch, worktree add/prune) holds an ``asyncio.Lock`` per mirror (this
process) and an ``flock`` on ``<mirror>.lock`` (other processes on the machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from bot.git.runner import (
    DEFAULT_TIMEOUT,
    GitRepo,
    GitResult,
    MetadataMark,
    check_metadata,
    mark_metadata,
    redact,
    run_git,
    run_git_sync,
    secrets_of,
)
from bot.kernel.errors import PushRejected, WorkspaceError

_SHA_RE = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
# One path component we create from outside input (owner, repo, job id): no separators, no
# leading dot or dash, so it can be neither a hidden/parent directory nor an option.
_COMPONENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
_TRAILER_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_TRAILER_LINE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*: \S.*")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

#: How long to wait for another process's fetch into the same mirror.
LOCK_TIMEOUT = 900.0

_MIRROR_CONFIG: tuple[tuple[str, str], ...] = (
    # Only branches by default; PR heads (refs/pull/N/head) are fetched one by one on demand,
    # because fetching every PR head of a busy repository on every job is wasteful.
    ("remote.origin.fetch", "+refs/heads/*:refs/heads/*"),
    ("core.logAllRefUpdates", "false"),
)

#: Caches that running a check writes into a tree; never part of a fix, even where the
#: repository does not ignore them.
_CACHE_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})

_EMPTY_MODE = "000000"


class _Blob(NamedTuple):
    mode: str
    sha: str


#: What identifies a file's content without reading it: inode, size, mtime and ctime (the kernel
#: sets ctime on every change; no user-space call can set it back).
_StatKey = tuple[int, int, int, int, int]


def _stat_key(st: os.stat_result) -> _StatKey:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


@dataclass(frozen=True)
class Worktree:
    """A checked-out tree as Shepherd recorded it when it made (or was given) the tree.

    ``sha`` is the commit it was created at. ``git`` names its git directory and an empty HOME;
    ``mark`` is what its ``.git`` entry looked like before any untrusted code ran."""

    path: Path
    sha: str
    git: GitRepo
    mark: MetadataMark
    #: path → (stat key, blob) of files already hashed, so a snapshot reads only what changed.
    _blobs: dict[str, tuple[_StatKey, _Blob]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def objects(self) -> GitRepo:
        """The same repository without its work tree: for work on objects only."""
        return self.git.objects_only()


class FileChange(NamedTuple):
    """One changed path, ready to become a Git Data API tree entry."""

    path: str
    #: Git file mode: "100644", "100755" or "120000" (symlink). For deletions, the old mode.
    mode: str
    #: New content; None when the file was deleted.
    content: bytes | None


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

    def _repo(self, git_dir: Path) -> GitRepo:
        return GitRepo(git_dir, self.home)

    async def _run(
        self,
        git_dir: Path,
        args: Sequence[str],
        *,
        token: str | None = None,
        url: str | None = None,
        check: bool = True,
    ) -> GitResult:
        return await run_git(
            self._repo(git_dir),
            args,
            timeout=self.command_timeout,
            token=token,
            url=url,
            check=check,
        )

    async def _has_commit(self, mirror: Path, sha: str) -> bool:
        if not (mirror / "HEAD").is_file():
            return False
        result = await self._run(mirror, ["cat-file", "-e", f"{sha}^{{commit}}"], check=False)
        return result.returncode == 0

    async def _ensure_mirror(self, mirror: Path, url: str) -> None:
        """Create the bare mirror if missing (atomically), and point origin at ``url``."""
        if (mirror / "HEAD").is_file():
            await self._run(mirror, ["config", "remote.origin.url", url])
            return
        staging = mirror.with_name(mirror.name + ".new")
        if staging.exists():
            await asyncio.to_thread(shutil.rmtree, staging)
        await run_git(
            None,
            ["init", "--bare", "--quiet", str(staging)],
            home=self.home,
            timeout=self.command_timeout,
        )
        await self._run(staging, ["config", "remote.origin.url", url])
        for key, value in _MIRROR_CONFIG:
            await self._run(staging, ["config", key, value])
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
                    mirror,
                    [
                        "fetch",
                        "--prune",
                        "--no-tags",
                        "--quiet",
                        "origin",
                        *_default_refspecs(),
                        *refspecs,
                    ],
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
                    mirror,
                    ["fetch", "--no-tags", "--quiet", "origin", wanted],
                    token=token,
                    url=url,
                    check=False,
                )
                if not await self._has_commit(mirror, wanted):
                    raise WorkspaceError(
                        f"commit {wanted} is not available from the remote: "
                        f"{by_sha.stderr.strip()[-500:]}"
                    )
            # Automatic gc is off in every git process (bot.git.runner); the mirror is packed here,
            # inside its lock, never by a detached process racing the next fetch.
            await self._run(mirror, ["gc", "--auto", "--quiet"], check=False)
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
                await self._run(mirror, ["worktree", "add", "--detach", "--quiet", str(path), sha])
            try:
                wt = await asyncio.to_thread(self._record, mirror, path, sha)
                yield wt
            finally:
                async with self._mirror_lock(mirror):
                    await self._remove_worktree_locked(mirror, path)
        finally:
            _release_flock(lock_path, job_fd, unlink=True)

    def _record(self, mirror: Path, path: Path, sha: str) -> Worktree:
        """Shepherd's record of a worktree it just created, before any untrusted code ran: its
        git directory (checked to be inside the mirror), its ``.git`` mark, and the blobs of
        the files git checked out."""
        pointer = (path / ".git").read_text(encoding="utf-8").strip()
        git_dir = Path(pointer.removeprefix("gitdir:").strip()).resolve()
        if not pointer.startswith("gitdir:") or git_dir.parent != (mirror / "worktrees").resolve():
            raise WorkspaceError(f"unexpected worktree pointer in {path}: {pointer[:200]!r}")
        wt = Worktree(
            path=path,
            sha=sha,
            git=GitRepo(git_dir, self.home, path),
            mark=mark_metadata(path),
        )
        _seed_blobs(wt)
        return wt

    async def _remove_worktree_locked(self, mirror: Path, path: Path) -> None:
        # Never `git worktree remove`: it inspects the tree (a status of the worktree and its
        # submodules), and the tree is untrusted. Delete the files, then forget the record.
        await asyncio.to_thread(_remove_path, path)
        if (mirror / "HEAD").is_file():
            await self._run(mirror, ["worktree", "prune"])


def local_worktree(repo_dir: Path, home: Path) -> Worktree:
    """The record of a checkout the user handed to ``shepherd fix --repo DIR``, taken before any
    untrusted code runs: its git directory as git finds it now, and its ``.git`` mark."""
    root = repo_dir.resolve()
    if not (root / ".git").exists():
        raise WorkspaceError(f"{root} is not a git checkout")
    found = run_git_sync(None, ["rev-parse", "--absolute-git-dir"], home=home, cwd=root)
    head = run_git_sync(None, ["rev-parse", "--verify", "HEAD"], home=home, cwd=root)
    return Worktree(
        path=root,
        sha=head.text.strip(),
        git=GitRepo(Path(found.text.strip()), home, root),
        mark=mark_metadata(root),
    )


def _remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _default_refspecs() -> list[str]:
    return [value for key, value in _MIRROR_CONFIG if key == "remote.origin.fetch"]


# -- files of an untrusted tree, never through a symbolic link -------------------------------------


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="surrogateescape")


class _Lstat:
    """lstat of paths under ``root`` that refuses any path whose directories are not all real
    directories (a symbolic link in the middle would lead outside the tree)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: dict[str, bool] = {"": True}

    def _real_dir(self, rel: str) -> bool:
        known = self._dirs.get(rel)
        if known is not None:
            return known
        parent, _, _ = rel.rpartition("/")
        ok = self._real_dir(parent)
        if ok:
            try:
                ok = stat.S_ISDIR(os.lstat(self.root / rel).st_mode)
            except OSError:
                ok = False
        self._dirs[rel] = ok
        return ok

    def __call__(self, rel: str) -> os.stat_result | None:
        parent, _, _ = rel.rpartition("/")
        if not self._real_dir(parent):
            return None
        try:
            return os.lstat(self.root / rel)
        except OSError:
            return None


def _open_dir(root: Path, parts: Sequence[str], *, create: bool) -> int | None:
    """An fd of ``root/parts...`` reached without following links; with ``create``, whatever
    is in the way (a file, a link) is replaced by a directory. None when it does not exist."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                if not create:
                    os.close(fd)
                    return None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part, dir_fd=fd)
                os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove_entry(dir_fd: int, name: str, directory: Path) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(directory / name)  # fd-based on Linux: never follows links
    else:
        os.unlink(name, dir_fd=dir_fd)


def _put(root: Path, rel: str, blob: _Blob | None, content: bytes) -> None:
    """Make ``root/rel`` be ``blob`` (None: absent), writing nothing through a link."""
    *parents, name = rel.split("/")
    fd = _open_dir(root, parents, create=blob is not None)
    if fd is None:
        return  # deleting below a directory that is not there: already absent
    try:
        _remove_entry(fd, name, root.joinpath(*parents))
        if blob is None:
            return
        if blob.mode == "120000":
            os.symlink(content, name, dir_fd=fd)
            return
        perm = 0o755 if blob.mode == "100755" else 0o644
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perm, dir_fd=fd)
        try:
            os.write(out, content)
            os.fchmod(out, perm)
        finally:
            os.close(out)
    finally:
        os.close(fd)


# -- snapshots and comparisons of a worktree -------------------------------------------------------


def _index_entries(wt: Worktree) -> dict[str, _Blob]:
    raw = run_git_sync(wt.git, ["ls-files", "-z", "-s"]).stdout
    entries: dict[str, _Blob] = {}
    for record in raw.split(b"\0"):
        meta, _, path = record.partition(b"\t")
        fields = meta.split()
        if len(fields) == 3:
            entries.setdefault(_decode(path), _Blob(fields[0].decode(), fields[1].decode()))
    return entries


def tracked_files(wt: Worktree) -> list[str]:
    """The paths in the worktree's index (what the commit it was created at tracks)."""
    return list(_index_entries(wt))


def read_file_head(wt: Worktree, path: str, size: int) -> bytes | None:
    """The first ``size`` bytes of a regular file of the worktree, or None when ``path`` is not
    one (missing, a link, a directory, or below a link)."""
    st = _Lstat(wt.path)(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    *parents, name = path.split("/")
    fd = _open_dir(wt.path, parents, create=False)
    if fd is None:
        return None
    try:
        file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return os.read(file_fd, size)
    finally:
        os.close(file_fd)


def _seed_blobs(wt: Worktree) -> None:
    """Remember the blobs git just checked out, so the first snapshot hashes nothing."""
    lstat = _Lstat(wt.path)
    for path, blob in _index_entries(wt).items():
        st = lstat(path)
        if st is not None and _file_mode(st) == blob.mode:
            wt._blobs[path] = (_stat_key(st), blob)


def _file_mode(st: os.stat_result) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return "120000"
    if stat.S_ISREG(st.st_mode):
        # As git decides: the owner's execute bit.
        return "100755" if st.st_mode & stat.S_IXUSR else "100644"
    return None


def _hash_files(wt: Worktree, paths: Sequence[str]) -> list[str]:
    """Store the bytes of regular files as blobs, with no filter or attribute applied."""
    shas: list[str] = []
    batch = [p for p in paths if "\n" not in p]
    if batch:
        out = run_git_sync(
            wt.objects,
            ["hash-object", "-w", "--no-filters", "--stdin-paths"],
            stdin="".join(f"{wt.path / p}\n" for p in batch).encode("utf-8", "surrogateescape"),
        ).text.split()
        by_path = dict(zip(batch, out, strict=True))
    else:
        by_path = {}
    for path in paths:
        if path in by_path:
            shas.append(by_path[path])
        else:  # a newline in the name: --stdin-paths cannot carry it
            shas.append(_hash_bytes(wt, (wt.path / path).read_bytes()))
    return shas


def _hash_bytes(wt: Worktree, content: bytes) -> str:
    return run_git_sync(
        wt.objects, ["hash-object", "-w", "--no-filters", "--stdin"], stdin=content
    ).text.strip()


def _snapshot_sync(wt: Worktree) -> str:
    check_metadata(wt.path, wt.mark)
    index = _index_entries(wt)
    others = run_git_sync(wt.git, ["ls-files", "-z", "--others", "--exclude-standard"]).stdout
    untracked = [
        path
        for path in map(_decode, filter(None, others.split(b"\0")))
        if not _CACHE_DIRS.intersection(path.split("/"))
    ]
    lstat = _Lstat(wt.path)
    entries: dict[str, _Blob] = {}
    to_hash: list[tuple[str, _StatKey, str]] = []
    for path in [*index, *untracked]:
        if index.get(path, _Blob("", "")).mode == "160000":
            entries[path] = index[path]  # a submodule's commit: not a file Shepherd reads
            continue
        st = lstat(path)
        mode = _file_mode(st) if st is not None else None
        if st is None or mode is None:
            continue  # deleted (or not a file)
        key = _stat_key(st)
        cached = wt._blobs.get(path)
        if cached is not None and cached[0] == key:
            entries[path] = cached[1]
        elif mode == "120000":
            blob = _Blob(mode, _hash_bytes(wt, os.fsencode(os.readlink(wt.path / path))))
            wt._blobs[path] = (key, blob)
            entries[path] = blob
        else:
            to_hash.append((path, key, mode))
    for (path, key, mode), sha in zip(
        to_hash, _hash_files(wt, [p for p, _, _ in to_hash]), strict=True
    ):
        wt._blobs[path] = (key, _Blob(mode, sha))
        entries[path] = _Blob(mode, sha)
    with tempfile.TemporaryDirectory(prefix="shepherd-index-") as tmp:
        index_env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        lines = "".join(f"{b.mode} {b.sha}\t{p}\0" for p, b in sorted(entries.items()))
        run_git_sync(
            wt.objects,
            ["update-index", "-z", "--index-info"],
            stdin=lines.encode("utf-8", "surrogateescape"),
            extra_env=index_env,
        )
        return run_git_sync(wt.objects, ["write-tree"], extra_env=index_env).text.strip()


def snapshot_tree(wt: Worktree) -> str:
    """The tree of the worktree's files now (tracked and untracked, not ignored, without the
    caches checks write), stored in the object database. Raises UnsafeWorktree when untrusted
    code left git metadata in the tree. Blocking: call it from a thread."""
    return _snapshot_sync(wt)


def tree_of(wt: Worktree, commit: str) -> str:
    return run_git_sync(wt.objects, ["rev-parse", f"{validate_sha(commit)}^{{tree}}"]).text.strip()


def changed_paths(wt: Worktree, before: str, after: str) -> list[str]:
    """Paths that differ between two trees (objects only)."""
    if before == after:
        return []
    out = run_git_sync(
        wt.objects, ["diff-tree", "-r", "-z", "--name-only", "--no-renames", before, after]
    ).stdout
    return [_decode(p) for p in out.split(b"\0") if p]


def _tree_entries(wt: Worktree, tree: str) -> dict[str, _Blob]:
    out = run_git_sync(wt.objects, ["ls-tree", "-r", "-z", "--full-tree", tree]).stdout
    entries: dict[str, _Blob] = {}
    for record in out.split(b"\0"):
        meta, _, path = record.partition(b"\t")
        fields = meta.split()
        if len(fields) == 3 and fields[1] == b"blob":
            entries[_decode(path)] = _Blob(fields[0].decode(), fields[2].decode())
    return entries


def restore_paths(wt: Worktree, tree: str, paths: Iterable[str]) -> None:
    """Put ``paths`` back as they are in ``tree`` (deleting those the tree does not have),
    writing the blobs' bytes directly: no checkout, so no filter or attribute applies, and no
    symbolic link planted in the tree is followed."""
    wanted = list(paths)
    if not wanted:
        return
    entries = _tree_entries(wt, tree)
    blobs = _read_blobs(wt, sorted({entries[p].sha for p in wanted if p in entries}))
    for path in wanted:
        blob = entries.get(path)
        _put(wt.path, path, blob, blobs[blob.sha] if blob else b"")
        wt._blobs.pop(path, None)


def reset_to(wt: Worktree, tree: str) -> list[str]:
    """Make the worktree's files (not the ignored ones) those of ``tree`` again; returns the
    paths that were put back."""
    changed = changed_paths(wt, tree, snapshot_tree(wt))
    restore_paths(wt, tree, changed)
    return changed


def _read_blobs(wt: Worktree, shas: Sequence[str]) -> dict[str, bytes]:
    if not shas:
        return {}
    out = run_git_sync(
        wt.objects, ["cat-file", "--batch"], stdin="".join(f"{s}\n" for s in shas).encode()
    ).stdout
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


def tree_diff(wt: Worktree, base: str, tree: str, *, binary: bool = True) -> str:
    """The patch from ``base`` (a commit or tree) to ``tree``; with ``binary`` (full indexes and
    binary contents) it applies with ``git apply``, without it is for reading."""
    exact = ["--binary", "--full-index"] if binary else []
    return run_git_sync(
        wt.objects,
        [
            "diff",
            *exact,
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            base,
            tree,
        ],
    ).stdout.decode("utf-8", errors="replace")


async def diff(wt: Worktree, base_sha: str) -> str:
    """The patch from ``base_sha`` to the worktree's current files (new files included)."""
    base = validate_sha(base_sha)
    tree = await asyncio.to_thread(snapshot_tree, wt)
    return await asyncio.to_thread(tree_diff, wt, base, tree)


async def changed_files(wt: Worktree) -> list[str]:
    """Paths whose content differs from the commit the worktree was created at, sorted."""
    tree = await asyncio.to_thread(snapshot_tree, wt)
    base = await asyncio.to_thread(tree_of, wt, wt.sha)
    return sorted(await asyncio.to_thread(changed_paths, wt, base, tree))


def changes_between(wt: Worktree, before: str, after: str) -> list[FileChange]:
    """Every path that differs between two trees (or commits), with its mode and content in
    ``after`` (None for deletions), sorted by path. Blocking: call it from a thread."""
    out = run_git_sync(wt.objects, ["diff-tree", "-r", "-z", "--no-renames", before, after]).stdout
    fields = out.split(b"\0")
    entries: list[tuple[str, str, str, str]] = []  # path, old mode, new mode, new blob
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(b":"):
            continue
        old_mode, new_mode, _, new_sha, _status = meta[1:].decode().split(" ")
        name = _decode(path)
        if "160000" in (old_mode, new_mode):
            raise WorkspaceError(f"submodule change at {name!r} is not supported")
        entries.append((name, old_mode, new_mode, new_sha))
    blobs = _read_blobs(wt, [blob for _, _, mode, blob in entries if mode != _EMPTY_MODE])
    changes = [
        FileChange(name, old_mode, None)
        if new_mode == _EMPTY_MODE
        else FileChange(name, new_mode, blobs[blob])
        for name, old_mode, new_mode, blob in entries
    ]
    return sorted(changes, key=lambda change: change.path)


def _check_identity(name: str, email: str) -> None:
    for value in (name, email):
        if not value.strip() or any(c in value for c in "<>\r\n\x00"):
            raise WorkspaceError(f"invalid commit identity: {value!r}")


async def commit(
    wt: Worktree,
    message: str,
    *,
    author_name: str,
    author_email: str,
    parent: str | None = None,
    tree: str | None = None,
) -> str | None:
    """A commit of the worktree's current files on ``parent`` (default: the commit the worktree
    was created at), made from objects alone (``commit-tree``: no hook, no index of the tree).
    Returns its SHA, or None when nothing changed. The worktree's HEAD does not move. ``tree``
    (a tree already in the object store, e.g. the fixed tree of a repair) replaces the
    worktree's current files."""
    _check_identity(author_name, author_email)
    parent = validate_sha(parent or wt.sha)
    if tree is None:
        tree = await asyncio.to_thread(snapshot_tree, wt)
    if tree == await asyncio.to_thread(tree_of, wt, parent):
        return None
    identity = {
        "GIT_AUTHOR_NAME": author_name,
        "GIT_AUTHOR_EMAIL": author_email,
        "GIT_COMMITTER_NAME": author_name,
        "GIT_COMMITTER_EMAIL": author_email,
    }
    made = await run_git(
        wt.objects,
        ["commit-tree", tree, "-p", parent, "-F", "-"],
        stdin=message.encode(),
        extra_env=identity,
    )
    return made.text.strip()


async def push(
    wt: Worktree,
    clone_url: str,
    branch: str,
    *,
    commit_sha: str,
    expected_sha: str,
    token: str | None,
    command_timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Push ``commit_sha`` to ``branch`` only if the remote branch is still at ``expected_sha``
    (a lease), so a push by someone else in the meantime is never overwritten.

    Raises PushRejected when the remote refuses (moved branch, protection, no permission) and
    WorkspaceError for anything else (network, timeout)."""
    ref = f"refs/heads/{validate_branch(branch)}"
    expected = validate_sha(expected_sha)
    source = validate_sha(commit_sha)
    url = _check_url(clone_url, token=token)
    result = await run_git(
        wt.objects,
        [
            "push",
            "--porcelain",
            "--no-verify",
            f"--force-with-lease={ref}:{expected}",
            url,
            f"{source}:{ref}",
        ],
        timeout=command_timeout,
        token=token,
        url=url,
        check=False,
    )
    if result.returncode == 0:
        return
    stdout = redact(result.stdout.decode("utf-8", errors="replace"), secrets_of(token))
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
    max_bytes: int = 256_000,
) -> dict[str, str]:
    """The text files under ``directory`` at commit ``sha`` (e.g. the base branch's workflows),
    read from the object store, not the worktree: what the PR changed does not show."""
    commit_sha = validate_sha(sha)
    listing = await run_git(
        wt.objects,
        ["ls-tree", "-r", "-z", "--", commit_sha, directory.rstrip("/") + "/"],
        check=False,
    )
    if listing.returncode != 0:
        return {}
    entries: list[tuple[str, str]] = []
    for entry in listing.stdout.split(b"\0"):
        meta, _, path = entry.partition(b"\t")
        fields = meta.split()
        if len(fields) == 3 and fields[1] == b"blob":
            entries.append((path.decode("utf-8", "replace"), fields[2].decode()))
    blobs = await asyncio.to_thread(_read_blobs, wt, [sha for _, sha in entries])
    return {
        path: blobs[sha].decode("utf-8", "replace")
        for path, sha in entries
        if len(blobs[sha]) <= max_bytes
    }


# -- a git view of the tree for tools that need git inside the sandbox -----------------------------

#: Identity of the view's one commit (it never leaves the view).
_VIEW_IDENTITY = {
    "GIT_AUTHOR_NAME": "shepherd",
    "GIT_AUTHOR_EMAIL": "shepherd@localhost",
    "GIT_COMMITTER_NAME": "shepherd",
    "GIT_COMMITTER_EMAIL": "shepherd@localhost",
}


def objects_dir(wt: Worktree) -> Path:
    """The object directory of the worktree's repository (a linked worktree's common one)."""
    out = run_git_sync(wt.objects, ["rev-parse", "--git-path", "objects"]).text.strip()
    path = Path(out)
    return (path if path.is_absolute() else wt.git.git_dir / path).resolve()


def make_git_view(wt: Worktree, dest: Path) -> Path:
    """A git directory at ``dest`` whose HEAD commit and index hold the worktree's files as they
    are now: what a tool that needs git (pre-commit lists files with ``git ls-files`` and finds
    the files a hook modified with ``git diff``) is given inside the sandbox, bound read-only
    with ``GIT_DIR`` pointing at it. The tree's own git metadata is never exposed, and nothing
    the view holds is ever read back. Its objects come from the worktree's repository through
    ``objects/info/alternates`` (bind that directory read-only too); the view's own commit is
    written into the view. Blocking: call it from a thread."""
    tree = snapshot_tree(wt)
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    run_git_sync(None, ["init", "--quiet", "--bare", str(dest)], home=wt.git.home)
    view = GitRepo(dest, wt.git.home)
    (dest / "objects" / "info" / "alternates").write_text(f"{objects_dir(wt)}\n")
    run_git_sync(view, ["config", "core.bare", "false"])
    commit = run_git_sync(
        view,
        ["commit-tree", tree, "-m", "shepherd: the tree under repair"],
        extra_env=_VIEW_IDENTITY,
    ).text.strip()
    run_git_sync(view, ["update-ref", "refs/heads/main", commit])
    run_git_sync(view, ["symbolic-ref", "HEAD", "refs/heads/main"])
    index = {"GIT_INDEX_FILE": str(dest / "index")}
    run_git_sync(view, ["read-tree", commit], extra_env=index)
    return dest
