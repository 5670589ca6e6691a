"""The failing job read from the base branch's workflow: ``bot.jobenv.workflow`` (pure).

Every workflow here is a small one written for the test, shaped like the real ones (a matrix with
include/exclude, a monorepo with defaults.run, services postgres and redis).
"""

from __future__ import annotations

import pytest

from bot.jobenv.expressions import (
    Context,
    Secret,
    Unresolvable,
    condition,
    evaluate,
    render,
    to_string,
)
from bot.jobenv.workflow import (
    WORKSPACE,
    PortMapping,
    WorkflowJob,
    WorkflowStep,
    find_job,
    parse_workflow,
)

CI = ".github/workflows/ci.yml"

MATRIX = """
name: Tests
on:
  pull_request:
jobs:
  test:
    runs-on: ${{ matrix.os }}
    strategy:
      fail-fast: false
      matrix:
        os: [ubuntu-latest, windows-latest]
        python: ["3.12", 3.10]
        exclude:
          - os: windows-latest
            python: 3.10
        include:
          - os: ubuntu-latest
            python: "3.12"
            coverage: true
          - os: ubuntu-22.04
            python: "3.8"
            legacy: yes
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: ${{ matrix.python }}
      - run: pip install -e ".[test]"
      - if: matrix.coverage
        run: pip install coverage
      - if: runner.os == 'Windows'
        run: choco install something
      - run: pytest -q --python ${{ matrix.python }}
  lint:
    name: Lint on py${{ matrix.python }}
    runs-on: ubuntu-latest
    strategy:
      matrix:
        python: ["3.11", "3.12"]
    steps:
      - uses: actions/checkout@v4
      - run: pip install ruff
      - run: ruff check .
  docs:
    name: Build docs
    runs-on: ubuntu-latest
    strategy:
      matrix:
        target: [{kind: html, strict: true}]
    steps:
      - run: make ${{ matrix.target.kind }}
"""

MONOREPO = """
on: push
env:
  CI: "true"
  LEVEL: workflow
  DB_NAME: app
defaults:
  run:
    working-directory: services/api
    shell: bash
jobs:
  billing:
    runs-on: ubuntu-latest
    env:
      LEVEL: job
      DATABASE_URL: postgresql://postgres@localhost/${{ env.DB_NAME }}_test
    defaults:
      run:
        working-directory: services/billing
    steps:
      - uses: actions/checkout@v4
      - name: Install
        run: pip install -r requirements.txt
      - name: Generate
        working-directory: tools/codegen
        shell: sh
        run: ./generate.sh ${{ env.LEVEL }}
      - name: Tests
        env:
          LEVEL: step
          PYTEST_ADDOPTS: -p no:cacheprovider --db ${{ env.DATABASE_URL }}
        run: pytest -q
  api:
    runs-on: ubuntu-latest
    steps:
      - run: npm ci
      - run: npm test
"""

SERVICES = """
on: pull_request
jobs:
  integration:
    runs-on: ubuntu-22.04
    services:
      postgres:
        image: postgres:16
        env:
          POSTGRES_DB: shop_test
          POSTGRES_USER: shop
          POSTGRES_PASSWORD: ${{ secrets.DB_PASSWORD }}
        ports:
          - "5432:5432"
        options: >-
          --health-cmd pg_isready
          --health-interval 10s
          --health-retries 5
      redis:
        image: redis:7
        ports:
          - 6379
      mailer:
        image: ${{ vars.MAILER_IMAGE }}
    env:
      DATABASE_URL: postgresql://shop@localhost:5432/shop_test
      REDIS_URL: redis://localhost:${{ job.services.redis.ports['6379'] }}/0
    steps:
      - uses: actions/checkout@v4
      - run: pip install -r requirements.txt
      - run: pytest tests/integration
"""

