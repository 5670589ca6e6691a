"""Real ``shepherd serve`` and ``shepherd worker`` processes for multi-process tests and benches.

Each process is the installed console script (``.venv/bin/shepherd``) with a clean environment:
nothing ``GITHUB_*``, ``ANTHROPIC_*``, ``SHEPHERD_*`` or ``DATABASE_URL`` leaks in from the
caller, so a test sees exactly the configuration it passes. Output goes to a log file per process
(appended across restarts, so a crash and its recovery read as one story).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[1]
SHEPHERD = REPO_ROOT / ".venv" / "bin" / "shepherd"
START_TIMEOUT = 60.0
_LEAKY_PREFIXES = ("GITHUB_", "ANTHROPIC_", "SHEPHERD_", "DATABASE_URL")


class ProcessError(AssertionError):
    """A process did not start, died, or ignored SIGTERM (an assertion: tests report it)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shepherd_env(values: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment minus every Shepherd setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    # Every process imports the anthropic SDK (hundreds of modules): without bytecode caches each
    # start compiles it again, seconds of CPU per restart. Cache outside the venv, shared by all.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / "shepherd-pycache"))
    env.update(values)
    return env


@dataclass
class ShepherdProcess:
    """One ``shepherd`` process that can be started, SIGKILLed, restarted and stopped."""

    name: str
    args: Sequence[str]
    env: Mapping[str, str]
    log: Path
    port: int | None = None  # set for ``serve``: start() waits until /healthz answers
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)

    @classmethod
    def serve(
        cls, name: str, env: Mapping[str, str], log_dir: Path, *, workers: int = 0
    ) -> ShepherdProcess:
        port = free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        return cls(name, args, env, log_dir / f"{name}.log", port=port)

    @classmethod
    def worker(
        cls, name: str, env: Mapping[str, str], log_dir: Path, *, workers: int = 2
    ) -> ShepherdProcess:
        return cls(name, ["worker", "--workers", str(workers)], env, log_dir / f"{name}.log")

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.name} is not a server"
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "(no output)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def start(self) -> None:
        if not SHEPHERD.exists():
            raise ProcessError(f"{SHEPHERD} missing: run `make test` (it creates the venv)")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1} ---\n".encode())
            out.flush()
            self.proc = await asyncio.create_subprocess_exec(
                str(SHEPHERD),
                *self.args,
                env=dict(self.env),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.starts += 1
        if self.port is not None:
            await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.returncode is not None:
                    raise ProcessError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    async with session.get(
                        f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=2)
                    ) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass  # not listening yet: poll again
                if loop.time() > deadline:
                    await self.kill()
                    raise ProcessError(f"{self.name} did not become healthy:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, exactly like a lost machine."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.exit_codes.append(await self.proc.wait())

    async def restart(self) -> None:
        await self.kill()
        await self.start()

    async def stop(self, grace: float = 20.0) -> int:
        """SIGTERM and wait for a graceful exit; SIGKILL (and fail) if it does not come."""
        if self.proc is None:
            return 0
        if self.proc.returncode is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            await self.kill()
            raise ProcessError(f"{self.name} ignored SIGTERM:\n{self.log_tail()}") from None
        self.exit_codes.append(code)
        return code


async def stop_all(processes: Sequence[ShepherdProcess], grace: float = 20.0) -> dict[str, int]:
    """SIGTERM every process at once and return their exit codes by name; every process is
    stopped (or killed) before the first failure is raised."""
    codes = await asyncio.gather(*(p.stop(grace) for p in processes), return_exceptions=True)
    for code in codes:
        if isinstance(code, BaseException):
            raise code
    return {p.name: int(c) for p, c in zip(processes, codes, strict=True)}  # type: ignore[arg-type]
