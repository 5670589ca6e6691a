"""``shepherd doctor``: check the configuration end to end and say how to fix what is wrong.

Each check returns a ``Check`` (pass, warn or fail, what was found, how to fix it); the table is
rendered by a pure function. Exit status: 0 when nothing failed (warnings allowed), else 1.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import aiohttp

from bot.git.runner import git_installed
from bot.github.client import GitHubApp
from bot.jobenv.egress import EgressProxy
from bot.jobenv.services import Server, ServiceHost
from bot.jobenv.toolchains import discover
from bot.kernel.errors import ConfigError, GitHubError, SandboxError, ShepherdError
from bot.kernel.settings import Settings
from bot.sandbox import make_runner
from bot.store.connect import open_store
from bot.webui.credentials import DEV_SECRET_FILE, AppCredentials, app_file, file_mode, load_app
from fixers.tools import bundled_executable, bundled_tool_dirs, bundled_version

TOOLS = ("ruff", "black", "isort", "uv", "pre-commit", "prettier")


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def render(checks: Sequence[Check]) -> str:
    """A plain table: check, status, what was found, how to fix it."""
    rows = [("check", "status", "detail", "how to fix")]
    rows += [(c.name, c.status.value.upper(), c.detail, c.fix) for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for r in rows:
        lines.append(
            "  ".join(r[i].ljust(widths[i]) for i in range(3)) + ("  " + r[3] if r[3] else "")
        )
    failed = sum(c.status is Status.FAIL for c in checks)
    warned = sum(c.status is Status.WARN for c in checks)
    lines.append("")
    lines.append(f"{len(checks) - failed - warned} ok, {failed} failed, {warned} warnings")
    return "\n".join(lines)


def _stored_app(settings: Settings) -> AppCredentials | None:
    """The App of the data dir, when it is the one the settings use."""
    try:
        stored = load_app(settings.data_dir)
    except ConfigError:
        return None
    return stored if stored is not None and stored.app_id == settings.github_app_id else None


async def check_secret(settings: Settings) -> Check:
    if settings.github_webhook_secret is None:
        dev = settings.data_dir / DEV_SECRET_FILE
        if dev.exists():
            return Check(
                "webhook secret",
                Status.WARN,
                f"no GitHub App yet; GITHUB_WEBHOOK_SECRET is unset and only the development "
                f"secret in {dev} exists (`shepherd serve --generate-secret` uses it)",
                "register the App: open the setup link that `make run` prints",
            )
        return Check(
            "webhook secret",
            Status.FAIL,
            "GITHUB_WEBHOOK_SECRET is not set and no GitHub App is registered",
            "register the App from the setup link `shepherd serve` prints, or set "
            "GITHUB_WEBHOOK_SECRET to the App's webhook secret",
        )
    if len(settings.github_webhook_secret.get_secret_value()) < 16:
        return Check(
            "webhook secret",
            Status.WARN,
            "shorter than 16 characters",
            "use a long random secret (e.g. `openssl rand -hex 32`)",
        )
    stored = _stored_app(settings)
    source = f"the App stored in {app_file(settings.data_dir)}" if stored else "the environment"
    return Check("webhook secret", Status.OK, f"set (from {source})")


async def check_web(settings: Settings) -> Check:
    """The web UI: where it is reached, whether people can sign in, the stored App's file."""
    public = settings.public_url or "http://127.0.0.1:8080 (the default of `shepherd serve`)"
    detail = f"public URL {public}; GitHub web {settings.web_url}"
    path = app_file(settings.data_dir)
    try:
        stored = load_app(settings.data_dir)
    except ConfigError as exc:
        return Check("web UI", Status.FAIL, str(exc), "move the file away and register again")
    if stored is not None:
        mode = file_mode(path)
        detail += f"; App {stored.slug} stored in {path} (mode {mode:o})"
        if mode & 0o077:
            return Check(
                "web UI", Status.WARN, detail, f"chmod 600 {path}: it holds the App's private key"
            )
    if not settings.sign_in_enabled:
        return Check(
            "web UI",
            Status.WARN,
            detail + "; sign-in to /status is not configured",
            "register the App from the setup page, or set GITHUB_CLIENT_ID and "
            "GITHUB_CLIENT_SECRET (the App's OAuth client)",
        )
    return Check("web UI", Status.OK, detail + "; sign-in with GitHub enabled")


async def check_github(settings: Settings) -> Check:
    name = "GitHub App"
    if not settings.github_enabled:
        return Check(
            name,
            Status.FAIL,
            "no GitHub App: GITHUB_APP_ID or the private key is not set, and none is stored",
            "register the App from the setup link `shepherd serve` prints, or set "
            "GITHUB_APP_ID and GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH",
        )
    assert settings.github_app_id is not None
    assert settings.github_private_key is not None
    async with aiohttp.ClientSession() as session:
        app = GitHubApp(
            app_id=settings.github_app_id,
            private_key=settings.github_private_key,
            session=session,
            api_url=settings.github_api_url,
        )
        try:
            client = await app.app_client()
            info = await client.get_app()
            installations = await client.list_installations()
        except GitHubError as exc:
            hint = (
                "check GITHUB_APP_ID and that the private key belongs to this App"
                if exc.status == 401
                else f"check GITHUB_API_URL ({settings.github_api_url})"
            )
            return Check(name, Status.FAIL, f"the App JWT was refused: {exc}", hint)
        except aiohttp.ClientError as exc:
            return Check(
                name,
                Status.FAIL,
                f"cannot reach {settings.github_api_url}: {exc}",
                "check GITHUB_API_URL and the network",
            )
    slug = info.get("slug") or "?"
    detail = f"authenticated as {slug}; {len(installations)} installation(s)"
    if _stored_app(settings) is not None:
        detail += f" (credentials from {app_file(settings.data_dir)})"
    if slug != settings.app_slug:
        return Check(
            name,
            Status.WARN,
            detail,
            f"set SHEPHERD_APP_SLUG={slug} so mentions and the loop guard match",
        )
    return Check(name, Status.OK, detail)


