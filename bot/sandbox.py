"""Isolated execution of untrusted commands (bubblewrap).

PR code, and tools reading PR code, run here: no network (unless a step must download packages),
no secrets in the environment, the system mounted read-only, and only the job's worktree
writable, its git metadata excepted (read-only). Both runners enforce a time limit (the whole
process tree is killed) and an output limit (head and tail kept), and after every command check
that no git metadata appeared or changed in the tree (``UnsafeWorktree`` otherwise: the job
stops).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from bot.git.runner import MetadataMark, check_metadata, mark_metadata
from bot.kernel.errors import SandboxError, SandboxUnavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    #: stdout and stderr interleaved, truncated to the output limit.
    output: str
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class Layout:
    """Where a job environment (``bot.jobenv``) puts things inside the sandbox.

    Without a layout a command sees the worktree at its own path and Shepherd's virtualenv on
    ``PATH``. With one it sees what the CI job saw: the worktree at ``tree`` (a fixed path, so
    what setup steps installed keeps working from one job to the next), ``home`` as ``HOME``, the
    job's toolchains first on ``PATH``, the job's ``env``, and whatever ``wrap`` starts first
    (the forwarders to the job's services and, for setup steps, to the registry proxy). The
    network namespace is always the sandbox's own.
    """

    tree: str
    home: Path
    home_at: str
    #: Extra read-write binds (host path, path inside): what setup steps put into the tree.
    binds: tuple[tuple[Path, str], ...] = ()
    #: Read-only binds: the job's toolchains.
    ro_binds: tuple[tuple[Path, str], ...] = ()
    #: The job's environment, from the base branch's workflow (secrets already empty), so it is
    #: passed as is: a ``DATABASE_URL`` for the job's own service is not Shepherd's secret.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Directories put before the system's on ``PATH``.
    path: tuple[str, ...] = ()
    #: More bubblewrap arguments (the services' sockets and hosts file).
    extra_args: tuple[str, ...] = ()
    #: Turns the command's argv into the one to run (starting forwarders first).
    wrap: Callable[[Sequence[str]], list[str]] | None = None

    def inside(self, writable: Path, path: Path) -> str:
        """Where ``path`` (inside the worktree ``writable``) appears in the sandbox."""
        relative = path.relative_to(writable)
        return self.tree if str(relative) == "." else f"{self.tree}/{relative}"


class Bind(NamedTuple):
    """A host directory mounted into the sandbox for one command (a fixer's cache, a private git
    view of the tree). Read-only unless ``writable``; the host directory is the caller's own,
    never another job's."""

    host: Path
    inside: str
    writable: bool = False


class Runner(Protocol):
    """Runs a command in a worktree. The production implementation is the bubblewrap sandbox."""

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
    ) -> CommandResult: ...


UNAVAILABLE_HINT = (
    "install bubblewrap: apt-get install bubblewrap, or set SHEPHERD_ALLOW_UNSANDBOXED=true "
    "to run untrusted code without isolation"
)

#: Default cap on the output kept from one command (head and tail halves).
DEFAULT_OUTPUT_LIMIT = 256 * 1024

#: Substrings of environment variable names that may carry credentials; never passed on.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|KEY|PASSWORD|GITHUB_|ANTHROPIC_|AWS_|DATABASE_URL", re.I)

#: Variables copied from the bot's own environment when a command gets network access: they only
#: point TLS clients (uv, pip, npm/node) at the machine's CA bundle, which corporate TLS proxies
#: need, and carry no credentials.
_TLS_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE")

#: System paths mounted read-only. /etc is not mounted whole: it may hold credentials
#: (/etc/shadow, netrc-style configs, npmrc tokens); only what programs need to start is bound.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ETC_FILES = (
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/os-release",
)
_NETWORK_ETC_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/host.conf", "/etc/gai.conf")

