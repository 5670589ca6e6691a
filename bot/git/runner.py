"""The one place where a git process starts.

Every git command Shepherd runs goes through ``run_git`` (async, for the network and the mirror)
or ``run_git_sync`` (for tree operations inside worker threads). Nothing else in ``bot/``,
``handlers/`` or ``fixers/`` starts git; ``tests/test_git_runner.py`` and ``make test`` check it.

**Whose configuration git reads.** A worktree holds pull-request code, and PR code runs (in the
sandbox) in it: the verification command, fixers whose tools load code from the repository, the
LLM's ``run_check``. That code can write a ``.git`` file or directory, ``.gitattributes`` and
config files anywhere in the tree. So git is never left to discover its repository:

- the repository is always named explicitly (``GIT_DIR``, and ``GIT_WORK_TREE`` only for the few
  commands that must read the files) from Shepherd's own record of the mirror and the worktree
  (``GitRepo``), never from the tree's ``.git`` file;
- the environment is rebuilt from nothing: no credentials, ``GIT_CONFIG_NOSYSTEM=1``, global
  configuration from an empty file, ``HOME`` an empty directory Shepherd owns (git also reads
  ``$HOME/.config/git/attributes`` and ``ignore``), no terminal prompt, no askpass, no pager;
- every configuration-driven way to start a program is switched off by command-line configuration
  (``GIT_CONFIG_COUNT``), which outranks every file: hooks (``core.hooksPath=/dev/null``),
  fsmonitor, the pager, ``core.sshCommand``, ``core.askPass``, credential helpers, automatic gc and
  maintenance, submodule recursion. Diffs also pass ``--no-ext-diff --no-textconv``.
- Filter drivers (``filter.<x>.clean/smudge/process``), diff drivers (``diff.<x>.textconv/command``)
  and ``include.path``/``includeIf`` exist only in configuration. With system and global
  configuration off, the only configuration file git reads is the one in the git directory
  Shepherd names, which Shepherd wrote (the mirror) and which the sandbox cannot reach. A
  ``.gitattributes`` in the tree may still say ``* filter=x diff=x``: no driver of that name
  exists, so git runs nothing. Tree snapshots go further and hash file bytes with
  ``--no-filters`` (``bot.git.workspace``), so attributes cannot change content either.

Tokens are given per command through the environment, never written to a file or logged (see
``auth_config``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bot.kernel.errors import UnsafeWorktree, WorkspaceError

#: Configuration forced on every git process (``git -c`` semantics: it outranks every file).
HARDENING: tuple[tuple[str, str], ...] = (
    ("core.hooksPath", os.devnull),
    ("core.fsmonitor", "false"),
    ("core.pager", "cat"),
    ("core.sshCommand", "false"),
    ("core.askPass", ""),
    ("credential.helper", ""),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("diff.ignoreSubmodules", "all"),
    ("status.submoduleSummary", "false"),
    ("core.untrackedCache", "false"),
)

#: Environment variables git would honour to run programs or read other configuration. The
#: environment is built from nothing, so they are never set; listed for the test that checks it.
UNSET_VARIABLES = (
    "GIT_EXTERNAL_DIFF",
    "GIT_PAGER",
    "PAGER",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_EDITOR",
    "EDITOR",
    "VISUAL",
    "GIT_PROXY_COMMAND",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "XDG_CONFIG_HOME",
)

DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class GitRepo:
    """Shepherd's own record of a repository: where its metadata and its files are.

    ``git_dir`` is the bare mirror, a linked worktree's directory inside the mirror
    (``<mirror>/worktrees/<name>``), or, for ``shepherd fix --repo DIR``, the checkout's git
    directory as found once before any untrusted code ran. ``work_tree`` is set only for the
    commands that must read the files; everything that works on objects runs without it, as if
    bare, so nothing in the tree (attributes included) is consulted.
    """

    git_dir: Path
    home: Path
    work_tree: Path | None = None

    def objects_only(self) -> GitRepo:
        return GitRepo(self.git_dir, self.home, None)


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="surrogateescape")


# -- credentials -------------------------------------------------------------------------------


def auth_config(url: str, token: str) -> tuple[tuple[str, str], ...]:
    """The one setting that carries a token: an ``http.<origin>.extraHeader`` for this command.

    Set through ``GIT_CONFIG_KEY_n`` variables, not ``git -c`` arguments: a process's arguments
    are visible to every local user in ``/proc/<pid>/cmdline``, its environment only to the same
    user. Scoped to the remote's origin, so a redirect to another host never receives it. GitHub's
    documented form for installation tokens over https: user ``x-access-token``, the token as
    password.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        return ()  # local remotes take no credentials
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    origin = f"{parts.scheme}://{parts.netloc}/"
    return ((f"http.{origin}.extraHeader", f"Authorization: Basic {basic}"),)


