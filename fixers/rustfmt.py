"""``rustfmt``: ``cargo fmt`` (or ``rustfmt``) when the check's ``--check`` found a diff.

The fixing run is the check's own invocation without ``--check`` (``cargo fmt --all -- --check``
→ ``cargo fmt --all``), so the same packages, edition and ``rustfmt.toml`` apply. The toolchain
is the job environment's (``dtolnay/rust-toolchain``, ``rust-toolchain.toml``), else the bundled
one (Debian's ``cargo`` and ``rustfmt`` at ``/usr/bin``); the summary names the rustfmt version
and says when ``rust-toolchain.toml`` asks for another channel. ``cargo fmt`` reads the
workspace's own manifests only (``cargo metadata --no-deps``): nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path, PurePosixPath

from bot.diagnosis.logs import DistilledLog
from fixers.base import FixContext, FixResult, RepoFiles, WorktreeFiles
from fixers.tools import ToolChoice, ToolRun, fix_dir, probe, run_fixer, tool_args_from_command

_COMMAND = re.compile(r"\b(?:cargo\s+(?:\+\S+\s+)?fmt|rustfmt)\b")
# rustfmt ≥ 1.4.38: "Diff in /w/src/main.rs:1:"; older: "Diff in /w/src/main.rs at line 1:".
_DIFF = re.compile(r"^Diff in \S+\.rs(?::\d+| at line \d+):", re.M)
_VERSION = re.compile(r"rustfmt (\S+)")
_SAFE = re.compile(r"[\w./=:+-]+")
_ENV = {"CARGO_NET_OFFLINE": "true", "CARGO_TERM_COLOR": "never"}


def invocation(command: str) -> tuple[list[str], list[str]]:
    """(fix argv, check argv) reproducing the step's ``cargo fmt``/``rustfmt`` run."""
    args = tool_args_from_command(command, "cargo", ("fmt",))
    if args is not None and all(_SAFE.fullmatch(a) for a in args):
        kept = [a for a in args if a != "--check"]
        if kept and kept[-1] == "--":
            kept.pop()
        tail = [] if "--" in kept else ["--"]
        return ["cargo", "fmt", *kept], ["cargo", "fmt", *kept, *tail, "--check"]
    direct = tool_args_from_command(command, "rustfmt")
    if direct is not None and all(_SAFE.fullmatch(a) for a in direct):
        files = [a for a in direct if a != "--check"]
        if any(not a.startswith("-") and _relative(a) for a in files):
            return ["rustfmt", *files], ["rustfmt", "--check", *files]
    return ["cargo", "fmt", "--all"], ["cargo", "fmt", "--all", "--", "--check"]


def _relative(path: str) -> bool:
    pure = PurePosixPath(path)
    return not pure.is_absolute() and ".." not in pure.parts


class RustfmtFixer:
    name = "rustfmt"

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        return bool(_DIFF.search(log.excerpt)) and bool(_COMMAND.search(log.commands))

    async def apply(self, ctx: FixContext) -> FixResult:
        cwd = await asyncio.to_thread(fix_dir, ctx)
        fix, check = invocation(ctx.log.commands)
        choice = await self._choose(ctx, cwd)
        run = ToolRun(fix=fix, check=check, env=_ENV)
        return await run_fixer(ctx, self.name, choice, [run])

    async def _choose(self, ctx: FixContext, cwd: Path) -> ToolChoice:
        where = await probe(ctx, ["sh", "-c", "command -v cargo"], cwd=cwd)
        version_line = await probe(ctx, ["rustfmt", "--version"], cwd=cwd)
        found = _VERSION.search(version_line or "")
        version = found.group(1) if found else "unknown"
        source = "bundled" if where in (None, "/usr/bin/cargo") else "the job's Rust toolchain"
        channel = await asyncio.to_thread(_toolchain_channel, ctx)
        if channel and channel not in (version_line or ""):
            source += f"; rust-toolchain asks for {channel}"
        return ToolChoice("rustfmt", version, source, ("cargo",))


def _toolchain_channel(ctx: FixContext) -> str | None:
    """The channel ``rust-toolchain.toml`` (or the legacy ``rust-toolchain``) pins."""
    files = WorktreeFiles(ctx.worktree)
    for base in ([ctx.subdir] if ctx.subdir else []) + [""]:
        prefix = f"{base}/" if base else ""
        text = files.read_text(f"{prefix}rust-toolchain.toml")
        if text is not None:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError:
                return None
            channel = (data.get("toolchain") or {}).get("channel")
            return str(channel) if channel else None
        legacy = files.read_text(f"{prefix}rust-toolchain")
        if legacy is not None and legacy.strip() and "\n" not in legacy.strip():
            return legacy.strip()
    return None


RUSTFMT = RustfmtFixer()
