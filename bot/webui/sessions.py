"""Cookies the web UI trusts: sealed sessions, browser bindings and one-time states.

A cookie's value is a Fernet token (``cryptography``: AES-128-CBC plus HMAC-SHA256, with the time
it was made): tampering is detected, the content (a user access token) stays confidential, and an
old token is refused by age. Each purpose (session, setup binding, sign-in binding) seals with its
own key derived from the one secret, so a value made for one purpose is refused by the others.
The cookies themselves are HttpOnly, SameSite=Lax (GitHub's redirects back are top-level GET
navigations, which Lax lets through), and Secure when the public URL is https.

``OneTimeStates`` are the ``state`` parameters of the two GitHub flows: unguessable, bound to the
browser that started the flow (a hash of its binding cookie), valid for a limited time, and
consumed by the first callback that presents them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bot.kernel import JSONObject

SESSION_COOKIE = "shepherd_session"
SETUP_COOKIE = "shepherd_setup"
SIGNIN_COOKIE = "shepherd_signin"


class CookieBox:
    """Seals and opens cookie values, one key per purpose."""

    def __init__(self, secret: bytes, *, secure: bool) -> None:
        self._secret = secret
        self.secure = secure
        self._fernets: dict[str, Fernet] = {}

    def _fernet(self, purpose: str) -> Fernet:
        fernet = self._fernets.get(purpose)
        if fernet is None:
            key = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=b"shepherd-webui",
                info=purpose.encode(),
            ).derive(self._secret)
            fernet = self._fernets[purpose] = Fernet(base64.urlsafe_b64encode(key))
        return fernet

    def seal(self, purpose: str, data: JSONObject) -> str:
        return self._fernet(purpose).encrypt(json.dumps(data).encode()).decode()

    def open(self, purpose: str, value: str | None, *, max_age: int) -> JSONObject | None:
        """The sealed data, or None when missing, forged, made for another purpose, or too old."""
        if not value:
            return None
        try:
            raw = self._fernet(purpose).decrypt(value.encode(), ttl=max_age)
            data = json.loads(raw)
        except (InvalidToken, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def set(
        self, response: web.StreamResponse, name: str, purpose: str, data: JSONObject, *,
        max_age: int, path: str = "/",
    ) -> None:  # fmt: skip
        response.set_cookie(
            name,
            self.seal(purpose, data),
            max_age=max_age,
            path=path,
            httponly=True,
            samesite="Lax",
            secure=self.secure,
        )

    def clear(self, response: web.StreamResponse, name: str, *, path: str = "/") -> None:
        response.del_cookie(name, path=path)


def binding_hash(nonce: str) -> str:
    """What a state records of the browser's binding nonce (never the nonce itself)."""
    return hashlib.sha256(nonce.encode()).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


class StateError(Exception):
    """A callback's ``state`` is unknown, expired, used, or from another browser."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Pending:
    binding: str
    expires: float
    data: JSONObject


class OneTimeStates:
    """``state`` values issued to one browser each and consumed once (in memory, bounded)."""

    def __init__(self, *, ttl: float, capacity: int = 1000) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._pending: OrderedDict[str, _Pending] = OrderedDict()

    def issue(self, nonce: str, **data: Any) -> str:
        self._expire()
        while len(self._pending) >= self.capacity:
            self._pending.popitem(last=False)  # the oldest goes: a flood cannot grow memory
        state = secrets.token_urlsafe(32)
        self._pending[state] = _Pending(binding_hash(nonce), time.monotonic() + self.ttl, data)
        return state

    def consume(self, state: str, nonce: str | None) -> JSONObject:
        """The state's data. The state is gone afterwards, whether or not the browser matched:
        a state shown to the wrong browser is burnt, never retried."""
        pending = self._pending.pop(state, None)
        if pending is None or pending.expires < time.monotonic():
            raise StateError("unknown, expired or already used")
        if nonce is None or not hmac.compare_digest(pending.binding, binding_hash(nonce)):
            raise StateError("started in another browser")
        return pending.data

    def clear(self) -> None:
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)

    def _expire(self) -> None:
        now = time.monotonic()
        for state in [s for s, p in self._pending.items() if p.expires < now]:
            del self._pending[state]


@dataclass(frozen=True)
class Session:
    """A signed-in GitHub user. The user access token never leaves the sealed cookie."""

    user_id: int
    login: str
    token: str
    csrf: str
    expires_at: float

    def to_cookie(self) -> JSONObject:
        return {
            "uid": self.user_id,
            "login": self.login,
            "token": self.token,
            "csrf": self.csrf,
            "exp": self.expires_at,
        }

    @classmethod
    def from_cookie(cls, data: JSONObject | None) -> Session | None:
        if data is None:
            return None
        try:
            session = cls(
                user_id=int(data["uid"]),
                login=str(data["login"]),
                token=str(data["token"]),
                csrf=str(data["csrf"]),
                expires_at=float(data["exp"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return session if session.expires_at > time.time() else None

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf, presented)
