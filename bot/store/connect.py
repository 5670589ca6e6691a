"""``open_store(url)``: the backend ``DATABASE_URL`` names. Apart from ``bot.store`` (the records
and the ``Store`` protocol) so that the event log's readers never load asyncpg or sqlite3."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot.kernel.errors import ConfigError
from bot.store.base import Store
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore


def open_store(database_url: str) -> Store:
    """The store for ``database_url``, not yet opened (call ``await store.open()``).

    Raises ``ConfigError`` for a malformed URL or an unknown scheme. The URL is never echoed
    whole in errors, since it may hold a password.
    """
    try:
        parts = urlsplit(database_url.strip())
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL is not a valid URL: {exc}.") from exc
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        return _sqlite(parts.netloc, parts.path, parts.query)
    if scheme in ("postgresql", "postgres"):
        return _postgres(database_url.strip())
    raise ConfigError(
        f"DATABASE_URL must start with sqlite:/// or postgresql://, not {scheme or 'no scheme'}:."
    )


def _sqlite(netloc: str, path: str, query: str) -> SqliteStore:
    if netloc or query or not path.startswith("/") or path.rstrip("/") == "" or ":memory:" in path:
        raise ConfigError(
            "A SQLite DATABASE_URL must be sqlite:/// followed by an absolute file path, "
            "e.g. sqlite:////var/lib/shepherd/shepherd.db."
        )
    # sqlite:////abs/path (SQLAlchemy's spelling of an absolute path) means the same file.
    return SqliteStore(Path("/" + path.lstrip("/")))


def _postgres(url: str) -> PostgresStore:
    parts = urlsplit(url)
    try:
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL has an invalid port: {exc}.") from exc
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == "schema"]
    if len(schemas) > 1:
        raise ConfigError("DATABASE_URL names more than one schema= parameter.")
    rest = [(name, value) for name, value in query if name != "schema"]
    # asyncpg would send an unknown query parameter to the server as a setting: take ours out.
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    return PostgresStore(dsn, schema=schemas[0] if schemas else None)
