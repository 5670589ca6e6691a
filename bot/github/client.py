"""GitHub App authentication and a typed REST client (gidgethub over aiohttp).

Only the operations listed in ``../shared/github/openapi-subset.json`` are called from here. This is
the one boundary where HTTP and gidgethub errors become :mod:`bot.kernel.errors` exceptions.

Secrets: the App private key is kept as a ``SecretStr`` and installation tokens never appear in
log records, ``repr()`` output or exception messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol, cast
from urllib.parse import quote, urlsplit

import aiohttp
import gidgethub
import gidgethub.aiohttp
from cachetools import LRUCache, TTLCache
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr

from bot.kernel import JSONObject
from bot.kernel.errors import GitHubError, GitHubRateLimited, PushRejected

__all__ = [
    "API_VERSION",
    "DEFAULT_API_URL",
    "GitHubApp",
    "GitHubClient",
    "GitHubMetrics",
    "InstallationToken",
    "RetryPolicy",
]

log = logging.getLogger(__name__)

DEFAULT_API_URL: Final = "https://api.github.com"
# https://docs.github.com/en/rest/about-the-rest-api/api-versions
API_VERSION: Final = "2022-11-28"
DEFAULT_USER_AGENT: Final = "shepherd-bot"
#: The Checks API accepts at most 50 annotations per create/update request.
ANNOTATIONS_PER_REQUEST: Final = 50

JSON_ACCEPT: Final = "application/vnd.github+json"
DIFF_ACCEPT: Final = "application/vnd.github.diff"
RAW_ACCEPT: Final = "application/vnd.github.raw"


class GitHubMetrics(Protocol):
    """Hook the web layer implements to export client metrics (e.g. to Prometheus)."""

    def observe_call(self, method: str, status: int) -> None:
        """One HTTP attempt finished; ``status`` is 0 when no response arrived (timeout, reset)."""

    def observe_rate_limit(self, remaining: int) -> None:
        """GitHub reported how many requests are left in the current primary window."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on how long and how often one logical request is retried."""

    max_retries: int = 3
    #: Total seconds one logical request may spend sleeping between attempts.
    max_total_wait: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    #: Per-attempt timeout in seconds.
    request_timeout: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, for 5xx answers and transport errors."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        # Jitter spreads retries of many workers hitting the same outage.
        jitter: float = random.uniform(0.5, 1.0)  # noqa: S311 - not cryptographic
        return ceiling * jitter


@dataclass(frozen=True)
class InstallationToken:
    """An installation access token; ``token`` is excluded from ``repr``."""

    token: str = field(repr=False)
    expires_at: datetime
    repository: str | None = None


@dataclass(frozen=True)
class _CachedResponse:
    etag: str
    headers: CIMultiDictProxy[str]
    body: bytes


_ETagCache = LRUCache[tuple[str, str, str], _CachedResponse]

_RETRYABLE_5XX: Final = frozenset({500, 502, 503, 504})
# GitHub asks clients to wait at least a minute after a secondary rate limit without retry-after.
# https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit
_SECONDARY_LIMIT_DEFAULT_WAIT: Final = 60.0


# False while a non-idempotent request (e.g. creating a comment) is in flight: a 5xx or a timeout
# may hide a success, so retrying could post twice. Rate-limit answers are still retried because
# GitHub did not process those requests. A ContextVar keeps concurrent tasks on one client apart.
_IDEMPOTENT: contextvars.ContextVar[bool] = contextvars.ContextVar("idempotent", default=True)


def _rate_limit_wait(status: int, headers: Mapping[str, str], body: bytes) -> float | None:
    """Seconds GitHub asks us to wait before retrying, or None when this is not a rate limit."""
    if status not in (403, 429):
        return None
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(retry_after))
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        with contextlib.suppress(ValueError):
            return max(0.0, float(headers["x-ratelimit-reset"]) - time.time())
    if status == 429 or b"secondary rate limit" in body.lower():
        return _SECONDARY_LIMIT_DEFAULT_WAIT
    return None


