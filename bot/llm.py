"""Wiring of the LLM repair rung: the one place an ``AgentFixer`` is built from settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bot.repoconfig import RepoConfig
from bot.settings import Settings
from fixers.base import Fixer


def make_agent(settings: Settings) -> tuple[Fixer | None, str]:
    """The agent fixer, or None and the reason the rung is skipped."""
    if settings.anthropic_api_key is None:
        return None, "no ANTHROPIC_API_KEY configured"
    return None, "the LLM rung is not wired yet"


def agent_factory(
    settings: Settings,
) -> Callable[[RepoConfig, Mapping[str, Any]], tuple[Fixer | None, str]]:
    """A per-repair builder of the agent, honouring the repository's LLM config."""

    def build(config: RepoConfig, pull: Mapping[str, Any]) -> tuple[Fixer | None, str]:
        return make_agent(settings)

    return build
