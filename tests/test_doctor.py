"""``shepherd doctor`` for a healthy and for a broken configuration."""

from __future__ import annotations

from collections.abc import Callable

from bot.kernel.settings import Settings
from bot.ops.doctor import Status, render, run_checks
from tests.ghsim import GitHubSim, generate_rsa_key


async def test_healthy_configuration_passes(
    github_sim: GitHubSim, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        github_webhook_secret="a-long-and-random-webhook-secret",
        github_app_id=github_sim.app_id,
        github_private_key=github_sim.private_key_pem,
        github_api_url=github_sim.base_url,
        github_client_id="Iv1.test",
        github_client_secret="client-secret",
        anthropic_api_key="sk-ant-test",
    )
    checks = {c.name: c for c in await run_checks(settings)}
    assert {c.status for c in checks.values()} == {Status.OK}, render(list(checks.values()))
    assert "authenticated as shepherd" in checks["GitHub App"].detail
    assert "ruff" in checks["fixer tools"].detail
    assert "migrated" in checks["database"].detail
    assert github_sim.calls("apps/get-authenticated")


async def test_broken_configuration_says_how_to_fix_each_problem(
    github_sim: GitHubSim, make_settings: Callable[..., Settings]
) -> None:
    wrong_key, _ = generate_rsa_key()
    settings = make_settings(
        github_webhook_secret=None,
        github_app_id=github_sim.app_id,
        github_private_key=wrong_key,  # not the App's key: GitHub refuses the JWT
        github_api_url=github_sim.base_url,
        database_url="postgresql://nobody@127.0.0.1:1/none",
    )
    checks = {c.name: c for c in await run_checks(settings)}
    assert checks["webhook secret"].status is Status.FAIL
    assert "GITHUB_WEBHOOK_SECRET" in checks["webhook secret"].detail
    assert checks["GitHub App"].status is Status.FAIL
    assert "private key" in checks["GitHub App"].fix
    assert checks["database"].status is Status.FAIL
    assert "DATABASE_URL" in checks["database"].fix
    assert checks["LLM rung"].status is Status.WARN
    table = render(list(checks.values()))
    assert "3 failed" in table
    assert "how to fix" in table