def _path_of(url: str) -> str:
    """The path and query of a URL, for log lines and error messages."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _q(segment: str | int) -> str:
    """Percent-encode one path segment (branch names and usernames are untrusted)."""
    return quote(str(segment), safe="")


def _qpath(path: str) -> str:
    """Percent-encode a slash-separated path (file paths, git refs) keeping the slashes."""
    return quote(path, safe="/")


class InstallationThrottle:
    """Shared by every client of one installation: when GitHub says "slow down" to one of them,
    all of them wait, instead of each hammering until it is told too.
    https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#handle-rate-limit-errors-appropriately
    """

    def __init__(self) -> None:
        self._until = 0.0

    def pause(self, seconds: float) -> None:
        self._until = max(self._until, time.monotonic() + seconds)

    @property
    def remaining(self) -> float:
        return max(0.0, self._until - time.monotonic())


TokenSource = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class PlannedWrite:
    """A write a dry-run client did not make."""

    method: str
    path: str
    body: Any


@dataclass(frozen=True)
class _Retry:
    """One more attempt: after ``delay`` seconds, because of ``reason``."""

    delay: float
    reason: str
    #: The shared throttle was paused for this wait (the wait itself honours it).
    paused: bool = False


class GitHubClient(gidgethub.aiohttp.GitHubAPI):
    """gidgethub's aiohttp client plus versioning, ETags, bounded retries and typed operations.

    ``_request`` is gidgethub's single I/O seam: every retry, ETag and metrics concern lives there.
    Library exceptions are mapped to :mod:`bot.kernel.errors` in :meth:`_mapped`.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token: str | None = None,
        app_id: str | None = None,
        private_key: str | None = None,
        base_url: str = DEFAULT_API_URL,
        user_agent: str = DEFAULT_USER_AGENT,
        retry: RetryPolicy | None = None,
        metrics: GitHubMetrics | None = None,
        etag_cache: _ETagCache | None = None,
        cache_scope: str = "",
        dry_run: list[PlannedWrite] | None = None,
        throttle: InstallationThrottle | None = None,
        token_source: TokenSource | None = None,
    ) -> None:
        super().__init__(
            session,
            user_agent,
            oauth_token=token,
            app_id=app_id,
            private_key=private_key,
            base_url=base_url,
        )
        self._token = token
        self._retry = retry or RetryPolicy()
        self._metrics = metrics
        self._etag_cache = etag_cache
        self._cache_scope = cache_scope
        self._dry_run = dry_run
        self._throttle = throttle
        self._token_source = token_source

    def __repr__(self) -> str:
        return f"GitHubClient(base_url={self.base_url!r}, scope={self._cache_scope!r})"

    # --- transport -------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Remove the token from text that may reach a log or an exception message."""
        if self._token:
            text = text.replace(self._token, "***")
        return text

    def _observe(self, method: str, status: int, headers: Mapping[str, str] | None) -> None:
        if self._metrics is None:
            return
        self._metrics.observe_call(method, status)
        if headers is not None and "x-ratelimit-remaining" in headers:
            with contextlib.suppress(ValueError):
                self._metrics.observe_rate_limit(int(headers["x-ratelimit-remaining"]))

    async def _send_once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        allow_redirects: bool,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        timeout = aiohttp.ClientTimeout(total=self._retry.request_timeout)
        async with self._session.request(
            method,
            url,
            headers=headers,
            data=body,
            allow_redirects=allow_redirects,
            timeout=timeout,
        ) as response:
            return response.status, response.headers, await response.read()

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        *,
        allow_redirects: bool = True,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """Send with bounded retries on rate limits, 5xx and transport errors."""
        attempt = 0
        waited = 0.0
        slept_for_limit = False  # our own wait below already honoured the pause we set
        while True:
            attempt += 1
            if self._throttle is not None and not slept_for_limit and self._throttle.remaining > 0:
                await self.sleep(self._throttle.remaining)
            slept_for_limit = False
            try:
                response = await self._send_once(
                    method, url, headers, body, allow_redirects=allow_redirects
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                retry = self._after_transport_error(method, url, exc, attempt, waited)
            else:
                answer_retry = self._after_answer(method, response, attempt, waited)
                if answer_retry is None:
                    return response
                retry = answer_retry
                slept_for_limit = retry.paused
            log.warning(
                "GitHub %s %s: %s, retry %d/%d in %.2fs",
                method,
                _path_of(url),
                retry.reason,
                attempt,
                self._retry.max_retries,
                retry.delay,
            )
            await self.sleep(retry.delay)
            waited += retry.delay

    def _after_transport_error(
        self, method: str, url: str, exc: Exception, attempt: int, waited: float
    ) -> _Retry:
        """The retry after a transport error; GitHubError when it is not idempotent or the
        retries are spent."""
        self._observe(method, 0, None)
        delay = self._retry.backoff(attempt)
        if (
            not _IDEMPOTENT.get()
            or attempt > self._retry.max_retries
            or waited + delay > self._retry.max_total_wait
        ):
            raise GitHubError(
                self._scrub(
                    f"GitHub {method} {_path_of(url)} failed after {attempt} attempts: "
                    f"{type(exc).__name__}"
                ),
                retryable=True,
            ) from exc
        return _Retry(delay, type(exc).__name__)

    def _after_answer(
        self,
        method: str,
        response: tuple[int, CIMultiDictProxy[str], bytes],
        attempt: int,
        waited: float,
    ) -> _Retry | None:
        """The retry after a rate limit or a 5xx; None to give the answer to the caller."""
        status, resp_headers, data = response
        self._observe(method, status, resp_headers)
        paused = False
        wait = _rate_limit_wait(status, resp_headers, data)
        if wait is not None:
            delay, reason = wait, f"rate limited ({status})"
            if self._throttle is not None:
                self._throttle.pause(wait)
                paused = True
        elif status in _RETRYABLE_5XX and _IDEMPOTENT.get():
            delay, reason = self._retry.backoff(attempt), f"server error ({status})"
        else:
            return None
        if attempt > self._retry.max_retries or waited + delay > self._retry.max_total_wait:
            # Give the answer to gidgethub, which raises; _mapped turns that into ours.
            return None
        return _Retry(delay, reason, paused)

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        request_headers = dict(headers)
        request_headers["x-github-api-version"] = API_VERSION
        if self._token_source is not None:
            # A job may outlive the token it started with (tokens last an hour): take the
            # current one from the App's cache, which refreshes it before it expires.
            self._token = await self._token_source()
            request_headers["authorization"] = f"token {self._token}"
        if self._dry_run is not None and method != "GET":
            return self._planned(method, url, body)
        cache_key: tuple[str, str, str] | None = None
        cached: _CachedResponse | None = None
        if method == "GET" and self._etag_cache is not None:
            # Keyed by Accept too: the same URL answers JSON or a diff depending on it.
            cache_key = (self._cache_scope, url, request_headers.get("accept", ""))
            cached = self._etag_cache.get(cache_key)
            if cached is not None:
                request_headers["if-none-match"] = cached.etag
        status, resp_headers, data = await self._send(method, url, request_headers, body)
        if cache_key is not None and self._etag_cache is not None:
            if status == 304 and cached is not None:
                # Conditional hits do not count against the rate limit; serve the stored body.
                # https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate
                merged = CIMultiDict(cached.headers)
                for name in ("x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-limit"):
                    if name in resp_headers:
                        merged[name] = resp_headers[name]
                return 200, CIMultiDictProxy(merged), cached.body
            etag = resp_headers.get("etag")
            if status == 200 and etag:
                self._etag_cache[cache_key] = _CachedResponse(etag, resp_headers, data)
        return status, resp_headers, data

    def _planned(self, method: str, url: str, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        """Dry run (``shepherd replay --dry-run``): record the write, answer as GitHub would
        enough for the caller to go on (an id, a sha), change nothing."""
        assert self._dry_run is not None
        payload: Any = json.loads(body) if body else None
        self._dry_run.append(PlannedWrite(method, _path_of(url), payload))
        n = len(self._dry_run)
        fake = {"id": n, "number": n, "sha": f"{n:040x}", "object": {"sha": f"{n:040x}"}}
        headers = CIMultiDictProxy(CIMultiDict({"content-type": "application/json"}))
        return 201, headers, json.dumps(fake).encode()

    # --- error mapping ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _mapped(
        self, method: str, url: str, *, rejected: type[GitHubError] | None = None
    ) -> Iterator[None]:
        """Map gidgethub exceptions raised inside the block to :mod:`bot.kernel.errors`."""
        try:
            yield
        except gidgethub.HTTPException as exc:
            raise self._to_error(exc, method, url, rejected) from exc
        except gidgethub.GitHubException as exc:
            raise GitHubError(
                self._scrub(f"GitHub {method} {url} failed: {type(exc).__name__}")
            ) from exc

    def _to_error(
        self,
        exc: gidgethub.HTTPException,
        method: str,
        url: str,
        rejected: type[GitHubError] | None,
    ) -> GitHubError:
        status = int(exc.status_code)
        detail = self._scrub(str(exc))
        message = f"GitHub {method} {url} failed with {status}: {detail}"
        if isinstance(exc, gidgethub.RateLimitExceeded) or status in (403, 429):
            body = detail.encode()
            wait = _rate_limit_wait(status, exc.headers, body)
            if isinstance(exc, gidgethub.RateLimitExceeded) or wait is not None:
                return GitHubRateLimited(message, status=status, retry_after=wait, retryable=True)
        if rejected is not None and status in (409, 422):
            return rejected(message, status=status)
        retryable = isinstance(exc, gidgethub.GitHubBroken) or status in (408, 429)
        return GitHubError(message, status=status, retryable=retryable)

    # --- generic verbs (mapped) ------------------------------------------------------------

    async def _get(self, url: str, *, accept: str = JSON_ACCEPT) -> Any:
        with self._mapped("GET", url):
            return await self.getitem(url, accept=accept)

    async def _iter(self, url: str, *, key: str | None = None) -> AsyncIterator[JSONObject]:
        with self._mapped("GET", url):
            async for item in self.getiter(url, accept=JSON_ACCEPT, iterable_key=key):
                yield cast(JSONObject, item)

    async def _post(
        self,
        url: str,
        data: Any,
        *,
        rejected: type[GitHubError] | None = None,
        idempotent: bool = True,
    ) -> Any:
        reset = _IDEMPOTENT.set(idempotent)
        try:
            with self._mapped("POST", url, rejected=rejected):
                return await self.post(url, data=data, accept=JSON_ACCEPT)
        finally:
            _IDEMPOTENT.reset(reset)

    async def _patch(
        self, url: str, data: Any, *, rejected: type[GitHubError] | None = None
    ) -> Any:
        with self._mapped("PATCH", url, rejected=rejected):
            return await self.patch(url, data=data, accept=JSON_ACCEPT)

    async def _delete(self, url: str) -> None:
        with self._mapped("DELETE", url):
            await self.delete(url, accept=JSON_ACCEPT)

    @staticmethod
    def _repo(owner: str, repo: str) -> str:
        return f"/repos/{_q(owner)}/{_q(repo)}"

    # --- apps ------------------------------------------------------------------------------

    async def get_app(self) -> JSONObject:
        """``apps/get-authenticated`` (needs the App JWT: use :meth:`GitHubApp.app_client`)."""
        return cast(JSONObject, await self._get("/app"))

    async def iter_hook_deliveries(self) -> AsyncIterator[JSONObject]:
        """The App's webhook delivery log, newest first (``GET /app/hook/deliveries``, App JWT).

        Not in the shared OpenAPI subset; needed for the documented recovery after downtime:
        https://docs.github.com/en/webhooks/using-webhooks/handling-failed-webhook-deliveries
        """
        async for item in self._iter("/app/hook/deliveries?per_page=100"):
            yield item

    async def redeliver_hook_delivery(self, delivery_id: int) -> None:
        """Ask GitHub to deliver a logged delivery again (App JWT)."""
        await self._post(f"/app/hook/deliveries/{_q(delivery_id)}/attempts", {})

    async def list_installations(self) -> list[JSONObject]:
        """``apps/list-installations`` (App JWT)."""
        return [item async for item in self._iter("/app/installations?per_page=100")]

    # --- repos -----------------------------------------------------------------------------

    async def get_repo(self, owner: str, repo: str) -> JSONObject:
        """``repos/get``."""
        return cast(JSONObject, await self._get(self._repo(owner, repo)))

    async def get_content(self, owner: str, repo: str, path: str, ref: str) -> str | None:
        """``repos/get-content`` as raw text at ``ref``; None when the file does not exist."""
        url = f"{self._repo(owner, repo)}/contents/{_qpath(path)}?ref={_q(ref)}"
        try:
            data = await self._get(url, accept=RAW_ACCEPT)
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        if data is None:
            return ""
        if isinstance(data, str):
            return data
        # A directory (a JSON list) or an unexpected JSON answer is not a file's text.
        raise GitHubError(f"GitHub GET {url}: not a file", status=200)

    async def get_collaborator_permission(self, owner: str, repo: str, username: str) -> str:
        """``repos/get-collaborator-permission-level``: ``admin``/``write``/``read``/``none``."""
        url = f"{self._repo(owner, repo)}/collaborators/{_q(username)}/permission"
        try:
            data = cast(JSONObject, await self._get(url))
        except GitHubError as exc:
            if exc.status == 404:
                return "none"
            raise
        return str(data.get("permission", "none"))

    async def compare(self, owner: str, repo: str, base: str, head: str) -> JSONObject:
        """``repos/compare-commits`` (``base...head``); ``commits`` has messages (trailers)."""
        basehead = f"{_q(base)}...{_q(head)}"
        return cast(JSONObject, await self._get(f"{self._repo(owner, repo)}/compare/{basehead}"))

    # --- pulls -----------------------------------------------------------------------------

    async def get_pull(self, owner: str, repo: str, number: int) -> JSONObject:
        """``pulls/get``."""
        return cast(JSONObject, await self._get(f"{self._repo(owner, repo)}/pulls/{number}"))

    async def get_pull_diff(self, owner: str, repo: str, number: int) -> str:
        """``pulls/get`` with the diff media type."""
        data = await self._get(f"{self._repo(owner, repo)}/pulls/{number}", accept=DIFF_ACCEPT)
        return data if isinstance(data, str) else ""

    async def list_pull_files(self, owner: str, repo: str, number: int) -> list[JSONObject]:
        """``pulls/list-files``, all pages."""
        url = f"{self._repo(owner, repo)}/pulls/{number}/files?per_page=100"
        return [item async for item in self._iter(url)]

    async def list_pulls_for_commit(self, owner: str, repo: str, sha: str) -> list[JSONObject]:
        """``repos/list-pull-requests-associated-with-commit``: finds fork PRs by head SHA."""
        url = f"{self._repo(owner, repo)}/commits/{_q(sha)}/pulls?per_page=100"
        return [item async for item in self._iter(url)]

    async def request_reviewers(
        self,
        owner: str,
        repo: str,
        number: int,
        *,
        reviewers: Sequence[str] = (),
        team_reviewers: Sequence[str] = (),
    ) -> JSONObject:
        """``pulls/request-reviewers``."""
        body: JSONObject = {}
        if reviewers:
            body["reviewers"] = list(reviewers)
        if team_reviewers:
            body["team_reviewers"] = list(team_reviewers)
        if not body:
            raise ValueError("request_reviewers needs at least one reviewer or team")
        url = f"{self._repo(owner, repo)}/pulls/{number}/requested_reviewers"
        return cast(JSONObject, await self._post(url, body))

    async def create_review(
        self,
        owner: str,
        repo: str,
        number: int,
        *,
        body: str,
        event: str = "COMMENT",
        commit_id: str | None = None,
        comments: Sequence[Mapping[str, Any]] = (),
    ) -> JSONObject:
        """``pulls/create-review``; ``comments`` may hold ```suggestion`` blocks."""
        data: JSONObject = {"body": body, "event": event}
        if commit_id is not None:
            data["commit_id"] = commit_id
        if comments:
            data["comments"] = [dict(c) for c in comments]
        url = f"{self._repo(owner, repo)}/pulls/{number}/reviews"
        return cast(JSONObject, await self._post(url, data, idempotent=False))

    # --- actions ---------------------------------------------------------------------------

    async def get_job(self, owner: str, repo: str, job_id: int) -> JSONObject:
        """``actions/get-job-for-workflow-run``."""
        return cast(JSONObject, await self._get(f"{self._repo(owner, repo)}/actions/jobs/{job_id}"))

    async def download_job_log(self, owner: str, repo: str, job_id: int) -> str:
        """``actions/download-job-logs-for-workflow-run``: plain-text log of one job.

        GitHub answers 302 with a short-lived signed URL. That URL is fetched without our
        Authorization header: it is a third-party blob store and must never see the token.
        """
        path = f"{self._repo(owner, repo)}/actions/jobs/{job_id}/logs"
        url = self.base_url.removesuffix("/") + path
        headers = {
            "user-agent": self.requester,
            "accept": JSON_ACCEPT,
            "x-github-api-version": API_VERSION,
        }
        if self._token is not None:
            headers["authorization"] = f"token {self._token}"
        status, resp_headers, body = await self._send("GET", url, headers, allow_redirects=False)
        if status not in (301, 302, 303, 307, 308) or "location" not in resp_headers:
            with self._mapped("GET", path):
                gidgethub.sansio.decipher_response(status, resp_headers, body)
            raise GitHubError(
                f"GitHub GET {path}: expected a redirect, got {status}", status=status
            )
        location = resp_headers["location"]
        log_headers = {"user-agent": self.requester}
        status, resp_headers, body = await self._send("GET", location, log_headers)
        if status != 200:
            raise GitHubError(
                f"GitHub job log download for job {job_id} failed with {status}",
                status=status,
                retryable=status >= 500,
            )
        return body.decode("utf-8", errors="replace")

    async def rerun_failed_jobs(self, owner: str, repo: str, run_id: int) -> None:
        """``actions/re-run-workflow-failed-jobs``."""
        await self._post(f"{self._repo(owner, repo)}/actions/runs/{run_id}/rerun-failed-jobs", {})

    # --- checks ----------------------------------------------------------------------------

    async def list_check_runs_for_ref(self, owner: str, repo: str, ref: str) -> list[JSONObject]:
        """``checks/list-for-ref``, all pages."""
        url = f"{self._repo(owner, repo)}/commits/{_q(ref)}/check-runs?per_page=100"
        return [item async for item in self._iter(url, key="check_runs")]

    @staticmethod
    def _check_run_body(
        *,
        name: str | None,
        status: str | None,
        conclusion: str | None,
        title: str | None,
        summary: str | None,
        text: str | None,
        annotations: Sequence[Mapping[str, Any]],
        actions: Sequence[Mapping[str, Any]],
        details_url: str | None,
        external_id: str | None,
        started_at: str | None,
        completed_at: str | None,
    ) -> JSONObject:
        body: JSONObject = {}
        for key, value in (
            ("name", name),
            ("status", status),
            ("conclusion", conclusion),
            ("details_url", details_url),
            ("external_id", external_id),
            ("started_at", started_at),
            ("completed_at", completed_at),
        ):
            if value is not None:
                body[key] = value
        if actions:
            body["actions"] = [dict(a) for a in actions]
        if title is not None or summary is not None or text is not None or annotations:
            output: JSONObject = {"title": title or "", "summary": summary or ""}
            if text is not None:
                output["text"] = text
            if annotations:
                output["annotations"] = [dict(a) for a in annotations]
            body["output"] = output
        return body

    async def _append_annotations(
        self,
        owner: str,
        repo: str,
        check_run_id: int,
        *,
        title: str | None,
        summary: str | None,
        rest: Sequence[Mapping[str, Any]],
    ) -> JSONObject | None:
        """Send annotations beyond the first 50 through successive updates (they accumulate)."""
        result: JSONObject | None = None
        url = f"{self._repo(owner, repo)}/check-runs/{check_run_id}"
        for start in range(0, len(rest), ANNOTATIONS_PER_REQUEST):
            batch = rest[start : start + ANNOTATIONS_PER_REQUEST]
            output = {
                "title": title or "",
                "summary": summary or "",
                "annotations": [dict(a) for a in batch],
            }
            result = cast(JSONObject, await self._patch(url, {"output": output}))
        return result

    async def create_check_run(
        self,
        owner: str,
        repo: str,
        *,
        name: str,
        head_sha: str,
        status: str | None = None,
        conclusion: str | None = None,
        title: str | None = None,
        summary: str | None = None,
        text: str | None = None,
        annotations: Sequence[Mapping[str, Any]] = (),
        actions: Sequence[Mapping[str, Any]] = (),
        details_url: str | None = None,
        external_id: str | None = None,
        started_at: str | None = None,
        completed_at: str | None = None,
    ) -> JSONObject:
        """``checks/create``; the first 50 annotations go with it, the rest via updates."""
        first, rest = (
            annotations[:ANNOTATIONS_PER_REQUEST],
            annotations[ANNOTATIONS_PER_REQUEST:],
        )
        body = self._check_run_body(
            name=name,
            status=status,
            conclusion=conclusion,
            title=title,
            summary=summary,
            text=text,
            annotations=first,
            actions=actions,
            details_url=details_url,
            external_id=external_id,
            started_at=started_at,
            completed_at=completed_at,
        )
        body["head_sha"] = head_sha
        created = cast(
            JSONObject,
            await self._post(f"{self._repo(owner, repo)}/check-runs", body, idempotent=False),
        )
        last = await self._append_annotations(
            owner, repo, int(created["id"]), title=title, summary=summary, rest=rest
        )
        return last if last is not None else created

    async def update_check_run(
        self,
        owner: str,
        repo: str,
        check_run_id: int,
        *,
        name: str | None = None,
        status: str | None = None,
        conclusion: str | None = None,
        title: str | None = None,
        summary: str | None = None,
        text: str | None = None,
        annotations: Sequence[Mapping[str, Any]] = (),
        actions: Sequence[Mapping[str, Any]] = (),
        details_url: str | None = None,
        external_id: str | None = None,
        started_at: str | None = None,
        completed_at: str | None = None,
    ) -> JSONObject:
        """``checks/update``; annotations beyond 50 are sent in further updates."""
        first, rest = (
            annotations[:ANNOTATIONS_PER_REQUEST],
            annotations[ANNOTATIONS_PER_REQUEST:],
        )
        body = self._check_run_body(
            name=name,
            status=status,
            conclusion=conclusion,
            title=title,
            summary=summary,
            text=text,
            annotations=first,
            actions=actions,
            details_url=details_url,
            external_id=external_id,
            started_at=started_at,
            completed_at=completed_at,
        )
        url = f"{self._repo(owner, repo)}/check-runs/{check_run_id}"
        updated = cast(JSONObject, await self._patch(url, body))
        last = await self._append_annotations(
            owner, repo, check_run_id, title=title, summary=summary, rest=rest
        )
        return last if last is not None else updated

    # --- issues: comments, labels, reactions -----------------------------------------------

    async def list_comments(self, owner: str, repo: str, number: int) -> list[JSONObject]:
        """``issues/list-comments``, all pages."""
        url = f"{self._repo(owner, repo)}/issues/{number}/comments?per_page=100"
        return [item async for item in self._iter(url)]

    async def create_comment(self, owner: str, repo: str, number: int, body: str) -> JSONObject:
        """``issues/create-comment``."""
        url = f"{self._repo(owner, repo)}/issues/{number}/comments"
        return cast(JSONObject, await self._post(url, {"body": body}, idempotent=False))

    async def update_comment(self, owner: str, repo: str, comment_id: int, body: str) -> JSONObject:
        """``issues/update-comment``."""
        url = f"{self._repo(owner, repo)}/issues/comments/{comment_id}"
        return cast(JSONObject, await self._patch(url, {"body": body}))

    async def create_reaction(
        self, owner: str, repo: str, comment_id: int, content: str = "eyes"
    ) -> JSONObject:
        """``reactions/create-for-issue-comment``."""
        url = f"{self._repo(owner, repo)}/issues/comments/{comment_id}/reactions"
        return cast(JSONObject, await self._post(url, {"content": content}))

    async def add_labels(
        self, owner: str, repo: str, number: int, labels: Sequence[str]
    ) -> list[JSONObject]:
        """``issues/add-labels``."""
        url = f"{self._repo(owner, repo)}/issues/{number}/labels"
        return cast(list[JSONObject], await self._post(url, {"labels": list(labels)}))

    async def remove_label(self, owner: str, repo: str, number: int, name: str) -> bool:
        """``issues/remove-label``; False when the label was not on the issue."""
        url = f"{self._repo(owner, repo)}/issues/{number}/labels/{_q(name)}"
        try:
            await self._delete(url)
        except GitHubError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # --- git data --------------------------------------------------------------------------

    async def get_ref(self, owner: str, repo: str, ref: str) -> JSONObject:
        """``git/get-ref``; ``ref`` is ``heads/<branch>`` (no ``refs/`` prefix)."""
        ref = ref.removeprefix("refs/")
        return cast(JSONObject, await self._get(f"{self._repo(owner, repo)}/git/ref/{_qpath(ref)}"))

    async def create_blob(
        self, owner: str, repo: str, content: str, *, encoding: str = "utf-8"
    ) -> str:
        """``git/create-blob``; returns the blob SHA (use ``encoding="base64"`` for bytes)."""
        url = f"{self._repo(owner, repo)}/git/blobs"
        data = cast(JSONObject, await self._post(url, {"content": content, "encoding": encoding}))
        return str(data["sha"])

    async def create_tree(
        self,
        owner: str,
        repo: str,
        entries: Sequence[Mapping[str, Any]],
        *,
        base_tree: str | None = None,
    ) -> str:
        """``git/create-tree``; an entry with ``sha: None`` deletes its path. Returns the SHA."""
        body: JSONObject = {"tree": [dict(e) for e in entries]}
        if base_tree is not None:
            body["base_tree"] = base_tree
        data = cast(JSONObject, await self._post(f"{self._repo(owner, repo)}/git/trees", body))
        return str(data["sha"])

    async def create_commit(
        self,
        owner: str,
        repo: str,
        *,
        message: str,
        tree: str,
        parents: Sequence[str],
        author: Mapping[str, str] | None = None,
    ) -> JSONObject:
        """``git/create-commit``. Without ``author`` GitHub signs the commit as the App."""
        body: JSONObject = {"message": message, "tree": tree, "parents": list(parents)}
        if author is not None:
            body["author"] = dict(author)
        return cast(JSONObject, await self._post(f"{self._repo(owner, repo)}/git/commits", body))

    async def update_ref(
        self, owner: str, repo: str, ref: str, sha: str, *, force: bool = False
    ) -> JSONObject:
        """``git/update-ref``. Without force this is a lease: a moved branch is not overwritten.

        Raises :class:`PushRejected` when GitHub refuses (not a fast-forward, protected branch).
        """
        ref = ref.removeprefix("refs/")
        url = f"{self._repo(owner, repo)}/git/refs/{_qpath(ref)}"
        return cast(
            JSONObject, await self._patch(url, {"sha": sha, "force": force}, rejected=PushRejected)
        )


class GitHubApp:
    """A GitHub App identity: mints JWTs and cached installation tokens, hands out clients."""

    def __init__(
        self,
        *,
        app_id: int | str,
        private_key: SecretStr | str,
        session: aiohttp.ClientSession,
        api_url: str = DEFAULT_API_URL,
        user_agent: str = DEFAULT_USER_AGENT,
        retry: RetryPolicy | None = None,
        metrics: GitHubMetrics | None = None,
        token_refresh_margin: float = 300.0,
        token_cache_size: int = 1024,
        etag_cache_size: int = 1024,
        dry_run: list[PlannedWrite] | None = None,
    ) -> None:
        self.app_id = str(app_id)
        #: When a list, installation clients record their writes in it instead of making them.
        self.dry_run = dry_run
        self._private_key = (
            private_key if isinstance(private_key, SecretStr) else SecretStr(private_key)
        )
        self.session = session
        self.api_url = api_url
        self.user_agent = user_agent
        self.retry = retry or RetryPolicy()
        self.metrics = metrics
        self._refresh_margin = token_refresh_margin
        # Tokens live at most an hour; the explicit expires_at check below refreshes them early.
        self._tokens: TTLCache[tuple[int, str | None], InstallationToken] = TTLCache(
            maxsize=token_cache_size, ttl=3600
        )
        self._etags: _ETagCache = LRUCache(maxsize=etag_cache_size)
        self._mint_lock = asyncio.Lock()
        self._throttles: dict[int, InstallationThrottle] = {}

    def __repr__(self) -> str:
        return f"GitHubApp(app_id={self.app_id!r}, api_url={self.api_url!r})"

    async def app_client(self) -> GitHubClient:
        """A client authenticated as the App itself (JWT), e.g. for ``GET /app``."""
        return GitHubClient(
            self.session,
            app_id=self.app_id,
            private_key=self._private_key.get_secret_value(),
            base_url=self.api_url,
            user_agent=self.user_agent,
            retry=self.retry,
            metrics=self.metrics,
        )

    def _usable(self, token: InstallationToken) -> bool:
        return token.expires_at.timestamp() - self._refresh_margin > time.time()

    async def installation_token(
        self, installation_id: int, *, repo: str | None = None
    ) -> InstallationToken:
        """A cached installation token, optionally scoped to one repository (name, no owner)."""
        key = (installation_id, repo)
        cached = self._tokens.get(key)
        if cached is not None and self._usable(cached):
            return cached
        async with self._mint_lock:
            cached = self._tokens.get(key)
            if cached is not None and self._usable(cached):
                return cached
            token = await self._mint(installation_id, repo)
            self._tokens[key] = token
            return token

    async def _mint(self, installation_id: int, repo: str | None) -> InstallationToken:
        client = await self.app_client()
        body: JSONObject = {"repositories": [repo]} if repo is not None else {}
        url = f"/app/installations/{installation_id}/access_tokens"
        data = cast(JSONObject, await client._post(url, body))
        try:
            token = str(data["token"])
            expires_at = datetime.fromisoformat(str(data["expires_at"]))
        except (KeyError, ValueError) as exc:
            raise GitHubError(
                f"GitHub POST {url}: malformed installation token answer", status=201
            ) from exc
        log.info(
            "minted installation token for installation %s (repo scope %s), expires %s",
            installation_id,
            repo or "all",
            expires_at.isoformat(),
        )
        return InstallationToken(token=token, expires_at=expires_at, repository=repo)

    async def installation_client(
        self, installation_id: int, *, repo: str | None = None
    ) -> GitHubClient:
        """A client authenticated as one installation (optionally scoped to one repository)."""
        token = await self.installation_token(installation_id, repo=repo)

        async def current_token() -> str:
            return (await self.installation_token(installation_id, repo=repo)).token

        return GitHubClient(
            self.session,
            token=token.token,
            token_source=current_token,
            throttle=self._throttles.setdefault(installation_id, InstallationThrottle()),
            base_url=self.api_url,
            user_agent=self.user_agent,
            retry=self.retry,
            metrics=self.metrics,
            etag_cache=self._etags,
            cache_scope=f"{installation_id}:{repo or '*'}",
            dry_run=self.dry_run,
        )
