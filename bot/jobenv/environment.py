"""The job environment: the failing CI job rebuilt in the sandbox, to reproduce, then verify.

``JobEnvironments.open(wt, job, ...)`` turns a ``WorkflowJob`` (``bot.jobenv.workflow``) into a
``JobEnvironment``: the job's toolchains (``bot.jobenv.toolchains``), its install steps replayed
in the sandbox, its services (``bot.jobenv.services``), its environment variables and working
directory. Inside the sandbox (``bot.sandbox.Layout``) a command then sees what the CI job saw:

    /home/runner                    HOME, the job's own (its virtualenv at /home/runner/.venv)
    /home/runner/work/<n>/<n>       the worktree, at the same path as on GitHub's runners
    localhost:<port>, <service>     the job's private services

**Setup steps** (the ``run:`` steps before the failing one, and installs for setup actions such
as ``pnpm/action-setup``) run with network to the package registries only (``bot.jobenv.egress``)
and no secret. What they add to the worktree (``node_modules``, ``*.egg-info``) is moved out of
it into the job's directory and bound back at the same place inside the sandbox, so host-side
code never sees it and a fix never contains it.

**The warm pool.** A prepared environment is cached by a fingerprint of the job's setup (its
steps, toolchains and environment as resolved) and of the files those steps read (dependency
manifests and lockfiles, and any file a step's script names). The next job with the same
fingerprint starts from a copy of it: each job gets its own copy, so no job can change what
the next one starts from. The pool is kept under a size limit, least recently used first out.
A step that installs the project itself non-editably (``pip install .``) adds the whole tree to
the fingerprint, since the installed copy would otherwise be stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bot.git.workspace import Worktree
from bot.jobenv.egress import (
    DEFAULT_REGISTRIES,
    SANDBOX_PROXY_PORT,
    EgressProxy,
    proxy_env,
    registries_from,
)
from bot.jobenv.services import (
    Forward,
    RunningServices,
    ServiceHost,
    ServiceSpec,
    forward_script,
)
from bot.jobenv.toolchains import (
    HostTool,
    HostToolchains,
    choose,
    discover,
    is_covered,
    is_setup,
)
from bot.jobenv.workflow import WORKSPACE, WorkflowJob, WorkflowStep
from bot.kernel.errors import SandboxError, ServiceError, ShepherdError
from bot.kernel.problems import EnvironmentRecord, StepRecord
from bot.kernel.settings import Settings
from bot.sandbox import Bind, BubblewrapSandbox, CommandResult, Layout

log = logging.getLogger(__name__)

SANDBOX_HOME = "/home/runner"
SANDBOX_VENV = f"{SANDBOX_HOME}/.venv"
SANDBOX_LOCAL_BIN = f"{SANDBOX_HOME}/.local/bin"
_EGRESS_SOCKET = "/run/shepherd-egress/proxy.sock"
#: Bump when the layout of a cached environment changes.
_FORMAT = "jobenv-1"
SETUP_STEP_TIMEOUT = 900.0
#: Files a setup step is taken to read wherever they are (dependency manifests and lockfiles).
MANIFESTS = frozenset(
    {
        "pyproject.toml",
        "setup.py",
        "setup.cfg",
        "requirements.txt",
        "Pipfile",
        "Pipfile.lock",
        "poetry.lock",
        "uv.lock",
        "pdm.lock",
        "tox.ini",
        "package.json",
        "package-lock.json",
        "npm-shrinkwrap.json",
        "pnpm-lock.yaml",
        "pnpm-workspace.yaml",
        "yarn.lock",
        ".npmrc",
        ".yarnrc.yml",
        ".nvmrc",
        ".python-version",
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain",
        "rust-toolchain.toml",
        "go.mod",
        "go.sum",
        "Gemfile",
        "Gemfile.lock",
    }
)
_MANIFEST_GLOB = re.compile(r"(requirements|constraints)[\w.-]*\.(txt|in)$")
_PATH_IN_SCRIPT = re.compile(
    r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.(?:txt|in|toml|cfg|lock|json|yaml|yml))\b"
)
#: pip installing the project itself, not editable: the copy in the environment goes stale.
_SELF_INSTALL = re.compile(
    r"\bpip3?\s+install\b(?![^\n]*\s-e\b)(?![^\n]*--editable)[^\n]*\s\.(\[[^\]]*\])?(\s|$)"
)
#: Setup products that are caches, not dependencies: not kept in the warm pool.
_HOME_CACHES = (".cache", ".npm", ".shepherd")
_MAX_BINDS = 400


class JobEnvironmentError(ShepherdError):
    """The job environment could not be prepared (a setup step failed, a service cannot be
    provided). ``record`` says how far it got."""

    def __init__(self, message: str, record: EnvironmentRecord | None = None) -> None:
        super().__init__(message)
        self.record = record


@dataclass(frozen=True)
class _Dirs:
    root: Path
    #: A short directory for the job's sockets (a unix socket path has at most 107 bytes and
    #: the data directory may be deep).
    run: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def deps(self) -> Path:
        return self.root / "deps"


@dataclass
class JobEnvironment:
    """A prepared job: what its commands see, and what was done to get there."""

    job: WorkflowJob
    tree: str
    dirs: _Dirs
    env: dict[str, str]
    path: list[str]
    ro_binds: list[tuple[Path, str]]
    binds: list[tuple[Path, str]]
    workdir: str
    record: EnvironmentRecord
    #: The job's ``services:``, started afresh for every command (see ``JobEnvironments.run``).
    services: list[ServiceSpec] = field(default_factory=list)
    #: The failing step's ``shell:`` (None: GitHub's default, ``bash -e {0}``).
    shell: str | None = None
    #: The job's Python, when it has one (its virtualenv is made from it).
    python: HostTool | None = None

    def layout(self, *, egress: bool = False, services: RunningServices | None = None) -> Layout:
        running = services or RunningServices()
        forwards: list[Forward] = list(running.forwards)
        extra = list(running.bwrap_args())
        env = dict(self.env)
        if egress:
            forwards.append(Forward("registries", "127.0.0.1", SANDBOX_PROXY_PORT, _EGRESS_SOCKET))
            extra += ["--ro-bind", str(self.dirs.run), str(PurePosixPath(_EGRESS_SOCKET).parent)]
            env.update(proxy_env())
        socat = running.socat if running.forwards else shutil.which("socat") or "socat"

        def wrap(argv: Sequence[str]) -> list[str]:
            if not forwards:
                return list(argv)
            script = forward_script(forwards, socat=socat)
            return ["/bin/sh", "-c", script, "shepherd-forward", *argv]

        return Layout(
            tree=self.tree,
            home=self.dirs.home,
            home_at=SANDBOX_HOME,
            binds=tuple(self.binds),
            ro_binds=tuple(self.ro_binds),
            env=env,
            path=tuple(self.path),
            extra_args=tuple(extra),
            wrap=wrap if forwards else None,
        )


class EnvRunner:
    """A ``Runner`` whose commands run in a job environment: the seam fixers, the verification
    and the LLM's ``run_check`` use, unchanged. ``network=True`` (a fixer that must resolve,
    such as ``uv lock``) means the registries only, as for setup steps."""

    def __init__(self, environments: JobEnvironments, environment: JobEnvironment) -> None:
        self.environments = environments
        self.environment = environment
        self.tool_cache = environments.sandbox.tool_cache

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
        return await self.environments.run(
            self.environment,
            argv,
            cwd=cwd,
            writable=writable,
            env=env,
            timeout=timeout,
            egress=network,
            binds=binds,
        )


# -- fingerprints (pure) -----------------------------------------------------------------------


def files_read(job: WorkflowJob, tracked: Sequence[str]) -> list[str]:
    """The repository files the job's setup is taken to read: every dependency manifest or
    lockfile of the repository, and any tracked file a setup script names."""
    scripts = "\n".join(s.run or "" for s in job.replayable_steps)
    scripts += "\n" + "\n".join(v for s in job.setup_steps for v in s.with_.values())
    named = {m.group(1).lstrip("./") for m in _PATH_IN_SCRIPT.finditer(scripts)}
    wanted = []
    for path in tracked:
        name = PurePosixPath(path).name
        if name in MANIFESTS or _MANIFEST_GLOB.search(name) or path in named:
            wanted.append(path)
    return sorted(wanted)


def fingerprint(
    job: WorkflowJob,
    toolchains: Sequence[str],
    contents: Mapping[str, bytes],
    *,
    tree: str | None = None,
) -> str:
    """The warm-pool key of a job's setup (see the module docstring)."""
    digest = hashlib.sha256(_FORMAT.encode())
    steps = [
        {
            "uses": s.uses,
            "with": dict(sorted(s.with_.items())),
            "run": s.run,
            "shell": s.shell,
            "wd": s.working_directory,
            "env": dict(sorted(s.env.items())),
            "skip": s.skip_reason is not None,
        }
        for s in job.setup_steps
    ]
    digest.update(json.dumps({"steps": steps, "env": dict(sorted(job.env.items()))}).encode())
    digest.update(json.dumps(sorted(toolchains)).encode())
    for path in sorted(contents):
        digest.update(path.encode() + b"\0" + hashlib.sha256(contents[path]).digest())
    if tree is not None:
        digest.update(b"tree\0" + tree.encode())
    return digest.hexdigest()[:32]


