"""The web UI over HTTP against the GitHub web simulator: registration by manifest (what is sent,
stored and applied at once), every refusal (nothing stored), sign-in and what /status shows.

Real chromium drives the same flows in ``test_webui_browser.py``; here a cookie-keeping HTTP
client does, so each refusal is checked exactly and fast.
"""

from __future__ import annotations

import json
import stat
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import yaml

from bot.store import EventSpec
from bot.webui.credentials import APP_FILE, DEV_SECRET_FILE
from tests.conftest import REPO_ROOT, webhook_headers
from tests.webui_support import DEV_SECRET, WebWorld, forms, load_json, workers_github_app_id

PING = json.dumps({"zen": "Design for failure.", "hook_id": 1}).encode()


async def deliver(world: WebWorld, secret: str) -> int:
    async with world.browser().session.post(
        f"{world.url}/webhook", data=PING, headers=webhook_headers("ping", PING, secret=secret)
    ) as response:
        return response.status


def stored_nothing(world: WebWorld) -> bool:
    return not (world.data_dir / APP_FILE).exists() and not world.settings.github_enabled


# -- registration --------------------------------------------------------------------------


async def test_registration_sends_the_manifest_and_applies_the_app_at_once(web_world: Any) -> None:
    world: WebWorld = await web_world(workers=1)
    (world.data_dir).mkdir(parents=True, exist_ok=True)
    (world.data_dir / DEV_SECRET_FILE).write_text(DEV_SECRET + "\n")
    assert await deliver(world, DEV_SECRET) == 202  # the development secret works until then
    browser = world.browser("alice")

    await world.register(browser)

    # The manifest: app.yml's permissions and events, every URL under SHEPHERD_PUBLIC_URL.
    manifest = world.manifest_posted()
    template = yaml.safe_load((REPO_ROOT / "app.yml").read_text())
    assert manifest["default_permissions"] == template["default_permissions"]
    assert manifest["default_events"] == template["default_events"]
    assert manifest["hook_attributes"] == {"url": f"{world.url}/webhook", "active": True}
    assert manifest["redirect_url"] == f"{world.url}/setup/callback"
    assert manifest["callback_urls"] == [f"{world.url}/login/callback"]
    assert manifest["setup_url"] == f"{world.url}/status"
    assert manifest["name"] == template["name"]
    assert world.github.manifests[-1]["org"] is None

    # Exactly one exchange, and the credentials stored for the service user only.
    assert [c.status for c in world.github.conversions] == [201]
    [app] = world.github.apps.values()
    path = world.data_dir / APP_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = load_json(path)
    assert stored["app_id"] == app.id
    assert stored["slug"] == app.slug
    assert stored["pem"] == app.pem
    assert stored["webhook_secret"] == app.webhook_secret
    assert stored["client_id"] == app.client_id
    assert stored["client_secret"] == app.client_secret
    assert not (world.data_dir / DEV_SECRET_FILE).exists()

    # Live, no restart: the new secret verifies deliveries and the development one is refused.
    assert await deliver(world, app.webhook_secret) == 202
    assert await deliver(world, DEV_SECRET) == 401
    assert world.settings.github_app_id == app.id
    assert world.settings.app_slug == app.slug
    assert workers_github_app_id(world) == str(app.id)

    # A JWT signed with the new key was sent to GitHub (GET /app) and accepted there.
    [call] = world.github.api.calls("apps/get-authenticated")
    assert call.status == 200
    claims = jwt.decode(
        call.headers["authorization"].split()[1], app.public_key_pem, algorithms=["RS256"]
    )
    assert claims["iss"] == str(app.id)

    # The page the browser lands on: done, with the install link and no registration form.
    assert browser.url == f"{world.url}/"
    assert "The GitHub App is registered" in browser.text
    assert f"{world.github.base_url}/apps/{app.slug}/installations/new" in browser.text
    assert "a JWT signed with it is accepted" in browser.text
    assert not [f for f in forms(browser.text) if "manifest" in f.fields]
    world.github.assert_no_violations()
    world.github.api.assert_no_violations()


async def test_an_organisation_registers_on_its_own_page(web_world: Any) -> None:
    world: WebWorld = await web_world()
    browser = world.browser("alice")
    form = await world.open_setup(browser, org="acme")
    assert urlsplit(form.action).path == "/organizations/acme/settings/apps/new"
    await world.register(browser, org="acme")
    assert world.github.manifests[-1]["org"] == "acme"
    assert load_json(world.data_dir / APP_FILE)["owner"] == "acme"