_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def is_secret_name(name: str) -> bool:
    """Whether an environment variable name looks like it carries a credential."""
    return _SECRET_NAME.search(name) is not None


def scrubbed_env(
    env: Mapping[str, str] | None,
    *,
    network: bool,
    host_env: Mapping[str, str] | None = None,
    layout: Layout | None = None,
) -> dict[str, str]:
    """The whole environment a sandboxed command sees: a fixed base plus the allowed extras.

    Names that look secret are dropped (and logged), whoever passed them; a layout's job
    environment comes from the workflow and is kept as written (see ``Layout.env``).
    """
    if layout is None:
        venv_bin = str(Path(sys.executable).parent)
        # HOME is the sandbox's private tmpfs, so tool caches vanish with the command.
        home = "/tmp"  # noqa: S108
        result = {"PATH": f"{venv_bin}:{_SYSTEM_PATH}", "HOME": home, "LANG": "C.UTF-8"}
    else:
        path = ":".join([*layout.path, _SYSTEM_PATH])
        result = {"PATH": path, "HOME": layout.home_at, "LANG": "C.UTF-8", **layout.env}
    if network:
        source = os.environ if host_env is None else host_env
        result.update({name: source[name] for name in _TLS_ENV if name in source})
    for name, value in (env or {}).items():
        if is_secret_name(name):
            logger.warning("sandbox: refusing to pass environment variable %s", name)
            continue
        result[name] = value
    return result


class _OutputCollector:
    """Keeps the first and last ``limit // 2`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.half = max(limit // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.half:
                del self.tail[: len(self.tail) - self.half]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        if not self.truncated:
            return head + self.tail.decode("utf-8", errors="replace")
        omitted = self.total - len(self.head) - len(self.tail)
        tail = self.tail.decode("utf-8", errors="replace")
        return f"{head}\n[... {omitted} bytes of output omitted ...]\n{tail}"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        # Already gone: nothing to kill.
        return


async def run_limited(
    argv: Sequence[str],
    *,
    reported_argv: tuple[str, ...],
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - enforced by wait_for around the whole exchange
    output_limit: int,
) -> CommandResult:
    """Run argv in its own session; kill the whole group on timeout; cap the kept output."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise SandboxError(f"could not start {argv[0]!r}: {exc}") from exc
    collector = _OutputCollector(output_limit)
    stdout = proc.stdout
    assert stdout is not None  # stdout=PIPE above

    async def communicate() -> int:
        while chunk := await stdout.read(65536):
            collector.feed(chunk)
        return await proc.wait()

    timed_out = False
    try:
        returncode = await asyncio.wait_for(communicate(), timeout)
    except TimeoutError:
        timed_out = True
        _kill_group(proc.pid)
        returncode = await proc.wait()
    finally:
        if proc.returncode is None:
            # Cancelled from outside: do not leave the tree running.
            _kill_group(proc.pid)
    # Children that escaped into their own session may still run; the group kill covers the rest.
    _kill_group(proc.pid)
    return CommandResult(
        argv=reported_argv,
        returncode=returncode,
        output=collector.text(),
        timed_out=timed_out,
        truncated=collector.truncated,
    )


def _python_prefixes() -> tuple[Path, ...]:
    prefixes: list[Path] = []
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        path = Path(prefix).resolve()
        if path not in prefixes:
            prefixes.append(path)
    return tuple(prefixes)


def _confine(writable: Path, cwd: Path) -> tuple[Path, Path]:
    writable = writable.resolve()
    cwd = cwd.resolve()
    if not cwd.is_relative_to(writable):
        raise SandboxError(f"cwd {cwd} is outside the writable worktree {writable}")
    return writable, cwd