def installs_project(job: WorkflowJob) -> bool:
    return any(_SELF_INSTALL.search(s.run or "") for s in job.replayable_steps)


def declarations(job: WorkflowJob) -> list[ServiceSpec]:
    """The job's ``services:`` as the service layer takes them. A port published without a
    host port is published on the container's port (GitHub picks a free one; the workflow
    reads it back through ``job.services.<id>.ports``, which resolves to the same)."""
    specs: list[ServiceSpec] = []
    for service in job.services:
        if service.skip_reason is not None:
            raise JobEnvironmentError(
                f"service {service.name} (image {service.image}) cannot be provided here: "
                f"{service.skip_reason}"
            )
        ports = tuple(
            (port.host or port.container, port.container)
            for port in service.ports
            if port.protocol == "tcp"
        )
        specs.append(ServiceSpec(service.name, service.image, dict(service.env), ports))
    return specs


# -- GitHub's files for steps: GITHUB_ENV, GITHUB_PATH (pure parsing) ---------------------------


def parse_github_env(text: str) -> dict[str, str]:
    """``NAME=value`` lines and ``NAME<<DELIMITER`` blocks, as the runner reads ``$GITHUB_ENV``."""
    values: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, _, delimiter = line.partition("<<")
            body: list[str] = []
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            i += 1
            values[name.strip()] = "\n".join(body)
        elif "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return {k: v for k, v in values.items() if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)}