async def check_database(settings: Settings) -> Check:
    url = settings.effective_database_url
    kind = url.split(":", 1)[0]
    try:
        store = open_store(url)
        await store.open()  # applies pending migrations
        try:
            await store.ping()
            stats = await store.stats()
        finally:
            await store.close()
    except ShepherdError as exc:
        return Check(
            "database",
            Status.FAIL,
            f"{kind}: {exc}",
            "check DATABASE_URL and that the server is running",
        )
    return Check(
        "database", Status.OK, f"{kind} reachable and migrated; {stats.jobs_queued} job(s) queued"
    )


async def check_sandbox(settings: Settings) -> Check:
    try:
        runner = make_runner(allow_unsandboxed=False, tool_dirs=bundled_tool_dirs())
        with tempfile.TemporaryDirectory(prefix="shepherd-doctor-") as tmp:
            result = await runner.run(["true"], cwd=Path(tmp), writable=Path(tmp), timeout=30)
    except SandboxError as exc:
        status = Status.WARN if settings.allow_unsandboxed else Status.FAIL
        return Check(
            "sandbox", status, str(exc), "apt-get install bubblewrap (and allow user namespaces)"
        )
    if not result.ok:
        return Check(
            "sandbox",
            Status.FAIL,
            f"bwrap ran but `true` failed: {result.output[:200]}",
            "check that unprivileged user namespaces are allowed",
        )
    return Check("sandbox", Status.OK, f"bubblewrap works ({shutil.which('bwrap')})")


async def check_tools(settings: Settings) -> Check:
    found, missing = [], []
    for tool in TOOLS:
        exe = bundled_executable(tool)
        if not exe.exists():
            missing.append(tool)
            continue
        try:
            found.append(f"{tool} {bundled_version(tool)}")
        except ShepherdError:
            found.append(f"{tool} (version unknown)")
    if not git_installed():
        missing.append("git")
    if missing:
        return Check(
            "fixer tools",
            Status.FAIL,
            "missing: " + ", ".join(missing) + "; found: " + ", ".join(found),
            "run `make install system-deps` (scripts/install-system-deps.sh)",
        )
    return Check("fixer tools", Status.OK, ", ".join(found))


async def check_llm(settings: Settings) -> Check:
    if settings.anthropic_api_key is None:
        return Check(
            "LLM rung",
            Status.WARN,
            "ANTHROPIC_API_KEY is not set: the LLM rung is skipped",
            "set ANTHROPIC_API_KEY to enable one LLM repair attempt per episode",
        )
    return Check("LLM rung", Status.OK, f"key set; model {settings.llm_model}")


async def check_toolchains(settings: Settings) -> Check:
    """Which setup actions this host can stand in for (job environments)."""
    host = await asyncio.to_thread(discover)
    kinds = ("python", "node", "go", "rust", "uv")

    def versions(kind: str) -> str:
        numbers = sorted(host.of(kind), key=lambda t: tuple(map(int, t.version.split(".")[:3])))
        return ", ".join(t.version for t in numbers)

    found = [f"{kind} {versions(kind)}" for kind in kinds if host.of(kind)]
    absent = [kind for kind in kinds if not host.of(kind)]
    detail = "; ".join(found) + (f"; not here: {', '.join(absent)}" if absent else "")
    if not host.of("python"):
        return Check("toolchains", Status.FAIL, detail, "install a CPython (python3.11)")
    return Check(
        "toolchains",
        Status.WARN if absent else Status.OK,
        detail,
        "jobs using the missing ones are set up with the closest toolchain or handed off"
        if absent
        else "",
    )


async def check_services(settings: Settings) -> Check:
    """Which workflow services this host can start privately per job, and the setup proxy."""
    parts, missing = [], []
    host = ServiceHost(Path(tempfile.gettempdir()) / "shepherd-doctor-services")
    for server in Server:
        support = await host.support(server)
        if support.description is None:
            missing.append(f"{server.value} ({support.reason})")
        else:
            parts.append(support.description)
    proxy = EgressProxy.missing()
    if proxy:
        missing.append(f"setup proxy ({proxy} not installed)")
    detail = ", ".join(parts) + (f"; missing: {'; '.join(missing)}" if missing else "")
    return Check(
        "services",
        Status.WARN if missing else Status.OK,
        detail,
        "run scripts/install-system-deps.sh (postgresql, redis-server, mariadb-server, socat, "
        "tinyproxy)"
        if missing
        else "",
    )


CHECKS: tuple[Callable[[Settings], Awaitable[Check]], ...] = (
    check_secret,
    check_github,
    check_web,
    check_database,
    check_sandbox,
    check_tools,
    check_toolchains,
    check_services,
    check_llm,
)


async def run_checks(settings: Settings) -> list[Check]:
    return list(await asyncio.gather(*(check(settings) for check in CHECKS)))
