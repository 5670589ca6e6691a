"""Webhook handlers: one module per concern, each exporting a gidgethub ``Router``.

``ROUTERS`` is the one place they are composed; the worker dispatches every stored delivery
through each of them, every handler isolated from the others.
"""

from __future__ import annotations

from gidgethub.routing import Router

from handlers import check_suites, checks, comments, installations, pull_requests

ROUTERS: tuple[Router, ...] = (
    checks.router,
    pull_requests.router,
    comments.router,
    check_suites.router,
    installations.router,
)