def _system_mounts(network: bool) -> list[str]:
    """The system directories and ``/etc`` files, read-only; a private ``/tmp``, ``/proc``,
    ``/dev``."""
    args: list[str] = []
    for system_dir in _SYSTEM_DIRS:
        path = Path(system_dir)
        if path.is_symlink():
            # Merged-/usr systems: recreate the link instead of binding its target twice.
            args += ["--symlink", os.readlink(path), system_dir]
        elif path.exists():
            args += ["--ro-bind", system_dir, system_dir]
    etc_files = _ETC_FILES + (_NETWORK_ETC_FILES if network else ())
    for etc_file in etc_files:
        if os.path.exists(etc_file):
            args += ["--ro-bind", os.path.realpath(etc_file), etc_file]
    private_tmp = "/tmp"  # noqa: S108 - a fresh tmpfs private to this command
    args += ["--tmpfs", private_tmp, "--proc", "/proc", "--dev", "/dev"]
    return args


def _metadata_mounts(writable: Path, tree: str, metadata: MetadataMark | None) -> list[str]:
    args: list[str] = []
    for relative, (kind, *_) in sorted((metadata or {}).items()):
        if kind in ("file", "dir", "gitdir"):
            # Git metadata is read-only inside (the worktree's `.git` pointer file, a
            # checkout's `.git` directory, a submodule's): PR code can neither point it at
            # a git directory of its own nor edit the config, hooks or index that
            # Shepherd's git reads. Being a mount point, it cannot be renamed or deleted.
            args += ["--ro-bind", str(writable / relative), f"{tree}/{relative}"]
    return args


def _layout_mounts(layout: Layout) -> list[str]:
    """The job environment's binds (setup steps' output, toolchains) and extra arguments."""
    args: list[str] = []
    for host, inside in layout.binds:
        args += ["--bind", str(host), inside]
    for host, inside in layout.ro_binds:
        args += ["--ro-bind", str(host), inside]
    args += list(layout.extra_args)
    return args


