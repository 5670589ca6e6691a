"""Which version of a fixer tool runs, and the shared mechanics of running one on a worktree.

``resolve_tool`` is pure: it reads the repository's pins (pyproject.toml, .pre-commit-config.yaml,
requirements*.txt, package.json/package-lock.json) and decides between the bundled executable and
the pinned version. ``prepare_tool`` is the impure step that installs a differing pinned version
into the tool cache, outside the sandbox, falling back to the bundled tool when it cannot.

``run_fixer`` is what every deterministic fixer does: run the tool in the sandbox on the failing
sub-project, put back any protected path the tool touched, report whether files changed, and run
the tool's own check mode.
"""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.metadata
import json
import re
import shlex
import shutil
import sys
import tomllib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import yaml

from bot.git.workspace import changed_paths, restore_paths, snapshot_tree
from bot.kernel.errors import FixerError, SandboxError
from bot.sandbox import Bind, CommandResult, Runner, run_limited, scrubbed_env
from fixers.base import FixContext, FixResult, RepoFiles, WorktreeFiles

#: The node tools scripts/install-system-deps.sh installs into ``.tools/node`` (keep in step).
BUNDLED_NODE_VERSIONS: Mapping[str, str] = {
    "prettier": "3.10.1",
    "eslint": "10.16.0",
    "pnpm": "10.34.8",
    "yarn": "1.22.22",
}

NODE_TOOLS = frozenset(BUNDLED_NODE_VERSIONS)

#: Versions are hostile input (they come from the PR): only plain release numbers pass.
_PY_VERSION = re.compile(
    r"\d{1,6}(\.\d{1,6}){0,3}((a|b|rc)\d{1,4})?(\.post\d{1,4})?(\.dev\d{1,4})?"
)
_NPM_VERSION = re.compile(
    r"\d{1,6}\.\d{1,6}\.\d{1,6}(-[0-9A-Za-z]{1,20}(\.[0-9A-Za-z]{1,20}){0,3})?"
)

#: Repositories of pre-commit hooks that pin each tool, compared case-insensitively.
_PRECOMMIT_REPOS: Mapping[str, tuple[str, ...]] = {
    "ruff": ("astral-sh/ruff-pre-commit", "charliermarsh/ruff-pre-commit"),
    "black": ("psf/black", "psf/black-pre-commit-mirror"),
    "isort": ("pycqa/isort", "timothycrosley/isort"),
    "prettier": ("pre-commit/mirrors-prettier", "rbubley/mirrors-prettier"),
    "uv": ("astral-sh/uv-pre-commit",),
}

#: requirements files looked at (RepoFiles cannot list directories).
_REQUIREMENTS_FILES = (
    "requirements.txt",
    "requirements-dev.txt",
    "requirements_dev.txt",
    "dev-requirements.txt",
    "requirements-lint.txt",
    "requirements-test.txt",
    "requirements/dev.txt",
    "requirements/lint.txt",
    "requirements/test.txt",
    "requirements/ci.txt",
)


@dataclass(frozen=True)
class ToolChoice:
    tool: str
    version: str
    #: ``"pinned in <file>"`` or ``"bundled"`` (with the reason when a pin could not be honoured).
    source: str
    #: What to exec; empty while a pinned version still needs ``prepare_tool``.
    argv_prefix: tuple[str, ...]
    #: The pinned version differs from the bundled one and is not installed yet.
    needs_install: bool = False

    def describe(self) -> str:
        """e.g. ``black 26.10.1 (bundled)``; used in FixResult.tool_version."""
        return f"{self.tool} {self.version} ({self.source})"


@dataclass(frozen=True)
class Pin:
    version: str
    file: str


def valid_version(tool: str, version: str) -> bool:
    pattern = _NPM_VERSION if tool in NODE_TOOLS else _PY_VERSION
    return pattern.fullmatch(version) is not None


def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


def bundled_tool_dirs() -> tuple[Path, ...]:
    """Directories the sandbox must mount read-only for the bundled tools (beyond the venv)."""
    return (project_root() / ".tools" / "node",)


def bundled_executable(tool: str) -> Path:
    if tool in NODE_TOOLS:
        return project_root() / ".tools" / "node" / "bin" / tool
    return Path(sys.executable).parent / tool


