"""Webhook handlers: one module per concern, each exporting a gidgethub ``Router``.

``ROUTERS`` is the one place they are composed; the worker dispatches every stored delivery
through each of them.
"""

from __future__ import annotations

from gidgethub.routing import Router

ROUTERS: tuple[Router, ...] = ()
