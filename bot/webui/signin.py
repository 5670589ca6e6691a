"""Sign in with GitHub: the App's own OAuth client, the web application flow.

https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-user-access-token-for-a-github-app

``/login`` sends the browser to GitHub's authorize page with a one-time ``state`` bound to a
sign-in cookie; ``/login/callback`` consumes the state, trades the code for a user access token
and seals the session (login, token, CSRF token) into an HttpOnly cookie. ``POST /logout`` needs
that CSRF token and a same-origin request.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from bot.kernel.errors import GitHubError
from bot.webui.app import SIGNIN_STATE_TTL, WEBUI, refuse, see_other
from bot.webui.manifest import SIGNIN_CALLBACK_PATH
from bot.webui.sessions import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Session,
    StateError,
    new_nonce,
)

log = logging.getLogger(__name__)

#: A session lasts as long as the user access token (8 hours), at most.
SESSION_AGE = 8 * 3600


def safe_next(value: str | None) -> str:
    """A local path to return to after sign-in; anything else (``//host``, ``https:``) is /status."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/status"
    return value


def current_session(request: web.Request) -> Session | None:
    ui = request.app[WEBUI]
    data = ui.cookies.open("session", request.cookies.get(SESSION_COOKIE), max_age=SESSION_AGE)
    return Session.from_cookie(data)


def sign_in_redirect(request: web.Request) -> web.Response:
    return see_other(request, "/login?" + urlencode({"next": request.path_qs}))


async def login(request: web.Request) -> web.StreamResponse:
    ui = request.app[WEBUI]
    settings = ui.settings
    if not settings.sign_in_enabled:
        return refuse(
            request, 503, "sign-in-not-configured", "Sign-in is not set up yet",
            "Sign-in uses the GitHub App's OAuth client. Register the App from this server's "
            "setup page, or set GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET.",
        )  # fmt: skip
    assert settings.github_client_id is not None
    nonce = new_nonce()
    state = ui.signin_states.issue(nonce, next=safe_next(request.query.get("next")))
    query = urlencode(
        {
            "client_id": settings.github_client_id,
            "redirect_uri": ui.public_url + SIGNIN_CALLBACK_PATH,
            "state": state,
        }
    )
    response = see_other(request, f"{settings.web_url}/login/oauth/authorize?{query}")
    ui.cookies.set(response, SIGNIN_COOKIE, "signin", {"nonce": nonce}, max_age=SIGNIN_STATE_TTL)
    return response


async def callback(request: web.Request) -> web.StreamResponse:
    ui = request.app[WEBUI]
    settings = ui.settings
    binding = ui.cookies.open(
        "signin", request.cookies.get(SIGNIN_COOKIE), max_age=SIGNIN_STATE_TTL
    )
    nonce = binding.get("nonce") if binding else None
    try:
        flow = ui.signin_states.consume(
            request.query.get("state", ""), nonce if isinstance(nonce, str) else None
        )
    except StateError as exc:
        return refuse(
            request, 400, "sign-in-state-invalid", "This sign-in cannot be completed",
            f"The sign-in's state is {exc.reason}. Sign in again.",
        )  # fmt: skip
    if request.query.get("error"):
        return refuse(
            request, 403, "sign-in-cancelled", "Sign-in was cancelled",
            "GitHub did not authorize Shepherd to know who you are; nothing is shown without it.",
        )  # fmt: skip
    if not settings.sign_in_enabled:
        return see_other(request, "/login")
    assert settings.github_client_id is not None
    assert settings.github_client_secret is not None
    github = ui.github()
    try:
        token = await github.exchange_code(
            client_id=settings.github_client_id,
            client_secret=settings.github_client_secret.get_secret_value(),
            code=request.query.get("code", ""),
            redirect_uri=ui.public_url + SIGNIN_CALLBACK_PATH,
        )
        user = await github.get_user(token.token)
    except GitHubError as exc:
        log.warning("sign-in failed: %s", exc)
        return refuse(
            request, 400, "sign-in-refused", "GitHub did not complete the sign-in",
            "The sign-in code is expired or was used already. Sign in again.",
        )  # fmt: skip
    session = Session(
        user_id=int(user["id"]),
        login=str(user["login"]),
        token=token.token,
        csrf=secrets.token_urlsafe(24),
        expires_at=token.expires_at,
    )
    log.info("%s signed in to the status page", session.login)
    response = see_other(request, safe_next(flow.get("next")))
    ui.cookies.set(response, SESSION_COOKIE, "session", session.to_cookie(), max_age=SESSION_AGE)
    ui.cookies.clear(response, SIGNIN_COOKIE)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    ui = request.app[WEBUI]
    session = current_session(request)
    form = await request.post()
    csrf = form.get("csrf")
    if session is None or not session.csrf_ok(csrf if isinstance(csrf, str) else None):
        return refuse(
            request, 403, "csrf-refused", "Request refused",
            "This form is out of date or came from another site. Reload the page and try again.",
        )  # fmt: skip
    if not same_origin(request, ui.public_url):
        return refuse(
            request, 403, "csrf-refused", "Request refused", "The request came from another site."
        )
    response = see_other(request, "/")
    ui.cookies.clear(response, SESSION_COOKIE)
    return response


def same_origin(request: web.Request, public_url: str) -> bool:
    """Browsers send Origin with every POST; when present it must be this server's."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    theirs = urlsplit(origin)
    # The public URL, or the host the browser itself addressed (a cross-site form cannot set
    # the Host header of a request to us, so that still rules out other sites).
    allowed = {
        (urlsplit(public_url).scheme, urlsplit(public_url).netloc),
        (request.scheme, request.host),
    }
    return (theirs.scheme, theirs.netloc) in allowed
