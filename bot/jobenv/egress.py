"""Network for setup steps: the package registries, and nothing else.

The install steps replayed before the failing command (``pip install -e .``, ``npm ci``) run PR
code — ``setup.py``, install scripts — and need to download packages. Giving them the host's
network would also give them the host's loopback services (a database with trust auth, Shepherd's
own server, the cloud metadata address) and any host to send data to. So a setup step runs in the
sandbox's own network namespace, like every other command, and its only way out is an HTTP proxy
that admits the registries' host names and nothing else:

    setup step ──▶ 127.0.0.1:3128 in the sandbox (socat) ──▶ unix socket bound into the sandbox
               ──▶ socat on the host ──▶ tinyproxy on the host's loopback, default deny,
                   CONNECT to port 443 of an allowed host name only ──▶ the registry

``HTTPS_PROXY`` and friends point there; pip, uv, npm, pnpm, yarn, cargo and go all honour them. A
tool that ignores them has no route at all. tinyproxy (a Debian package) does the filtering; its
``Filter`` list is the allowlist, ``FilterDefaultDeny`` denies the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from bot.kernel.errors import SandboxError

log = logging.getLogger(__name__)

#: Registries a setup step may reach by default (host names, exact).
DEFAULT_REGISTRIES: tuple[str, ...] = (
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "repo.yarnpkg.com",
    "index.crates.io",
    "static.crates.io",
    "crates.io",
    "proxy.golang.org",
    "sum.golang.org",
    "storage.googleapis.com",
)

#: Where the proxy answers inside the sandbox.
SANDBOX_PROXY_PORT = 3128
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62}\.)*[A-Za-z0-9-]{1,63}")


#: The system's CA bundle (Debian's, mounted read-only in the sandbox): it holds the CAs this
#: host trusts, a corporate TLS proxy's included, where the tools' own bundles (certifi, node's)
#: do not.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def proxy_env(port: int = SANDBOX_PROXY_PORT, *, ca_bundle: str | None = None) -> dict[str, str]:
    """The environment that sends a setup step's downloads through the proxy, trusting the
    host's CA bundle."""
    url = f"http://127.0.0.1:{port}"
    bundle = (
        ca_bundle
        if ca_bundle is not None
        else (SYSTEM_CA_BUNDLE if os.path.exists(SYSTEM_CA_BUNDLE) else "")
    )
    trust = (
        {
            name: bundle
            for name in (
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "PIP_CERT",
                "NODE_EXTRA_CA_CERTS",
                "npm_config_cafile",
                "CARGO_HTTP_CAINFO",
            )
        }
        if bundle
        else {}
    )
    return {
        **trust,
        "HTTP_PROXY": url,
        "HTTPS_PROXY": url,
        "http_proxy": url,
        "https_proxy": url,
        "ALL_PROXY": url,
        "NO_PROXY": "",
        "no_proxy": "",
    }


def filter_lines(registries: Sequence[str]) -> str:
    """tinyproxy's filter file: one anchored extended regex per allowed host name."""
    lines = []
    for host in registries:
        host = host.strip().lower().rstrip(".")
        if not _HOST.fullmatch(host):
            raise ValueError(f"not a host name: {host!r}")
        lines.append("^" + re.escape(host) + "$")
    return "\n".join(lines) + "\n"


def tinyproxy_config(directory: Path, port: int, *, as_root: bool) -> str:
    user = "User nobody\nGroup nogroup\n" if as_root else ""
    return (
        f"Port {port}\n"
        "Listen 127.0.0.1\n"
        "Timeout 600\n"
        "MaxClients 200\n"
        f"{user}"
        "FilterDefaultDeny Yes\n"
        f'Filter "{directory / "allow"}"\n'
        "FilterType ere\n"
        "FilterURLs Off\n"
        "FilterCaseSensitive Off\n"
        "ConnectPort 443\n"
        "DisableViaHeader Yes\n"
        f'LogFile "{directory / "tinyproxy.log"}"\n'
        "LogLevel Notice\n"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


class EgressProxy:
    """One allowlisting tinyproxy for this process, started on first use, and a bridge from a
    job's unix socket to it."""

    def __init__(self, directory: Path, registries: Sequence[str] = DEFAULT_REGISTRIES) -> None:
        self.directory = directory
        self.registries = tuple(registries)
        self._proc: asyncio.subprocess.Process | None = None
        self._port: int | None = None
        self._lock = asyncio.Lock()

    @staticmethod
    def missing() -> str | None:
        """What is not installed for the proxy to work, or None."""
        absent = [tool for tool in ("tinyproxy", "socat") if shutil.which(tool) is None]
        return ", ".join(absent) or None

    async def _ensure(self) -> int:
        async with self._lock:
            if self._proc is not None and self._proc.returncode is None and self._port:
                return self._port
            missing = self.missing()
            if missing:
                raise SandboxError(
                    f"setup steps need {missing} for their registry-only network "
                    "(scripts/install-system-deps.sh installs it)"
                )
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / "allow").write_text(filter_lines(self.registries))
            last = ""
            for _ in range(3):
                port = _free_port()
                config = self.directory / "tinyproxy.conf"
                config.write_text(tinyproxy_config(self.directory, port, as_root=os.geteuid() == 0))
                proc = await asyncio.create_subprocess_exec(
                    "tinyproxy",
                    "-d",
                    "-c",
                    str(config),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                )
                if await _listening(port, proc):
                    self._proc, self._port = proc, port
                    return port
                await _terminate(proc)
                assert proc.stderr is not None
                last = (await proc.stderr.read()).decode(errors="replace").strip()[-300:]
            raise SandboxError(f"the setup proxy (tinyproxy) did not start: {last}")

    @contextlib.asynccontextmanager
    async def bridge(self, socket_path: Path) -> AsyncIterator[None]:
        """While open, ``socket_path`` (bound into a setup sandbox) leads to the proxy."""
        port = await self._ensure()
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            "socat",
            "-lf",
            "/dev/null",
            f"UNIX-LISTEN:{socket_path},fork,mode=0666,unlink-early",
            f"TCP4:127.0.0.1:{port}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            # socat creates the socket once it listens; a stat is all the waiting costs.
            for _ in range(400):
                if await asyncio.to_thread(os.path.exists, socket_path):
                    break
                if proc.returncode is not None:
                    raise SandboxError("the setup proxy's socket bridge (socat) exited")
                await asyncio.sleep(0.005)
            else:
                raise SandboxError("the setup proxy's socket did not appear")
            yield
        finally:
            await _terminate(proc)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(socket_path)

    async def aclose(self) -> None:
        if self._proc is not None:
            await _terminate(self._proc)
            self._proc = None


async def _listening(port: int, proc: asyncio.subprocess.Process) -> bool:
    for _ in range(200):
        if proc.returncode is not None:
            return False
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


def registries_from(
    value: str | None, default: Sequence[str] = DEFAULT_REGISTRIES
) -> tuple[str, ...]:
    """The allowlist from a comma-separated setting (``+host`` entries extend the default)."""
    if not value or not value.strip():
        return tuple(default)
    items = [v.strip() for v in value.split(",") if v.strip()]
    extra = [v[1:] for v in items if v.startswith("+")]
    plain = [v for v in items if not v.startswith("+")]
    base = list(plain) if plain else list(default)
    return tuple(dict.fromkeys([*base, *extra]))
