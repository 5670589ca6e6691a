"""Support for the web UI's tests: a GitHub web world around a Shepherd server in this process,
and a cookie-keeping HTTP "browser" that submits the forms the pages contain.

The browser tests (``test_webui_browser.py``) drive real chromium instead; these keep the many
refusal cases fast and exact.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import MultiDict
from yarl import URL

from bot.app.web import WORKERS, create_app
from bot.kernel.settings import Settings
from bot.webui.app import WEBUI, WebUI
from tests.ghsim import start_simulator
from tests.ghweb import SESSION_COOKIE, GitHubWebSim

DEV_SECRET = "development-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Form:
    action: str
    method: str
    #: Several checked checkboxes may share a name, as in a browser's form data.
    fields: MultiDict[str] = field(default_factory=MultiDict)
    buttons: list[tuple[str, str]] = field(default_factory=list)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self._current)
        elif self._current is not None and tag == "input" and a.get("name"):
            if a.get("type") != "checkbox" or "checked" in a:
                self._current.fields.add(a["name"], a.get("value", ""))
        elif self._current is not None and tag == "button" and a.get("name"):
            self._current.buttons.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def forms(html: str) -> list[Form]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


class Browser:
    """Follows redirects across Shepherd and the simulator, keeping each host's cookies."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.url = ""
        self.status = 0
        self.text = ""

    async def close(self) -> None:
        await self.session.close()

    def sign_in_to_github(self, web_url: str, login: str) -> None:
        self.session.cookie_jar.update_cookies({SESSION_COOKIE: login}, URL(web_url))

    async def get(self, url: str, **kwargs: Any) -> str:
        async with self.session.get(url, headers={"Accept": "text/html"}, **kwargs) as r:
            return await self._keep(r)

    async def submit(self, form: Form, base: str, extra: dict[str, str] | None = None) -> str:
        target = str(URL(base).join(URL(form.action))) if form.action else base
        data = MultiDict(form.fields)
        for name, value in (extra or {}).items():
            data[name] = value
        if form.method == "post":
            async with self.session.post(target, data=data, headers={"Accept": "text/html"}) as r:
                return await self._keep(r)
        return await self.get(target, params=data)

    async def post_no_follow(self, form: Form, base: str) -> str:
        """Submit a POST form and return where it redirects to, without going there."""
        target = str(URL(base).join(URL(form.action))) if form.action else base
        async with self.session.post(target, data=form.fields, allow_redirects=False) as r:
            assert r.status in (301, 302, 303), (r.status, await r.text())
            return r.headers["Location"]

    async def _keep(self, response: aiohttp.ClientResponse) -> str:
        self.url = str(response.url)
        self.status = response.status
        self.text = await response.text()
        return self.text

    def cookie(self, name: str) -> str | None:
        for morsel in self.session.cookie_jar:
            if morsel.key == name:
                return morsel.value
        return None


@dataclass
class WebWorld:
    github: GitHubWebSim
    server: TestServer
    settings: Settings
    setup_token: str
    browsers: list[Browser] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def ui(self) -> WebUI:
        return self.server.app[WEBUI]

    @property
    def app(self) -> web.Application:
        return self.server.app

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def browser(self, github_login: str | None = None) -> Browser:
        browser = Browser()
        if github_login is not None:
            browser.sign_in_to_github(self.github.base_url, github_login)
        self.browsers.append(browser)
        return browser

    async def open_setup(self, browser: Browser, org: str | None = None) -> Form:
        """Follow the setup link; the registration form of ``/`` (for ``org``)."""
        await browser.get(f"{self.url}/setup?token={self.setup_token}")
        if org is not None:
            await browser.get(f"{self.url}/", params={"org": org})
        [form] = [f for f in forms(browser.text) if "manifest" in f.fields]
        return form

    async def register(self, browser: Browser, org: str | None = None) -> str:
        """The whole registration from the setup link; the callback URL GitHub sent back."""
        form = await self.open_setup(browser, org)
        await browser.submit(form, self.url)  # GitHub's new-App page
        [create] = forms(browser.text)
        callback = await browser.post_no_follow(create, self.github.base_url)
        assert "/setup/callback?" in callback, callback
        await browser.get(callback)
        return callback

    def manifest_posted(self) -> dict[str, Any]:
        manifest: dict[str, Any] = self.github.manifests[-1]["manifest"]
        return manifest


@pytest_asyncio.fixture
async def web_world(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Build worlds: ``await make(workers=0, **settings)``; all are torn down afterwards."""
    made: list[WebWorld] = []
    sims: list[Any] = []

    async def make(workers: int = 0, **overrides: Any) -> WebWorld:
        api, _ = await start_simulator()
        github = GitHubWebSim(api)
        await github.start()
        sims.append((github, api))
        github.add_user("alice", "Alice Operator")
        github.add_user("bob", "Bob Developer")
        github.add_org("acme", members=["alice", "bob"])
        github.add_repo("acme/api", access=["alice"])
        github.add_repo("acme/docs", access=["alice"])
        github.add_repo("acme/web", access=["bob"])
        github.add_repo("alice/dotfiles", access=["alice"])
        port = free_port()
        values: dict[str, Any] = {
            "data_dir": tmp_path / f"data-{len(made)}",
            "github_webhook_secret": DEV_SECRET,
            "github_api_url": github.api_url,
            "public_url": f"http://127.0.0.1:{port}",
            "workers": workers,
            "repair_debounce_seconds": 0,
            "log_format": "text",
            "retention_days": 0,
        }
        values.update(overrides)
        settings = Settings(**values)
        token = "test-setup-token-0123456789"
        server = TestServer(create_app(settings, setup_token=token), host="127.0.0.1", port=port)
        await server.start_server()
        world = WebWorld(github, server, settings, token)
        made.append(world)
        return world

    try:
        yield make
    finally:
        for world in made:
            for browser in world.browsers:
                await browser.close()
            await world.server.close()
        for github, api in sims:
            await github.close()
            await api.close()


def workers_github_app_id(world: WebWorld) -> str | None:
    deps = world.app[WORKERS]._deps
    if deps is None or deps.github is None:
        return None
    return deps.github.app_id


def load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
