"""Job environments end to end: real repositories whose CI needs what the job sets up.

Each case is a small repository with a GitHub Actions workflow and the log of its failed job.
Without the job's environment the failing command cannot even run (the package is not installed,
``node_modules`` is missing, the database is not there, the step runs in a sub-project). Through
``shepherd fix`` and through the server against the GitHub simulator, the failure must reproduce
in the rebuilt job before any fix, and the fix (an LLM edit played back by the Messages API
simulator, or a deterministic fixer) must pass there after. Setup steps download from the real
package registries, through Shepherd's registry-only proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bot.app.web import METRICS, STORE
from bot.app.worker import WorkerPool
from bot.jobenv.environment import EnvironmentsFactory
from bot.kernel.problems import OutcomeKind
from bot.kernel.settings import Settings
from bot.llm.factory import make_agent
from bot.ops.local import fix_repo
from bot.reporting.summary import extract_outcome
from bot.sandbox import make_runner
from fixers import FIXERS
from fixers.tools import bundled_tool_dirs
from tests.anthropic_sim import MessagesSimulator, RecordedRequest, Reply, reply, text, tool_use
from tests.e2e_support import World, git
from tests.ghsim import commit_files
from tests.test_git_traps import make_repo
from tests.test_logs import job_log, run_header

ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass(frozen=True)
class Edit:
    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Case:
    files: dict[str, str]
    job: str
    command: str
    #: Lines of the failing step's output in CI (as the real tool prints them).
    output: tuple[str, ...]
    #: The LLM's fix, or None when a deterministic fixer repairs it.
    edit: Edit | None = None
    #: What the rebuilt environment must show.
    services: tuple[str, ...] = ()
    working_directory: str = ""
    fixer: str = "agent"
    extra_checks: dict[str, str] = field(default_factory=dict)


PERIODS = Case(
    files={
        "pyproject.toml": (
            '[project]\nname = "periods"\nversion = "0.1.0"\n'
            'dependencies = ["python-dateutil>=2.8"]\n'
            '[project.optional-dependencies]\ntest = ["pytest>=8"]\n'
            '[build-system]\nrequires = ["setuptools>=68"]\n'
            'build-backend = "setuptools.build_meta"\n'
        ),
        "src/periods/__init__.py": (
            "from dateutil.relativedelta import relativedelta\n\n\n"
            "def months_between(a, b):\n"
            "    delta = relativedelta(b, a)\n"
            "    return delta.years * 12 + delta.months + 1\n"
        ),
        "tests/test_periods.py": (
            "from datetime import date\n\nfrom periods import months_between\n\n\n"
            "def test_months_between():\n"
            "    assert months_between(date(2024, 1, 1), date(2024, 3, 1)) == 2\n"
        ),
        ".github/workflows/ci.yml": (
            "name: CI\non: pull_request\njobs:\n  test:\n    runs-on: ubuntu-latest\n"
            "    steps:\n      - uses: actions/checkout@v4\n"
            "      - uses: actions/setup-python@v5\n        with:\n"
            '          python-version: "3.11"\n'
            '      - run: pip install -e ".[test]"\n'
            "      - run: pytest -q\n"
        ),
    },
    job="test",
    command="pytest -q",
    output=(
        ">       assert months_between(date(2024, 1, 1), date(2024, 3, 1)) == 2",
        "E       assert 3 == 2",
        "FAILED tests/test_periods.py::test_months_between - assert 3 == 2",
        "1 failed in 0.05s",
    ),
    edit=Edit("src/periods/__init__.py", "delta.months + 1", "delta.months"),
)

POSTGRES = Case(
    files={
        "requirements.txt": "psycopg[binary]==3.2.3\npytest==8.3.4\n",
        "accounts.py": (
            "def active_users(conn):\n"
            '    return conn.execute("SELECT count(*) FROM users WHERE is_active").fetchone()[0]\n'
        ),
        "test_accounts.py": (
            "import os\n\nimport psycopg\n\nfrom accounts import active_users\n\n\n"
            "def test_active_users():\n"
            '    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:\n'
            '        conn.execute("CREATE TABLE users (name text, active boolean)")\n'
            "        conn.execute(\"INSERT INTO users VALUES ('a', true), ('b', false)\")\n"
            "        assert active_users(conn) == 1\n"
        ),
        ".github/workflows/ci.yml": (
            "name: CI\non: pull_request\njobs:\n  db:\n    runs-on: ubuntu-latest\n"
            "    env:\n      DATABASE_URL: postgresql://app:s3cret@localhost:5432/accounts\n"
            "    services:\n      postgres:\n        image: postgres:16\n        env:\n"
            "          POSTGRES_USER: app\n          POSTGRES_PASSWORD: s3cret\n"
            "          POSTGRES_DB: accounts\n        ports:\n          - 5432:5432\n"
            "        options: >-\n          --health-cmd pg_isready\n"
            "    steps:\n      - uses: actions/checkout@v4\n"
            "      - uses: actions/setup-python@v5\n        with:\n"
            '          python-version: "3.11"\n'
            "      - run: pip install -r requirements.txt\n"
            "      - run: pytest -q\n"
        ),
    },
    job="db",
    command="pytest -q",
    output=(
        'E   psycopg.errors.UndefinedColumn: column "is_active" does not exist',
        "FAILED test_accounts.py::test_active_users - psycopg.errors.UndefinedColumn: column "
        '"is_active" does not exist',
        "1 failed in 0.21s",
    ),
    edit=Edit("accounts.py", "WHERE is_active", "WHERE active"),
    services=("postgres",),
)

NODE_TEST = (
    'import assert from "node:assert/strict";\nimport test from "node:test";\n'
    'import { describe } from "../src/describe.js";\n\n'
    'test("describes a minute", () => {\n  assert.equal(describe(60000), "1 minute");\n});\n'
)
NODE_SOURCE = (
    'import ms from "ms";\n\n'
    "export function describe(millis) {\n  return ms(millis, { long: false });\n}\n"
)
PACKAGE_JSON = (
    '{\n  "name": "durations",\n  "version": "1.0.0",\n  "private": true,\n'
    '  "type": "module",\n  "scripts": {"test": "node --test"},\n'
    '  "dependencies": {"ms": "2.1.3"}\n}\n'
)
MS_INTEGRITY = "sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA=="
NODE_OUTPUT = (
    "not ok 1 - describes a minute",
    "  error: |-",
    "    Expected values to be strictly equal:",
    "    '1m' !== '1 minute'",
    "# fail 1",
)

NPM = Case(
    files={
        "package.json": PACKAGE_JSON,
        "package-lock.json": json.dumps(
            {
                "name": "durations",
                "version": "1.0.0",
                "lockfileVersion": 3,
                "requires": True,
                "packages": {
                    "": {"name": "durations", "version": "1.0.0", "dependencies": {"ms": "2.1.3"}},
                    "node_modules/ms": {
                        "version": "2.1.3",
                        "integrity": MS_INTEGRITY,
                        "license": "MIT",
                    },
                },
            },
            indent=2,
        )
        + "\n",
        "src/describe.js": NODE_SOURCE,
        "test/describe.test.js": NODE_TEST,
        ".github/workflows/ci.yml": (
            "name: CI\non: pull_request\njobs:\n  unit:\n    runs-on: ubuntu-latest\n"
            "    steps:\n      - uses: actions/checkout@v4\n"
            "      - uses: actions/setup-node@v4\n        with:\n          node-version: 20\n"
            "      - run: npm ci\n      - run: npm test\n"
        ),
    },
    job="unit",
    command="npm test",
    output=NODE_OUTPUT,
    edit=Edit("src/describe.js", "long: false", "long: true"),
)

PNPM = Case(
    files={
        "package.json": PACKAGE_JSON,
        "pnpm-lock.yaml": (
            "lockfileVersion: '9.0'\n\nsettings:\n  autoInstallPeers: true\n"
            "  excludeLinksFromLockfile: false\n\nimporters:\n\n  .:\n    dependencies:\n"
            "      ms:\n        specifier: 2.1.3\n        version: 2.1.3\n\npackages:\n\n"
            f"  ms@2.1.3:\n    resolution: {{integrity: {MS_INTEGRITY}}}\n\n"
            "snapshots:\n\n  ms@2.1.3: {}\n"
        ),
        "src/describe.js": NODE_SOURCE,
        "test/describe.test.js": NODE_TEST,
        ".github/workflows/ci.yml": (
            "name: CI\non: pull_request\njobs:\n  unit:\n    runs-on: ubuntu-latest\n"
            "    steps:\n      - uses: actions/checkout@v4\n"
            "      - uses: pnpm/action-setup@v4\n        with:\n          version: 9.15.0\n"
            "      - uses: actions/setup-node@v4\n        with:\n          node-version: 20\n"
            "      - run: pnpm install --frozen-lockfile\n      - run: pnpm test\n"
        ),
    },
    job="unit",
    command="pnpm test",
    output=NODE_OUTPUT,
    edit=Edit("src/describe.js", "long: false", "long: true"),
)

MONOREPO = Case(
    files={
        "README.md": "monorepo\n",
        "services/billing/requirements-dev.txt": "ruff==0.17.6\n",
        "services/billing/invoices.py": "def total(lines):\n    return sum( line.amount for line in lines )\n",
        "services/billing/pyproject.toml": "[tool.ruff]\nline-length = 100\n",
        # Unformatted, outside the sub-project: the job never looks at it.
        "tools/script.py": "x = [1,2 , 3]\n",
        ".github/workflows/ci.yml": (
            "name: CI\non: pull_request\njobs:\n  billing:\n    runs-on: ubuntu-latest\n"
            "    defaults:\n      run:\n        working-directory: services\n"
            "    steps:\n      - uses: actions/checkout@v4\n"
            "      - run: pip install -r billing/requirements-dev.txt\n"
            "      - name: Format\n        working-directory: services/billing\n"
            "        run: ruff format --check .\n"
        ),
    },
    job="billing",
    command="ruff format --check .",
    output=(
        "unformatted: File would be reformatted",
        " --> invoices.py:2:16",
        "1 file would be reformatted",
    ),
    fixer="ruff-format",
    working_directory="services/billing",
)

MATRIX_REDIS = Case(
    files={
        "requirements.txt": "redis==5.2.1\npytest==8.3.4\n",
        "counter.py": (
            "import os\n\nimport redis\n\n\n"
            "def hits(page):\n"
            '    client = redis.Redis.from_url(os.environ["REDIS_URL"])\n'
            "    client.incr(f\"{os.environ['APP_PREFIX']}:{page}\")\n"
            "    return int(client.get(f\"{os.environ['APP_PREFIX']}:{page}\")) + 1\n"
        ),
        "test_counter.py": (
            "import os\n\nfrom counter import hits\n\n\n"
            "def test_hits_count_once():\n"
            '    assert os.environ["GREETING"] == "hello from the step"\n'
            '    assert os.environ["MODE"] == "ci"\n'
            '    assert hits("home") == 1\n'
        ),
        ".github/workflows/ci.yml": (
            "name: CI\non: pull_request\n"
            "env:\n  MODE: ci\n  APP_PREFIX: ${{ 'app' }}\n"
            "jobs:\n  test:\n    runs-on: ubuntu-latest\n"
            "    strategy:\n      matrix:\n        python: ['3.10', '3.11']\n"
            "    env:\n      REDIS_URL: redis://localhost:6379/0\n"
            "    services:\n      redis:\n        image: redis:7\n        ports:\n          - 6379:6379\n"
            "    steps:\n      - uses: actions/checkout@v4\n"
            "      - uses: actions/setup-python@v5\n        with:\n"
            "          python-version: ${{ matrix.python }}\n"
            "      - run: pip install -r requirements.txt\n"
            "      - run: pytest -q\n        env:\n          GREETING: hello from the step\n"
        ),
    },
    job="test (3.11)",
    command="pytest -q",
    output=(
        "E       AssertionError: assert 2 == 1",
        "FAILED test_counter.py::test_hits_count_once - AssertionError: assert 2 == 1",
        "1 failed in 0.02s",
    ),
    edit=Edit("counter.py", "+ 1\n", "\n"),
    services=("redis",),
)

CASES = {
    "pip-editable": PERIODS,
    "requirements-postgres": POSTGRES,
    "npm-ci": NPM,
    "pnpm": PNPM,
    "monorepo-working-directory": MONOREPO,
    "matrix-env-redis": MATRIX_REDIS,
}


def case_log(case: Case) -> str:
    lines = [*case.output, "##[error]Process completed with exit code 1."]
    log = job_log((case.command, run_header(case.command), lines))
    return log.replace("Complete job name: test", f"Complete job name: {case.job}")


def model_script(edit: Edit) -> list[Any]:
    """The model reads the failure, makes the edit, runs the check, and finishes only if it
    passed (so a fix that does not pass in the job environment is never kept)."""

    def finish(request: RecordedRequest) -> Reply:
        results = request.tool_results()
        passed = bool(results) and str(results[-1].get("content", "")).startswith("passed")
        return reply(tool_use("finish", {"explanation": "Fixed." if passed else "Still fails."}))

    return [
        reply(text("Fixing."), tool_use("replace_in_file", vars(edit))),
        reply(tool_use("run_check", {})),
        finish,
    ]


async def start_model(
    aiohttp_server: ServerFactory, case: Case
) -> tuple[MessagesSimulator | None, str]:
    if case.edit is None:
        return None, ""
    sim = MessagesSimulator(script=model_script(case.edit))
    server = await aiohttp_server(sim.app())
    return sim, str(server.make_url("")).rstrip("/")


def assert_rebuilt(outcome: dict[str, Any], case: Case) -> None:
    assert outcome["outcome"] == "fixed", json.dumps(outcome, indent=1)[:6000]
    [environment] = outcome["environment"]
    assert environment["reproduced"] is True, environment
    assert environment["reproduction"].startswith("failed as in CI")
    assert environment["working_directory"] == case.working_directory
    assert [s.split(" ")[0] for s in environment["services"]] == list(case.services)
    assert any(s["status"] == "replayed" for s in environment["steps"]), environment
    assert "in its job environment" in outcome["verification"]
    assert [f["fixer"] for f in outcome["fixes"] if f["changed"]] == [case.fixer]


@pytest.mark.parametrize("name", list(CASES))
async def test_shepherd_fix_reproduces_then_verifies_in_the_job_environment(
    name: str,
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    make_settings: Callable[..., Settings],
) -> None:
    case = CASES[name]
    repo = make_repo(tmp_path / "repo", case.files)
    log = tmp_path / "job.log"
    log.write_text(case_log(case))
    sim, url = await start_model(aiohttp_server, case)
    settings = make_settings(
        anthropic_api_key=sim.api_key if sim else None, anthropic_base_url=url or None
    )
    agent, _ = make_agent(settings) if sim else (None, "")
    runner = make_runner(allow_unsandboxed=False, tool_dirs=bundled_tool_dirs())

    result = await fix_repo(
        repo,
        log,
        fixers=FIXERS,
        runner=runner,
        agent=agent,
        environments=EnvironmentsFactory.from_settings(settings),
    )

    assert result.outcome.outcome is OutcomeKind.FIXED, result.outcome.model_dump_json(indent=1)
    assert_rebuilt(result.outcome.to_json(), case)
    if case.edit:
        assert case.edit.new in (repo / case.edit.path).read_text()
    if name == "monorepo-working-directory":
        # Fixed where the job runs; the file outside the sub-project is left alone.
        assert (
            "sum(line.amount for line in lines)"
            in (repo / "services/billing/invoices.py").read_text()
        )
        assert (repo / "tools/script.py").read_text() == "x = [1,2 , 3]\n"
    # Nothing the setup made is left in the checkout (node_modules, *.egg-info).
    assert not (repo / "node_modules").exists()
    assert not list(repo.glob("src/*.egg-info"))


@pytest.mark.parametrize("name", list(CASES))
async def test_server_reproduces_then_verifies_in_the_job_environment(
    name: str, world: World, aiohttp_server: ServerFactory
) -> None:
    case = CASES[name]
    base_files = {
        **{p: c for p, c in case.files.items() if p.startswith(".github/")},
        ".github/shepherd.yml": "llm:\n  mode: auto\n",
    }
    world.base_sha = commit_files(world.bare, "main", base_files, "CI")
    sim, url = await start_model(aiohttp_server, case)
    if sim is not None:
        settings = Settings(
            **{
                **world.settings.model_dump(),
                "anthropic_api_key": sim.api_key,
                "anthropic_base_url": url,
            }
        )
        world.pool = WorkerPool(
            store=world.client.app[STORE],
            settings=settings,
            metrics=world.client.app[METRICS],
            count=0,
        )
    pull = world.open_pull("copilot/fix", case.files, number=31, user="Copilot", body="Fix.")
    head = pull.head_sha
    run, job = world.fail_job(head, case.job, case_log(case))

    assert await world.deliver("workflow_job", world.workflow_job_event(run, job)) == 202
    await world.drain()

    [comment] = world.sticky_comments(31)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert_rebuilt(outcome, case)
    assert f"Environment: job .github/workflows/ci.yml: {case.job} · " in comment["body"]
    assert "· reproduced" in comment["body"]
    new_head = world.branch_sha("copilot/fix")
    assert outcome["commit"] == new_head
    assert git(world.bare, "rev-parse", f"{new_head}^") == head
    changed = git(world.bare, "diff", "--name-only", head, new_head).splitlines()
    # Exactly the fix: nothing the setup steps or the checks left behind.
    expected = [case.edit.path] if case.edit else ["services/billing/invoices.py"]
    assert changed == expected
    world.sim.assert_no_violations()


async def test_production_dependency_set_verifies_with_the_jobs_own_tools(
    tmp_path: Path, aiohttp_server: ServerFactory, shared_jobenv_pool: Path
) -> None:
    """The production image installs Shepherd without its dev dependencies (no pytest): the
    job's checks must run on what the job itself installed, not on Shepherd's virtualenv."""
    venv = tmp_path / "prod-venv"
    root = Path(__file__).resolve().parents[1]
    uv = Path(sys.executable).parent / "uv"
    done = subprocess.run(
        [str(uv), "sync", "--locked", "--no-dev", "--quiet"],
        cwd=root,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not (venv / "bin" / "pytest").exists()  # really the production set
    case = PERIODS
    repo = make_repo(tmp_path / "repo", case.files)
    log = tmp_path / "job.log"
    log.write_text(case_log(case))
    sim, url = await start_model(aiohttp_server, case)
    assert sim is not None
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ANTHROPIC_API_KEY": sim.api_key,
        "ANTHROPIC_BASE_URL": url,
        "SHEPHERD_DATA_DIR": str(tmp_path / "data"),
        "SHEPHERD_JOBENV_POOL": str(shared_jobenv_pool),
        "SHEPHERD_LOG_FORMAT": "text",
    }
    proc = await asyncio.create_subprocess_exec(
        str(venv / "bin" / "shepherd"),
        "fix",
        "--repo",
        str(repo),
        "--log",
        str(log),
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (err + out).decode()[-4000:]
    assert_rebuilt(json.loads(out), case)


async def test_opening_a_pr_prebuilds_its_base_branchs_environments(
    world: World, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    case = PERIODS
    base_files = {
        **case.files,  # the base branch has the project and its workflow
        ".github/shepherd.yml": "llm:\n  mode: auto\n",
    }
    world.base_sha = commit_files(world.bare, "main", base_files, "CI")
    sim, url = await start_model(aiohttp_server, case)
    assert sim is not None
    settings = Settings(
        **{
            **world.settings.model_dump(),
            "anthropic_api_key": sim.api_key,
            "anthropic_base_url": url,
            "jobenv_pool_dir": tmp_path / "own-pool",  # not the run's shared pool
        }
    )
    world.pool = WorkerPool(
        store=world.client.app[STORE], settings=settings, metrics=world.client.app[METRICS], count=0
    )
    pull = world.open_pull(
        "copilot/fix", {"README.md": "changed\n"}, number=32, user="Copilot", body="Fix."
    )
    assert await world.deliver("pull_request", world.pull_request_event(pull, "opened")) == 202
    await world.drain()
    pooled = [p for p in (tmp_path / "own-pool").iterdir() if not p.name.startswith(".")]
    assert len(pooled) == 1  # the base branch's `test` job, ready before anything failed

    run, job = world.fail_job(pull.head_sha, case.job, case_log(case))
    assert await world.deliver("workflow_job", world.workflow_job_event(run, job)) == 202
    await world.drain()

    [comment] = world.sticky_comments(32)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert_rebuilt(outcome, case)
    [environment] = outcome["environment"]
    assert environment["cache"] == "hit"


async def test_a_service_shepherd_cannot_provide_hands_off(
    tmp_path: Path, aiohttp_server: ServerFactory, make_settings: Callable[..., Settings]
) -> None:
    case = PERIODS
    workflow = case.files[".github/workflows/ci.yml"].replace(
        "    steps:\n",
        "    services:\n      search:\n        image: elasticsearch:8.15.0\n"
        "        ports:\n          - 9200:9200\n    steps:\n",
        1,
    )
    repo = make_repo(tmp_path / "repo", {**case.files, ".github/workflows/ci.yml": workflow})
    log = tmp_path / "job.log"
    log.write_text(case_log(case))
    sim, url = await start_model(aiohttp_server, case)
    assert sim is not None
    settings = make_settings(anthropic_api_key=sim.api_key, anthropic_base_url=url)
    agent, _ = make_agent(settings)

    result = await fix_repo(
        repo,
        log,
        fixers=FIXERS,
        runner=make_runner(allow_unsandboxed=False, tool_dirs=bundled_tool_dirs()),
        agent=agent,
        environments=EnvironmentsFactory.from_settings(settings),
    )

    outcome = result.outcome
    assert outcome.outcome is OutcomeKind.HANDOFF
    assert outcome.title == "The CI job could not be rebuilt: nothing verified"
    assert "service search (image elasticsearch:8.15.0) cannot be provided here" in outcome.detail
    assert sim.requests == []  # never a silent pass, and no LLM tokens spent on it
    assert (repo / case.edit.path).read_text() == case.files[case.edit.path]  # type: ignore[union-attr]