def shell_argv(shell: str | None, script: str) -> list[str] | None:
    """How GitHub runs a ``run:`` script file on Linux for a ``shell:`` value; None when the
    shell cannot be had here (pwsh, cmd)."""
    if shell is None:
        return ["bash", "-e", script]
    templates = {
        "bash": "bash --noprofile --norc -eo pipefail {0}",
        "sh": "sh -e {0}",
        "python": "python {0}",
    }
    template = templates.get(shell.strip(), shell.strip())
    if "{0}" not in template:
        template += " {0}"
    words = shlex.split(template)
    if not words or words[0] in ("pwsh", "powershell", "cmd"):
        return None
    return [w.replace("{0}", script) for w in words]


# -- the manager ---------------------------------------------------------------------------------


def _tree_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip(".-") or "repo"
    return cleaned[:64]


def _confined_workdir(value: str | None, tree: str) -> str | None:
    """A step's working directory, relative to the worktree ('' for its root); None when it
    leaves the worktree."""
    if not value:
        return ""
    value = value.replace(WORKSPACE, tree)
    if value.startswith(tree):
        value = value[len(tree) :].lstrip("/")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "$" in value:
        return None
    text = str(path)
    return "" if text == "." else text


@dataclass
class _Toolchains:
    """The job's toolchains as the sandbox sees them: environment, ``PATH`` and mounts."""

    env: dict[str, str]
    path: list[str] = field(default_factory=lambda: [SANDBOX_LOCAL_BIN])
    ro_binds: list[tuple[Path, str]] = field(default_factory=list)
    #: The Python a ``setup-python`` step chose, if any.
    python: HostTool | None = None

    def add(self, kind: str, tool: HostTool) -> None:
        """A toolchain a setup step chose."""
        if kind == "python":
            self.python = tool
        for mount in tool.mounts:
            if (str(mount), str(mount)) not in [(str(a), b) for a, b in self.ro_binds]:
                self.ro_binds.append((mount, str(mount)))
        self.path += [str(d) for d in tool.bin_dirs if str(d) not in self.path]
        self.env.update(tool.env)
        if kind == "rust":
            self.env["CARGO_HOME"] = f"{SANDBOX_HOME}/.cargo"
        if kind == "go":
            self.env.update({"GOPATH": f"{SANDBOX_HOME}/go", "GOFLAGS": "-mod=mod"})
        if kind == "uv" and tool.executable is not None:
            self.ro_binds.append((tool.executable.parent, str(tool.executable.parent)))

    def use_venv(self, python: HostTool) -> None:
        """The job's commands run in a virtualenv of this Python."""
        for mount in python.mounts:
            if (mount, str(mount)) not in self.ro_binds:
                self.ro_binds.append((mount, str(mount)))
        self.path.insert(0, f"{SANDBOX_VENV}/bin")
        self.env["VIRTUAL_ENV"] = SANDBOX_VENV