def bundled_version(tool: str) -> str:
    if tool in NODE_TOOLS:
        return BUNDLED_NODE_VERSIONS[tool]
    try:
        return importlib.metadata.version(tool)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FixerError(f"bundled tool {tool} is not installed in the virtualenv") from exc


# --- pins (pure) ---------------------------------------------------------------------------------

_REQ_LINE = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*===?\s*([^\s;#,]+)\s*(;.*)?(#.*)?$"
)


def _requirement_pin(requirement: str, tool: str) -> str | None:
    match = _REQ_LINE.match(requirement)
    if match is None:
        return None
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return match.group(3) if name == tool else None


def _pin_in_pyproject(text: str, tool: str) -> str | None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    lists: list[object] = []
    project = data.get("project")
    if isinstance(project, dict):
        lists.append(project.get("dependencies"))
        optional = project.get("optional-dependencies")
        if isinstance(optional, dict):
            lists.extend(optional.values())
    groups = data.get("dependency-groups")
    if isinstance(groups, dict):
        lists.extend(groups.values())
    uv = data.get("tool", {}).get("uv") if isinstance(data.get("tool"), dict) else None
    if isinstance(uv, dict):
        lists.append(uv.get("dev-dependencies"))
    for entries in lists:
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if isinstance(entry, str) and (version := _requirement_pin(entry, tool)):
                return version
    return None


def _pin_in_precommit(text: str, tool: str) -> str | None:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    repos = data.get("repos") if isinstance(data, dict) else None
    if not isinstance(repos, list):
        return None
    wanted = _PRECOMMIT_REPOS.get(tool, ())
    for repo in repos:
        if not isinstance(repo, dict):
            continue
        url = str(repo.get("repo", "")).lower().removesuffix(".git").rstrip("/")
        if any(url.endswith("/" + name) for name in wanted):
            rev = repo.get("rev")
            if isinstance(rev, str):
                return rev.removeprefix("v")
    return None


def _pin_in_requirements(repo: RepoFiles, path: str, tool: str, depth: int = 0) -> Pin | None:
    text = repo.read_text(path)
    if text is None:
        return None
    for line in text.splitlines():
        stripped = line.strip()
        include = re.match(r"^(-r|--requirement)\s*=?\s*(\S+)$", stripped)
        if include and depth < 3:
            nested = str(PurePosixPath(path).parent / include.group(2))
            if found := _pin_in_requirements(repo, nested, tool, depth + 1):
                return found
        elif version := _requirement_pin(stripped, tool):
            return Pin(version, path)
    return None


def _pin_in_package_lock(text: str, tool: str) -> str | None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    packages = data.get("packages")
    if isinstance(packages, dict):
        entry = packages.get(f"node_modules/{tool}")
        if isinstance(entry, dict) and isinstance(entry.get("version"), str):
            return str(entry["version"])
    dependencies = data.get("dependencies")
    if isinstance(dependencies, dict):
        entry = dependencies.get(tool)
        if isinstance(entry, dict) and isinstance(entry.get("version"), str):
            return str(entry["version"])
    return None


def _pin_in_package_json(text: str, tool: str) -> str | None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    for section in ("devDependencies", "dependencies"):
        deps = data.get(section)
        if isinstance(deps, dict) and isinstance(deps.get(tool), str):
            # Only an exact version is a pin; a range (^3.0.0) is resolved by the lockfile.
            spec = str(deps[tool]).strip().removeprefix("=")
            if _NPM_VERSION.fullmatch(spec):
                return spec
    return None


def _join(subdir: str, name: str) -> str:
    return str(PurePosixPath(subdir) / name) if subdir else name


def find_pin(tool: str, repo: RepoFiles, subdir: str = "") -> Pin | None:
    """The version the repository pins for ``tool``, looking in ``subdir`` first, then the root."""
    bases = [subdir, ""] if subdir else [""]
    for base in bases:
        if tool in NODE_TOOLS:
            for name, finder in (
                ("package-lock.json", _pin_in_package_lock),
                ("package.json", _pin_in_package_json),
            ):
                path = _join(base, name)
                text = repo.read_text(path)
                if text is not None and (version := finder(text, tool)):
                    return Pin(version, path)
            continue
        path = _join(base, "pyproject.toml")
        text = repo.read_text(path)
        if text is not None and (version := _pin_in_pyproject(text, tool)):
            return Pin(version, path)
        path = _join(base, ".pre-commit-config.yaml")
        text = repo.read_text(path)
        if text is not None and (version := _pin_in_precommit(text, tool)):
            return Pin(version, path)
        for name in _REQUIREMENTS_FILES:
            path = _join(base, name)
            if pin := _pin_in_requirements(repo, path, tool):
                return pin
    return None


def resolve_tool(
    tool: str, repo: RepoFiles, subdir: str = "", *, bundled: str | None = None
) -> ToolChoice:
    """Pure: which version of ``tool`` should run for this repository (see module docstring)."""
    bundled = bundled if bundled is not None else bundled_version(tool)
    exe = (str(bundled_executable(tool)),)
    pin = find_pin(tool, repo, subdir)
    if pin is None:
        return ToolChoice(tool, bundled, "bundled", exe)
    if not valid_version(tool, pin.version):
        return ToolChoice(tool, bundled, f"bundled; ignored unusable pin in {pin.file}", exe)
    if pin.version == bundled:
        return ToolChoice(tool, bundled, f"pinned in {pin.file}", exe)
    return ToolChoice(tool, pin.version, f"pinned in {pin.file}", (), needs_install=True)


# --- preparing pinned versions (impure) ----------------------------------------------------------


def cached_executable(tool: str, version: str, cache_dir: Path) -> Path:
    if tool in NODE_TOOLS:
        return cache_dir / "node" / f"{tool}-{version}" / "node_modules" / ".bin" / tool
    return cache_dir / "python" / f"{tool}-{version}" / "bin" / tool


def _fallback(choice: ToolChoice, reason: str) -> ToolChoice:
    bundled = bundled_version(choice.tool)
    return ToolChoice(
        choice.tool,
        bundled,
        f"bundled; {choice.version} {choice.source} {reason}",
        (str(bundled_executable(choice.tool)),),
    )


async def _install(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> CommandResult:
    return await run_limited(
        argv, reported_argv=tuple(argv), cwd=cwd, env=env, timeout=300.0, output_limit=16384
    )


async def prepare_tool(choice: ToolChoice, *, cache_dir: Path | None) -> ToolChoice:
    """Install a differing pinned version into ``cache_dir`` (outside the sandbox) if needed.

    Only the tool's own package is installed, by name and validated version, with install scripts
    disabled; no repository file takes part. On any failure (no network, unknown version) the
    bundled tool is returned and ``source`` says why.
    """
    if not choice.needs_install:
        return choice
    if not valid_version(choice.tool, choice.version):
        return _fallback(choice, "is not a plain version number")
    if cache_dir is None:
        return _fallback(choice, "cannot be installed: no tool cache is configured")
    exe = cached_executable(choice.tool, choice.version, cache_dir)
    if exe.exists():
        return replace(choice, argv_prefix=(str(exe),), needs_install=False)
    final = exe.parents[2] if choice.tool in NODE_TOOLS else exe.parents[1]
    staging = final.with_name(f".{final.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    env = scrubbed_env({"UV_CACHE_DIR": str(cache_dir / "uv-cache")}, network=True)
    try:
        for step in _install_steps(choice, staging):
            result = await _install(step, cwd=staging, env=env)
            if not result.ok:
                last = result.output.strip().splitlines()[-1:] or ["no output"]
                return _fallback(choice, f"could not be installed ({last[0][:200]})")
        try:
            staging.rename(final)
        except OSError:
            # Another job installed the same version meanwhile; theirs is as good as ours.
            if not exe.exists():
                raise
    except (OSError, SandboxError) as exc:
        return _fallback(choice, f"could not be installed ({exc})")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return replace(choice, argv_prefix=(str(exe),), needs_install=False)


def _install_steps(choice: ToolChoice, staging: Path) -> list[list[str]]:
    """The commands that install exactly ``choice``'s package and version into ``staging``."""
    if choice.tool in NODE_TOOLS:
        return [
            [
                "npm",
                "install",
                "--prefix",
                str(staging),
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--no-save",
                f"{choice.tool}@{choice.version}",
            ],
        ]
    uv = str(bundled_executable("uv"))
    return [
        [uv, "venv", "--quiet", "--relocatable", "--python", sys.executable, str(staging)],
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            str(staging / "bin" / "python"),
            f"{choice.tool}=={choice.version}",
        ],
    ]


def runner_tool_cache(runner: Runner) -> Path | None:
    """The tool cache the runner mounts read-only, if it has one."""
    cache = getattr(runner, "tool_cache", None)
    return cache if isinstance(cache, Path) else None


async def tool_for(tool: str, ctx: FixContext) -> ToolChoice:
    """Resolve and prepare ``tool`` for the fix context's repository and sub-project."""

    choice = resolve_tool(tool, WorktreeFiles(ctx.worktree), ctx.subdir)
    return await prepare_tool(choice, cache_dir=runner_tool_cache(ctx.runner))


# --- running a fixer on a worktree ---------------------------------------------------------------


def is_protected(path: str, globs: Iterable[str]) -> bool:
    for pattern in globs:
        pattern = pattern.strip().lstrip("/")
        if not pattern:
            continue
        if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.rstrip("/")):
            return True
        # "dir/" and "dir/**" protect everything below dir.
        prefix = pattern.removesuffix("**").rstrip("/")
        if prefix and "*" not in prefix and path.startswith(prefix + "/"):
            return True
    return False


def fix_dir(ctx: FixContext) -> Path:
    """The sub-project directory, confined to the worktree (``subdir`` comes from the log)."""
    root = ctx.worktree.resolve()
    target = (root / ctx.subdir).resolve() if ctx.subdir else root
    if not target.is_relative_to(root) or not target.is_dir():
        raise FixerError(f"working directory {ctx.subdir!r} is not a directory of the worktree")
    return target


@dataclass(frozen=True)
class ToolRun:
    """One fixing command and the check command that proves it worked."""

    fix: Sequence[str]
    check: Sequence[str]
    #: Exit codes of ``fix`` that mean "ran normally" (e.g. 1 = findings left).
    ok_codes: frozenset[int] = frozenset({0})
    network: bool = False
    env: Mapping[str, str] | None = None
    #: Directories mounted for both commands (a hook cache, a git view of the tree).
    binds: Sequence[Bind] = ()


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


async def run_fixer(
    ctx: FixContext, name: str, choice: ToolChoice, runs: Sequence[ToolRun], *, note: str = ""
) -> FixResult:
    """Run the fixing commands in the sandbox, undo protected paths, run the checks."""
    cwd = await asyncio.to_thread(fix_dir, ctx)
    wt = ctx.checkout
    before = await asyncio.to_thread(snapshot_tree, wt)
    for run in runs:
        result = await _sandboxed(ctx, run.fix, run, cwd)
        if result.timed_out:
            raise FixerError(f"{name}: {' '.join(run.fix[:3])} timed out")
        if result.returncode not in run.ok_codes:
            raise FixerError(
                f"{name}: {' '.join(run.fix[:3])} failed with exit code {result.returncode}: "
                f"{_tail(result.output, 5)}"
            )
    changes = await _confine(ctx, before)
    failed_check: str | None = None
    for run in runs:
        check = await _sandboxed(ctx, run.check, run, cwd)
        if not check.ok:
            failed_check = check.output
    return FixResult(
        fixer=name,
        changed=bool(changes.kept),
        tool_version=choice.describe(),
        self_check_passed=failed_check is None,
        detail=_detail(choice, changes, note, failed_check),
        out_of_scope=tuple(changes.outside),
    )


async def _sandboxed(
    ctx: FixContext, argv: Sequence[str], run: ToolRun, cwd: Path
) -> CommandResult:
    return await ctx.runner.run(
        argv,
        cwd=cwd,
        writable=ctx.checkout.path,
        env=run.env,
        network=run.network,
        timeout=600.0,
        **_binds(run),
    )


@dataclass(frozen=True)
class _Changes:
    """What the fixing commands changed, split by what may stay."""

    kept: list[str]
    #: Put back: protected paths, and paths outside the pull request's changes.
    protected: list[str]
    outside: list[str]


async def _confine(ctx: FixContext, before: str) -> _Changes:
    """Put back what the fixer changed in protected paths or outside the scope."""
    wt = ctx.checkout
    after = await asyncio.to_thread(snapshot_tree, wt)
    changed = await asyncio.to_thread(changed_paths, wt, before, after)
    protected = [p for p in changed if is_protected(p, ctx.protected_paths)]
    outside = [
        p for p in changed if ctx.scope is not None and p not in ctx.scope and p not in protected
    ]
    if protected or outside:
        await asyncio.to_thread(restore_paths, wt, before, [*protected, *outside])
        changed = [p for p in changed if p not in protected and p not in outside]
    return _Changes(changed, protected, outside)


def _detail(choice: ToolChoice, changes: _Changes, note: str, failed_check: str | None) -> str:
    changed, protected, outside = changes.kept, changes.protected, changes.outside
    parts = [f"{choice.describe()}: changed {len(changed)} file(s)"]
    if changed:
        parts.append(", ".join(changed[:20]) + (" ..." if len(changed) > 20 else ""))
    if protected:
        parts.append(f"left protected path(s) untouched: {', '.join(protected)}")
    if outside:
        parts.append(
            f"put back {len(outside)} file(s) outside the pull request's changes (scope: changed)"
        )
    if note:
        parts.append(note)
    if failed_check is not None:
        parts.append("own check still fails:\n" + _tail(failed_check))
    return "\n".join(parts)


def _binds(run: ToolRun) -> dict[str, Sequence[Bind]]:
    # Only passed when there are some: runners written before binds existed keep working.
    return {"binds": run.binds} if run.binds else {}


async def probe(
    ctx: FixContext, argv: Sequence[str], *, cwd: Path | None = None, limit: float = 60.0
) -> str | None:
    """Run ``argv`` (a ``--version``) where the fixer runs; its first output line, or None when
    it is not there (not installed in the job environment, not on the sandbox's PATH)."""
    where = cwd if cwd is not None else await asyncio.to_thread(fix_dir, ctx)
    try:
        result = await ctx.runner.run(argv, cwd=where, writable=ctx.worktree, timeout=limit)
    except SandboxError:
        return None
    if not result.ok:
        return None
    lines = result.output.strip().splitlines()
    return lines[0].strip()[:200] if lines else ""


def local_bin(ctx: FixContext, tool: str) -> list[str]:
    """``node_modules/.bin/<tool>`` of the sub-project and of each directory above it up to the
    root, nearest first, relative to the sub-project (what ``npx --no-install`` would find)."""
    depth = len(PurePosixPath(ctx.subdir).parts) if ctx.subdir else 0
    return [
        "/".join([".."] * up + ["node_modules", ".bin", tool])
        if up
        else f"node_modules/.bin/{tool}"
        for up in range(depth + 1)
    ]


_SHELL_SYNTAX = re.compile(r"[$`|;&<>()*?{}\\!~]")


def tool_args_from_command(
    command: str | None, tool: str, subcommand: Sequence[str] = ()
) -> list[str] | None:
    """The arguments the CI step gave ``tool`` (after ``subcommand``), or None.

    Only a plain invocation is reproduced (``black --check src tests`` → ``--check src tests``),
    also when prefixed by ``python -m``/``uv run``/``uvx``. A line with shell syntax (variables,
    globs, pipes) is not reproduced: the caller falls back to its default targets.
    """
    if not command:
        return None
    for line in command.splitlines():
        for segment in re.split(r"\s*&&\s*", line.strip()):
            if _SHELL_SYNTAX.search(segment):
                continue
            try:
                words = shlex.split(segment)
            except ValueError:
                continue
            names = [PurePosixPath(w).name for w in words]
            if tool not in names:
                continue
            start = names.index(tool) + 1
            if list(words[start : start + len(subcommand)]) != list(subcommand):
                continue
            return words[start + len(subcommand) :]
    return None


def without_flags(args: Sequence[str], drop: Iterable[str]) -> list[str]:
    """``args`` minus the check-mode flags in ``drop`` (``--check``, ``--diff``, ...)."""
    dropped = set(drop)
    return [a for a in args if a not in dropped and a.split("=", 1)[0] not in dropped]