def secrets_of(token: str | None) -> list[str]:
    if not token:
        return []
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return [token, basic]


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


# -- the environment ---------------------------------------------------------------------------


def git_env(
    repo: GitRepo | None,
    *,
    home: Path,
    config: Sequence[tuple[str, str]] = (),
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of a git process (see the module docstring)."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": "https:http:file",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_OPTIONAL_LOCKS": "0",
        # Paths Shepherd passes are paths, never pathspec magic (":(exclude)..." and globs).
        "GIT_LITERAL_PATHSPECS": "1",
        "LANG": "C",
        "LC_ALL": "C",
    }
    if repo is not None:
        env["GIT_DIR"] = str(repo.git_dir)
        if repo.work_tree is not None:
            env["GIT_WORK_TREE"] = str(repo.work_tree)
    pairs = [*HARDENING, *config]
    if repo is not None and repo.work_tree is None:
        # Object work only: behave as a bare repository, so no worktree file (no
        # .gitattributes, no .gitignore) is read.
        pairs.append(("core.bare", "true"))
    env["GIT_CONFIG_COUNT"] = str(len(pairs))
    for i, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    for name, value in (extra or {}).items():
        if name in UNSET_VARIABLES or name.startswith("GIT_CONFIG"):
            raise WorkspaceError(f"refusing to pass {name} to git")
        env[name] = value
    return env


def _argv(args: Sequence[str]) -> list[str]:
    # --no-pager: never a pager, whatever the configuration says.
    return ["git", "--no-pager", *args]


def _cwd(repo: GitRepo | None, home: Path, cwd: Path | None) -> Path:
    if cwd is not None:
        return cwd
    if repo is not None and repo.work_tree is not None:
        return repo.work_tree
    return home


def _failed(args: Sequence[str], result: GitResult) -> WorkspaceError:
    return WorkspaceError(
        f"git {args[0]} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
    )