class BubblewrapSandbox:
    """Runs commands under bubblewrap: no network, scrubbed env, only the worktree writable."""

    def __init__(
        self,
        *,
        bwrap: str = "bwrap",
        tool_dirs: Sequence[Path] = (),
        tool_cache: Path | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> None:
        self.bwrap = self._probe(bwrap)
        self.tool_dirs = tuple(Path(d).resolve() for d in tool_dirs)
        #: Where pinned tool versions are installed (read-only inside the sandbox).
        self.tool_cache = tool_cache.resolve() if tool_cache is not None else None
        self.output_limit = output_limit

    @staticmethod
    def _probe(bwrap: str) -> str:
        """Resolve bwrap and check that it can create namespaces here, once."""
        resolved = bwrap if os.sep in bwrap else shutil.which(bwrap)
        if resolved is None or not os.access(resolved, os.X_OK):
            raise SandboxUnavailable(f"bubblewrap not found ({bwrap}); {UNAVAILABLE_HINT}")
        try:
            probe = subprocess.run(
                [resolved, "--unshare-all", "--ro-bind", "/", "/", "true"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"bubblewrap probe failed: {exc}; {UNAVAILABLE_HINT}") from exc
        if probe.returncode != 0:
            reason = probe.stderr.decode("utf-8", errors="replace").strip()
            raise SandboxUnavailable(
                f"bubblewrap cannot create namespaces here ({reason}); {UNAVAILABLE_HINT}"
            )
        return resolved

    def bwrap_argv(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        writable: Path,
        env: Mapping[str, str],
        network: bool,
        metadata: MetadataMark | None = None,
        layout: Layout | None = None,
        binds: Sequence[Bind] = (),
    ) -> list[str]:
        """The full bwrap command line (exposed for inspection and tests); ``metadata`` is the
        git metadata found in ``writable``, bound read-only."""
        args = [self.bwrap, "--unshare-all"]
        if network and layout is None:
            args.append("--share-net")
        args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        args += _system_mounts(network)
        args += self._tool_mounts()
        tree = str(writable)
        if layout is not None:
            tree = layout.tree
            args += ["--bind", str(layout.home), layout.home_at]
        args += ["--bind", str(writable), tree]
        args += _metadata_mounts(writable, tree, metadata)
        chdir = str(cwd)
        if layout is not None:
            args += _layout_mounts(layout)
            chdir = layout.inside(writable, cwd)
            argv = layout.wrap(argv) if layout.wrap else list(argv)
        for bind in binds:
            args += ["--bind" if bind.writable else "--ro-bind", str(bind.host), bind.inside]
        args += ["--chdir", chdir, "--clearenv"]
        for name, value in env.items():
            args += ["--setenv", name, value]
        args += ["--", *argv]
        return args

    def _tool_mounts(self) -> list[str]:
        """Python, Shepherd's tool directories and the tool cache, read-only."""
        args: list[str] = []
        read_only = [*_python_prefixes(), *self.tool_dirs]
        if self.tool_cache is not None and self.tool_cache.exists():
            read_only.append(self.tool_cache)
        for path in read_only:
            if path.exists():
                args += ["--ro-bind", str(path), str(path)]
        return args

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        writable: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,  # noqa: ASYNC109 - the Runner contract takes a timeout
        network: bool = False,
        layout: Layout | None = None,
        binds: Sequence[Bind] = (),
    ) -> CommandResult:
        writable, cwd = _confine(writable, cwd)
        full_env = scrubbed_env(env, network=network, layout=layout)
        mark = await asyncio.to_thread(mark_metadata, writable)
        command = self.bwrap_argv(
            argv,
            cwd=cwd,
            writable=writable,
            env=full_env,
            network=network,
            metadata=mark,
            layout=layout,
            binds=binds,
        )
        result = await run_limited(
            command,
            reported_argv=tuple(argv),
            cwd=cwd,
            # bwrap itself gets the scrubbed env too, so nothing leaks even before --clearenv.
            env=full_env,
            timeout=timeout,
            output_limit=self.output_limit,
        )
        await asyncio.to_thread(check_metadata, writable, mark)
        return result


class UnsandboxedRunner:
    """Same interface, env scrubbing and limits as the sandbox, but NO isolation.

    Only for machines where bubblewrap cannot run and the operator said so explicitly.
    """

    def __init__(
        self, *, tool_cache: Path | None = None, output_limit: int = DEFAULT_OUTPUT_LIMIT
    ) -> None:
        self.tool_cache = tool_cache.resolve() if tool_cache is not None else None
        self.output_limit = output_limit
        logger.warning(
            "running untrusted commands WITHOUT a sandbox (SHEPHERD_ALLOW_UNSANDBOXED): "
            "PR code can read this machine's files and reach the network"
        )

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
        for bind in binds:
            if str(bind.host.resolve()) != bind.inside:
                raise SandboxError(f"cannot mount {bind.host} at {bind.inside} without the sandbox")
        full_env = scrubbed_env(env, network=network)
        mark = await asyncio.to_thread(mark_metadata, writable)
        result = await run_limited(
            list(argv),
            reported_argv=tuple(argv),
            cwd=cwd,
            env=full_env,
            timeout=timeout,
            output_limit=self.output_limit,
        )
        await asyncio.to_thread(check_metadata, writable, mark)
        return result


def make_runner(
    *,
    allow_unsandboxed: bool,
    tool_dirs: Sequence[Path] = (),
    tool_cache: Path | None = None,
    bwrap: str = "bwrap",
) -> Runner:
    """The bubblewrap sandbox, or — only when explicitly allowed — the unsandboxed runner.

    Raises SandboxUnavailable when bubblewrap cannot run and ``allow_unsandboxed`` is false.
    """
    try:
        return BubblewrapSandbox(bwrap=bwrap, tool_dirs=tool_dirs, tool_cache=tool_cache)
    except SandboxUnavailable as exc:
        if not allow_unsandboxed:
            raise
        logger.warning("sandbox unavailable: %s", exc)
        return UnsandboxedRunner(tool_cache=tool_cache)