class JobEnvironments:
    """Job environments on this host: their directories, warm pool, services and proxy.

    Layout under ``root`` (``<data_dir>/jobenv``): ``jobs/<key>/`` one job's home, moved-out
    setup products and sockets; ``pool/<fingerprint>/`` a prepared environment;
    ``templates/``, ``services/`` the services' (``ServiceHost``); ``egress/`` the proxy's.
    """

    def __init__(
        self,
        root: Path,
        *,
        sandbox: BubblewrapSandbox,
        host: HostToolchains,
        services: ServiceHost | None = None,
        egress: EgressProxy | None = None,
        pool: Path | None = None,
        pool_bytes: int = 5 * 1024**3,
    ) -> None:
        self.root = root.resolve()
        self.sandbox = sandbox
        self.host = host
        self._services = services
        self.egress = egress or EgressProxy(self.root / "egress")
        self.pool = (pool or self.root / "pool").resolve()
        self.pool_bytes = pool_bytes

    @property
    def runtime(self) -> Path:
        """Where sockets live: a short directory of this data directory's own (a unix socket
        path has at most 107 bytes, and the data directory may be deep)."""
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"shepherd-{os.geteuid()}-{digest}"

    @property
    def services(self) -> ServiceHost:
        """The service host, made on first use (its sockets live in ``runtime``)."""
        if self._services is None:
            try:
                self._services = ServiceHost(self.runtime)
            except ShepherdError as exc:
                raise JobEnvironmentError(f"services cannot run here: {exc}") from exc
        return self._services

    async def aclose(self) -> None:
        await self.egress.aclose()

    @contextlib.asynccontextmanager
    async def open(
        self,
        wt: Worktree,
        job: WorkflowJob,
        *,
        key: str,
        name: str,
        tracked: Sequence[str],
    ) -> AsyncIterator[JobEnvironment]:
        """Prepare ``job`` for the worktree ``wt`` and keep it (services running) until exit.

        ``key`` names the job's directory; ``name`` is the repository's name (the worktree
        appears at ``/home/runner/work/<name>/<name>``); ``tracked`` are the worktree's tracked
        paths (for the fingerprint). Raises ``JobEnvironmentError`` (and the services' errors)
        when the environment cannot be had."""
        started = time.monotonic()
        short = hashlib.sha256(f"{self.root}/{key}".encode()).hexdigest()[:12]
        dirs = _Dirs(self.root / "jobs" / key, self.runtime / "jobs" / short)
        await asyncio.to_thread(_fresh_dir, dirs.root)
        await asyncio.to_thread(_fresh_dir, dirs.run)
        for directory in (dirs.home, dirs.deps):
            directory.mkdir(parents=True)
        tree = f"{SANDBOX_HOME}/work/{_tree_name(name)}/{_tree_name(name)}"
        environment = self._plan(job, tree, dirs)
        tree_root = wt.path
        try:
            environment.services = declarations(job)
            if environment.services:
                # An image this host cannot provide ends the job here, before any setup.
                await self.services.check(environment.services)
            contents = await asyncio.to_thread(_read_files, wt.path, files_read(job, tracked))
            key_tree = wt.sha if installs_project(job) else None
            # The worktree's path inside is part of the key: editable installs record it.
            fp = fingerprint(job, [tree, *environment.record.toolchains], contents, tree=key_tree)
            pooled = self.pool / fp
            if await asyncio.to_thread(_complete, pooled):
                await asyncio.to_thread(_restore, pooled, dirs)
                environment.record.cache = "hit"
                self._bind_products(environment, _manifest(pooled))
                for step in job.setup_steps:
                    environment.record.steps.append(_step_status(step, "from the warm pool"))
            else:
                environment.record.cache = "cold"
                await self._build(wt, environment)
                await asyncio.to_thread(self._store, dirs, fp, environment)
            await asyncio.to_thread(self._evict)
            environment.record.seconds_to_ready = round(time.monotonic() - started, 2)
            yield environment
        except JobEnvironmentError as exc:
            exc.record = exc.record or environment.record
            raise
        except (ServiceError, SandboxError) as exc:
            # ServiceUnavailable says "service X (image Y) cannot be provided here".
            raise JobEnvironmentError(str(exc), environment.record) from exc
        finally:
            await asyncio.to_thread(_remove, dirs.root)
            await asyncio.to_thread(_remove, dirs.run)
            products = [relative for _, relative in _bound(environment)]
            await asyncio.to_thread(_remove_placeholders, tree_root, products)

    def runner(self, environment: JobEnvironment) -> EnvRunner:
        return EnvRunner(self, environment)

    async def run(
        self,
        environment: JobEnvironment,
        argv: Sequence[str],
        *,
        cwd: Path,
        writable: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,  # noqa: ASYNC109 - the Runner contract takes a timeout
        egress: bool = False,
        binds: Sequence[Bind] = (),
    ) -> CommandResult:
        """Run one command in the job environment. The job's services are started for it from
        their templates and destroyed after it, as every CI run starts with empty ones: the
        reproduction, each ``run_check`` and the verification never see each other's data.
        ``egress`` adds the registries (setup steps, a fixer that must resolve)."""
        async with contextlib.AsyncExitStack() as stack:
            running = None
            if environment.services:
                running = await stack.enter_async_context(self.services.start(environment.services))
                if not environment.record.services:
                    environment.record.services = [s.describe() for s in running.services]
            if egress:
                await stack.enter_async_context(
                    self.egress.bridge(environment.dirs.run / "proxy.sock")
                )
            return await self.sandbox.run(
                argv,
                cwd=cwd,
                writable=writable,
                env=env,
                timeout=timeout,
                layout=environment.layout(egress=egress, services=running),
                binds=binds,
            )

    # -- planning (pure given the host) -----------------------------------------------------

    def _plan(self, job: WorkflowJob, tree: str, dirs: _Dirs) -> JobEnvironment:
        record = EnvironmentRecord(job=f"{job.workflow}: {job.name}", notes=list(job.notes))
        tools = _Toolchains(
            env={
                "CI": "true",
                "GITHUB_ACTIONS": "true",
                "GITHUB_WORKSPACE": tree,
                "RUNNER_OS": "Linux",
                "RUNNER_TEMP": f"{SANDBOX_HOME}/work/_temp",
                "RUNNER_TOOL_CACHE": "/opt/hostedtoolcache",
            }
        )
        for step in job.setup_steps:
            if step.uses is None or step.skip_reason is not None:
                continue
            choice = choose(step.uses, step.with_, self.host)
            if choice is None:
                continue
            record.toolchains.append(choice.note)
            if choice.tool is not None:
                tools.add(choice.kind, choice.tool)
        python = tools.python
        if python is None and _uses_python(job):
            python = self._default_python()
            if python is not None:
                record.toolchains.append(f"python {python.version} (the runner's default)")
        if python is not None:
            tools.use_venv(python)
        failing = job.failing_step
        # The failing step's own environment: workflow < job < step, as the workflow resolves it.
        job_env = failing.env if failing is not None else job.env
        tools.env.update({k: v.replace(WORKSPACE, tree) for k, v in job_env.items()})
        workdir = _confined_workdir(failing.working_directory if failing else None, tree)
        record.working_directory = workdir or ""
        return JobEnvironment(
            job=job,
            tree=tree,
            dirs=dirs,
            env=tools.env,
            path=tools.path,
            ro_binds=tools.ro_binds,
            binds=[],
            workdir=workdir or "",
            record=record,
            shell=failing.shell if failing else None,
            python=python,
        )

    def _default_python(self) -> HostTool | None:
        pythons = self.host.of("python")
        if not pythons:
            return None
        wanted = "3.11"
        exact = [p for p in pythons if p.version.startswith(wanted + ".")]
        return (exact or sorted(pythons, key=lambda p: p.version))[-1]

    # -- building (cold) ----------------------------------------------------------------------

    async def _build(self, wt: Worktree, environment: JobEnvironment) -> None:
        before = await asyncio.to_thread(_entries, wt.path)
        python = environment.python
        if python is not None and python.executable is not None:
            started = time.monotonic()
            result = await self.sandbox.run(
                [str(python.executable), "-m", "venv", SANDBOX_VENV],
                cwd=wt.path,
                writable=wt.path,
                layout=environment.layout(),
                timeout=SETUP_STEP_TIMEOUT,
            )
            if not result.ok:
                raise JobEnvironmentError(f"could not create the job's virtualenv: {_tail(result)}")
            environment.record.steps.append(
                StepRecord(
                    name=f"virtualenv (python {python.version})",
                    status="replayed",
                    seconds=round(time.monotonic() - started, 2),
                )
            )
        for step in environment.job.setup_steps:
            await self._setup_step(wt, environment, step)
        created = await asyncio.to_thread(_new_entries, wt.path, before)
        moved = await asyncio.to_thread(_move_out, wt.path, environment.dirs.deps, created)
        self._bind_products(environment, moved)

    async def _setup_step(
        self, wt: Worktree, environment: JobEnvironment, step: WorkflowStep
    ) -> None:
        record = environment.record
        if step.skip_reason is not None:
            record.steps.append(_step_status(step, step.skip_reason))
            return
        if step.uses is not None:
            if is_covered(step.uses):
                record.steps.append(StepRecord(name=step.display_name, status="covered"))
                return
            if not is_setup(step.uses):
                record.steps.append(
                    StepRecord(
                        name=step.display_name,
                        status="skipped",
                        detail=f"action {step.uses} is not replayed here",
                    )
                )
                record.notes.append(f"Step `{step.display_name}` ({step.uses}) was skipped.")
                return
            choice = choose(step.uses, step.with_, self.host)
            if choice is not None and choice.install:
                await self._run_script(
                    wt,
                    environment,
                    step.display_name,
                    f"npm install --global --prefix {SANDBOX_HOME}/.local "
                    f"--no-audit --no-fund pnpm@{shlex.quote(choice.install)}",
                    shell=None,
                    workdir="",
                    env={},
                )
                return
            record.steps.append(
                StepRecord(
                    name=step.display_name,
                    status="toolchain",
                    detail=choice.note if choice else "",
                )
            )
            return
        workdir = _confined_workdir(step.working_directory, environment.tree)
        if workdir is None or not (wt.path / workdir).is_dir():
            record.steps.append(
                _step_status(step, f"working directory {step.working_directory!r} is not here")
            )
            return
        await self._run_script(
            wt,
            environment,
            step.display_name,
            (step.run or "").replace(WORKSPACE, environment.tree),
            shell=step.shell,
            workdir=workdir,
            env={k: v.replace(WORKSPACE, environment.tree) for k, v in step.env.items()},
        )

    async def _run_script(
        self,
        wt: Worktree,
        environment: JobEnvironment,
        name: str,
        script: str,
        *,
        shell: str | None,
        workdir: str,
        env: Mapping[str, str],
    ) -> None:
        record = environment.record
        scripts = environment.dirs.home / ".shepherd"
        scripts.mkdir(exist_ok=True)
        file = f"step-{uuid.uuid4().hex[:8]}.sh"
        (scripts / file).write_text(script + "\n")
        github_env, github_path = scripts / "github_env", scripts / "github_path"
        for f in (github_env, github_path):
            f.write_text("")
        inside = f"{SANDBOX_HOME}/.shepherd"
        argv = shell_argv(shell, f"{inside}/{file}")
        if argv is None:
            record.steps.append(
                StepRecord(name=name, status="skipped", detail=f"shell {shell!r} is not available")
            )
            return
        step_env = {
            **env,
            "GITHUB_ENV": f"{inside}/github_env",
            "GITHUB_PATH": f"{inside}/github_path",
            "GITHUB_OUTPUT": f"{inside}/github_output",
            "GITHUB_STEP_SUMMARY": f"{inside}/github_summary",
        }
        started = time.monotonic()
        saved_env = dict(environment.env)
        environment.env.update(step_env)
        try:
            result = await self.run(
                environment,
                argv,
                cwd=wt.path / workdir,
                writable=wt.path,
                timeout=SETUP_STEP_TIMEOUT,
                egress=True,
            )
        finally:
            environment.env = saved_env
        seconds = round(time.monotonic() - started, 2)
        if not result.ok:
            record.steps.append(
                StepRecord(name=name, status="failed", detail=_tail(result), seconds=seconds)
            )
            raise JobEnvironmentError(f"setup step `{name}` failed: {_tail(result, 3)}")
        record.steps.append(StepRecord(name=name, status="replayed", seconds=seconds))
        # What the step exported for the steps after it, as on GitHub.
        environment.env.update(parse_github_env(github_env.read_text(errors="replace")))
        for line in github_path.read_text(errors="replace").splitlines()[::-1]:
            if line.strip() and line.strip() not in environment.path:
                environment.path.insert(0, line.strip())

    def _bind_products(self, environment: JobEnvironment, products: Sequence[str]) -> None:
        for relative in products[:_MAX_BINDS]:
            environment.binds.append(
                (environment.dirs.deps / relative, f"{environment.tree}/{relative}")
            )

    # -- the warm pool ------------------------------------------------------------------------

    def _store(self, dirs: _Dirs, fp: str, environment: JobEnvironment) -> None:
        """Put what this job's setup made into the pool, then give the job its own copy of it
        back, as a warm start would (see ``_share``)."""
        final = self.pool / fp
        self.pool.mkdir(parents=True, exist_ok=True)
        staging = self.pool / f".{fp}.{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            for name in _HOME_CACHES:
                _remove(dirs.home / name)
            os.rename(dirs.home, staging / "home")
            os.rename(dirs.deps, staging / "deps")
            _seal(staging)
            meta = {
                "format": _FORMAT,
                "products": [relative for _, relative in _bound(environment)],
            }
            (staging / "manifest.json").write_text(json.dumps(meta))
            _share(staging, dirs)
            if _complete(final):
                return  # another job with the same setup was quicker: theirs is as good
            staging.rename(final)
        except OSError as exc:
            log.warning("job environment not kept in the warm pool: %s", exc)
            if not dirs.home.exists():
                _share(staging, dirs)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _evict(self) -> None:
        """Keep the pool under its size limit, least recently used first out."""
        if not self.pool.is_dir():
            return
        entries = [p for p in self.pool.iterdir() if _complete(p)]
        sizes = {p: _size(p) for p in entries}
        total = sum(sizes.values())
        for entry in sorted(entries, key=lambda p: (p / "manifest.json").stat().st_atime):
            if total <= self.pool_bytes:
                break
            shutil.rmtree(entry, ignore_errors=True)
            total -= sizes[entry]


