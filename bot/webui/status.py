"""``/status``: what Shepherd did, for the repositories the signed-in user can access.

Anonymous visitors are sent to sign in and see nothing. What a user may see is what GitHub says
with their own token (``GET /user/installations`` and each installation's repositories), asked
again after a minute; a revoked or expired token ends the session.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime, timedelta

from aiohttp import web

from bot.kernel.errors import GitHubError, StoreError
from bot.store import Scope
from bot.webui.app import WEBUI, page, refuse
from bot.webui.github_web import UserAccess
from bot.webui.sessions import SESSION_COOKIE, Session
from bot.webui.signin import current_session, sign_in_redirect
from bot.webui.statusview import (
    StatusView,
    daily_chart,
    delivery_rows,
    llm_views,
    outcome_tables,
    pr_views,
    queue_view,
)

log = logging.getLogger(__name__)

RECENT_DELIVERIES = 50
DELIVERY_WINDOW = timedelta(days=7)
TOUCHED_PRS = 15
HISTORY = timedelta(days=30)


async def status_page(request: web.Request) -> web.StreamResponse:
    ui = request.app[WEBUI]
    session = current_session(request)
    if session is None:
        return sign_in_redirect(request)
    try:
        access = await _access(request, session)
    except GitHubError as exc:
        if exc.status in (401, 403):
            response = sign_in_redirect(request)
            ui.cookies.clear(response, SESSION_COOKIE)
            return response
        log.warning("could not ask GitHub what %s may see: %s", session.login, exc)
        return refuse(
            request, 502, "github-unavailable", "GitHub could not be reached",
            "Shepherd asks GitHub which repositories you can see before showing any. Try again "
            "in a minute.",
        )  # fmt: skip
    try:
        view = await build_view(request, session, access)
    except StoreError as exc:
        log.warning("status page: store unavailable: %s", exc)
        return refuse(
            request, 503, "store-unavailable", "The store is unavailable",
            "Shepherd's database did not answer; try again shortly.",
        )  # fmt: skip
    return page(request, "status.html", view=view, csrf=session.csrf)


async def _access(request: web.Request, session: Session) -> UserAccess:
    ui = request.app[WEBUI]
    key = hashlib.sha256(session.token.encode()).hexdigest()
    cached = ui.access.get(key)
    if cached is not None:
        return cached
    access = await ui.github().user_access(session.token, app_id=ui.settings.github_app_id)
    ui.access[key] = access
    return access


async def build_view(request: web.Request, session: Session, access: UserAccess) -> StatusView:
    ui = request.app[WEBUI]
    store = ui.store
    now = datetime.now(UTC)
    scope = Scope(repos=access.repos, installations=frozenset(i.id for i in access.installations))
    stats, deliveries, activity, outcomes = await asyncio.gather(
        store.stats(),
        store.recent_deliveries(scope, since=now - DELIVERY_WINDOW, limit=RECENT_DELIVERIES),
        store.pr_activity(access.repos, since=now - HISTORY, limit=TOUCHED_PRS),
        store.outcome_counts(access.repos, since=now - HISTORY),
    )
    timelines = await asyncio.gather(*(store.list_events(a.repo, a.pr) for a in activity))
    events = {(a.repo, a.pr): t for a, t in zip(activity, timelines, strict=True)}
    today = now.date()
    repos, totals = outcome_tables(outcomes, today)
    return StatusView(
        login=session.login,
        installations=tuple(i.account for i in access.installations),
        repo_count=len(access.repos),
        queue=queue_view(stats),
        outcomes=repos,
        totals=totals,
        llm=llm_views(outcomes, today),
        chart=daily_chart(outcomes, today),
        deliveries=delivery_rows(deliveries, now),
        prs=pr_views(activity, events, web_url=ui.settings.web_url, now=now),
        generated_at=now.strftime("%Y-%m-%d %H:%M UTC"),
    )
