"""From ``make run`` to a configured App, in a real browser: Debian's chromium driven by
playwright, against a real ``shepherd serve --generate-secret`` process and the GitHub web
simulator (``tests/ghweb.py``).

Screenshots of the pages people see are saved as test artifacts in ``test-artifacts/webui/``
(``SHEPHERD_TEST_ARTIFACTS`` moves them).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import stat
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
import yaml
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from bot.store import EventSpec
from bot.store.connect import open_store
from tests.conftest import REPO_ROOT, SHARED, webhook_headers
from tests.ghweb import SESSION_COOKIE, GitHubWebSim
from tests.proc_support import SHEPHERD, ShepherdProcess, free_port, shepherd_env

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SHEPHERD_TEST_CHROMIUM", "/usr/bin/chromium")
#: As the machine notes ask: no GPU, no sandbox (root), and none of Chromium's own traffic.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("SHEPHERD_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts")) / "webui"


@pytest_asyncio.fixture
async def chromium() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"chromium not found at {CHROMIUM}: run scripts/install-system-deps.sh (Debian "
            "package chromium), or point SHEPHERD_TEST_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def github(github_web: GitHubWebSim) -> GitHubWebSim:
    github_web.add_user("alice", "Alice Operator")
    github_web.add_user("bob", "Bob Developer")
    github_web.add_org("acme", members=["alice", "bob"])
    github_web.add_repo("acme/api", access=["alice"])
    github_web.add_repo("acme/docs", access=["alice"])
    github_web.add_repo("acme/web", access=["bob"])
    return github_web


@pytest_asyncio.fixture
async def shepherd(tmp_path: Path, github: GitHubWebSim) -> AsyncIterator[ShepherdProcess]:
    """``shepherd serve --generate-secret``, as ``make run`` starts it, on a fresh data dir.
    GITHUB_API_URL has the GitHub Enterprise Server form, so the web URL is derived from it."""
    env = shepherd_env(
        {
            "SHEPHERD_DATA_DIR": str(tmp_path / "data"),
            "GITHUB_API_URL": github.api_url,
            "SHEPHERD_LOG_FORMAT": "text",
            "SHEPHERD_RETENTION_DAYS": "0",
        }
    )
    port = free_port()
    args = ["serve", "--generate-secret", "--host", "127.0.0.1", "--port", str(port)]
    process = ShepherdProcess(
        "shepherd", [*args, "--workers", "0"], env, tmp_path / "logs" / "serve.log", port=port
    )
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


async def context_for(browser: Browser, github: GitHubWebSim, login: str | None) -> BrowserContext:
    """A browser profile; signed in to (simulated) GitHub as ``login`` when given."""
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    if login is not None:
        await context.add_cookies(
            [{"name": SESSION_COOKIE, "value": login, "url": github.base_url}]
        )
    return context


async def setup_link(shepherd: ShepherdProcess) -> str:
    for _ in range(100):
        found = re.search(
            r"register one here:\n\s+(http://\S+/setup\?token=\S+)", shepherd.log_tail(80)
        )
        if found:
            return found.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no setup link in the output:\n{shepherd.log_tail()}")


async def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def post_webhook(url: str, event: str, payload: dict[str, Any], secret: str) -> int:
    body = json.dumps(payload).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/webhook", data=body, headers=webhook_headers(event, body, secret=secret)
        ) as response,
    ):
        return response.status


def data_dir(shepherd: ShepherdProcess) -> Path:
    return Path(shepherd.env["SHEPHERD_DATA_DIR"])


async def register(page: Page, shepherd: ShepherdProcess) -> None:
    await page.goto(await setup_link(shepherd))
    await page.get_by_role("button", name=re.compile("Register on my account")).click()
    await page.get_by_role("button", name="Create GitHub App").click()
    await page.wait_for_url(f"{shepherd.url}/")


# -- the flow ----------------------------------------------------------------------------------


async def test_from_make_run_to_a_configured_app_then_status_for_two_users(
    chromium: Browser, github: GitHubWebSim, shepherd: ShepherdProcess
) -> None:
    data = data_dir(shepherd)
    dev_secret = (data / "webhook-secret").read_text().strip()
    assert "webhook-secret" in shepherd.log_tail(80)
    operator = await context_for(chromium, github, "alice")
    page = await operator.new_page()

    # `make run` printed the setup link; it leads to GET /, the setup page.
    await page.goto(await setup_link(shepherd))
    assert page.url == f"{shepherd.url}/"
    await page.get_by_role("heading", name="Register Shepherd's GitHub App").wait_for()
    assert await page.get_by_text(f"{shepherd.url}/webhook").count() == 1

    # Alice registers it for her organisation, acme, whose repositories it will look after.
    await page.get_by_label("Register under an organisation instead:").fill("acme")
    await page.get_by_role("button", name="Use this organisation").click()
    await page.get_by_role("button", name="Register on organisation acme →").wait_for()
    setup_png = await shot(page, "01-setup")
    await page.get_by_role("button", name=re.compile("Register on organisation acme")).click()
    await page.get_by_role("heading", name="Create GitHub App for acme").wait_for()
    await shot(page, "02-github-create-app")
    await page.get_by_role("button", name="Create GitHub App").click()
    await page.wait_for_url(f"{shepherd.url}/")
    await page.get_by_role("heading", name="The GitHub App is registered").wait_for()
    await shot(page, "03-registered")

    # The manifest GitHub received.
    [posted] = github.manifests
    manifest = posted["manifest"]
    template = yaml.safe_load((REPO_ROOT / "app.yml").read_text())
    assert posted["org"] == "acme"
    assert posted["state"]
    assert manifest["hook_attributes"]["url"] == f"{shepherd.url}/webhook"
    assert manifest["redirect_url"] == f"{shepherd.url}/setup/callback"
    assert manifest["callback_urls"] == [f"{shepherd.url}/login/callback"]
    assert manifest["default_permissions"] == template["default_permissions"]
    assert manifest["default_events"] == template["default_events"]

    # Exactly one exchange; credentials in the data dir for the service user only.
    assert [c.status for c in github.conversions] == [201]
    [app] = github.apps.values()
    stored = json.loads((data / "github-app.json").read_text())
    assert (stored["app_id"], stored["slug"], stored["pem"]) == (app.id, app.slug, app.pem)
    for name in ("github-app.json", "session-key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert not (data / "webhook-secret").exists()

    # The live secret, with no restart: the development secret is refused from now on.
    ping = json.loads((SHARED / "github" / "webhooks" / "ping" / "payload.json").read_text())
    assert await post_webhook(shepherd.url, "ping", ping, dev_secret) == 401
    assert await post_webhook(shepherd.url, "ping", ping, app.webhook_secret) == 202
    assert shepherd.starts == 1

    # A JWT signed with the new key: the server asked GET /app right after the exchange.
    [call] = github.api.calls("apps/get-authenticated")
    claims = jwt.decode(
        call.headers["authorization"].split()[1], app.public_key_pem, algorithms=["RS256"]
    )
    assert claims["iss"] == str(app.id)
    assert call.status == 200

    # Installing: GitHub's install page, its signed webhook accepted, then back to /status.
    await page.get_by_role("link", name=re.compile("Install .* on GitHub")).click()
    await page.get_by_role("button", name="Install").click()
    assert github.deliveries == [("installation", 202)]
    await seed_store(shepherd, app.webhook_secret, next(iter(github.installations)))

    # /status needs a sign-in with the App's OAuth client; alice authorizes once.
    await page.get_by_role("button", name="Authorize").click()
    # GitHub sent the installer to the setup URL (/status?installation_id=…), sign-in kept it.
    await page.wait_for_url(re.compile(re.escape(f"{shepherd.url}/status") + r"(\?.*)?$"))
    await page.get_by_text("Repair outcomes per day").wait_for()
    alice_text = await page.inner_text("main")
    status_png = await shot(page, "04-status-alice")
    assert "acme/api" in alice_text
    assert "acme/docs" in alice_text
    assert "acme/web" not in alice_text

    bob_context = await context_for(chromium, github, "bob")
    bob = await bob_context.new_page()
    await bob.goto(f"{shepherd.url}/status")
    await bob.get_by_role("button", name="Authorize").click()
    await bob.wait_for_url(f"{shepherd.url}/status")
    bob_text = await bob.inner_text("main")
    await shot(bob, "05-status-bob")
    assert "acme/web" in bob_text
    assert "acme/api" not in bob_text
    assert "acme/docs" not in bob_text

    # Anonymous: a redirect to sign-in, never data.
    anonymous = await (await context_for(chromium, github, None)).new_page()
    seen: list[tuple[str, int]] = []
    anonymous.on("response", lambda r: seen.append((r.url, r.status)))
    await anonymous.goto(f"{shepherd.url}/status")
    assert seen[0] == (f"{shepherd.url}/status", 303)
    assert anonymous.url.startswith(f"{github.base_url}/login?")
    assert "acme/" not in await anonymous.content()

    # `shepherd doctor` reads the stored App.
    # (a subprocess the event loop waits for: the simulators answer it from this process)
    doctor = await asyncio.create_subprocess_exec(
        str(SHEPHERD), "doctor", env=dict(shepherd.env), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await asyncio.wait_for(doctor.communicate(), 120))[0].decode()
    lines = output.splitlines()
    row = next(line for line in lines if line.startswith("GitHub App"))
    assert "OK" in row
    assert f"authenticated as {app.slug}" in row
    assert "github-app.json" in row
    secret_row = next(line for line in lines if line.startswith("webhook secret"))
    assert "OK" in secret_row
    assert "github-app.json" in secret_row
    web_row = next(line for line in lines if line.startswith("web UI"))
    assert "sign-in with GitHub enabled" in web_row
    assert "mode 600" in web_row

    github.assert_no_violations()
    github.api.assert_no_violations()
    assert setup_png.stat().st_size > 10_000
    assert status_png.stat().st_size > 10_000


async def test_refusals_in_the_browser_store_nothing(
    chromium: Browser, github: GitHubWebSim, shepherd: ShepherdProcess
) -> None:
    data = data_dir(shepherd)
    page = await (await context_for(chromium, github, "alice")).new_page()
    await page.goto(await setup_link(shepherd))

    # A forged state.
    response = await page.goto(f"{shepherd.url}/setup/callback?code=0123abcd&state=forged")
    assert response is not None
    assert response.status == 400
    await page.get_by_role("heading", name="This registration cannot be completed").wait_for()
    await shot(page, "06-refused-forged-state")
    assert github.conversions == []
    assert not (data / "github-app.json").exists()

    # The real registration; then its callback replayed, and a late callback: both 409.
    callbacks: list[str] = []
    page.on("request", lambda r: callbacks.append(r.url) if "/setup/callback?" in r.url else None)
    await page.goto(f"{shepherd.url}/")
    await page.get_by_role("button", name=re.compile("Register on my account")).click()
    await page.get_by_role("button", name="Create GitHub App").click()
    await page.wait_for_url(f"{shepherd.url}/")
    before = (data / "github-app.json").read_bytes()
    response = await page.goto(callbacks[-1])
    assert response is not None
    assert response.status == 409
    response = await page.goto(f"{shepherd.url}/setup/callback?code=feedbeef&state=later")
    assert response is not None
    assert response.status == 409
    await shot(page, "07-refused-after-setup")
    assert [c.status for c in github.conversions] == [201]
    assert (data / "github-app.json").read_bytes() == before
    await page.goto(f"{shepherd.url}/")
    assert await page.locator("form[action*='settings/apps/new']").count() == 0


# -- what the status page shows ------------------------------------------------------------------


async def seed_store(shepherd: ShepherdProcess, secret: str, installation: int) -> None:
    """Deliveries through the real webhook endpoint; PR events and outcomes (some days old) in
    the store the server uses, as the workers would have written them."""
    payload = json.loads(
        (SHARED / "github" / "webhooks" / "pull_request" / "opened.payload.json").read_text()
    )
    for n, repo in enumerate(["acme/api", "acme/web", "acme/docs", "acme/api"]):
        payload["repository"]["full_name"] = repo
        payload["installation"] = {"id": installation}
        payload["number"] = 10 + n
        assert await post_webhook(shepherd.url, "pull_request", payload, secret) == 202
    url = f"sqlite:///{data_dir(shepherd) / 'shepherd.db'}"
    store = open_store(url)
    await store.open()
    sha = "4f8c0b1d2e3a4f5b6c7d8e9f0a1b2c3d4e5f6a7b"
    usage = {"input": 18250, "output": 2300, "cache_read": 6000, "cache_write": 1200}
    backdated: list[tuple[float, int]] = []
    try:
        for repo, pr in (("acme/api", 12), ("acme/web", 7), ("acme/docs", 3)):
            await store.append_event(
                EventSpec(repo, pr, "pr.triaged", {"size": "size/S", "labels": ["size/S"]})
            )
            await store.append_event(
                EventSpec(repo, pr, "config.read", {"sha": sha, "from_file": True, "ok": True})
            )
            await store.append_event(
                EventSpec(
                    repo,
                    pr,
                    "repair.classified",
                    {
                        "sha": sha,
                        "failures": [
                            {
                                "job": "lint",
                                "category": "autofix",
                                "fixers": ["ruff-format"],
                                "reason": "ruff format --check failed",
                            }
                        ],
                    },
                )
            )
            await store.append_event(
                EventSpec(repo, pr, "repair.pushed", {"expected_sha": sha, "new_sha": sha[::-1]})
            )
            await store.append_event(
                EventSpec(
                    repo,
                    pr,
                    "repair.outcome",
                    {
                        "sha": sha,
                        "outcome": "fixed",
                        "title": "Fixed: ruff-format",
                        "llm_usage": {},
                        "llm_model": None,
                    },
                )
            )
        now = time.time()
        for day in range(1, 21):
            for n, result in enumerate(
                ["fixed", "handoff", "rerun", "fixed", "noop"][: 1 + day % 5]
            ):
                repo = ("acme/api", "acme/web", "acme/docs")[(day + n) % 3]
                data: dict[str, object] = {"sha": sha, "outcome": result, "title": result}
                if result == "handoff":
                    data |= {"llm_usage": usage, "llm_model": "claude-sonnet-4-6"}
                event = await store.append_event(EventSpec(repo, 100 + day, "repair.outcome", data))
                backdated.append((now - day * 86400, event))
    finally:
        await store.close()
    conn = sqlite3.connect(data_dir(shepherd) / "shepherd.db")
    with conn:
        conn.executemany("UPDATE pr_events SET created_at = ? WHERE id = ?", backdated)
        conn.execute(
            "UPDATE deliveries SET state = 'done', updated_at = ? WHERE event = 'pull_request' "
            "AND seq % 2 = 0",
            (time.time(),),
        )
        conn.execute(
            "UPDATE deliveries SET state = 'failed', error = 'handler triage: GitHub 502' "
            "WHERE repo = 'acme/docs'"
        )
    conn.close()


def test_screenshots_are_kept_out_of_git() -> None:
    if not ARTIFACTS.resolve().is_relative_to(REPO_ROOT):
        return
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(ARTIFACTS / "01-setup.png")], cwd=REPO_ROOT, check=False
    )
    assert ignored.returncode == 0, "test-artifacts/ belongs in .gitignore"