async def test_an_invalid_organisation_name_falls_back_to_the_account(web_world: Any) -> None:
    world: WebWorld = await web_world()
    browser = world.browser("alice")
    form = await world.open_setup(browser, org="../evil?x=1")
    assert urlsplit(form.action).path == "/settings/apps/new"
    assert "is not an organisation login" in browser.text


async def test_registration_needs_the_setup_link(web_world: Any) -> None:
    world: WebWorld = await web_world()
    browser = world.browser("alice")
    await browser.get(f"{world.url}/")
    assert browser.status == 200
    assert "setup link" in browser.text
    assert not [f for f in forms(browser.text) if "manifest" in f.fields]
    await browser.get(f"{world.url}/setup?token=guessed")
    assert browser.status == 403
    assert "not valid" in browser.text
    assert len(world.ui.setup_states) == 0


async def test_forged_state_is_refused_and_nothing_is_stored(web_world: Any) -> None:
    world: WebWorld = await web_world()
    browser = world.browser("alice")
    await world.open_setup(browser)  # a real state exists for this browser; the forger's is not it
    await browser.get(f"{world.url}/setup/callback?code=abc123&state=forged-state")
    assert browser.status == 400
    assert "Nothing was stored" in browser.text
    assert world.github.conversions == []
    assert stored_nothing(world)


async def test_a_state_from_another_browser_is_refused(web_world: Any) -> None:
    world: WebWorld = await web_world()
    operator = world.browser("alice")
    form = await world.open_setup(operator)
    state = parse_qs(urlsplit(form.action).query)["state"][0]
    victim = world.browser("alice")  # no setup cookie: a link planted in someone else's browser
    await victim.get(f"{world.url}/setup/callback?code=abc123&state={state}")
    assert victim.status == 403
    # The state is burnt: the browser that owned it cannot use it after that either.
    await operator.get(f"{world.url}/setup/callback?code=abc123&state={state}")
    assert operator.status == 400
    assert world.github.conversions == []
    assert stored_nothing(world)


async def test_a_replayed_callback_is_refused_after_exactly_one_exchange(web_world: Any) -> None:
    world: WebWorld = await web_world()
    browser = world.browser("alice")
    callback = await world.register(browser)
    before = (world.data_dir / APP_FILE).read_bytes()
    await browser.get(callback)  # the same code and state again
    assert browser.status == 409
    assert "Nothing was changed" in browser.text
    assert [c.status for c in world.github.conversions] == [201]
    assert (world.data_dir / APP_FILE).read_bytes() == before


async def test_a_replayed_code_is_refused_by_github_and_nothing_is_stored(web_world: Any) -> None:
    # The first attempt's code was already exchanged elsewhere (or expired): GitHub answers 404.
    world: WebWorld = await web_world()
    browser = world.browser("alice")
    form = await world.open_setup(browser)
    await browser.submit(form, world.url)
    [create] = forms(browser.text)
    callback = await browser.post_no_follow(create, world.github.base_url)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    world.github.manifest_codes[code].used = True
    await browser.get(callback)
    assert browser.status == 400
    assert "expired or was used already" in browser.text
    assert [c.status for c in world.github.conversions] == [404]
    assert stored_nothing(world)
    await browser.get(callback)  # and the state went with it: no second exchange is tried
    assert browser.status == 400
    assert len(world.github.conversions) == 1


async def test_any_callback_after_setup_changes_nothing(web_world: Any) -> None:
    world: WebWorld = await web_world()
    await world.register(world.browser("alice"))
    path = world.data_dir / APP_FILE
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    other = world.browser("bob")
    await other.get(f"{world.url}/setup?token={world.setup_token}")  # the link is closed now
    await other.get(f"{world.url}/")
    assert not [f for f in forms(other.text) if "manifest" in f.fields]
    assert "Install" in other.text
    async with other.session.get(
        f"{world.url}/setup/callback?code=new&state=whatever",
        headers={"Accept": "application/json"},
    ) as response:
        assert response.status == 409
        assert response.content_type == "application/problem+json"
        assert (await response.json())["type"].endswith("/setup-already-done")
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert len(world.github.conversions) == 1


async def test_environment_configured_app_closes_registration(web_world: Any) -> None:
    world: WebWorld = await web_world(github_app_id=77, github_private_key=_pem())
    browser = world.browser("alice")
    await browser.get(f"{world.url}/setup?token={world.setup_token}")
    assert "is connected to GitHub" in browser.text
    await browser.get(f"{world.url}/setup/callback?code=c&state=s")
    assert browser.status == 409
    assert "configured in the environment" in browser.text


def _pem() -> str:
    from tests.ghsim import shared_test_key

    return shared_test_key()[0]


# -- sign-in and /status ---------------------------------------------------------------------