CONDITIONS = """
on: pull_request
jobs:
  build:
    runs-on: ubuntu-latest
    env:
      MODE: ci
    steps:
      - uses: actions/checkout@v4
      - uses: actions/cache@v4
        id: cache
        with:
          path: node_modules
          key: deps-${{ hashFiles('package-lock.json') }}
      - name: Install
        if: steps.cache.outputs.cache-hit != 'true'
        run: npm ci
      - name: Always
        if: always()
        run: echo always
      - name: Only after a failure
        if: failure()
        run: ./collect-logs.sh
      - name: Not cancelled
        if: ${{ !cancelled() && env.MODE == 'CI' }}
        run: echo not-cancelled
      - name: Only on push
        if: github.event_name == 'push'
        run: ./publish.sh
      - name: Release
        if: startsWith(github.ref, 'refs/tags/')
        run: ./release.sh
      - name: Version
        id: version
        run: echo "v=1.2.3" >> "$GITHUB_OUTPUT"
      - name: Stamp
        run: ./stamp.sh ${{ steps.version.outputs.v }}
      - name: Authenticate
        env:
          NODE_AUTH_TOKEN: ${{ secrets.NPM_TOKEN }}
          GH_TOKEN: ${{ github.token }}
        run: npm whoami || true
      - name: Skipped literally
        if: false
        run: echo never
      - name: Test
        run: npm test -- --reporter ${{ steps.version.outputs.v }}
"""


def job(
    text: str,
    *,
    job_name: str | None,
    failing_command: str | None = None,
    failing_step_name: str | None = None,
) -> WorkflowJob:
    found = find_job(
        {CI: text},
        job_name=job_name,
        failing_command=failing_command,
        failing_step_name=failing_step_name,
    )
    assert found is not None
    return found


def step_named(found: WorkflowJob, name: str) -> WorkflowStep:
    return next(s for s in found.setup_steps if s.display_name == name)


# ---------------------------------------------------------------------------------------------
# Finding the job by its name


@pytest.mark.parametrize(
    ("job_name", "job_id", "matrix"),
    [
        # the combination's values in the order of the matrix keys; 3.10 is the number 3.1
        (
            "test (ubuntu-latest, 3.12)",
            "test",
            {"os": "ubuntu-latest", "python": "3.12", "coverage": "true"},
        ),
        ("test (ubuntu-latest, 3.1)", "test", {"os": "ubuntu-latest", "python": "3.1"}),
        ("test (windows-latest, 3.12)", "test", {"os": "windows-latest", "python": "3.12"}),
        # an include entry that matches no combination is one of its own, all values in the name
        (
            "test (ubuntu-22.04, 3.8, yes)",
            "test",
            {"os": "ubuntu-22.04", "python": "3.8", "legacy": "yes"},
        ),
        # a name: template is evaluated and gets no suffix
        ("Lint on py3.11", "lint", {"python": "3.11"}),
        ("Lint on py3.12", "lint", {"python": "3.12"}),
        # object values are flattened to their leaves
        ("Build docs (html, true)", "docs", {"target": '{"kind":"html","strict":true}'}),
    ],
)
def test_a_matrix_job_is_found_by_its_display_name(
    job_name: str, job_id: str, matrix: dict[str, str]
) -> None:
    found = job(MATRIX, job_name=job_name)
    assert (found.job_id, found.name, dict(found.matrix)) == (job_id, job_name, matrix)
    assert found.workflow == CI


@pytest.mark.parametrize(
    "job_name",
    [
        "test (windows-latest, 3.1)",  # excluded
        "test (ubuntu-latest, 3.12, true)",  # include's added key is not part of the name
        "test",  # a matrix job always carries its suffix
        "Lint on py${{ matrix.python }}",
        "lint (3.11)",  # the template replaces the id and the suffix
        "deploy",
    ],
)
def test_names_github_would_not_show_find_nothing(job_name: str) -> None:
    assert find_job({CI: MATRIX}, job_name=job_name) is None


def test_the_matrix_resolves_runs_on_with_and_if() -> None:
    found = job(
        MATRIX, job_name="test (ubuntu-latest, 3.12)", failing_command="pytest -q --python 3.12"
    )
    assert found.runs_on == ("ubuntu-latest",)
    assert found.runner_os == "Linux"
    assert step_named(found, "Run actions/setup-python@v5").with_ == {"python-version": "3.12"}
    assert step_named(found, "Run pip install coverage").skip_reason is None  # matrix.coverage
    windows = step_named(found, "Run choco install something")
    assert windows.skip_reason == "if: runner.os == 'Windows' is false here"
    assert found.failing_step is not None
    assert found.failing_step.run == "pytest -q --python 3.12"
    assert [s.index for s in found.setup_steps] == [0, 1, 2, 3, 4]


