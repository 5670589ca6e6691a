"""The GitHub calls of the web UI: the manifest conversion, the OAuth code exchange, and what a
signed-in user may see.

These are not installation calls, so they live apart from ``bot/github/client.py``'s client (and from
the REST subset the bot's jobs are held to): the conversion is unauthenticated (the one-hour
``code`` is the credential), the token exchange is on GitHub's *web* host, and the user calls carry
the user's own access token.

- ``POST {api}/app-manifests/{code}/conversions`` (``apps/create-from-manifest``)
  https://docs.github.com/rest/apps/apps#create-a-github-app-from-a-manifest
- ``POST {web}/login/oauth/access_token``
  https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-user-access-token-for-a-github-app
- ``GET {api}/user`` (``users/get-authenticated``), ``GET {api}/user/installations``
  (``apps/list-installations-for-authenticated-user``) and
  ``GET {api}/user/installations/{id}/repositories``
  (``apps/list-installation-repos-for-authenticated-user``): only the installations of *this* App
  that the user can access, and within them only the repositories the user has explicit
  permission on. https://docs.github.com/rest/apps/installations
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.kernel import JSONObject
from bot.kernel.errors import GitHubError

log = logging.getLogger(__name__)

USER_AGENT = "shepherd-webui"
API_VERSION = "2022-11-28"
_TIMEOUT = aiohttp.ClientTimeout(total=30)
#: Pages of 100 followed at most per list: enough for 5,000 repositories per installation.
MAX_PAGES = 50
_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def valid_code(code: str) -> bool:
    """Whether a ``code`` query parameter can be put in a URL path as it is."""
    return bool(_CODE.match(code))


@dataclass(frozen=True)
class UserToken:
    token: str
    #: Epoch seconds; user access tokens expire after 8 hours unless the App opted out.
    expires_at: float


@dataclass(frozen=True)
class Installation:
    id: int
    account: str
    app_id: int | None


@dataclass(frozen=True)
class UserAccess:
    """The installations and repositories one user may see, per GitHub."""

    installations: tuple[Installation, ...]
    repos: frozenset[str]


class GitHubWeb:
    """The web UI's GitHub calls, on one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, *, web_url: str, api_url: str) -> None:
        self.session = session
        self.web_url = web_url.rstrip("/")
        self.api_url = api_url.rstrip("/")

    def _headers(self, token: str | None = None) -> dict[str, str]:
        headers = {
            "Accept": "application/vnd.github+json",
            "User-Agent": USER_AGENT,
            "X-GitHub-Api-Version": API_VERSION,
        }
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def convert_manifest(self, code: str) -> JSONObject:
        """``apps/create-from-manifest``: the new App's id, slug, key, secrets. One use per code."""
        if not valid_code(code):
            raise GitHubError("the manifest code is malformed", status=400)
        url = f"{self.api_url}/app-manifests/{quote(code, safe='')}/conversions"
        data = await self._json("POST", url, headers=self._headers(), expect=201)
        if not isinstance(data, dict):
            raise GitHubError("the manifest conversion did not answer an object", status=201)
        return data

    async def exchange_code(
        self, *, client_id: str, client_secret: str, code: str, redirect_uri: str
    ) -> UserToken:
        """Trade the sign-in ``code`` for a user access token (GitHub answers errors with 200)."""
        form = {
            "client_id": client_id,
            "client_secret": client_secret,
            "code": code,
            "redirect_uri": redirect_uri,
        }
        url = f"{self.web_url}/login/oauth/access_token"
        data = await self._json(
            "POST", url, headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            form=form, expect=200,
        )  # fmt: skip
        if not isinstance(data, dict) or "error" in data or not data.get("access_token"):
            error = data.get("error", "no token") if isinstance(data, dict) else "no token"
            raise GitHubError(f"GitHub refused the sign-in code: {error}", status=400)
        expires_in = float(data.get("expires_in") or 8 * 3600)
        return UserToken(token=str(data["access_token"]), expires_at=time.time() + expires_in)

    async def get_user(self, token: str) -> JSONObject:
        """``users/get-authenticated``."""
        data = await self._json(
            "GET", f"{self.api_url}/user", headers=self._headers(token), expect=200
        )
        if not isinstance(data, dict) or "login" not in data or "id" not in data:
            raise GitHubError("GET /user answered without a login", status=200)
        return data

    async def user_access(self, token: str, *, app_id: int | None) -> UserAccess:
        """``apps/list-installations-for-authenticated-user``, then
        ``apps/list-installation-repos-for-authenticated-user`` for each installation."""
        installations: list[Installation] = []
        repos: set[str] = set()
        for item in await self._pages(f"{self.api_url}/user/installations", token, "installations"):
            inst = Installation(
                id=int(item["id"]),
                account=str((item.get("account") or {}).get("login", "")),
                app_id=int(item["app_id"]) if item.get("app_id") is not None else None,
            )
            # The user token only lists this App's installations; the check keeps it that way
            # should a token of another App ever reach here.
            if app_id is not None and inst.app_id not in (None, app_id):
                continue
            installations.append(inst)
            url = f"{self.api_url}/user/installations/{inst.id}/repositories"
            for repo in await self._pages(url, token, "repositories"):
                repos.add(str(repo["full_name"]))
        return UserAccess(installations=tuple(installations), repos=frozenset(repos))

    async def _pages(self, url: str, token: str, key: str) -> list[JSONObject]:
        items: list[JSONObject] = []
        next_url: str | None = f"{url}?per_page=100"
        for _ in range(MAX_PAGES):
            if next_url is None:
                return items
            data, links = await self._json_and_links(next_url, token)
            page = data.get(key) if isinstance(data, dict) else None
            if not isinstance(page, list):
                raise GitHubError(f"GET {url} answered without {key!r}", status=200)
            items.extend(item for item in page if isinstance(item, dict))
            link = links.get("next")
            next_url = str(link["url"]) if link is not None else None
        log.warning("GET %s: stopped after %d pages", url, MAX_PAGES)
        return items

    async def _json_and_links(self, url: str, token: str) -> tuple[Any, Any]:
        try:
            async with self.session.get(
                url, headers=self._headers(token), timeout=_TIMEOUT
            ) as response:
                if response.status != 200:
                    raise _error("GET", url, response.status, await response.text())
                return await response.json(content_type=None), response.links
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise GitHubError(f"GET {url}: {exc}", retryable=True) from exc

    async def _json(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        expect: int,
        form: dict[str, str] | None = None,
    ) -> Any:
        try:
            async with self.session.request(
                method, url, headers=headers, data=form, timeout=_TIMEOUT
            ) as response:
                if response.status != expect:
                    raise _error(method, url, response.status, await response.text())
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise GitHubError(f"{method} {url}: {exc}", retryable=True) from exc


def _error(method: str, url: str, status: int, text: str) -> GitHubError:
    path = url.split("?", 1)[0]
    message = text[:200].replace("\n", " ")
    return GitHubError(
        f"GitHub {method} {path}: {status} {message}", status=status, retryable=status >= 500
    )
