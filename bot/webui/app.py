"""The web UI's shared state, its pages' plumbing, and the route table.

``add_web_ui`` mounts the routes on the server's application: ``/`` (registration while no App is
configured, then the install link), ``/setup`` and ``/setup/callback`` (the manifest flow),
``/login``, ``/login/callback`` and ``/logout`` (sign-in with the App's OAuth client), ``/status``.
None of them sits in front of ``/webhook``: no middleware is added, so ingest is untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jinja2
from aiohttp import web
from cachetools import TTLCache

from bot.kernel import JSONObject
from bot.kernel.problems import PROBLEM_JSON, Problem
from bot.kernel.settings import Settings
from bot.store import Store
from bot.webui.credentials import AppCredentials, load_app, session_key
from bot.webui.github_web import GitHubWeb, UserAccess
from bot.webui.manifest import manifest_template
from bot.webui.sessions import CookieBox, OneTimeStates

log = logging.getLogger(__name__)

#: GitHub's manifest flow must finish within an hour; a sign-in within ten minutes is plenty.
SETUP_STATE_TTL = 3600
SIGNIN_STATE_TTL = 600
#: How long what GitHub said a user may see is reused before asking again.
ACCESS_TTL = 60


@dataclass(frozen=True)
class SetupResult:
    """What the browser that registered the App is shown once it is done."""

    creds: AppCredentials
    checks: tuple[tuple[str, bool, str], ...]


@dataclass
class WebUI:
    settings: Settings
    store: Store
    cookies: CookieBox
    #: Printed by ``shepherd serve`` in the setup URL; only its holder may register the App.
    setup_token: str
    on_configured: Callable[[], Awaitable[None]]
    templates: jinja2.Environment
    manifest_template: JSONObject
    setup_states: OneTimeStates = field(
        default_factory=lambda: OneTimeStates(ttl=SETUP_STATE_TTL, capacity=100)
    )
    signin_states: OneTimeStates = field(
        default_factory=lambda: OneTimeStates(ttl=SIGNIN_STATE_TTL, capacity=1000)
    )
    access: TTLCache[str, UserAccess] = field(
        default_factory=lambda: TTLCache(maxsize=1024, ttl=ACCESS_TTL)
    )
    #: One registration at a time: a second callback waits, then finds the App configured.
    registration_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    http: aiohttp.ClientSession | None = None
    setup_result: SetupResult | None = None
    #: The stored App (when there is one), for its name and links.
    stored: AppCredentials | None = None

    @property
    def configured(self) -> bool:
        return self.settings.github_enabled

    @property
    def public_url(self) -> str:
        assert self.settings.public_url is not None, "add_web_ui fills it in"
        return self.settings.public_url

    def github(self) -> GitHubWeb:
        assert self.http is not None, "the web UI's session opens with the application"
        return GitHubWeb(
            self.http, web_url=self.settings.web_url, api_url=self.settings.github_api_url
        )

    def app_slug(self) -> str:
        return self.stored.slug if self.stored is not None else self.settings.app_slug

    def install_url(self) -> str:
        return f"{self.settings.web_url}/apps/{self.app_slug()}/installations/new"


WEBUI = web.AppKey("webui", WebUI)


def template_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bot.webui", "templates"),
        autoescape=True,  # repository names, PR titles and log text are hostile input
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["tojson_attr"] = lambda value: json.dumps(value, separators=(",", ":"))
    return env


def content_security_policy(web_url: str) -> str:
    # No script anywhere; forms post to this server or, for the manifest, to GitHub.
    github = "{0.scheme}://{0.netloc}".format(urlsplit(web_url))
    return (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        f"form-action 'self' {github}; base-uri 'none'; frame-ancestors 'none'"
    )


def page(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    ui = request.app[WEBUI]
    body = ui.templates.get_template(template).render(
        app_name=(ui.stored.name if ui.stored is not None else "Shepherd"), **context
    )
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    harden(response, ui.settings.web_url)
    return response


def harden(response: web.StreamResponse, web_url: str) -> None:
    response.headers["Content-Security-Policy"] = content_security_policy(web_url)
    response.headers["X-Content-Type-Options"] = "nosniff"
    # The callbacks carry one-time codes in their query: never pass URLs on to other sites.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"


def refuse(request: web.Request, status: int, slug: str, title: str, detail: str) -> web.Response:
    """A clear 4xx/5xx: an HTML page for browsers, problem+json (RFC 9457) for other clients."""
    problem = Problem.of(slug, title, status, detail, retryable=status >= 500)
    accept = request.headers.get("Accept", "")
    if "text/html" in accept or "json" not in accept:
        return page(request, "error.html", status=status, problem=problem)
    response = web.Response(
        status=status, text=json.dumps(problem.to_json()), content_type=PROBLEM_JSON
    )
    harden(response, request.app[WEBUI].settings.web_url)
    return response


def see_other(request: web.Request, location: str) -> web.Response:
    """303: the browser follows with a GET (after a form post or a callback)."""
    response = web.Response(status=303, headers={"Location": location})
    harden(response, request.app[WEBUI].settings.web_url)
    return response


async def stylesheet(request: web.Request) -> web.Response:
    css = resources.files("bot.webui").joinpath("assets/shepherd.css").read_text("utf-8")
    return web.Response(
        text=css,
        content_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def add_web_ui(
    app: web.Application,
    *,
    settings: Settings,
    store: Store,
    on_configured: Callable[[], Awaitable[None]],
    setup_token: str | None = None,
) -> WebUI:
    """Mount the web UI on ``app`` (the server's application) and return its state."""
    # The page modules import this one for WebUI and its helpers; they are loaded here, once
    # mounting starts, rather than at import time.
    from bot.webui import setup, signin, status

    if settings.public_url is None:
        settings.public_url = "http://127.0.0.1:8080"
    ui = WebUI(
        settings=settings,
        store=store,
        cookies=CookieBox(session_key(settings), secure=settings.public_url.startswith("https:")),
        setup_token=setup_token or secrets.token_urlsafe(24),
        on_configured=on_configured,
        templates=template_env(),
        manifest_template=manifest_template(),
        stored=load_app(settings.data_dir),
    )
    app[WEBUI] = ui

    async def http_session(app: web.Application) -> AsyncIterator[None]:
        ui.http = aiohttp.ClientSession()
        yield
        await ui.http.close()

    app.cleanup_ctx.append(http_session)
    app.router.add_get("/", setup.home)
    app.router.add_get("/setup", setup.setup_link)
    app.router.add_get("/setup/callback", setup.callback)
    app.router.add_get("/login", signin.login)
    app.router.add_get("/login/callback", signin.callback)
    app.router.add_post("/logout", signin.logout)
    app.router.add_get("/status", status.status_page)
    app.router.add_get("/assets/shepherd.css", stylesheet)
    return ui