def test_a_combination_without_the_include_key_skips_its_step() -> None:
    found = job(
        MATRIX, job_name="test (ubuntu-latest, 3.1)", failing_command="pytest -q --python 3.1"
    )
    assert (
        step_named(found, "Run pip install coverage").skip_reason
        == "if: matrix.coverage is false here"
    )
    # CI skipped it too: not a difference worth a note
    assert not any("Run pip install coverage" in note for note in found.notes)


def test_a_windows_combination_says_the_sandbox_is_linux() -> None:
    found = job(
        MATRIX, job_name="test (windows-latest, 3.12)", failing_command="pytest -q --python 3.12"
    )
    assert found.runner_os == "Windows"
    assert step_named(found, "Run choco install something").skip_reason is None
    assert "the job runs on Windows; Shepherd's sandbox is Linux" in found.notes


def test_a_long_name_cut_by_github_still_matches() -> None:
    value = "tests/" + "/".join(f"package{i}" for i in range(20))
    text = f"""
jobs:
  shard:
    strategy:
      matrix:
        paths: ["{value}", "other"]
    steps:
      - run: pytest ${{{{ matrix.paths }}}}
"""
    full = f"shard ({value})"
    assert len(full) > 100
    found = job(text, job_name=full[:97] + "...")
    assert found.matrix == {"paths": value}
    assert found.name == full


def test_a_called_workflows_job_is_found_after_the_callers_name() -> None:
    files = {
        ".github/workflows/ci.yml": "jobs:\n  call:\n    uses: ./.github/workflows/reusable.yml\n",
        ".github/workflows/reusable.yml": "on: workflow_call\njobs:\n  unit:\n    steps:\n      - run: make test\n",
    }
    found = find_job(files, job_name="call / unit", failing_command="make test")
    assert found is not None
    assert (found.workflow, found.job_id) == (".github/workflows/reusable.yml", "unit")
    assert "job 'call / unit' is 'unit' of the workflow its caller 'call' calls" in found.notes
    assert find_job(files, job_name="other / unit") is None


def test_a_name_prefixed_with_the_workflows_name_is_found_in_that_workflow() -> None:
    files = {
        CI: MATRIX,
        ".github/workflows/other.yml": "name: Other\njobs:\n  lint:\n    steps: [{run: make}]\n",
    }
    found = find_job(files, job_name="Tests / Lint on py3.12")
    assert found is not None
    assert (found.workflow, found.matrix) == (CI, {"python": "3.12"})
    assert not any("calls" in note for note in found.notes)
    assert find_job(files, job_name="Nope / Lint on py3.12") is None
    assert find_job(files, job_name="Tests / lint") is None  # not another workflow's lint


# ---------------------------------------------------------------------------------------------
# Finding the job by the failing command


def test_without_a_name_the_command_finds_the_job_and_discloses_the_combination() -> None:
    found = job(MATRIX, job_name=None, failing_command="pytest -q --python 3.8")
    assert (found.job_id, found.name) == ("test", "test (ubuntu-22.04, 3.8, yes)")
    assert found.matrix["os"] == "ubuntu-22.04"


def test_an_unknown_name_falls_back_to_the_command_and_says_so() -> None:
    found = job(MONOREPO, job_name="Billing (renamed)", failing_command="pytest  -q ")
    assert found.job_id == "billing"
    assert any("no job is named 'Billing (renamed)'" in note for note in found.notes)


def test_a_command_every_combination_runs_leaves_the_matrix_unknown() -> None:
    found = job(MATRIX, job_name=None, failing_command='pip install -e ".[test]"')
    assert found.job_id == "test"
    assert found.matrix == {}
    assert found.failing_step is not None
    assert found.failing_step.index == 2
    setup_python = step_named(found, "Run actions/setup-python@v5")
    assert setup_python.skip_reason is not None
    assert "matrix.python" in setup_python.skip_reason
    assert (
        "the matrix combination is not known: 4 combinations of job 'test' run the failing command"
        in found.notes
    )