# -- helpers -------------------------------------------------------------------------------------


def _uses_python(job: WorkflowJob) -> bool:
    scripts = (
        " ".join(s.run or "" for s in job.setup_steps)
        + " "
        + (job.failing_step.run or "" if job.failing_step else "")
    )
    return bool(
        re.search(r"\b(python3?|pip3?|pytest|tox|nox|uv|poetry|ruff|black|mypy)\b", scripts)
    )


def _step_status(step: WorkflowStep, detail: str) -> StepRecord:
    status = "skipped" if step.skip_reason else "replayed"
    if step.uses and is_covered(step.uses):
        status = "covered"
    elif step.uses and is_setup(step.uses):
        status = "toolchain"
    return StepRecord(name=step.display_name, status=status, detail=detail)


def _tail(result: CommandResult, lines: int = 8) -> str:
    return "\n".join(result.output.strip().splitlines()[-lines:])


def _fresh_dir(path: Path) -> None:
    _remove(path)
    path.mkdir(parents=True)


def _remove(path: Path) -> None:
    if path.exists() or path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)


def _read_files(root: Path, paths: Sequence[str]) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    for path in paths:
        target = root / path
        with contextlib.suppress(OSError):
            if not target.is_symlink() and target.is_file():
                contents[path] = target.read_bytes()[: 4 * 1024 * 1024]
    return contents


