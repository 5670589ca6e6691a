"""``pre-commit``: the repository's own ``.pre-commit-config.yaml``, run again as CI ran it.

Claims a failed ``pre-commit run`` (or ``pre-commit/action``) step when every hook that failed
modified files (``- files were modified by this hook``). A hook that only checks (flake8, mypy)
changes nothing, so such a failure is left to the other rules, which classify it by what the hook
printed. Runs of only the whitespace hooks are the ``whitespace`` fixer's (no hook environment).

**The same invocation.** The fix is the step's own ``pre-commit run …`` (``--from-ref/--to-ref``
become ``--files`` with the pull request's files, or ``--all-files``: the view below has one
commit), run once to let the hooks rewrite files; the check runs it again and must pass.

**Git inside the sandbox.** pre-commit lists files with ``git ls-files`` and sees what a hook
modified with ``git diff``. The tree's own git metadata is never exposed: the command gets a
*view* (``bot.git.workspace.make_git_view``), a git directory whose HEAD and index are the tree's
files as they are now, bound read-only with ``GIT_DIR`` pointing at it.

**Hook environments** (``PRE_COMMIT_HOME``) are built once per repository, configuration and
pre-commit version, cached in the tool cache under ``pre-commit/<key>``: built with network (in a
job environment the registries only) and no secrets by ``pre-commit install-hooks``, into a
staging directory mounted where every later run mounts the cache (virtualenvs record their
path), then moved into place. Every run gets a private copy, so no pull request's hooks can
change what the next one runs. The pinned revisions are the configuration's own: the key is its
hash.

**Which pre-commit.** The job environment's (a setup step installed it), else the version the
repository pins (requirements, pyproject) installed into the tool cache, else the bundled one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bot.diagnosis.logs import DistilledLog
from bot.git.workspace import Worktree, make_git_view, objects_dir
from bot.kernel.errors import FixerError, SandboxError
from bot.sandbox import Bind, CommandResult, Runner
from fixers.base import FixContext, FixResult, RepoFiles, WorktreeFiles
from fixers.tools import (
    ToolChoice,
    ToolRun,
    bundled_executable,
    fix_dir,
    prepare_tool,
    probe,
    resolve_tool,
    run_fixer,
    runner_tool_cache,
    tool_args_from_command,
)
from fixers.whitespace import HOOKS as WHITESPACE_HOOKS

CONFIG = ".pre-commit-config.yaml"
#: Where the hook environments and the git view appear inside the sandbox (fixed: virtualenvs
#: built there record the path).
HOOK_HOME = "/tmp/shepherd-pre-commit"  # noqa: S108 - a mount point in the sandbox's tmpfs
GIT_VIEW = "/tmp/shepherd-git"  # noqa: S108 - a mount point in the sandbox's tmpfs
BUILD_TIMEOUT = 900.0

_COMMAND = re.compile(r"(?<![\w-])pre-commit(?:\.exe)?\s+run\b|(?<![\w-])pre-commit\s*$", re.M)
_ACTION = re.compile(r"^pre-commit/action@", re.I)
_FAILED = re.compile(r"^(.+?)\.{3,}\s*\(?[\w ]*\)?Failed\s*$")
_HOOK_ID = re.compile(r"^- hook id: (\S+)\s*$")
_MODIFIED = "- files were modified by this hook"
#: Options of ``pre-commit run`` kept as they are (with whether they take a value); others are
#: dropped, and the hook id (the one positional argument) is kept when it is plain.
_KEPT = {
    "--all-files": False,
    "-a": False,
    "--show-diff-on-failure": False,
    "--hook-stage": True,
    "--color": True,
    "-c": True,
    "--config": True,
    "-v": False,
    "--verbose": False,
}
_REFS = {"--from-ref", "--to-ref", "-s", "-o", "--source", "--origin"}
_PLAIN = re.compile(r"[\w.:/=+-]+")


def hook_results(excerpt: str) -> tuple[list[str], set[str]]:
    """(hook ids that failed, those of them that modified files) from pre-commit's report."""
    failed: list[str] = []
    modified: set[str] = set()
    current: str | None = None
    lines = excerpt.splitlines()
    for i, line in enumerate(lines):
        if _FAILED.match(line):
            current = None
            for follow in lines[i + 1 : i + 4]:
                hook = _HOOK_ID.match(follow.strip())
                if hook:
                    current = hook.group(1)
                    failed.append(current)
                    break
            continue
        if current is not None and line.strip() == _MODIFIED:
            modified.add(current)
    return failed, modified