def test_a_command_two_jobs_run_is_ambiguous() -> None:
    files = {
        CI: MATRIX,
        ".github/workflows/lint.yml": "jobs:\n  ruff:\n    steps:\n      - run: ruff check .\n",
    }
    assert find_job(files, job_name=None, failing_command="ruff check .") is None
    # the job name settles it
    found = find_job(files, job_name="ruff", failing_command="ruff check .")
    assert found is not None
    assert found.workflow == ".github/workflows/lint.yml"


def test_a_command_no_step_runs_finds_nothing() -> None:
    assert find_job({CI: MATRIX}, job_name=None, failing_command="curl evil | sh") is None
    assert find_job({CI: MATRIX}, job_name=None, failing_command=None) is None


def test_the_failing_step_can_be_found_by_its_name() -> None:
    found = job(MONOREPO, job_name="billing", failing_step_name="Generate")
    assert found.failing_step is not None
    assert found.failing_step.name == "Generate"
    assert [s.display_name for s in found.setup_steps] == ["Run actions/checkout@v4", "Install"]


@pytest.mark.parametrize(
    ("step_name", "index"),
    [
        ("Tests", 3),
        ("Run pytest -q", 3),  # the log's title for the step
        ("pytest -q", 3),
        ("Run actions/checkout@v4", 0),
        ("ests", None),
        ("all", None),  # not "Install" without its first four letters
    ],
)
def test_the_step_names_a_log_may_give(step_name: str, index: int | None) -> None:
    found = job(MONOREPO, job_name="billing", failing_step_name=step_name)
    assert (found.failing_step.index if found.failing_step else None) == index


def test_a_failing_step_that_is_not_in_the_job_gives_no_setup_steps() -> None:
    found = job(MONOREPO, job_name="billing", failing_command="make nothing")
    assert found.failing_step is None
    assert found.setup_steps == ()
    assert "the failing step is not found in the job: no setup step is replayed" in found.notes


# ---------------------------------------------------------------------------------------------
# Environment, defaults, working directories


def test_env_at_three_levels_and_run_defaults() -> None:
    found = job(MONOREPO, job_name="billing", failing_command="pytest -q")
    assert found.env == {
        "CI": "true",
        "LEVEL": "job",
        "DB_NAME": "app",
        "DATABASE_URL": "postgresql://postgres@localhost/app_test",
    }
    install, generate = found.setup_steps[1], found.setup_steps[2]
    # job defaults win over workflow defaults; the workflow's shell still applies
    assert (install.working_directory, install.shell) == ("services/billing", "bash")
    # a step's own working-directory and shell win over both
    assert (generate.working_directory, generate.shell) == ("tools/codegen", "sh")
    assert generate.run == "./generate.sh job"
    failing = found.failing_step
    assert failing is not None
    assert failing.env["LEVEL"] == "step"
    assert failing.env["PYTEST_ADDOPTS"] == (
        "-p no:cacheprovider --db postgresql://postgres@localhost/app_test"
    )
    assert failing.working_directory == "services/billing"


def test_uses_steps_do_not_take_run_defaults() -> None:
    checkout = job(MONOREPO, job_name="billing", failing_command="pytest -q").setup_steps[0]
    assert (checkout.uses, checkout.working_directory, checkout.shell) == (
        "actions/checkout@v4",
        None,
        None,
    )


def test_workflow_defaults_apply_to_a_job_without_its_own() -> None:
    found = job(MONOREPO, job_name="api", failing_command="npm test")
    assert found.failing_step is not None
    assert (found.failing_step.working_directory, found.failing_step.shell) == (
        "services/api",
        "bash",
    )
    assert found.env == {"CI": "true", "LEVEL": "workflow", "DB_NAME": "app"}


def test_job_defaults_may_use_the_matrix_and_github_workspace_is_a_placeholder() -> None:
    text = """
jobs:
  pkg:
    strategy:
      matrix:
        package: [core, cli]
    defaults:
      run:
        working-directory: packages/${{ matrix.package }}
    env:
      OUT: ${{ github.workspace }}/dist
    steps:
      - run: make
"""
    found = job(text, job_name="pkg (cli)", failing_command="make")
    assert found.failing_step is not None
    assert found.failing_step.working_directory == "packages/cli"
    assert found.env["OUT"] == f"{WORKSPACE}/dist"


