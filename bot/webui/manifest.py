"""The App manifest the setup page posts to GitHub, built from ``app.yml`` (pure).

GitHub's manifest flow: https://docs.github.com/apps/sharing-github-apps/registering-a-github-app-from-a-manifest
``app.yml`` keeps the permissions and events (each explained there); this module only puts in the
URLs of this deployment, all under ``SHEPHERD_PUBLIC_URL``.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from urllib.parse import quote, urlencode

import yaml

from bot.kernel import JSONObject
from bot.kernel.errors import ConfigError

#: Where GitHub sends people after the App is created, after they sign in, after they install.
CALLBACK_PATH = "/setup/callback"
SIGNIN_CALLBACK_PATH = "/login/callback"
AFTER_INSTALL_PATH = "/status"

# GitHub organisation logins: alphanumerics and single hyphens, at most 39 characters.
_ORG = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_SOURCE_MANIFEST = Path(__file__).resolve().parents[2] / "app.yml"


def manifest_template() -> JSONObject:
    """``app.yml``: packaged beside this module in a wheel, at the repository root otherwise."""
    packaged = resources.files("bot.webui").joinpath("app.yml")
    try:
        text = packaged.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        try:
            text = _SOURCE_MANIFEST.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"the App manifest app.yml is missing ({exc})") from exc
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError("app.yml is not a mapping")
    return data


def build_manifest(template: JSONObject, public_url: str) -> JSONObject:
    """The manifest for this deployment: ``app.yml`` with every URL under ``public_url``."""
    base = public_url.rstrip("/")
    manifest: JSONObject = {
        key: template[key]
        for key in ("name", "url", "description", "public", "default_permissions")
        if key in template
    }
    manifest["default_events"] = list(template.get("default_events", []))
    manifest["hook_attributes"] = {"url": f"{base}/webhook", "active": True}
    manifest["redirect_url"] = f"{base}{CALLBACK_PATH}"
    manifest["callback_urls"] = [f"{base}{SIGNIN_CALLBACK_PATH}"]
    manifest["setup_url"] = f"{base}{AFTER_INSTALL_PATH}"
    # Sign-in happens when someone opens /status, not at installation.
    manifest["request_oauth_on_install"] = False
    return manifest


def valid_org(org: str) -> bool:
    return bool(_ORG.match(org))


def registration_url(web_url: str, state: str, org: str | None = None) -> str:
    """Where the setup form posts the manifest: the personal account's or an organisation's
    new-App page."""
    base = web_url.rstrip("/")
    path = (
        f"/organizations/{quote(org, safe='')}/settings/apps/new" if org else "/settings/apps/new"
    )
    return f"{base}{path}?{urlencode({'state': state})}"