def _entries(root: Path) -> set[str]:
    """Every path under ``root`` (not below ``.git`` or links)."""
    found: set[str] = set()
    stack = [root]
    while stack:
        directory = stack.pop()
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                relative = str(Path(entry.path).relative_to(root))
                found.add(relative)
                if entry.name != ".git" and entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
    return found


def _new_entries(root: Path, before: set[str]) -> list[str]:
    """The highest new paths under ``root`` since ``before`` (a new directory counts whole)."""
    new: list[str] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                relative = str(Path(entry.path).relative_to(root))
                if relative not in before:
                    new.append(relative)
                elif entry.name != ".git" and entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
    return sorted(new)


def _move_out(root: Path, deps: Path, created: Sequence[str]) -> list[str]:
    moved: list[str] = []
    for relative in created[:_MAX_BINDS]:
        if PurePosixPath(relative).name == ".git":
            continue  # git metadata made by a setup step: left for the metadata check
        target = deps / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(root / relative, target)
        if stat.S_ISDIR(os.lstat(target).st_mode):
            (root / relative).mkdir()
        else:
            (root / relative).touch()
        moved.append(relative)
    return moved


def _remove_placeholders(root: Path, products: Sequence[str]) -> None:
    """Remove the empty mount points the moved-out setup products left in the worktree."""
    for relative in sorted(products, key=len, reverse=True):
        path = root / relative
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) and not any(os.scandir(path)):
                os.rmdir(path)
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                os.unlink(path)


