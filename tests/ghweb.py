"""A simulator of GitHub's *web* surface for the web UI's tests (aiohttp, in process).

What it serves, laid out like GitHub Enterprise Server (web pages at the root, the REST API under
``/api/v3``, so ``GITHUB_API_URL={base}/api/v3`` also tests the derivation of the web URL):

- the new-App page a manifest is POSTed to (``/settings/apps/new``,
  ``/organizations/{org}/settings/apps/new``), which creates the App and sends the browser to the
  manifest's ``redirect_url`` with a one-hour, single-use ``code`` and the ``state``;
- the install page (``/apps/{slug}/installations/new``), which creates an installation, delivers
  the signed ``installation`` webhook to the App's hook URL, and sends the browser to ``setup_url``;
- the sign-in pages (``/login`` for the simulated GitHub session, ``/login/oauth/authorize``) and
  ``POST /login/oauth/access_token`` (errors answered 200 with an ``error`` field, as GitHub does);
- the REST operations the web UI uses, validated against ``tests/data/github-web/`` (GitHub's own
  schemas): ``apps/create-from-manifest``, ``users/get-authenticated``,
  ``apps/list-installations-for-authenticated-user``,
  ``apps/list-installation-repos-for-authenticated-user``. Every other ``/api/v3`` request goes to
  the REST simulator (``tests/ghsim.py``), which learns the new App's id and key at conversion, so a
  JWT signed with the new key is checked there for real.

Sources: tests/data/github-web/README.md. Anything GitHub would refuse is answered as GitHub does
and also recorded in ``violations`` (``assert_no_violations``).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import html
import itertools
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from tests.ghsim import SHARED_GITHUB, GitHubSim, generate_rsa_key, start_simulator

WEB_SPEC_PATH = Path(__file__).resolve().parent / "data" / "github-web" / "openapi-web-subset.json"
_SPEC_URI = "urn:ghweb:openapi-web-subset"
SESSION_COOKIE = "gh_sim_user"
MANIFEST_CODE_TTL = 3600  # "You must complete all three steps ... within one hour."
OAUTH_CODE_TTL = 600
USER_TOKEN_TTL = 8 * 3600
JSON = dict[str, Any]

#: Permission levels and the events GitHub accepts in a manifest (the ones a check may meet).
_LEVELS = {"read", "write", "admin"}


@functools.cache
def web_spec() -> JSON:
    data: JSON = json.loads(WEB_SPEC_PATH.read_text())
    return data


def _resolve(node: Any) -> Any:
    """Follow local ``$ref``s (examples are stored by reference)."""
    spec = web_spec()
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _point_refs(node: Any) -> Any:
    """Point local ``$ref``s at the registered document. A ``oneOf`` with a ``discriminator``
    becomes ``anyOf``: GitHub's ``GET /user`` picks private-user or public-user by
    ``user_view_type``, which its own examples leave out, and both alternatives accept them."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "discriminator":
                continue
            if k == "oneOf" and "discriminator" in node:
                k = "anyOf"
            if k == "$ref" and isinstance(v, str) and v.startswith("#"):
                out[k] = _SPEC_URI + v
            else:
                out[k] = _point_refs(v)
        return out
    if isinstance(node, list):
        return [_point_refs(v) for v in node]
    return node


@functools.cache
def _registry() -> Registry[Any]:
    registry: Registry[Any] = Registry().with_resource(
        _SPEC_URI, Resource.from_contents(web_spec(), default_specification=DRAFT4)
    )
    return registry


def response_errors(path: str, method: str, status: int, body: Any) -> list[str]:
    """Where ``body`` breaks GitHub's schema for that operation's answer."""
    op = web_spec()["paths"][path][method]
    response = _resolve(op["responses"][str(status)])
    schema = _point_refs(response["content"]["application/json"]["schema"])
    validator = OAS30Validator(schema, registry=_registry())
    return [
        f"{op['operationId']} {status}: {'/'.join(map(str, e.absolute_path)) or '<body>'}: "
        f"{e.message[:200]}"
        for e in validator.iter_errors(body)
    ]


def example(path: str, method: str, status: int) -> Any:
    op = web_spec()["paths"][path][method]
    response = _resolve(op["responses"][str(status)])
    examples = response["content"]["application/json"]["examples"]
    return copy.deepcopy(_resolve(next(iter(examples.values())))["value"])


# --- state ----------------------------------------------------------------------------------