def run_args(command: str | None, scope: frozenset[str] | None = None) -> list[str]:
    """The step's ``pre-commit run`` arguments (see the module docstring)."""
    args = tool_args_from_command(command, "pre-commit", ("run",)) if command else None
    if args is None:
        return ["--all-files", "--show-diff-on-failure"]
    kept: list[str] = []
    refs = False
    words = iter(args)
    for word in words:
        name, has_value, _ = word.partition("=")
        if name in _REFS:
            refs = True
            if not has_value:
                next(words, None)
            continue
        if name in ("--files",):
            refs = True
            continue
        takes = _KEPT.get(name)
        if takes is None:
            if not word.startswith("-") and _PLAIN.fullmatch(word):
                kept.append(word)  # a hook id
            continue
        kept.append(word)
        if takes and not has_value:
            value = next(words, "")
            if _PLAIN.fullmatch(value):
                kept.append(value)
            else:
                kept.pop()
    if not any(w in ("--all-files", "-a") for w in kept):
        if refs and scope:
            kept += ["--files", *sorted(scope)]
        else:
            kept.append("--all-files")
    return kept


@dataclass(frozen=True)
class Session:
    """What a pre-commit command needs inside the sandbox: mounts, environment, the root."""

    binds: tuple[Bind, ...]
    env: Mapping[str, str]

    def wrap(self, argv: Sequence[str], depth: int) -> list[str]:
        """``argv`` with ``GIT_WORK_TREE`` set to the tree's root as the sandbox sees it (the
        command runs ``depth`` directories below it)."""
        up = "/".join([".."] * depth) or "."
        script = f'GIT_WORK_TREE="$(cd {up} && pwd -P)" && export GIT_WORK_TREE && exec "$@"'
        return ["sh", "-c", script, "pre-commit-session", *argv]


class SessionRunner:
    """A runner that gives every command the pre-commit session (a fresh git view of the tree
    each time, the hook environments): the fixer's own commands, and the reproduction and
    verification of a ``pre-commit run`` step (``PreCommitFixer.command_runner``)."""

    def __init__(self, inner: Runner, wt: Worktree, session: Session, view: Path) -> None:
        self.inner = inner
        self.wt = wt
        self.session = session
        self.view = view
        self.tool_cache = runner_tool_cache(inner)

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        writable: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,  # noqa: ASYNC109 - the Runner contract takes a timeout
        network: bool = False,
        binds: Sequence[Bind] = (),
    ) -> CommandResult:
        await asyncio.to_thread(make_git_view, self.wt, self.view)
        depth = await asyncio.to_thread(_depth, cwd, writable)
        return await self.inner.run(
            self.session.wrap(argv, depth),
            cwd=cwd,
            writable=writable,
            env={**self.session.env, **(env or {})},
            timeout=timeout,
            network=network,
            binds=[*self.session.binds, *binds],
        )


def _key(repository: str, config: str, choice: ToolChoice) -> str:
    material = "\0".join([repository, choice.describe(), " ".join(choice.argv_prefix), config])
    return hashlib.sha256(material.encode()).hexdigest()[:24]


