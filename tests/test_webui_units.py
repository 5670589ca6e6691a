"""The web UI's pure parts and its files: URLs and the manifest, one-time states, sealed
cookies, the stored App (0600, written once, precedence), and the status page's arithmetic."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.__main__ import local_url
from bot.kernel.errors import ConfigError
from bot.kernel.settings import Settings, derive_web_url
from bot.store import OutcomeCount
from bot.webui.chart import outcomes_per_day
from bot.webui.credentials import (
    APP_FILE,
    AppCredentials,
    apply_stored_app,
    load_app,
    save_app,
    session_key,
)
from bot.webui.manifest import build_manifest, manifest_template, registration_url, valid_org
from bot.webui.sessions import CookieBox, OneTimeStates, Session, StateError
from bot.webui.signin import safe_next
from bot.webui.statusview import RepoOutcomes, llm_views, outcome_tables
from tests.conftest import REPO_ROOT
from tests.ghsim import shared_test_key


@pytest.mark.parametrize(
    ("api", "web"),
    [
        ("https://api.github.com", "https://github.com"),
        ("https://ghes.example.com/api/v3", "https://ghes.example.com"),
        ("http://127.0.0.1:8081/api/v3", "http://127.0.0.1:8081"),
        ("https://api.octocorp.ghe.com", "https://octocorp.ghe.com"),
        ("https://proxy.internal/github", "https://github.com"),
    ],
)
def test_web_url_is_derived_from_the_api_url(api: str, web: str) -> None:
    assert derive_web_url(api) == web
    assert Settings(github_api_url=api).web_url == web


def test_github_web_url_setting_wins(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        github_api_url="https://ghes.example.com/api/v3", github_web_url="https://web.example/"
    )
    assert settings.web_url == "https://web.example"
    with pytest.raises(ValueError, match="http"):
        make_settings(public_url="ftp://example")


def test_local_url_for_serve_arguments() -> None:
    assert local_url("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert local_url("0.0.0.0", 9000) == "http://127.0.0.1:9000"  # noqa: S104
    assert local_url("::1", 80) == "http://[::1]:80"


def test_manifest_is_app_yml_with_this_deployments_urls() -> None:
    template = manifest_template()
    assert template == yaml.safe_load((REPO_ROOT / "app.yml").read_text())
    manifest = build_manifest(template, "https://shepherd.example.com/")
    assert manifest["hook_attributes"] == {
        "url": "https://shepherd.example.com/webhook",
        "active": True,
    }
    assert manifest["redirect_url"] == "https://shepherd.example.com/setup/callback"
    assert manifest["callback_urls"] == ["https://shepherd.example.com/login/callback"]
    assert manifest["setup_url"] == "https://shepherd.example.com/status"
    assert manifest["default_permissions"] == template["default_permissions"]
    assert manifest["default_events"] == template["default_events"]
    assert manifest["public"] is False
    json.dumps(manifest)  # it travels as JSON in a form field


def test_registration_urls_and_organisation_names() -> None:
    assert registration_url("https://github.com", "s t") == (
        "https://github.com/settings/apps/new?state=s+t"
    )
    assert registration_url("https://github.com", "abc", "acme-corp") == (
        "https://github.com/organizations/acme-corp/settings/apps/new?state=abc"
    )
    assert valid_org("acme-corp")
    for bad in ("", "-acme", "acme-", "a--b", "../x", "a/b", "x" * 40, "acme?x=1"):
        assert not valid_org(bad), bad


def test_states_are_single_use_and_bound_to_one_browser() -> None:
    states = OneTimeStates(ttl=60)
    state = states.issue("browser-a", org="acme")
    assert states.consume(state, "browser-a") == {"org": "acme"}
    with pytest.raises(StateError, match="already used"):
        states.consume(state, "browser-a")

    stolen = states.issue("browser-a")
    with pytest.raises(StateError, match="another browser"):
        states.consume(stolen, "browser-b")
    with pytest.raises(StateError, match="already used"):  # burnt for its owner too
        states.consume(stolen, "browser-a")
    with pytest.raises(StateError, match="another browser"):
        states.consume(states.issue("browser-a"), None)
    assert len(states.issue("x")) >= 40


def test_states_expire_and_are_bounded() -> None:
    expired = OneTimeStates(ttl=-1)
    with pytest.raises(StateError, match="expired"):
        expired.consume(expired.issue("a"), "a")
    small = OneTimeStates(ttl=60, capacity=3)
    first = small.issue("a")
    for _ in range(5):
        small.issue("a")
    assert len(small) == 3
    with pytest.raises(StateError):
        small.consume(first, "a")


def test_sealed_cookies_refuse_tampering_other_purposes_and_age() -> None:
    box = CookieBox(b"k" * 32, secure=False)
    sealed = box.seal("session", {"login": "alice"})
    assert "alice" not in sealed  # confidential, not only signed
    assert box.open("session", sealed, max_age=60) == {"login": "alice"}
    assert box.open("setup", sealed, max_age=60) is None
    assert box.open("session", sealed[:-2] + "AA", max_age=60) is None
    assert box.open("session", sealed, max_age=-1) is None
    assert CookieBox(b"other" * 8, secure=False).open("session", sealed, max_age=60) is None
    assert box.open("session", None, max_age=60) is None


def test_session_cookie_round_trip_and_csrf() -> None:
    session = Session(user_id=1, login="alice", token="ghu_x", csrf="c" * 20, expires_at=4e9)
    assert Session.from_cookie(session.to_cookie()) == session
    assert Session.from_cookie({**session.to_cookie(), "exp": 1.0}) is None
    assert Session.from_cookie({"uid": "x"}) is None
    assert session.csrf_ok("c" * 20)
    assert not session.csrf_ok("c" * 19)
    assert not session.csrf_ok(None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/status", "/status"),
        ("/status?x=1", "/status?x=1"),
        (None, "/status"),
        ("//evil.example/", "/status"),
        ("https://evil.example/", "/status"),
        ("/\\evil.example", "/status"),
    ],
)
def test_sign_in_returns_only_to_local_paths(raw: str | None, expected: str) -> None:
    assert safe_next(raw) == expected


def creds(**overrides: Any) -> AppCredentials:
    values: dict[str, Any] = {
        "id": 4321,
        "slug": "shepherd-acme",
        "name": "Shepherd (acme)",
        "pem": shared_test_key()[0],
        "webhook_secret": "whsec",
        "client_id": "Iv1.abc",
        "client_secret": "cs",
        "owner": {"login": "acme"},
    }
    values.update(overrides)
    return AppCredentials.from_conversion(
        values, web_url="https://github.com", api_url="https://api.github.com"
    )


def test_the_app_is_stored_privately_once(tmp_path: Path) -> None:
    path = save_app(tmp_path, creds())
    assert path == tmp_path / APP_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_app(tmp_path) == creds().__class__(**json.loads(path.read_text()))
    with pytest.raises(FileExistsError):
        save_app(tmp_path, creds(id=1))
    assert json.loads(path.read_text())["app_id"] == 4321
    assert [p.name for p in tmp_path.iterdir()] == [APP_FILE]  # no temporary file left
    assert "pem" not in repr(load_app(tmp_path))
    assert creds().install_url() == "https://github.com/apps/shepherd-acme/installations/new"


def test_a_bad_conversion_answer_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks"):
        creds(id=None)
    with pytest.raises(ValueError, match="PEM"):
        creds(pem="not a key")


def test_a_damaged_record_is_a_clear_config_error(tmp_path: Path) -> None:
    (tmp_path / APP_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="register the App again"):
        load_app(tmp_path)


def test_the_stored_app_applies_unless_the_environment_names_one(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    save_app(tmp_path / "data", creds())
    settings = make_settings(github_webhook_secret=None)
    assert apply_stored_app(settings) is not None
    assert settings.github_app_id == 4321
    assert settings.app_slug == "shepherd-acme"
    assert settings.github_webhook_secret is not None
    assert settings.github_webhook_secret.get_secret_value() == "whsec"
    assert settings.sign_in_enabled

    by_env = make_settings(github_app_id=99, github_private_key=shared_test_key()[0])
    assert apply_stored_app(by_env) is None
    assert by_env.github_app_id == 99

    slug_set = make_settings(app_slug="custom")
    apply_stored_app(slug_set)
    assert slug_set.app_slug == "custom"


def test_session_key_is_kept_privately_or_taken_from_the_setting(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    key = session_key(settings)
    assert session_key(settings) == key
    path = settings.data_dir / "session-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert session_key(make_settings(session_secret="shared")) == b"shared"


# -- status arithmetic -------------------------------------------------------------------------


def row(repo: str, days_ago: int, outcome: str, count: int = 1, **llm: Any) -> OutcomeCount:
    return OutcomeCount(repo, date(2026, 3, 31) - timedelta(days=days_ago), outcome, count, **llm)


def test_outcome_tables_and_fix_rate_per_window() -> None:
    rows = [
        row("a/x", 0, "fixed", 3),
        row("a/x", 1, "handoff"),
        row("a/x", 10, "fixed"),
        row("a/x", 10, "rerun", 2),
        row("a/x", 2, "noop", 5),
        row("a/y", 40, "fixed"),  # outside both windows
    ]
    repos, totals = outcome_tables(rows, date(2026, 3, 31))
    [x] = repos
    assert (x.count(7, "fixed"), x.count(30, "fixed"), x.count(30, "rerun")) == (3, 4, 2)
    assert x.fix_rate(7) == "75%"  # 3 of 3 fixed + 1 handoff; noop left out
    assert x.fix_rate(30) == "57%"  # 4 of 7
    assert totals.total(30) == 12
    assert RepoOutcomes("none", {}).fix_rate(7) == "–"


def test_llm_cost_from_recorded_tokens() -> None:
    rows = [
        row("a/x", 1, "fixed", llm_model="claude-sonnet-4-6", llm_input=1_000_000,
            llm_output=100_000),
        row("a/x", 20, "handoff", llm_model="claude-haiku-4-5", llm_input=1_000_000),
        row("a/x", 2, "handoff", llm_model="mystery-model", llm_input=10),
    ]  # fmt: skip
    week, month = llm_views(rows, date(2026, 3, 31))
    assert week.cost_usd == pytest.approx(3.0 + 1.5)
    assert month.cost_usd == pytest.approx(3.0 + 1.5 + 1.0)
    assert week.usage.input_tokens == 1_000_010
    assert week.unpriced_models == ("mystery-model",)


def test_chart_bars_stack_per_day() -> None:
    days = [date(2026, 3, 1), date(2026, 3, 2)]
    chart = outcomes_per_day(days, {days[0]: {"fixed": 2, "handoff": 2}, days[1]: {"fixed": 1}})
    assert chart.max_count == 4
    first = [b for b in chart.bars if b.title.startswith("2026-03-01")]
    assert [b.title for b in first] == ["2026-03-01: 2 fixed", "2026-03-01: 2 handoff"]
    assert sum(b.height for b in first) == pytest.approx(chart.height)
    assert outcomes_per_day(days, {}).empty
