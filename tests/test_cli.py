"""The ``shepherd`` command as an operator meets it: real subprocesses, real output.

Start-up failures must be one clear line naming what to fix (no traceback); the development
secret is created once, kept private and reused; ``diagnose --json`` classifies every shared
scenario as its expect.json says, in the documented schema.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, SHARED

pytestmark = pytest.mark.slow  # every test runs the real `shepherd` executable

SHEPHERD = REPO_ROOT / ".venv" / "bin" / "shepherd"
CASES = SHARED / "scenarios" / "cases"
TIMEOUT = 30.0


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment minus anything that would configure Shepherd, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "ANTHROPIC_", "SHEPHERD_", "DATABASE_URL"))
    }
    env["SHEPHERD_DATA_DIR"] = str(tmp_path / "data")
    env["SHEPHERD_LOG_FORMAT"] = "text"
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHEPHERD), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.startswith("shepherd:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- start-up failures ----------------------------------------------------------------------


def test_serve_without_secret_waits_for_registration_and_prints_the_setup_link(
    tmp_path: Path,
) -> None:
    # No secret and no App: the server starts (webhooks answer 503, see test_web.py) so that
    # its setup page can register the App; the link it prints is the only way in.
    output = serve_until(tmp_path, cli_env(tmp_path), "/setup?token=")
    assert re.search(
        r"register one here:\n  http://127\.0\.0\.1:\d+/setup\?token=[\w-]{24,}", output
    )
    assert not (tmp_path / "data" / "webhook-secret").exists()
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://db.example/shepherd", "DATABASE_URL"),
        ("postgresql://db.example:notaport/shepherd", "DATABASE_URL"),
        ("sqlite://relative/shepherd.db", "DATABASE_URL"),
    ],
)
def test_malformed_database_url_fails_at_start_up(tmp_path: Path, url: str, needle: str) -> None:
    env = cli_env(tmp_path, GITHUB_WEBHOOK_SECRET="s3cret", DATABASE_URL=url)
    result = run(["serve", "--port", str(free_port())], env)
    assert_one_clear_line(result, needle)


@pytest.mark.parametrize("days", ["3", "-1", "a month"])
def test_a_retention_that_would_forget_redeliverable_deliveries_fails_at_start_up(
    tmp_path: Path, days: str
) -> None:
    env = cli_env(tmp_path, GITHUB_WEBHOOK_SECRET="s3cret", SHEPHERD_RETENTION_DAYS=days)
    result = run(["serve", "--port", str(free_port())], env)
    assert_one_clear_line(result, "SHEPHERD_RETENTION_DAYS")


def test_unreadable_private_key_fails_at_start_up(tmp_path: Path) -> None:
    key = tmp_path / "missing-key.pem"
    env = cli_env(tmp_path, GITHUB_WEBHOOK_SECRET="s3cret", GITHUB_PRIVATE_KEY_PATH=str(key))
    result = run(["serve", "--port", str(free_port())], env)
    assert_one_clear_line(result, "GITHUB_PRIVATE_KEY_PATH", str(key))


def test_private_key_that_is_not_a_key_fails_at_start_up(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    env = cli_env(tmp_path, GITHUB_WEBHOOK_SECRET="s3cret", GITHUB_PRIVATE_KEY_PATH=str(key))
    result = run(["serve", "--port", str(free_port())], env)
    assert_one_clear_line(result, "private key")


# -- serve: the development secret and the credentials notice -------------------------------


class Served:
    """``shepherd serve`` in the background, its output collected in a file."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.output = tmp_path / f"serve-{self.port}.log"
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(SHEPHERD), "serve", "--port", str(self.port), "--workers", "1", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for(self, needle: str) -> str:
        deadline = time.monotonic() + TIMEOUT
        while needle not in (text := self.text()):
            if self.proc.poll() is not None:
                pytest.fail(f"shepherd serve exited with {self.proc.returncode}:\n{text}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {needle!r} in the output:\n{text}")
            time.sleep(0.05)
        return text

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"shepherd serve ignored SIGTERM:\n{self.text()}")


def serve_until(tmp_path: Path, env: dict[str, str], needle: str, *args: str) -> str:
    served = Served(tmp_path, env, *args)
    try:
        served.wait_for(needle)
    finally:
        code = served.stop()
    assert code == 0, served.text()
    return served.text()


def test_generate_secret_creates_it_once_privately_and_reuses_it(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    first = serve_until(tmp_path, env, "listening on", "--generate-secret")
    secret_file = tmp_path / "data" / "webhook-secret"
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret in first
    assert "/webhook" in first
    assert "http://127.0.0.1:" in first

    second = serve_until(tmp_path, env, "listening on", "--generate-secret")
    assert secret_file.read_text().strip() == secret
    assert secret in second


def test_generate_secret_is_ignored_when_a_secret_is_configured(tmp_path: Path) -> None:
    env = cli_env(tmp_path, GITHUB_WEBHOOK_SECRET="configured-secret")
    output = serve_until(tmp_path, env, "listening on", "--generate-secret")
    assert not (tmp_path / "data" / "webhook-secret").exists()
    assert "configured-secret" not in output


def test_without_app_credentials_says_once_that_github_writes_are_disabled(
    tmp_path: Path,
) -> None:
    env = cli_env(tmp_path, GITHUB_WEBHOOK_SECRET="s3cret")
    output = serve_until(tmp_path, env, "listening on")
    assert output.count("GitHub writes are disabled") == 1, output
    assert "GITHUB_APP_ID" in output
    assert "Traceback" not in output


# -- diagnose --json on every shared scenario -----------------------------------------------

OUTCOMES = {"fixed", "rerun", "handoff", "noop"}
FAILURE_KEYS = {"category", "fixers", "command", "excerpt", "retryable", "owner_action_required"}


def expected_fixers(expect: dict[str, Any]) -> list[str]:
    if "fixers" in expect:
        return list(expect["fixers"])
    fixer = expect.get("fixer", "none")
    return [] if fixer == "none" else [fixer]


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_diagnose_json_classifies_the_scenario(case: str, tmp_path: Path) -> None:
    expect = json.loads((CASES / case / "expect.json").read_text())
    result = run(["diagnose", "--log", str(CASES / case / "job.log"), "--json"], cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)

    assert outcome["outcome"] in OUTCOMES
    assert isinstance(outcome["budget"], dict)
    assert outcome["budget"]
    assert outcome["failures"], "a failed job log yields at least one failure"
    for failure in outcome["failures"]:
        assert failure.keys() >= FAILURE_KEYS, failure.keys()
        assert isinstance(failure["fixers"], list)
        assert isinstance(failure["retryable"], bool)
        assert isinstance(failure["owner_action_required"], bool)
        assert failure["excerpt"], "the excerpt is what a reader acts on"

    assert outcome["category"] == expect["category"]
    assert [f["category"] for f in outcome["failures"]] == [expect["category"]] * len(
        outcome["failures"]
    )
    fixers = [name for f in outcome["failures"] for name in f["fixers"]]
    assert fixers == expected_fixers(expect)
    if expect["category"] == "infra":
        assert all(f["retryable"] for f in outcome["failures"])