# ---------------------------------------------------------------------------------------------
# Services


def test_services_postgres_and_redis() -> None:
    found = job(SERVICES, job_name="integration", failing_command="pytest tests/integration")
    postgres, redis, mailer = found.services
    assert postgres.name == "postgres"
    assert postgres.image == "postgres:16"
    assert postgres.env == {
        "POSTGRES_DB": "shop_test",
        "POSTGRES_USER": "shop",
        "POSTGRES_PASSWORD": "",
    }
    assert postgres.ports == (PortMapping(container=5432, host=5432),)
    assert postgres.options == "--health-cmd pg_isready --health-interval 10s --health-retries 5"
    assert (redis.image, redis.ports, redis.options) == (
        "redis:7",
        (PortMapping(6379, None),),
        None,
    )
    assert postgres.skip_reason is None
    assert redis.skip_reason is None
    # an image the file cannot resolve is kept, marked: the job needs that service
    assert mailer.skip_reason == (
        "image cannot resolve ${{ vars.MAILER_IMAGE }}: vars.MAILER_IMAGE is not known here"
    )
    assert found.env["REDIS_URL"] == "redis://localhost:6379/0"
    assert found.secrets == ("secrets.DB_PASSWORD",)
    assert "secrets.DB_PASSWORD is empty here: Shepherd runs the job without secrets" in found.notes


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ('["5432:5432"]', (PortMapping(5432, 5432),)),
        ("[5432:5432]", (PortMapping(5432, 5432),)),  # unquoted: YAML 1.1 would read 331352
        ('["5432"]', (PortMapping(5432, None),)),
        ("[6379]", (PortMapping(6379, None),)),
        ("6379", (PortMapping(6379, None),)),
        ('["8080:80/udp", "9000/tcp"]', (PortMapping(80, 8080, "udp"), PortMapping(9000, None))),
        ('["127.0.0.1:15432:5432"]', (PortMapping(5432, 15432),)),
        ('["8000-8010:8000-8010", "70000"]', ()),  # ranges and impossible ports are noted
    ],
)
def test_service_ports_in_every_form_github_accepts(
    ports: str, expected: tuple[PortMapping, ...]
) -> None:
    text = f"jobs:\n  t:\n    services:\n      s:\n        image: x\n        ports: {ports}\n    steps:\n      - run: t\n"
    found = job(text, job_name="t")
    assert found.services[0].ports == expected
    if not expected:
        assert any("is not understood" in note for note in found.notes)


def test_a_service_with_an_empty_image_is_not_started() -> None:
    text = """
jobs:
  t:
    strategy:
      matrix:
        db: ["", "mysql:8"]
    services:
      db:
        image: ${{ matrix.db }}
    steps:
      - run: t
"""
    assert job(text, job_name="t (mysql:8)").services[0].image == "mysql:8"
    blank = job(text, job_name="t ()")
    assert blank.services == ()
    assert "service db is not started: its image is empty here" in blank.notes


def test_the_job_container() -> None:
    text = """
jobs:
  t:
    container:
      image: python:${{ matrix.py }}-slim
      env:
        PIP_NO_CACHE_DIR: 1
      options: --cpus 2
    strategy: {matrix: {py: ["3.12"]}}
    steps:
      - run: t
"""
    found = job(text, job_name="t (3.12)")
    assert found.container is not None
    assert (found.container.image, found.container.env, found.container.options) == (
        "python:3.12-slim",
        {"PIP_NO_CACHE_DIR": "1"},
        "--cpus 2",
    )
    shorthand = job("jobs:\n  t:\n    container: node:20\n    steps: [{run: t}]\n", job_name="t")
    assert shorthand.container is not None
    assert shorthand.container.image == "node:20"


# ---------------------------------------------------------------------------------------------
# Secrets, unresolvable expressions, if:


@pytest.fixture
def conditions() -> WorkflowJob:
    return job(CONDITIONS, job_name="build", failing_command="npm test -- --reporter 1.2.3")


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ("Run actions/checkout@v4", None),
        (
            "Run actions/cache@v4",
            "with key: cannot resolve ${{ hashFiles('package-lock.json') }}: hashFiles() reads the checked-out tree",
        ),
        ("Install", None),  # Shepherd never restores GitHub's cache: cache-hit is 'false'
        ("Always", None),
        ("Only after a failure", "if: failure() is false here"),
        ("Not cancelled", None),  # strings compare case-insensitively: 'ci' == 'CI'
        (
            "Only on push",
            "if: github.event_name == 'push' cannot be decided here (github.event_name is not known here)",
        ),
        (
            "Release",
            "if: startsWith(github.ref, 'refs/tags/') cannot be decided here (github.ref is not known here)",
        ),
        ("Version", None),
        (
            "Stamp",
            "cannot resolve ${{ steps.version.outputs.v }}: steps.version.outputs.v is not known here",
        ),
        ("Authenticate", None),
        ("Skipped literally", "if: false is false here"),
    ],
)
def test_each_setup_step_is_replayed_or_skipped_with_its_reason(
    conditions: WorkflowJob, step: str, reason: str | None
) -> None:
    assert step_named(conditions, step).skip_reason == reason
    # a note for every step skipped where CI may have run it; a false if: skipped it in CI too
    noted = f"step {step!r} skipped: {reason}" in conditions.notes
    assert noted == (reason is not None and not reason.endswith("is false here"))


def test_secrets_and_the_token_are_blanked_and_named(conditions: WorkflowJob) -> None:
    auth = step_named(conditions, "Authenticate")
    assert (auth.env["NODE_AUTH_TOKEN"], auth.env["GH_TOKEN"]) == ("", "")
    assert conditions.secrets == ("github.token", "secrets.NPM_TOKEN")
    assert (
        "secrets.NPM_TOKEN is empty here: Shepherd runs the job without secrets" in conditions.notes
    )


def test_the_caller_can_supply_github_values() -> None:
    found = find_job(
        {CI: CONDITIONS},
        job_name="build",
        failing_command="npm test -- --reporter 1.2.3",
        github={"event_name": "pull_request", "ref": "refs/pull/7/merge"},
    )
    assert found is not None
    assert (
        step_named(found, "Only on push").skip_reason
        == "if: github.event_name == 'push' is false here"
    )
    assert (
        step_named(found, "Release").skip_reason
        == "if: startsWith(github.ref, 'refs/tags/') is false here"
    )


def test_the_failing_steps_unresolved_expression_is_read_from_the_log(
    conditions: WorkflowJob,
) -> None:
    failing = conditions.failing_step
    assert failing is not None
    assert failing.name == "Test"
    assert failing.run == "npm test -- --reporter 1.2.3"
    assert failing.skip_reason is None
    assert (
        "the failing step's ${{ steps.version.outputs.v }} is taken from the log: '1.2.3'"
        in conditions.notes
    )


def test_a_failing_step_found_by_name_keeps_its_unresolved_expression() -> None:
    found = job(CONDITIONS, job_name="build", failing_step_name="Test")
    assert found.failing_step is not None
    assert found.failing_step.run is None
    assert found.failing_step.skip_reason is not None
    assert "steps.version.outputs.v" in found.failing_step.skip_reason


def test_an_unresolvable_job_env_value_is_left_unset_with_a_note() -> None:
    text = """
env:
  TOKEN_URL: ${{ vars.TOKEN_URL }}
jobs:
  t:
    env:
      TARGET: ${{ needs.build.outputs.target }}
      KEEP: yes
    steps:
      - run: make
"""
    found = job(text, job_name="t", failing_command="make")
    assert found.env == {"KEEP": "yes"}
    assert (
        "workflow env TOKEN_URL is left unset: cannot resolve ${{ vars.TOKEN_URL }}: vars.TOKEN_URL is not known here"
        in found.notes
    )
    assert any(note.startswith("job env TARGET is left unset") for note in found.notes)


def test_a_skipped_steps_secrets_are_not_reported() -> None:
    text = """
jobs:
  t:
    steps:
      - if: github.event_name == 'push'
        run: deploy --token ${{ secrets.DEPLOY }}
      - run: make
"""
    found = job(text, job_name="t", failing_command="make")
    assert found.secrets == ()
    assert found.setup_steps[0].skip_reason is not None


# ---------------------------------------------------------------------------------------------
# Hostile and broken input


