"""Shepherd's settings: one pydantic-settings object, built once in ``main()``.

The environment contract is DESIGN.md's: GITHUB_APP_ID, GITHUB_PRIVATE_KEY or
GITHUB_PRIVATE_KEY_PATH, GITHUB_WEBHOOK_SECRET, GITHUB_API_URL, DATABASE_URL, ANTHROPIC_API_KEY,
ANTHROPIC_BASE_URL, SHEPHERD_DATA_DIR. Everything else Shepherd-specific is ``SHEPHERD_*``; the
web UI adds GITHUB_WEB_URL, GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET (the App's OAuth client, for
"Sign in with GitHub"). An App registered through the setup page is stored in the data dir and
applied on top of these by ``bot.webui.credentials.apply_stored_app``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.kernel.errors import ConfigError

DEFAULT_MODEL = "claude-sonnet-4-6"
MIN_RETENTION_DAYS = 7


def _env(*names: str) -> Any:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Every knob of a Shepherd process. Secrets are ``SecretStr`` and never printed."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    github_app_id: int | None = Field(None, validation_alias=_env("GITHUB_APP_ID"))
    github_private_key: SecretStr | None = Field(None, validation_alias=_env("GITHUB_PRIVATE_KEY"))
    github_private_key_path: Path | None = Field(
        None, validation_alias=_env("GITHUB_PRIVATE_KEY_PATH")
    )
    github_webhook_secret: SecretStr | None = Field(
        None, validation_alias=_env("GITHUB_WEBHOOK_SECRET")
    )
    github_api_url: str = Field("https://api.github.com", validation_alias=_env("GITHUB_API_URL"))
    #: GitHub's web host (App registration, OAuth sign-in, install pages). Unset: derived from
    #: GITHUB_API_URL (see ``web_url``).
    github_web_url: str | None = Field(None, validation_alias=_env("GITHUB_WEB_URL"))
    #: The App's OAuth client, used by "Sign in with GitHub" on /status (user access tokens).
    github_client_id: str | None = Field(None, validation_alias=_env("GITHUB_CLIENT_ID"))
    github_client_secret: SecretStr | None = Field(
        None, validation_alias=_env("GITHUB_CLIENT_SECRET")
    )
    #: Where GitHub and browsers reach this server (the webhook URL, the OAuth callbacks).
    #: Unset: ``http://{host}:{port}`` of ``shepherd serve``.
    public_url: str | None = Field(None, validation_alias=_env("SHEPHERD_PUBLIC_URL"))
    #: Key material for the web UI's session cookies. Unset: a random key kept in the data dir
    #: (``session-key``, mode 0600); set it when several servers share sign-ins.
    session_secret: SecretStr | None = Field(None, validation_alias=_env("SHEPHERD_SESSION_SECRET"))
    #: The App's slug (``@<slug> fix`` mentions) and bot login (``<slug>[bot]``, loop guard).
    app_slug: str = Field("shepherd", validation_alias=_env("SHEPHERD_APP_SLUG"))

    data_dir: Path = Field(Path("data"), validation_alias=_env("SHEPHERD_DATA_DIR"))
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))

    anthropic_api_key: SecretStr | None = Field(None, validation_alias=_env("ANTHROPIC_API_KEY"))
    anthropic_base_url: str | None = Field(None, validation_alias=_env("ANTHROPIC_BASE_URL"))
    llm_model: str = Field(DEFAULT_MODEL, validation_alias=_env("SHEPHERD_LLM_MODEL"))

    workers: int = Field(2, ge=0, le=64, validation_alias=_env("SHEPHERD_WORKERS"))
    job_lease_seconds: float = Field(120.0, gt=0, validation_alias=_env("SHEPHERD_JOB_LEASE"))
    #: How long a worker holds a delivery it is dispatching. After a crash, the deliveries it held
    #: are dispatched again once this expires (handlers take milliseconds; keep it well above that).
    delivery_lease_seconds: float = Field(
        60.0, gt=0, validation_alias=_env("SHEPHERD_DELIVERY_LEASE")
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, validation_alias=_env("SHEPHERD_SHUTDOWN_GRACE")
    )
    #: Debounce before a repair job runs, so a burst of check events for one SHA is one job.
    repair_debounce_seconds: float = Field(
        10.0, ge=0, validation_alias=_env("SHEPHERD_REPAIR_DEBOUNCE")
    )
    #: How long a repair job waits for the head SHA's other checks to finish, and how often it looks.
    settle_timeout_seconds: float = Field(
        600.0, ge=0, validation_alias=_env("SHEPHERD_SETTLE_TIMEOUT")
    )
    settle_poll_seconds: float = Field(15.0, gt=0, validation_alias=_env("SHEPHERD_SETTLE_POLL"))
    #: Days a finished delivery (and its body) is kept; 0 keeps everything. At least 7 when set:
    #: GitHub lets deliveries be redelivered for 3 days (7 on GHES), and only a stored delivery is
    #: recognised as a duplicate.
    #: https://docs.github.com/webhooks/testing-and-troubleshooting-webhooks/redelivering-webhooks
    retention_days: int = Field(30, ge=0, validation_alias=_env("SHEPHERD_RETENTION_DAYS"))
    allow_unsandboxed: bool = Field(False, validation_alias=_env("SHEPHERD_ALLOW_UNSANDBOXED"))
    #: The warm pool of prepared job environments (default ``<data dir>/jobenv/pool``) and its
    #: size limit; the least recently used environments go first.
    jobenv_pool_dir: Path | None = Field(None, validation_alias=_env("SHEPHERD_JOBENV_POOL"))
    jobenv_pool_bytes: int = Field(
        5 * 1024**3, ge=0, validation_alias=_env("SHEPHERD_JOBENV_POOL_BYTES")
    )
    #: Host names setup steps may download from (comma-separated; ``+host`` adds to the default
    #: list of package registries).
    setup_registries: str | None = Field(None, validation_alias=_env("SHEPHERD_SETUP_REGISTRIES"))
    log_format: str = Field(
        "json", pattern="^(json|text)$", validation_alias=_env("SHEPHERD_LOG_FORMAT")
    )
    log_level: str = Field("INFO", validation_alias=_env("SHEPHERD_LOG_LEVEL"))
    #: Largest webhook body accepted. GitHub caps payloads at 25 MB.
    max_body_bytes: int = Field(25 * 1024 * 1024, validation_alias=_env("SHEPHERD_MAX_BODY"))

    @field_validator("github_api_url", "anthropic_base_url", "github_web_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if 0 < value < MIN_RETENTION_DAYS:
            raise ValueError(
                f"must be 0 (keep everything) or at least {MIN_RETENTION_DAYS} days, so that a "
                "redelivery is still recognised as a duplicate"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = urlsplit(value).scheme
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                f"must start with sqlite:/// or postgresql:// (got scheme {scheme or 'none'!r})"
            )
        return value

    @model_validator(mode="after")
    def _read_private_key(self) -> Settings:
        if self.github_private_key is None and self.github_private_key_path is not None:
            try:
                text = self.github_private_key_path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(
                    f"GITHUB_PRIVATE_KEY_PATH: cannot read {self.github_private_key_path}: "
                    f"{exc.strerror}"
                ) from exc
            self.github_private_key = SecretStr(text)
        if self.github_private_key is not None:
            # Keys pasted into one-line env files often carry literal "\\n" sequences.
            pem = self.github_private_key.get_secret_value().replace("\\n", "\n")
            _check_pem(pem)
            self.github_private_key = SecretStr(pem)
        return self

    @property
    def effective_database_url(self) -> str:
        """DATABASE_URL, or the embedded SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'shepherd.db').resolve()}"

    @property
    def github_enabled(self) -> bool:
        """GitHub writes need the App id and its private key."""
        return self.github_app_id is not None and self.github_private_key is not None

    @property
    def bot_login(self) -> str:
        return f"{self.app_slug}[bot]"

    @property
    def web_url(self) -> str:
        """GITHUB_WEB_URL, or the web host that goes with GITHUB_API_URL."""
        return self.github_web_url or derive_web_url(self.github_api_url)

    @property
    def sign_in_enabled(self) -> bool:
        return self.github_client_id is not None and self.github_client_secret is not None


