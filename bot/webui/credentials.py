"""The GitHub App that the setup page registered: stored in the data dir, applied to the settings.

``github-app.json`` holds what GitHub's manifest conversion returned (id, slug, private key,
webhook secret, OAuth client id and secret), readable by the service user only (mode 0600). It is
written once, without ever replacing an existing file: a second registration cannot overwrite the
first. Settings from the environment win over the file as a whole when ``GITHUB_APP_ID`` is set
there (an operator who configures the App by hand keeps doing so).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from bot.kernel import JSONObject
from bot.kernel.errors import ConfigError
from bot.kernel.settings import Settings, _check_pem

log = logging.getLogger(__name__)

APP_FILE = "github-app.json"
#: The development secret ``shepherd serve --generate-secret`` keeps until an App is registered.
DEV_SECRET_FILE = "webhook-secret"  # noqa: S105 (a file name, not a secret)
SESSION_KEY_FILE = "session-key"
PRIVATE_MODE = 0o600


@dataclass(frozen=True)
class AppCredentials:
    """A registered GitHub App, as ``POST /app-manifests/{code}/conversions`` described it."""

    app_id: int
    slug: str
    name: str
    html_url: str
    owner: str
    pem: str
    webhook_secret: str | None
    client_id: str
    client_secret: str
    #: The GitHub it belongs to, so a stored App is not used against another host by mistake.
    web_url: str
    api_url: str
    created_at: str

    def __repr__(self) -> str:  # never print the secrets
        return f"AppCredentials(app_id={self.app_id}, slug={self.slug!r}, owner={self.owner!r})"

    @classmethod
    def from_conversion(cls, data: JSONObject, *, web_url: str, api_url: str) -> AppCredentials:
        """Validate the conversion's answer; raises ``ValueError`` naming what is wrong."""
        try:
            app_id = int(data["id"])
            slug = str(data["slug"])
            pem = str(data["pem"])
            client_id = str(data["client_id"])
            client_secret = str(data["client_secret"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the conversion answer lacks a field: {exc}") from exc
        _check_pem(pem)
        secret = data.get("webhook_secret")
        owner = data.get("owner") or {}
        return cls(
            app_id=app_id,
            slug=slug,
            name=str(data.get("name") or slug),
            html_url=str(data.get("html_url") or f"{web_url}/apps/{slug}"),
            owner=str(owner.get("login", "")) if isinstance(owner, dict) else "",
            pem=pem,
            webhook_secret=str(secret) if secret else None,
            client_id=client_id,
            client_secret=client_secret,
            web_url=web_url,
            api_url=api_url,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def install_url(self) -> str:
        return f"{self.web_url}/apps/{self.slug}/installations/new"


def app_file(data_dir: Path) -> Path:
    return data_dir / APP_FILE


def load_app(data_dir: Path) -> AppCredentials | None:
    """The stored App, or None when none was registered. ``ConfigError`` if the file is bad."""
    path = app_file(data_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
        creds = AppCredentials(**data)
        _check_pem(creds.pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not a readable GitHub App record ({exc}); move it away and register "
            "the App again, or configure GITHUB_APP_ID and the key in the environment"
        ) from None
    return creds


def save_app(data_dir: Path, creds: AppCredentials) -> Path:
    """Write ``github-app.json`` (mode 0600) once. ``FileExistsError`` if an App is stored.

    The record is written to a private temporary file, flushed to disk, then linked into place:
    ``link`` fails when the name exists, so two racing registrations cannot both win, and a crash
    leaves either no record or a whole one.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    final = app_file(data_dir)
    tmp = data_dir / f".{APP_FILE}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(creds), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(data_dir)
    return final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def apply_app(settings: Settings, creds: AppCredentials) -> None:
    """Make ``settings`` use ``creds``: the running server reads these on every request."""
    settings.github_app_id = creds.app_id
    settings.github_private_key = SecretStr(creds.pem)
    if creds.webhook_secret is not None:
        settings.github_webhook_secret = SecretStr(creds.webhook_secret)
    settings.github_client_id = creds.client_id
    settings.github_client_secret = SecretStr(creds.client_secret)
    if "app_slug" not in settings.model_fields_set:
        settings.app_slug = creds.slug


def apply_stored_app(settings: Settings) -> AppCredentials | None:
    """Apply the App stored in the data dir unless the environment configures one itself."""
    creds = load_app(settings.data_dir)
    if creds is None:
        return None
    if settings.github_app_id is not None:
        if settings.github_app_id != creds.app_id:
            log.warning(
                "GITHUB_APP_ID=%s is set, so the App stored in %s (id %s) is not used",
                settings.github_app_id,
                app_file(settings.data_dir),
                creds.app_id,
            )
        return None
    env_secret = settings.github_webhook_secret
    if env_secret is not None and creds.webhook_secret not in (None, env_secret.get_secret_value()):
        log.warning(
            "GITHUB_WEBHOOK_SECRET differs from the stored App's secret; GitHub signs with the "
            "App's, so that one is used"
        )
    apply_app(settings, creds)
    return creds


def session_key(settings: Settings) -> bytes:
    """The key material for session cookies: SHEPHERD_SESSION_SECRET, or one kept in the data
    dir (created once, mode 0600) so sign-ins survive a restart."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    path = settings.data_dir / SESSION_KEY_FILE
    try:
        return bytes.fromhex(path.read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise ConfigError(f"{path} is not a hex key; delete it to make a new one") from exc
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:  # another process made it first: use theirs
        return bytes.fromhex(path.read_text(encoding="utf-8").strip())
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key.hex() + "\n")
    return key