def test_invalid_yaml_or_shapes_find_nothing_and_raise_nothing() -> None:
    files = {
        ".github/workflows/broken.yml": "jobs: [unclosed",
        ".github/workflows/list.yml": "- just\n- a list\n",
        ".github/workflows/odd.yml": "jobs: {a: {steps: [{run: 3}, 'x', null, {uses: 1}, {name: Last, run: end}]}, b: 7}",
        ".github/workflows/README.md": "jobs:\n  a:\n    steps: [{run: make}]\n",
    }
    assert (
        find_job(files, job_name=None, failing_command="make") is None
    )  # README.md is no workflow
    odd = find_job(files, job_name="a", failing_command="make")
    assert odd is not None
    assert odd.workflow == ".github/workflows/odd.yml"
    assert odd.failing_step is None
    odd = find_job(files, job_name="a", failing_command="rm -rf /")
    assert odd is not None
    assert odd.failing_step is None
    # a number is a script too; the malformed steps are skipped with their reason
    last = find_job(files, job_name="a", failing_step_name="Last")
    assert last is not None
    assert last.failing_step is not None
    assert last.failing_step.index == 4
    assert [s.skip_reason for s in last.setup_steps] == [
        None,
        "the step is not a mapping",
        "the step is not a mapping",
        "a step needs exactly one of run: and uses:",
    ]
    assert last.setup_steps[0].run == "3"


def _levels(depth: int) -> str:
    return "[" * depth + "]" * depth


_WIDE = ",".join(map(str, range(50)))
_ALIASES = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}' if prev else 'x'] * 8)}]\n"
    for prev, name in [("", "a"), ("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("e", "f")]
)
_FORMAT = "'xxxxxxxxxxxxxxxxxxxxxxxx'"
for _ in range(8):
    _FORMAT = f"format('{{0}}{{0}}{{0}}{{0}}', {_FORMAT})"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # 50 × 50 × 2 combinations: more than GitHub allows, so the combination is not guessed
        (
            f"jobs:\n  t:\n    strategy: {{matrix: {{a: [{_WIDE}], b: [{_WIDE}], c: [1, 2]}}}}\n"
            "    steps: [{run: make}]\n",
            "the matrix combination is not known: its matrix has more than 256 combinations",
        ),
        (
            "jobs:\n  t:\n    strategy:\n      matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}\n"
            "    steps: [{run: make}]\n",
            "the matrix combination is not known: its matrix is ${{ fromJSON(needs.plan.outputs.matrix) }}",
        ),
        (
            f"jobs:\n  t:\n    strategy: {{matrix: {{v: [{_levels(5000)}]}}}}\n    steps: [{{run: make}}]\n",
            "the matrix combination is not known: its matrix is not understood (value nested too deeply)",
        ),
        # YAML aliases: 8^6 values from a few lines
        (
            _ALIASES + "jobs:\n  t:\n    strategy: {matrix: {v: *f}}\n    steps: [{run: make}]\n",
            "the matrix combination is not known: its matrix is not understood (value too large)",
        ),
        (
            f"jobs:\n  t:\n    env: {_levels(5000)}\n    steps: [{{run: make}}]\n",
            "the job env is not a mapping here (a list); it is ignored",
        ),
        (
            "jobs:\n  t:\n    steps:\n      - run: echo ${{ "
            + "(" * 200
            + "1"
            + ")" * 200
            + " }}\n"
            "      - run: make\n",
            "expression nested too deeply",
        ),
        (
            "jobs:\n  t:\n    steps:\n      - run: echo ${{ "
            + _FORMAT
            + " }}\n      - run: make\n",
            "result too long",
        ),
        (
            "jobs:\n  t:\n    steps:\n      - run: echo ${{ unterminated\n      - run: make\n",
            "unterminated ${{",
        ),
        (
            "jobs:\n  t:\n    steps:\n      - run: echo ${{ a.b.c.d }}\n      - run: make\n",
            "unknown name 'a'",
        ),
    ],
)
def test_hostile_workflows_are_bounded(text: str, expected: str) -> None:
    found = find_job({CI: text}, job_name=None, failing_command="make")
    assert found is not None
    assert found.job_id == "t"
    reasons = [s.skip_reason or "" for s in found.setup_steps]
    assert any(expected in text for text in [*found.notes, *reasons]), (found.notes, reasons)


