"""Wiring of the LLM repair rung: the one place an ``AgentFixer`` is built from settings.

The model name comes from the repository config (``llm.model``) or the deployment's settings
(``SHEPHERD_LLM_MODEL``, default ``bot.kernel.settings.DEFAULT_MODEL``) — never from anywhere else.
"""

from __future__ import annotations

import anthropic

from bot.kernel.repoconfig import LLMConfig, RepoConfig
from bot.kernel.settings import Settings
from bot.llm.agent import AgentBudget, AgentFixer, PRContext, make_client
from fixers.base import Fixer

#: 429/529 answers are retried by the SDK itself (honouring retry-after), at most this often.
API_MAX_RETRIES = 3
NO_KEY = "no ANTHROPIC_API_KEY configured"


def budget_for(config: LLMConfig) -> AgentBudget:
    return AgentBudget(
        max_turns=config.max_turns,
        max_input_tokens=config.max_input_tokens,
        max_output_tokens=config.max_output_tokens,
        timeout_seconds=config.timeout_seconds,
        max_diff_lines=config.max_diff_lines,
    )


def make_agent(
    settings: Settings,
    config: LLMConfig | None = None,
    pr: PRContext | None = None,
    *,
    client: anthropic.AsyncAnthropic | None = None,
) -> tuple[Fixer | None, str]:
    """The agent fixer, or None and the reason the rung is skipped."""
    if settings.anthropic_api_key is None:
        return None, NO_KEY
    config = config or LLMConfig()
    client = client or make_client(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        max_retries=API_MAX_RETRIES,
    )
    model = config.model or settings.llm_model
    return AgentFixer(client, model=model, budget=budget_for(config), pr=pr), ""


class AgentFactory:
    """A per-repair builder of the agent that honours the repository's LLM config and shares one
    API client (one connection pool) across repairs; closed with the worker's other resources."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: anthropic.AsyncAnthropic | None = None

    def __call__(self, config: RepoConfig, pr: PRContext) -> tuple[Fixer | None, str]:
        key = self.settings.anthropic_api_key
        if key is None:
            return None, NO_KEY
        if self._client is None:
            self._client = make_client(
                api_key=key.get_secret_value(),
                base_url=self.settings.anthropic_base_url,
                max_retries=API_MAX_RETRIES,
            )
        return make_agent(self.settings, config.llm, pr, client=self._client)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