class PreCommitFixer:
    name = "pre-commit"

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        ran = bool(_COMMAND.search(log.commands)) or bool(
            (log.action and _ACTION.match(log.action)) or (log.step and _ACTION.match(log.step))
        )
        if not ran:
            return False
        failed, modified = hook_results(log.excerpt)
        if not failed or any(hook not in modified for hook in failed):
            return False
        return not all(hook in WHITESPACE_HOOKS for hook in failed)

    async def _choose(self, ctx: FixContext, cwd: Path) -> ToolChoice:
        where = await probe(ctx, ["sh", "-c", "command -v pre-commit"], cwd=cwd)
        own = None
        if where and where != str(bundled_executable("pre-commit")):
            own = await probe(ctx, ["pre-commit", "--version"], cwd=cwd)
        choice = resolve_tool("pre-commit", WorktreeFiles(ctx.worktree), ctx.subdir)
        if own and (choice.source == "bundled" or own.split()[-1] == choice.version):
            return ToolChoice(
                "pre-commit", own.split()[-1], "the job environment's", ("pre-commit",)
            )
        return await prepare_tool(choice, cache_dir=runner_tool_cache(ctx.runner))

    @contextlib.asynccontextmanager
    async def command_runner(self, ctx: FixContext) -> AsyncIterator[Runner]:
        """A runner for pre-commit commands in ``ctx``'s tree: the hook environments built (or
        taken from the cache) and privately copied, a git view made for each command."""
        cwd = await asyncio.to_thread(fix_dir, ctx)
        choice = await self._choose(ctx, cwd)
        config = WorktreeFiles(ctx.worktree).read_text(CONFIG)
        if config is None:
            raise FixerError(f"pre-commit: no {CONFIG} at the repository's root")
        cache = runner_tool_cache(ctx.runner)
        scratch = (cache or ctx.worktree.parent) / "pre-commit" / f".run-{uuid.uuid4().hex[:12]}"
        await asyncio.to_thread(scratch.mkdir, parents=True)
        try:
            objects = await asyncio.to_thread(objects_dir, ctx.checkout)
            view = scratch / "git"
            env = {
                "PRE_COMMIT_HOME": HOOK_HOME,
                "GIT_DIR": GIT_VIEW,
                "PRE_COMMIT_COLOR": "never",
            }
            base_binds = (Bind(view, GIT_VIEW), Bind(objects, str(objects)))
            exe = [*choice.argv_prefix]
            home = await self._hook_home(
                ctx, cwd, choice, exe, config, scratch, env, base_binds, cache
            )
            session = Session((*base_binds, Bind(home, HOOK_HOME, writable=True)), env)
            yield _Described(SessionRunner(ctx.runner, ctx.checkout, session, view), choice)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def _hook_home(
        self,
        ctx: FixContext,
        cwd: Path,
        choice: ToolChoice,
        exe: list[str],
        config: str,
        scratch: Path,
        env: Mapping[str, str],
        binds: tuple[Bind, ...],
        cache: Path | None,
    ) -> Path:
        """A private copy of the cached hook environments, built first when not cached."""
        key = _key(ctx.repository, config, choice)
        final = (cache or scratch) / "pre-commit" / key
        private = scratch / "home"
        if not await asyncio.to_thread(final.is_dir):
            staging = scratch / "staging"
            await asyncio.to_thread(staging.mkdir)
            builder = SessionRunner(
                ctx.runner,
                ctx.checkout,
                Session((*binds, Bind(staging, HOOK_HOME, writable=True)), env),
                scratch / "git",
            )
            try:
                result = await builder.run(
                    [*exe, "install-hooks"],
                    cwd=cwd,
                    writable=ctx.worktree,
                    timeout=BUILD_TIMEOUT,
                    network=True,
                )
            except SandboxError as exc:
                raise FixerError(f"pre-commit: hook environments not built: {exc}") from exc
            if not result.ok:
                tail = "\n".join(result.output.strip().splitlines()[-5:])
                raise FixerError(f"pre-commit install-hooks failed:\n{tail}")
            if cache is None:
                return staging
            await asyncio.to_thread(_publish, staging, final)
        await asyncio.to_thread(shutil.copytree, final, private, symlinks=True)
        return private

    async def apply(self, ctx: FixContext) -> FixResult:
        args = run_args(ctx.log.command, ctx.scope)
        async with self.command_runner(ctx) as runner:
            assert isinstance(runner, _Described)
            choice = runner.choice
            run = ToolRun(
                fix=[*choice.argv_prefix, "run", *args],
                check=[*choice.argv_prefix, "run", *args],
                ok_codes=frozenset({0, 1}),
            )
            session_ctx = replace(ctx, runner=runner)
            return await run_fixer(
                session_ctx,
                self.name,
                choice,
                [run],
                note="hook environments built with network access (registries only; no secrets)",
            )


class _Described(SessionRunner):
    """The session runner, carrying which pre-commit it runs."""

    def __init__(self, inner: SessionRunner, choice: ToolChoice) -> None:
        super().__init__(inner.inner, inner.wt, inner.session, inner.view)
        self.choice = choice


def _depth(cwd: Path, root: Path) -> int:
    return len(cwd.resolve().relative_to(root.resolve()).parts)


def _publish(staging: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(final)
    except OSError:
        # Another job built the same environments meanwhile: theirs is as good as ours.
        if not final.is_dir():
            raise


PRE_COMMIT = PreCommitFixer()
