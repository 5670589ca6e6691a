"""Registration by manifest: ``/``, ``/setup`` and ``/setup/callback``.

https://docs.github.com/apps/sharing-github-apps/registering-a-github-app-from-a-manifest

1. ``shepherd serve`` prints ``/setup?token=…``. Opening it gives the browser a sealed binding
   cookie (and drops the token from the address bar): only whoever can read the server's output
   can register the App, which matters once the server is reachable through a tunnel.
2. ``/`` (while no App is configured) shows the manifest and one button. The form posts the
   manifest to GitHub's new-App page with a fresh ``state`` bound to that cookie.
3. GitHub sends the browser to ``/setup/callback?code=…&state=…``. The state is consumed (once,
   same browser), the code exchanged once, the credentials stored (0600) and applied at once: the
   App's webhook secret replaces the development one for the very next delivery, and the workers
   start using the App's key. The new key signs a JWT for ``GET /app`` straight away.
4. ``/`` now offers the install link. It never offers registration again, and every later callback
   is refused with nothing changed.
"""

from __future__ import annotations

import hmac
import logging

import aiohttp
from aiohttp import web

from bot.github.client import GitHubApp
from bot.kernel.errors import GitHubError
from bot.webui.app import SETUP_STATE_TTL, WEBUI, SetupResult, WebUI, page, refuse, see_other
from bot.webui.credentials import (
    DEV_SECRET_FILE,
    AppCredentials,
    app_file,
    apply_app,
    file_mode,
    save_app,
)
from bot.webui.manifest import build_manifest, registration_url, valid_org
from bot.webui.sessions import SETUP_COOKIE, StateError, new_nonce

log = logging.getLogger(__name__)

#: The binding cookie outlives one flow: the operator may read the page for a while.
SETUP_COOKIE_AGE = 12 * 3600


def _setup_nonce(request: web.Request) -> str | None:
    ui = request.app[WEBUI]
    data = ui.cookies.open("setup", request.cookies.get(SETUP_COOKIE), max_age=SETUP_COOKIE_AGE)
    nonce = data.get("nonce") if data else None
    return nonce if isinstance(nonce, str) else None


async def home(request: web.Request) -> web.Response:
    ui = request.app[WEBUI]
    if ui.configured:
        mine = ui.setup_result if _setup_nonce(request) is not None else None
        return page(
            request,
            "home.html",
            slug=ui.app_slug(),
            install_url=ui.install_url(),
            result=mine,
            sign_in=ui.settings.sign_in_enabled,
        )
    nonce = _setup_nonce(request)
    if nonce is None:
        return page(request, "setup_locked.html")
    org = request.query.get("org", "").strip()
    org_error = ""
    if org and not valid_org(org):
        org_error = f"{org!r} is not an organisation login; registering on your account."
        org = ""
    manifest = build_manifest(ui.manifest_template, ui.public_url)
    state = ui.setup_states.issue(nonce, org=org or None)
    return page(
        request,
        "setup.html",
        manifest=manifest,
        action=registration_url(ui.settings.web_url, state, org or None),
        org=org,
        org_error=org_error,
        web_url=ui.settings.web_url,
        minutes=SETUP_STATE_TTL // 60,
    )


async def setup_link(request: web.Request) -> web.StreamResponse:
    ui = request.app[WEBUI]
    if ui.configured:
        return see_other(request, "/")
    token = request.query.get("token", "")
    if not hmac.compare_digest(token.encode(), ui.setup_token.encode()):
        return refuse(
            request,
            403,
            "setup-link-invalid",
            "This setup link is not valid",
            "The setup link changes every time Shepherd starts. Use the one it printed last "
            "(`make run` shows it in the terminal).",
        )
    response = see_other(request, "/")
    ui.cookies.set(
        response, SETUP_COOKIE, "setup", {"nonce": new_nonce()}, max_age=SETUP_COOKIE_AGE
    )
    return response


