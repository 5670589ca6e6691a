"""Attack tests for job environments: what PR code sees while the CI job is rebuilt.

Setup steps (``pip install -e .`` runs the PR's ``setup.py``) get network to the package
registries and nothing else: no secret of Shepherd's, no secret of the workflow's, none of the
host's loopback services, no other host. The failing command gets no network at all except its
own services. A probe, run as PR code would run, reports what it could reach.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import pytest

from bot.jobenv.environment import EnvironmentsFactory
from bot.jobenv.workflow import find_job
from bot.repair.blueprint import job_environments
from bot.sandbox import BubblewrapSandbox
from fixers.tools import bundled_tool_dirs
from tests.fixer_support import checkout_of
from tests.test_git_traps import make_repo

PROBE = """\
import json, os, socket, sys, urllib.request

def tcp(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "open"
    except OSError as exc:
        return type(exc).__name__

def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as answer:
            return answer.status
    except Exception as exc:  # noqa: BLE001 - the probe reports whatever happened
        return type(exc).__name__ + ": " + str(exc)[:80]

report = {
    "env": sorted(os.environ),
    "values": {k: os.environ.get(k) for k in ("NPM_TOKEN", "GITHUB_TOKEN", "WORKFLOW_LEVEL")},
    "host_listener": tcp("127.0.0.1", int(sys.argv[2])),
    "host_postgres": tcp("127.0.0.1", 5432),
    "registry": fetch("https://pypi.org/simple/six/"),
    "elsewhere": fetch("https://example.com/"),
    "home": sorted(os.listdir(os.path.expanduser("~"))),
    "root_home": sorted(os.listdir("/root")) if os.path.isdir("/root") else [],
    "pythons": sorted(os.listdir("/root/.pyenv/versions")) if os.path.isdir("/root/.pyenv/versions") else [],
    "etc": sorted(os.listdir("/etc")),
}
with open(sys.argv[1], "w") as out:
    json.dump(report, out)
"""


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP service on the host's loopback, as Shepherd's own server or database would be."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def workflow(port: int) -> str:
    return (
        "name: CI\non: pull_request\nenv:\n  WORKFLOW_LEVEL: visible\n"
        "jobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - uses: actions/setup-python@v5\n        with:\n          python-version: '3.11'\n"
        f"      - run: python probe.py setup-report.json {port}\n"
        "        env:\n          NPM_TOKEN: ${{ secrets.NPM_TOKEN }}\n"
        f"      - run: python probe.py command-report.json {port}\n"
    )


@pytest.fixture
async def opened(
    tmp_path: Path, host_listener: int, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[dict[str, object], dict[str, object]]]:
    # Shepherd's own secrets, in its environment: none may reach PR code.
    for name in ("GITHUB_TOKEN", "ANTHROPIC_API_KEY", "GITHUB_PRIVATE_KEY", "DATABASE_URL"):
        monkeypatch.setenv(name, f"host-secret-{name}")
    files = {"probe.py": PROBE, ".github/workflows/ci.yml": workflow(host_listener)}
    repo = make_repo(tmp_path / "repo", files)
    wt = checkout_of(repo)
    job = find_job(
        {".github/workflows/ci.yml": files[".github/workflows/ci.yml"]},
        job_name="test",
        failing_command=f"python probe.py command-report.json {host_listener}",
    )
    assert job is not None
    assert job.failing_step is not None
    sandbox = BubblewrapSandbox(tool_dirs=bundled_tool_dirs())
    factory = EnvironmentsFactory(tmp_path / "jobenv", pool=tmp_path / "pool")
    environments = factory.for_runner(sandbox)
    assert environments is not None
    async with job_environments(environments, wt, {"test": job}, key="k", name="repo") as ready:
        assert ready.failure is None, ready.failure
        context = ready.contexts["test"]
        # The setup step's report was made in the tree, then moved out with the setup's products.
        setup = json.loads(next((tmp_path / "jobenv").rglob("setup-report.json")).read_text())
        result = await context.runner.run(
            ["bash", "-e", "-c", f"python probe.py command-report.json {host_listener}"],
            cwd=repo,
            writable=repo,
        )
        assert result.ok, result.output
        command = json.loads((repo / "command-report.json").read_text())
        yield setup, command


async def test_setup_steps_see_no_secret(opened: tuple[dict[str, object], ...]) -> None:
    setup, command = opened
    for report in (setup, command):
        names = report["env"]
        assert isinstance(names, list)
        assert not [n for n in names if n.startswith(("GITHUB_TOKEN", "ANTHROPIC", "GITHUB_PRIV"))]
        assert "DATABASE_URL" not in names
        assert report["values"]["GITHUB_TOKEN"] is None  # type: ignore[index]
        # Of the host's home, only the job's interpreter is mounted (read-only).
        assert report["root_home"] in ([], [".pyenv"]), report["root_home"]
        assert len(report["pythons"]) <= 1, report["pythons"]  # type: ignore[arg-type]
        assert "shadow" not in cast(list[str], report["etc"])
    # The workflow's own values arrive; its secrets are empty, as the summary says.
    assert setup["values"] == {"NPM_TOKEN": "", "GITHUB_TOKEN": None, "WORKFLOW_LEVEL": "visible"}


async def test_setup_steps_reach_the_registries_and_nothing_else(
    opened: tuple[dict[str, object], ...],
) -> None:
    setup, _ = opened
    assert setup["registry"] == 200
    assert str(setup["elsewhere"]).startswith(("HTTPError", "URLError")), setup["elsewhere"]
    assert setup["host_listener"] != "open"
    assert setup["host_postgres"] != "open"


async def test_the_failing_command_has_no_network(opened: tuple[dict[str, object], ...]) -> None:
    _, command = opened
    assert command["host_listener"] != "open"
    assert command["host_postgres"] != "open"
    assert command["registry"] != 200
    assert command["elsewhere"] != 200