def test_an_oversized_workflow_is_not_read() -> None:
    text = "jobs:\n  t:\n    steps:\n      - run: make\n" + "#" * 600_000
    assert find_job({CI: text}, job_name="t") is None
    assert find_job({CI: text[:1000]}, job_name="t") is not None


def test_yaml_is_read_with_the_core_schema_github_uses() -> None:
    document = parse_workflow(
        "on: push\nenv: {A: yes, B: 010, C: 2024-01-01, D: 3.10, E: on, F: True, G: 0x1F}\n"
    )
    assert document is not None
    assert document["on"] == "push"  # not the key True
    assert document["env"] == {
        "A": "yes",
        "B": 10,
        "C": "2024-01-01",
        "D": 3.1,
        "E": "on",
        "F": True,
        "G": 31,
    }


def test_a_job_that_is_not_there_is_none() -> None:
    assert find_job({CI: MONOREPO}, job_name="deploy") is None
    assert find_job({}, job_name="billing", failing_command="pytest -q") is None


# ---------------------------------------------------------------------------------------------
# Expressions


CONTEXTS = {
    "matrix": Context(
        "matrix",
        {"python": 3.1, "os": "ubuntu-latest", "extra": None, "list": ["a", "b"]},
        closed=True,
    ),
    "env": Context("env", {"MODE": "ci", "EMPTY": ""}),
    "secrets": Context("secrets", secret=True),
    "github": Context("github", {"token": Secret("github.token")}),
}


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("matrix.python", 3.1),
        ("matrix['os']", "ubuntu-latest"),
        ("matrix.OS", "ubuntu-latest"),  # names are case-insensitive
        ("matrix.missing", None),  # a closed context's unknown property is null
        ("matrix.list[1]", "b"),
        ("env.mode == 'CI'", True),  # strings compare case-insensitively
        ("matrix.python == '3.1'", True),  # mixed types compare as numbers
        ("'' == 0 && null == false", True),
        ("env.EMPTY || 'fallback'", "fallback"),
        ("env.MODE && 'yes'", "yes"),
        ("!env.EMPTY", True),
        ("1 < 2 && 'b' > 'A'", True),
        ("contains(matrix.list, 'B')", True),
        ("contains('Hello', 'ELL')", True),
        ("startsWith(matrix.os, 'UBUNTU')", True),
        ("format('{0}-{1} {{x}}', matrix.os, matrix.python)", "ubuntu-latest-3.1 {x}"),
        ("join(matrix.list, '+')", "a+b"),
        ("fromJSON('[1, 2]')[1]", 2.0),
        ("secrets.ANY", ""),
        ("github.token", ""),
    ],
)
def test_expressions(expression: str, value: object) -> None:
    assert evaluate(expression, CONTEXTS).value == value


@pytest.mark.parametrize(
    "expression",
    [
        "env.SET_BY_AN_EARLIER_STEP",  # an open context: may exist at run time
        "steps.x.outputs.y",  # no steps context given
        "hashFiles('**/*.lock')",
        "toJSON(matrix)",
        "success()",  # status functions belong to if:
        "matrix.*.name",
        "1 +",
        "matrix.os ==",
        "os",
        "'unterminated",
    ],
)
def test_expressions_that_cannot_be_evaluated(expression: str) -> None:
    with pytest.raises(Unresolvable):
        evaluate(expression, CONTEXTS)


def test_rendering_and_conditions() -> None:
    rendered = render("py${{ matrix.python }}-${{ secrets.TOKEN }}-${{ matrix.extra }}", CONTEXTS)
    assert (rendered.text, rendered.secrets) == ("py3.1--", frozenset({"secrets.TOKEN"}))
    assert condition("${{ always() }}", CONTEXTS).value is True
    assert condition("failure() || env.MODE == 'ci'", CONTEXTS).value is True
    assert condition("always() || steps.unknown.outcome == 'success'", CONTEXTS).value is True
    # text around ${{ }} makes a non-empty string: always true, as in GitHub
    assert condition("${{ false }} && false", CONTEXTS).value is True
    assert to_string(3.0) == "3"
    assert to_string(True) == "true"
    assert to_string(None) == ""