def derive_web_url(api_url: str) -> str:
    """GitHub's web host for an API URL.

    ``https://api.github.com`` → ``https://github.com``; GitHub Enterprise Server serves the API
    under the web host (``https://HOST/api/v3`` → ``https://HOST``); GitHub Enterprise Cloud with
    data residency puts it on a subdomain (``https://api.SUB.ghe.com`` → ``https://SUB.ghe.com``).
    Anything else: ``https://github.com`` (set GITHUB_WEB_URL then).
    """
    parts = urlsplit(api_url.rstrip("/"))
    if parts.path.endswith("/api/v3"):
        return f"{parts.scheme}://{parts.netloc}{parts.path.removesuffix('/api/v3')}"
    host = parts.hostname or ""
    if host == "api.github.com":
        return "https://github.com"
    if host.startswith("api.") and host.endswith(".ghe.com"):
        netloc = parts.netloc.replace("api.", "", 1)
        return f"{parts.scheme}://{netloc}"
    return "https://github.com"


def _check_pem(text: str) -> None:
    # Load the key now so a bad key fails at start-up, not in the first job that needs a token.
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("GitHub private key is not a readable PEM private key") from exc


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning a validation error into one clear ``ConfigError`` line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            name = _ENV_NAMES.get(where, where)
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{name}: {message}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


_ENV_NAMES = {
    name: str(field.validation_alias.choices[0])  # type: ignore[union-attr]
    for name, field in Settings.model_fields.items()
    if field.validation_alias is not None
}