def _kill(pid: int) -> None:
    # git spawns helpers (remote-https, upload-pack, index-pack): kill the whole session.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_git(
    repo: GitRepo | None,
    args: Sequence[str],
    *,
    home: Path | None = None,
    cwd: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - git is killed when it runs out
    token: str | None = None,
    url: str | None = None,
    stdin: bytes | None = None,
    extra_env: Mapping[str, str] | None = None,
    check: bool = True,
) -> GitResult:
    """Run git on ``repo`` (None: no repository, e.g. ``init``) and collect its output.

    Raises WorkspaceError when git cannot start, times out (retryable) or, with ``check``,
    exits non-zero. The token, when given, is redacted from what git printed."""
    home = home or (repo.home if repo else None)
    if home is None:
        raise WorkspaceError("git needs an empty HOME directory")
    config = auth_config(url, token) if token and url else ()
    try:
        proc = await asyncio.create_subprocess_exec(
            *_argv(args),
            cwd=_cwd(repo, home, cwd),
            env=git_env(repo, home=home, config=config, extra=extra_env),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise WorkspaceError(f"cannot run git {args[0]}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError as exc:
        _kill(proc.pid)
        await proc.wait()
        error = WorkspaceError(f"git {args[0]} timed out after {timeout:g}s")
        error.retryable = True
        raise error from exc
    except asyncio.CancelledError:
        _kill(proc.pid)
        raise
    result = GitResult(
        proc.returncode or 0, out, redact(err.decode("utf-8", "replace"), secrets_of(token))
    )
    if check and result.returncode != 0:
        raise _failed(args, result)
    return result


def run_git_sync(
    repo: GitRepo | None,
    args: Sequence[str],
    *,
    home: Path | None = None,
    cwd: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    stdin: bytes | None = None,
    extra_env: Mapping[str, str] | None = None,
    check: bool = True,
) -> GitResult:
    """``run_git`` for worker threads (tree snapshots and comparisons); local only: no token."""
    home = home or (repo.home if repo else None)
    if home is None:
        raise WorkspaceError("git needs an empty HOME directory")
    try:
        done = subprocess.run(
            _argv(args),
            cwd=_cwd(repo, home, cwd),
            env=git_env(repo, home=home, extra=extra_env),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        error = WorkspaceError(f"git {args[0]} timed out after {timeout:g}s")
        error.retryable = True
        raise error from exc
    except OSError as exc:
        raise WorkspaceError(f"cannot run git {args[0]}: {exc}") from exc
    result = GitResult(done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"))
    if check and result.returncode != 0:
        raise _failed(args, result)
    return result


def git_installed() -> bool:
    return shutil.which("git") is not None


# -- git metadata written by untrusted code ----------------------------------------------------

#: Entries whose presence makes a directory a git directory (git's own ``is_git_directory``).
_GIT_DIR_ENTRIES = frozenset({"HEAD", "objects", "refs"})
_MAX_REPORTED = 20

#: What identifies one piece of git metadata: its kind, device and inode, and for a ``.git``
#: file (a pointer to a git directory) its content.
Fingerprint = tuple[str, int, int, bytes]

#: Every piece of git metadata in a tree, by path relative to the tree's root.
MetadataMark = dict[str, Fingerprint]


def mark_metadata(root: Path) -> MetadataMark:
    """Every ``.git`` entry (file, directory or link) and every directory shaped like a git
    directory (``HEAD``, ``objects/``, ``refs/``) under ``root``, at any depth.

    Symbolic links are never followed, so the walk cannot leave the tree, and ``.git``
    directories are not descended into (their insides are git's business, bound read-only in
    the sandbox)."""
    found: MetadataMark = {}
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        names = {entry.name for entry in entries}
        if directory != root and names >= _GIT_DIR_ENTRIES:
            st = os.lstat(directory)
            found[str(directory.relative_to(root))] = ("gitdir", st.st_dev, st.st_ino, b"")
        for entry in entries:
            if entry.name == ".git":
                found[str(Path(entry.path).relative_to(root))] = _fingerprint(Path(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
    return found


def _fingerprint(path: Path) -> Fingerprint:
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        with contextlib.suppress(OSError):
            return ("file", st.st_dev, st.st_ino, path.read_bytes()[:4096])
    if stat.S_ISLNK(st.st_mode):
        return ("link", st.st_dev, st.st_ino, os.fsencode(os.readlink(path)))
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "other"
    return (kind, st.st_dev, st.st_ino, b"")


def changed_metadata(root: Path, before: MetadataMark) -> list[str]:
    """Git metadata under ``root`` that is new or different since ``before`` was taken (a
    rewritten ``.git`` pointer, a nested repository, a git directory of the PR's own making).
    Removed metadata is not reported: nothing can run from what is gone."""
    after = mark_metadata(root)
    return sorted(path for path, print_ in after.items() if before.get(path) != print_)


def check_metadata(root: Path, before: MetadataMark) -> None:
    """Raise UnsafeWorktree when untrusted code wrote git metadata under ``root``."""
    changed = changed_metadata(root, before)
    if changed:
        raise UnsafeWorktree(changed[:_MAX_REPORTED])
