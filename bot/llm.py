"""Wiring of the LLM repair rung: the one place an ``AgentFixer`` is built from settings."""

from __future__ import annotations

from bot.settings import Settings
from fixers.base import Fixer


def make_agent(settings: Settings) -> tuple[Fixer | None, str]:
    """The agent fixer, or None and the reason the rung is skipped."""
    if settings.anthropic_api_key is None:
        return None, "no ANTHROPIC_API_KEY configured"
    return None, "the LLM rung is not wired yet"