def _bound(environment: JobEnvironment) -> list[tuple[Path, str]]:
    prefix = environment.tree + "/"
    return [(host, inside.removeprefix(prefix)) for host, inside in environment.binds]


def _complete(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def _manifest(path: Path) -> list[str]:
    data = json.loads((path / "manifest.json").read_text())
    products = data.get("products", [])
    os.utime(path / "manifest.json")  # least recently used: this one was just used
    return [p for p in products if isinstance(p, str)]


#: Owner of the files in the warm pool when Shepherd runs as root: not the sandbox's user, so a
#: job can replace a pooled file in its copy but never write to it in place (see ``_share``).
_POOL_OWNER = 65534


def _seal(root: Path) -> None:
    """Make the pool's files read-only and, as root, owned by ``_POOL_OWNER``."""
    as_root = os.geteuid() == 0
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o222)
            if as_root:
                os.chown(path, _POOL_OWNER, _POOL_OWNER)


def _share(pooled: Path, dirs: _Dirs) -> None:
    """Give a job its copy of a pooled environment.

    As root: hard links (a fraction of a second for thousands of files). The linked files are
    owned by another user and read-only, and the sandbox runs with every capability dropped,
    so PR code can delete or replace a file in its own copy (a new inode) but cannot change
    the shared one, and the next job starts from what setup made. Otherwise: a full copy,
    since a job could then make its own files writable again."""
    link = ["--link"] if os.geteuid() == 0 else []
    for part, target in (("home", dirs.home), ("deps", dirs.deps)):
        _remove(target)
        done = subprocess.run(
            ["cp", "-a", *link, str(pooled / part), str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise OSError(f"cp failed: {done.stderr.strip()[-300:]}")


def _restore(pooled: Path, dirs: _Dirs) -> None:
    _share(pooled, dirs)


def _size(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


class EnvironmentsFactory:
    """Builds ``JobEnvironments`` for a job's sandbox, discovering the host's toolchains once.

    Job environments need bubblewrap's layouts: with the unsandboxed runner (an explicit,
    insecure opt-in) there are none, and verification runs as before, in Shepherd's own
    environment."""

    def __init__(
        self,
        root: Path,
        *,
        pool: Path | None = None,
        pool_bytes: int = 5 * 1024**3,
        registries: Sequence[str] = DEFAULT_REGISTRIES,
    ) -> None:
        self.root = root
        self.pool = pool
        self.pool_bytes = pool_bytes
        self.registries = tuple(registries)
        self._host: HostToolchains | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EnvironmentsFactory:
        return cls(
            settings.data_dir / "jobenv",
            pool=settings.jobenv_pool_dir,
            pool_bytes=settings.jobenv_pool_bytes,
            registries=registries_from(settings.setup_registries),
        )

    def host(self) -> HostToolchains:
        if self._host is None:
            self._host = discover()
        return self._host

    def for_runner(self, runner: object) -> JobEnvironments | None:
        if not isinstance(runner, BubblewrapSandbox):
            return None
        return JobEnvironments(
            self.root,
            sandbox=runner,
            host=self.host(),
            egress=EgressProxy(self.root / "egress", self.registries),
            pool=self.pool,
            pool_bytes=self.pool_bytes,
        )