async def registered_and_installed(world: WebWorld) -> None:
    operator = world.browser("alice")
    await world.register(operator, org="acme")
    [app] = world.github.apps.values()
    await operator.get(f"{world.github.base_url}/apps/{app.slug}/installations/new")
    [install] = forms(operator.text)
    await operator.submit(install, world.github.base_url)


async def test_anonymous_visitors_are_sent_to_sign_in_and_see_nothing(web_world: Any) -> None:
    world: WebWorld = await web_world()
    await registered_and_installed(world)
    anonymous = world.browser()
    async with anonymous.session.get(f"{world.url}/status", allow_redirects=False) as response:
        assert response.status == 303
        location = response.headers["Location"]
        assert urlsplit(location).path == "/login"
        assert parse_qs(urlsplit(location).query) == {"next": ["/status"]}
        assert "acme" not in await response.text()
    # Forged or foreign session cookies count as none.
    anonymous.session.cookie_jar.update_cookies({"shepherd_session": "gAAAAAforged"})
    async with anonymous.session.get(f"{world.url}/status", allow_redirects=False) as response:
        assert response.status == 303


async def test_two_users_see_their_own_repositories(web_world: Any) -> None:
    world: WebWorld = await web_world()
    await registered_and_installed(world)
    store = world.ui.store
    for repo in ("acme/api", "acme/web", "acme/docs"):
        await store.append_event(EventSpec(repo, 7, "repair.outcome", {"outcome": "fixed"}))

    alice, bob = world.browser("alice"), world.browser("bob")
    for browser in (alice, bob):
        await browser.get(f"{world.url}/status")  # → sign-in → GitHub authorize page
        [authorize] = forms(browser.text)
        await browser.submit(authorize, browser.url, {"authorize": "1"})
        assert browser.url == f"{world.url}/status", browser.text[:500]
        assert browser.status == 200

    assert "acme/api" in alice.text
    assert "acme/docs" in alice.text
    assert "acme/web" not in alice.text
    assert "acme/web" in bob.text
    assert "acme/api" not in bob.text
    assert ">alice<" in alice.text
    assert ">bob<" in bob.text
    exchanges = world.github.token_exchanges
    assert len(exchanges) == 2
    assert all(e.form["redirect_uri"] == f"{world.url}/login/callback" for e in exchanges)
    world.github.assert_no_violations()


async def test_sign_out_needs_the_session_csrf_token(web_world: Any) -> None:
    world: WebWorld = await web_world()
    await registered_and_installed(world)
    browser = world.browser("alice")
    await browser.get(f"{world.url}/status")
    [authorize] = forms(browser.text)
    await browser.submit(authorize, browser.url, {"authorize": "1"})
    [logout] = [f for f in forms(browser.text) if f.action == "/logout"]

    async with browser.session.post(f"{world.url}/logout", data={"csrf": "wrong"}) as response:
        assert response.status == 403
    async with browser.session.post(
        f"{world.url}/logout",
        data=logout.fields,
        headers={"Origin": "https://evil.example"},
    ) as response:
        assert response.status == 403
    await browser.get(f"{world.url}/status")
    assert browser.url == f"{world.url}/status"  # still signed in
    await browser.submit(logout, world.url)
    assert browser.url == f"{world.url}/"
    async with browser.session.get(f"{world.url}/status", allow_redirects=False) as response:
        assert response.status == 303


async def test_sign_in_refusals(web_world: Any) -> None:
    world: WebWorld = await web_world()
    await registered_and_installed(world)
    browser = world.browser("alice")
    await browser.get(f"{world.url}/login/callback?code=x&state=forged")
    assert browser.status == 400
    await browser.get(f"{world.url}/status")
    [authorize] = forms(browser.text)
    await browser.submit(authorize, browser.url, {"authorize": "0"})  # Cancel on GitHub
    assert browser.status == 403
    assert "cancelled" in browser.text
    assert world.github.token_exchanges == []


async def test_a_revoked_token_ends_the_session(web_world: Any) -> None:
    world: WebWorld = await web_world()
    await registered_and_installed(world)
    browser = world.browser("alice")
    await browser.get(f"{world.url}/status")
    [authorize] = forms(browser.text)
    await browser.submit(authorize, browser.url, {"authorize": "1"})
    world.github.user_tokens.clear()
    world.ui.access.clear()
    async with browser.session.get(f"{world.url}/status", allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"].startswith("/login")
    world.github.violations.clear()  # the 401 was the point


async def test_sign_in_before_registration_explains_itself(web_world: Any) -> None:
    world: WebWorld = await web_world()
    browser = world.browser("alice")
    await browser.get(f"{world.url}/status")
    assert browser.status == 503
    assert "GITHUB_CLIENT_ID" in browser.text