async def callback(request: web.Request) -> web.StreamResponse:
    ui = request.app[WEBUI]
    if ui.configured:
        return _already_configured(request, ui)
    code = request.query.get("code", "")
    state = request.query.get("state", "")
    if not code or not state:
        return refuse(
            request, 400, "setup-callback-incomplete", "Incomplete callback",
            "GitHub sends both code and state here; start again from the setup page.",
        )  # fmt: skip
    try:
        ui.setup_states.consume(state, _setup_nonce(request))
    except StateError as exc:
        status = 403 if exc.reason.startswith("started in another") else 400
        log.warning("setup callback refused: state %s", exc.reason)
        return refuse(
            request, status, "setup-state-invalid", "This registration cannot be completed",
            f"The registration's state is {exc.reason}. Nothing was stored; start again from "
            "the setup page.",
        )  # fmt: skip
    async with ui.registration_lock:
        if ui.configured:
            return _already_configured(request, ui)
        converted = await _convert(request, ui, code)
        if isinstance(converted, web.StreamResponse):
            return converted
        return await _register(request, ui, converted)


async def _convert(
    request: web.Request, ui: WebUI, code: str
) -> AppCredentials | web.StreamResponse:
    """Exchange the code for the App's credentials, or the page saying why not."""
    try:
        answer = await ui.github().convert_manifest(code)
        return AppCredentials.from_conversion(
            answer, web_url=ui.settings.web_url, api_url=ui.settings.github_api_url
        )
    except GitHubError as exc:
        log.warning("manifest conversion refused: %s", exc)
        if exc.status is not None and 400 <= exc.status < 500:
            return refuse(
                request, 400, "setup-code-refused", "GitHub did not accept this registration",
                "The code is expired or was used already (GitHub gives one hour). Nothing "
                "was stored; start again from the setup page.",
            )  # fmt: skip
        return refuse(
            request, 502, "setup-github-unavailable", "GitHub could not be reached",
            f"{exc}. Nothing was stored; try again from the setup page.",
        )  # fmt: skip
    except ValueError as exc:
        return refuse(
            request, 502, "setup-answer-invalid", "GitHub's answer was not usable",
            f"{exc}. Nothing was stored.",
        )  # fmt: skip


async def _register(request: web.Request, ui: WebUI, creds: AppCredentials) -> web.StreamResponse:
    """Store the credentials, apply them at once and check them (the result page lists it)."""
    try:
        path = save_app(ui.settings.data_dir, creds)
    except FileExistsError:
        return _already_configured(request, ui)
    apply_app(ui.settings, creds)
    ui.stored = creds
    log.info("registered GitHub App %s (id %s), stored in %s", creds.slug, creds.app_id, path)
    checks = [
        ("credentials stored", True, f"{path} (mode {file_mode(path):o})"),
        (
            "webhook secret",
            creds.webhook_secret is not None,
            "the App's secret verifies deliveries from now on; the development secret is refused"
            if creds.webhook_secret is not None
            else "GitHub returned no webhook secret: set one in the App's settings and "
            "GITHUB_WEBHOOK_SECRET",
        ),
    ]
    checks.append(await _verify_key(ui, creds))
    await ui.on_configured()
    _forget_dev_secret(ui)
    ui.setup_result = SetupResult(creds, tuple(checks))
    return see_other(request, "/")


async def _verify_key(ui: WebUI, creds: AppCredentials) -> tuple[str, bool, str]:
    """Sign a JWT with the new key and ask GitHub who we are (``apps/get-authenticated``)."""
    assert ui.http is not None
    app = GitHubApp(
        app_id=creds.app_id,
        private_key=creds.pem,
        session=ui.http,
        api_url=ui.settings.github_api_url,
    )
    try:
        info = await (await app.app_client()).get_app()
    except (GitHubError, aiohttp.ClientError) as exc:
        log.warning("the new App key could not be verified: %s", exc)
        return ("private key", False, f"GitHub did not accept a JWT signed with it: {exc}")
    return (
        "private key",
        True,
        f"a JWT signed with it is accepted: GitHub says {info.get('slug')}",
    )


def _forget_dev_secret(ui: WebUI) -> None:
    path = ui.settings.data_dir / DEV_SECRET_FILE
    if path.exists():
        path.unlink()
        log.info("removed the development webhook secret %s", path)


def _already_configured(request: web.Request, ui: WebUI) -> web.Response:
    where = app_file(ui.settings.data_dir)
    source = f"stored in {where}" if where.exists() else "configured in the environment"
    return refuse(
        request, 409, "setup-already-done", "Shepherd already has a GitHub App",
        f"Registration is closed once an App is configured ({ui.app_slug()}, {source}). "
        "Nothing was changed.",
    )  # fmt: skip