@dataclass
class WebUser:
    login: str
    id: int
    name: str


@dataclass
class WebApp:
    id: int
    slug: str
    name: str
    owner: str
    client_id: str
    client_secret: str
    webhook_secret: str
    pem: str
    public_key_pem: str
    manifest: JSON
    created_at: str
    authorized: set[str] = field(default_factory=set)  # users who authorized sign-in


@dataclass
class WebInstallation:
    id: int
    app_id: int
    account: str
    repos: list[str]


@dataclass
class _Code:
    value: str
    expires: float
    used: bool = False
    data: JSON = field(default_factory=dict)


@dataclass
class Recorded:
    method: str
    path: str
    status: int
    form: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class GitHubWebSim:
    def __init__(self, api: GitHubSim) -> None:
        self.api = api
        self.base_url = ""
        self.users: dict[str, WebUser] = {}
        self.orgs: dict[str, set[str]] = {}  # org -> members who may create/own its Apps
        self.repo_access: dict[str, set[str]] = {}  # "owner/name" -> logins with explicit access
        self.apps: dict[int, WebApp] = {}
        self.installations: dict[int, WebInstallation] = {}
        self.manifest_codes: dict[str, _Code] = {}
        self.oauth_codes: dict[str, _Code] = {}
        self.user_tokens: dict[str, tuple[str, int, float]] = {}  # token -> (login, app id, exp)
        #: Every manifest posted to the new-App page, with its state and the org it named.
        self.manifests: list[JSON] = []
        self.conversions: list[Recorded] = []
        self.token_exchanges: list[Recorded] = []
        #: Webhooks this "GitHub" delivered: (event, status Shepherd answered).
        self.deliveries: list[tuple[str, int]] = []
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self._ids = itertools.count(9000)
        self._server: TestServer | None = None
        self._session: aiohttp.ClientSession | None = None

    # --- setup -----------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v3"

    def add_user(self, login: str, name: str | None = None) -> WebUser:
        user = WebUser(login=login, id=next(self._ids), name=name or login.capitalize())
        self.users[login] = user
        return user

    def add_org(self, org: str, *, members: list[str]) -> None:
        self.orgs[org] = set(members)

    def add_repo(self, full_name: str, *, access: list[str]) -> None:
        self.repo_access[full_name] = set(access)

    def account_repos(self, account: str) -> list[str]:
        return sorted(r for r in self.repo_access if r.split("/")[0] == account)

    def assert_no_violations(self) -> None:
        assert not self.violations, "GitHub web simulator violations:\n" + "\n".join(
            self.violations
        )

    def app_by_client(self, client_id: str) -> WebApp | None:
        return next((a for a in self.apps.values() if a.client_id == client_id), None)

    # --- server ----------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/login", self._login_page)
        r.add_post("/session", self._login_submit)
        r.add_post("/settings/apps/new", self._new_app_page)
        r.add_post("/organizations/{org}/settings/apps/new", self._new_app_page)
        r.add_post("/settings/apps/new/create", self._create_app)
        r.add_get("/apps/{slug}/installations/new", self._install_page)
        r.add_post("/apps/{slug}/installations", self._install)
        r.add_get("/login/oauth/authorize", self._authorize_page)
        r.add_post("/login/oauth/authorize", self._authorize)
        r.add_post("/login/oauth/access_token", self._access_token)
        r.add_post("/api/v3/app-manifests/{code}/conversions", self._conversion)
        r.add_get("/api/v3/user", self._get_user)
        r.add_get("/api/v3/user/installations", self._user_installations)
        r.add_get(
            "/api/v3/user/installations/{installation_id}/repositories", self._installation_repos
        )
        r.add_route("*", "/api/v3/{tail:.*}", self._to_rest_sim)
        return app

    async def start(self) -> str:
        self._session = aiohttp.ClientSession()
        self._server = TestServer(self.make_app(), host="127.0.0.1")
        await self._server.start_server()
        self.base_url = str(self._server.make_url("")).rstrip("/")
        return self.base_url

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
        if self._session is not None:
            await self._session.close()

    # --- helpers ---------------------------------------------------------------------------

    def _signed_in(self, request: web.Request) -> WebUser | None:
        return self.users.get(request.cookies.get(SESSION_COOKIE, ""))

    def _page(self, title: str, body: str, status: int = 200) -> web.Response:
        text = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font:15px system-ui,'DejaVu Sans',sans-serif;margin:0;background:#f6f8fa}"
            "header{background:#24292f;color:#fff;padding:.7rem 1.5rem;font-weight:700}"
            "main{max-width:760px;margin:1.5rem auto;background:#fff;border:1px solid #d0d7de;"
            "border-radius:8px;padding:1rem 1.5rem}button{font:inherit;padding:.45rem 1rem;"
            "border-radius:6px;border:1px solid #1a7f37;background:#1f883d;color:#fff}"
            "code{font-family:'DejaVu Sans Mono',monospace}</style></head><body>"
            f"<header>GitHub (simulated)</header><main><h1>{html.escape(title)}</h1>{body}</main>"
            "</body></html>"
        )
        return web.Response(text=text, status=status, content_type="text/html")

    def _login_redirect(self, request: web.Request) -> web.Response:
        location = "/login?" + urlencode({"return_to": request.path_qs})
        return web.Response(status=302, headers={"Location": location})

    def _violation(self, message: str) -> None:
        self.violations.append(message)

    def _api_json(
        self, path: str, method: str, status: int, body: Any, headers: Mapping[str, str] = {}
    ) -> web.Response:
        self.violations.extend(response_errors(path, method, status, body))
        return web.json_response(body, status=status, headers=dict(headers))

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response(
            {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
            status=404,
        )

    # --- the simulated GitHub session ------------------------------------------------------

    async def _login_page(self, request: web.Request) -> web.Response:
        back = html.escape(request.query.get("return_to", "/"))
        options = "".join(f"<option>{html.escape(login)}</option>" for login in sorted(self.users))
        return self._page(
            "Sign in to GitHub",
            f"<form method='post' action='/session'><input type='hidden' name='return_to' "
            f"value='{back}'><label>Username <select name='login'>{options}</select></label> "
            "<button type='submit'>Sign in</button></form>",
        )

    async def _login_submit(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        login = str(form.get("login", ""))
        if login not in self.users:
            return self._page("Incorrect username", "", 422)
        back = str(form.get("return_to", "/"))
        if not back.startswith("/") or back.startswith("//"):
            back = "/"
        # A POST that needed a sign-in cannot be replayed from a redirect: GitHub shows the
        # page again; the simulator goes back to where the person came from.
        response = web.Response(status=302, headers={"Location": back})
        response.set_cookie(SESSION_COOKIE, login, httponly=True, samesite="Lax")
        return response

    # --- registration from a manifest ------------------------------------------------------

    async def _new_app_page(self, request: web.Request) -> web.Response:
        user = self._signed_in(request)
        form = await request.post()
        org = request.match_info.get("org")
        state = request.query.get("state")
        raw = str(form.get("manifest", ""))
        self.requests.append(Recorded("POST", request.path_qs, 200, {"manifest": raw}))
        try:
            manifest = json.loads(raw)
        except ValueError:
            self._violation("new-App page: the manifest is not JSON")
            return self._page("Invalid manifest", "<p>The manifest is not valid JSON.</p>", 422)
        self.manifests.append({"manifest": manifest, "state": state, "org": org})
        problems = self._check_manifest(manifest)
        if problems:
            self.violations.extend(f"manifest: {p}" for p in problems)
            return self._page(
                "Invalid manifest",
                "<ul>" + "".join(f"<li>{p}</li>" for p in problems) + "</ul>",
                422,
            )
        if user is None:
            return self._page(
                "Sign in to continue",
                "<p>Sign in to GitHub, then start again from the app's page.</p>"
                "<p><a href='/login'>Sign in</a></p>",
                401,
            )
        if org is not None and user.login not in self.orgs.get(org, set()):
            return self._page("Not found", "<p>No such organisation, or not yours.</p>", 404)
        owner = org or user.login
        fields = "".join(
            f"<input type='hidden' name='{k}' value='{html.escape(v or '', quote=True)}'>"
            for k, v in (("manifest", raw), ("state", state), ("owner", owner))
        )
        perms = "".join(
            f"<li><code>{html.escape(k)}</code>: {html.escape(str(v))}</li>"
            for k, v in manifest.get("default_permissions", {}).items()
        )
        return self._page(
            f"Create GitHub App for {owner}",
            "<form method='post' action='/settings/apps/new/create'>"
            f"{fields}<p><label>GitHub App name <input name='name' value='"
            f"{html.escape(str(manifest.get('name', '')), quote=True)}'></label></p>"
            f"<p>Webhook URL: <code>{html.escape(manifest['hook_attributes']['url'])}</code></p>"
            f"<p>Permissions:</p><ul>{perms}</ul>"
            "<p><button type='submit'>Create GitHub App</button></p></form>",
        )

    def _check_manifest(self, manifest: Any) -> list[str]:
        """What GitHub's registration page would refuse in a manifest (its documented fields)."""
        if not isinstance(manifest, dict):
            return ["not an object"]
        problems = []
        if not isinstance(manifest.get("url"), str) or not manifest["url"]:
            problems.append("url is required")
        hook = manifest.get("hook_attributes")
        if hook is not None and not (isinstance(hook, dict) and _is_url(hook.get("url"))):
            problems.append("hook_attributes.url is required and must be a URL")
        for key in ("redirect_url", "setup_url"):
            if key in manifest and not _is_url(manifest[key]):
                problems.append(f"{key} must be a URL")
        callbacks = manifest.get("callback_urls", [])
        if (
            not isinstance(callbacks, list)
            or len(callbacks) > 10
            or not all(map(_is_url, callbacks))
        ):
            problems.append("callback_urls: up to 10 URLs")
        permissions = manifest.get("default_permissions", {})
        if not isinstance(permissions, dict) or not set(permissions.values()) <= _LEVELS:
            problems.append("default_permissions: values are read, write or admin")
        known = {p.name for p in (SHARED_GITHUB / "webhooks").iterdir()} | {"workflow_job"}
        for event in manifest.get("default_events", []):
            if event in {"installation", "installation_repositories"} or event not in known:
                problems.append(f"default_events: {event!r} cannot be subscribed")
        allowed = {
            "name", "url", "hook_attributes", "redirect_url", "callback_urls", "setup_url",
            "description", "public", "default_events", "default_permissions",
            "request_oauth_on_install", "setup_on_update",
        }  # fmt: skip
        problems += [f"unknown manifest field {k!r}" for k in set(manifest) - allowed]
        return problems

    async def _create_app(self, request: web.Request) -> web.StreamResponse:
        user = self._signed_in(request)
        form = await request.post()
        if user is None:
            return self._login_redirect(request)
        manifest = json.loads(str(form["manifest"]))
        owner = str(form["owner"])
        name = str(form.get("name") or manifest.get("name") or "app")
        slug = "-".join(name.lower().split())
        if any(a.slug == slug for a in self.apps.values()):
            return self._page("Name taken", f"<p>{html.escape(name)} is already taken.</p>", 422)
        pem, public = generate_rsa_key()
        app = WebApp(
            id=next(self._ids),
            slug=slug,
            name=name,
            owner=owner,
            client_id=f"Iv23li{secrets.token_hex(7)}",
            client_secret=secrets.token_hex(20),
            webhook_secret=secrets.token_hex(20),
            pem=pem,
            public_key_pem=public,
            manifest=manifest,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self.apps[app.id] = app
        code = secrets.token_hex(20)
        self.manifest_codes[code] = _Code(
            code, time.time() + MANIFEST_CODE_TTL, data={"app": app.id}
        )
        query = {"code": code}
        if form.get("state"):
            query["state"] = str(form["state"])
        raise web.HTTPFound(f"{manifest['redirect_url']}?{urlencode(query)}")

    async def _conversion(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        record = _Code(code, 0)
        found = self.manifest_codes.get(code, record)
        status = 201
        if found is record or found.used or found.expires < time.time():
            status = 404
        self.conversions.append(
            Recorded("POST", request.path, status, headers=dict(request.headers))
        )
        if status == 404:
            return self._not_found()
        found.used = True
        app = self.apps[int(found.data["app"])]
        # The REST simulator now knows this App: JWTs signed with its new key are accepted there.
        self.api.app_id = app.id
        self.api.app_slug = app.slug
        self.api.public_key_pem = app.public_key_pem
        self.api.private_key_pem = app.pem
        body = example("/app-manifests/{code}/conversions", "post", 201)
        owner = self.users.get(app.owner)
        body.update(
            id=app.id,
            slug=app.slug,
            node_id=f"A_{app.id}",
            name=app.name,
            description=str(app.manifest.get("description", "")),
            external_url=str(app.manifest.get("url", "")),
            html_url=f"{self.base_url}/apps/{app.slug}",
            created_at=app.created_at,
            updated_at=app.created_at,
            permissions=dict(app.manifest.get("default_permissions", {})),
            events=list(app.manifest.get("default_events", [])),
            client_id=app.client_id,
            client_secret=app.client_secret,
            webhook_secret=app.webhook_secret,
            pem=app.pem,
        )
        body["owner"].update(login=app.owner, id=owner.id if owner else next(self._ids))
        body["owner"]["type"] = "User" if owner else "Organization"
        return self._api_json("/app-manifests/{code}/conversions", "post", 201, body)

    # --- installation ----------------------------------------------------------------------

    async def _install_page(self, request: web.Request) -> web.StreamResponse:
        user = self._signed_in(request)
        if user is None:
            return self._login_redirect(request)
        app = next((a for a in self.apps.values() if a.slug == request.match_info["slug"]), None)
        if app is None:
            return self._page("Not found", "", 404)
        # A private App installs only on the account that owns it.
        accounts = [app.owner] if not app.manifest.get("public") else [user.login, *self.orgs]
        if app.owner in self.orgs and user.login not in self.orgs[app.owner]:
            accounts = [a for a in accounts if a != app.owner]
        boxes = "".join(
            f"<li><label><input type='checkbox' name='repo' value='{html.escape(r)}' checked> "
            f"{html.escape(r)}</label></li>"
            for account in accounts
            for r in self.account_repos(account)
        )
        return self._page(
            f"Install {app.name}",
            f"<form method='post' action='/apps/{html.escape(app.slug)}/installations'>"
            f"<input type='hidden' name='account' value='{html.escape(accounts[0] if accounts else '')}'>"
            f"<p>Repositories:</p><ul>{boxes}</ul><button type='submit'>Install</button></form>",
        )

    async def _install(self, request: web.Request) -> web.StreamResponse:
        user = self._signed_in(request)
        if user is None:
            return self._login_redirect(request)
        app = next(a for a in self.apps.values() if a.slug == request.match_info["slug"])
        form = await request.post()
        account = str(form["account"])
        repos = [str(r) for r in form.getall("repo", []) if str(r).startswith(account + "/")]
        installation = WebInstallation(next(self._ids), app.id, account, sorted(repos))
        self.installations[installation.id] = installation
        await self.deliver(app, "installation", self._installation_payload(app, installation, user))
        setup_url = app.manifest.get("setup_url")
        if setup_url:
            query = urlencode({"installation_id": installation.id, "setup_action": "install"})
            raise web.HTTPFound(f"{setup_url}?{query}")
        raise web.HTTPFound(f"/apps/{app.slug}")

    def _installation_payload(
        self, app: WebApp, installation: WebInstallation, sender: WebUser
    ) -> JSON:
        payload: JSON = json.loads(
            (SHARED_GITHUB / "webhooks" / "installation" / "created.payload.json").read_text()
        )
        payload["installation"].update(
            id=installation.id, app_id=app.id, app_slug=app.slug, repository_selection="selected"
        )
        payload["installation"]["account"]["login"] = installation.account
        payload["repositories"] = [
            {"id": next(self._ids), "name": r.split("/")[1], "full_name": r, "private": True}
            for r in installation.repos
        ]
        payload["sender"]["login"] = sender.login
        return payload

    async def deliver(self, app: WebApp, event: str, payload: JSON) -> int:
        """POST a webhook to the App's hook URL, signed with its secret, as GitHub does."""
        assert self._session is not None
        body = json.dumps(payload).encode()
        signature = hmac.new(app.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-Hub-Signature-256": f"sha256={signature}",
            "User-Agent": "GitHub-Hookshot/sim",
        }
        async with self._session.post(
            app.manifest["hook_attributes"]["url"], data=body, headers=headers
        ) as response:
            self.deliveries.append((event, response.status))
            return response.status

    # --- sign-in (OAuth web application flow) ----------------------------------------------

    async def _authorize_page(self, request: web.Request) -> web.StreamResponse:
        user = self._signed_in(request)
        if user is None:
            return self._login_redirect(request)
        q = request.query
        app = self.app_by_client(q.get("client_id", ""))
        if app is None:
            self._violation(f"authorize: unknown client_id {q.get('client_id')!r}")
            return self._page("Application not found", "", 404)
        redirect_uri = q.get("redirect_uri") or app.manifest["callback_urls"][0]
        if redirect_uri not in app.manifest.get("callback_urls", []):
            self._violation(f"authorize: redirect_uri {redirect_uri!r} is not a callback URL")
            return self._page("Redirect URI mismatch", "", 400)
        if user.login in app.authorized:  # GitHub skips the page once a user has authorized
            return self._grant(app, user, redirect_uri, q.get("state"))
        hidden = "".join(
            f"<input type='hidden' name='{k}' value='{html.escape(v, quote=True)}'>"
            for k, v in (("client_id", app.client_id), ("redirect_uri", redirect_uri),
                         ("state", q.get("state", "")))
        )  # fmt: skip
        return self._page(
            f"Authorize {app.name}",
            f"<form method='post'>{hidden}<p>{html.escape(app.name)} by {html.escape(app.owner)} "
            f"wants to know who you are (signed in as <b>{html.escape(user.login)}</b>).</p>"
            "<button name='authorize' value='1' type='submit'>Authorize</button> "
            "<button name='authorize' value='0' type='submit'>Cancel</button></form>",
        )

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        user = self._signed_in(request)
        if user is None:
            return self._login_redirect(request)
        form = await request.post()
        app = self.app_by_client(str(form.get("client_id", "")))
        if app is None:
            return self._page("Application not found", "", 404)
        redirect_uri = str(form["redirect_uri"])
        state = str(form.get("state", "")) or None
        if form.get("authorize") != "1":
            query = {"error": "access_denied", "error_description": "The user has denied access."}
            if state:
                query["state"] = state
            raise web.HTTPFound(f"{redirect_uri}?{urlencode(query)}")
        app.authorized.add(user.login)
        return self._grant(app, user, redirect_uri, state)

    def _grant(
        self, app: WebApp, user: WebUser, redirect_uri: str, state: str | None
    ) -> web.HTTPFound:
        code = secrets.token_hex(10)
        self.oauth_codes[code] = _Code(
            code,
            time.time() + OAUTH_CODE_TTL,
            data={"app": app.id, "login": user.login, "redirect_uri": redirect_uri},
        )
        query = {"code": code, **({"state": state} if state else {})}
        raise web.HTTPFound(f"{redirect_uri}?{urlencode(query)}")

    async def _access_token(self, request: web.Request) -> web.Response:
        form = dict((await request.post()).items())
        fields = {k: str(v) for k, v in form.items()}
        record = Recorded("POST", request.path, 200, fields, dict(request.headers))
        self.token_exchanges.append(record)
        app = self.app_by_client(fields.get("client_id", ""))
        code = self.oauth_codes.get(fields.get("code", ""))
        error: tuple[str, str] | None = None
        if app is None or not hmac.compare_digest(
            app.client_secret, fields.get("client_secret", "")
        ):
            error = ("incorrect_client_credentials",
                     "The client_id and/or client_secret passed are incorrect.")  # fmt: skip
        elif code is None or code.used or code.expires < time.time() or code.data["app"] != app.id:
            error = ("bad_verification_code", "The code passed is incorrect or expired.")
        elif fields.get("redirect_uri") and fields["redirect_uri"] != code.data["redirect_uri"]:
            error = ("redirect_uri_mismatch",
                     "The redirect_uri MUST match the registered callback URL for this application.")  # fmt: skip
        if error is not None:
            data: JSON = {"error": error[0], "error_description": error[1],
                          "error_uri": "https://docs.github.com/apps/managing-oauth-apps/"
                          "troubleshooting-oauth-app-access-token-request-errors"}  # fmt: skip
        else:
            assert code is not None
            assert app is not None
            code.used = True
            token = f"ghu_{secrets.token_urlsafe(27)}"
            self.user_tokens[token] = (code.data["login"], app.id, time.time() + USER_TOKEN_TTL)
            data = {
                "access_token": token,
                "expires_in": USER_TOKEN_TTL,
                "refresh_token": f"ghr_{secrets.token_urlsafe(60)}",
                "refresh_token_expires_in": 15811200,
                "scope": "",
                "token_type": "bearer",
            }
        # The answer's format follows the Accept header; JSON when asked, form-encoded otherwise.
        if "application/json" in request.headers.get("Accept", ""):
            return web.json_response(data)
        return web.Response(text=urlencode(data), content_type="application/x-www-form-urlencoded")

    # --- user REST operations --------------------------------------------------------------

    def _token_user(self, request: web.Request) -> tuple[WebUser, int] | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        found = self.user_tokens.get(token) if scheme.lower() in {"bearer", "token"} else None
        if found is None or found[2] < time.time():
            return None
        return self.users[found[0]], found[1]

    def _bad_credentials(self, what: str) -> web.Response:
        self._violation(f"{what}: missing, unknown or expired user token")
        return web.json_response(
            {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
            status=401,
        )

    def _visible(self, login: str, app_id: int) -> list[WebInstallation]:
        return [
            i
            for i in self.installations.values()
            if i.app_id == app_id
            and (i.account == login or any(login in self.repo_access.get(r, ()) for r in i.repos))
        ]

    async def _get_user(self, request: web.Request) -> web.Response:
        found = self._token_user(request)
        if found is None:
            return self._bad_credentials("users/get-authenticated")
        user = found[0]
        body = example("/user", "get", 200)
        body.update(
            login=user.login, id=user.id, name=user.name, node_id=f"U_{user.id}",
            user_view_type="private",
        )  # fmt: skip
        return self._api_json("/user", "get", 200, body)

    async def _user_installations(self, request: web.Request) -> web.Response:
        found = self._token_user(request)
        if found is None:
            return self._bad_credentials("apps/list-installations-for-authenticated-user")
        user, app_id = found
        template = example("/user/installations", "get", 200)["installations"][0]
        items = []
        for inst in self._visible(user.login, app_id):
            item = copy.deepcopy(template)
            item.update(id=inst.id, app_id=inst.app_id, app_slug=self.apps[app_id].slug,
                        repository_selection="selected", target_type="Organization"
                        if inst.account in self.orgs else "User")  # fmt: skip
            item["account"]["login"] = inst.account
            items.append(item)
        page, headers = self._paginate(request, items)
        body = {"total_count": len(items), "installations": page}
        return self._api_json("/user/installations", "get", 200, body, headers)

    async def _installation_repos(self, request: web.Request) -> web.Response:
        found = self._token_user(request)
        if found is None:
            return self._bad_credentials("apps/list-installation-repos-for-authenticated-user")
        user, app_id = found
        wanted = int(request.match_info["installation_id"])
        inst = next((i for i in self._visible(user.login, app_id) if i.id == wanted), None)
        if inst is None:
            return self._not_found()
        template = example("/user/installations/{installation_id}/repositories", "get", 200)[
            "repositories"
        ][0]
        items = []
        for full_name in inst.repos:
            if user.login != inst.account and user.login not in self.repo_access.get(full_name, ()):
                continue
            owner, name = full_name.split("/")
            item = copy.deepcopy(template)
            item.update(id=abs(hash(full_name)) % 10**8, name=name, full_name=full_name,
                        private=True, html_url=f"{self.base_url}/{full_name}")  # fmt: skip
            item["owner"]["login"] = owner
            items.append(item)
        page, headers = self._paginate(request, items)
        body = {"total_count": len(items), "repository_selection": "selected", "repositories": page}
        return self._api_json(
            "/user/installations/{installation_id}/repositories", "get", 200, body, headers
        )

    def _paginate(
        self, request: web.Request, items: list[JSON]
    ) -> tuple[list[JSON], dict[str, str]]:
        per_page = min(int(request.query.get("per_page", 30)), 100)
        page = max(int(request.query.get("page", 1)), 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            query = {**request.query, "page": str(page + 1)}
            url = f"{self.base_url}{request.path}?{urlencode(query)}"
            headers["Link"] = f'<{url}>; rel="next"'
        return chunk, headers

    # --- everything else under /api/v3: the REST simulator ---------------------------------

    async def _to_rest_sim(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        tail = request.match_info["tail"]
        url = f"{self.api.base_url}/{tail}"
        if request.query_string:
            url += f"?{request.query_string}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host"}}
        async with self._session.request(
            request.method, url, headers=headers, data=await request.read(), allow_redirects=False
        ) as upstream:
            body = await upstream.read()
            passed = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in {"content-length", "transfer-encoding", "content-encoding"}
            }
            return web.Response(status=upstream.status, body=body, headers=passed)


def _is_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest_asyncio.fixture
async def github_web() -> AsyncIterator[GitHubWebSim]:
    """The web simulator in front of a fresh REST simulator (``github_web.api``)."""
    api, _ = await start_simulator()
    sim = GitHubWebSim(api)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.close()
        await api.close()
