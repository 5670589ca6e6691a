"""The new fixers end to end: webhook → server → worker → GitHub simulator + bare git remote.

For each fixer a small repository whose CI really fails: the job log is made by really running
the failing step's command on a copy of the repository (paths as on the runner), the base
branch's workflow is what the job environment is rebuilt from, and the repair must reproduce the
failure there, fix it, verify it there and push exactly one commit. Then the forks (maintainer
edits allowed: the push goes to the fork; not allowed: the patch), ``scope: changed`` on a PR
touching two files, a behaviour-changing eslint fix (suggested, not pushed), a repository-declared
fix command, and ``shepherd diagnose`` naming the fixer from each log alone.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.ops.local import diagnose_log
from bot.reporting.summary import extract_outcome
from fixers import FIXERS
from tests.e2e_support import World, git
from tests.ghsim import commit_files
from tests.test_logs import job_log, run_header

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNNER_TREE = "/home/runner/work/widgets/widgets"
#: Host tools as the job environment has them: Debian's, the bundled node tools.
HOST_PATH = f"{REPO_ROOT / '.tools' / 'node' / 'bin'}:{REPO_ROOT / '.venv' / 'bin'}:/usr/bin:/bin"
ESLINT_VERSION = "9.39.1"


def workflow(job: str, *steps: str) -> str:
    body = "".join(f"      - {s}\n" for s in steps)
    return (
        f"name: CI\non: pull_request\njobs:\n  {job}:\n    runs-on: ubuntu-latest\n"
        f"    steps:\n      - uses: actions/checkout@v4\n{body}"
    )


def run_step(script: str) -> str:
    """A ``run:`` step (a multi-line script as a YAML block)."""
    if "\n" not in script:
        return f"run: {script}"
    lines = "".join(f"          {line}\n" for line in script.splitlines())
    return f"run: |\n{lines}".rstrip("\n")


@dataclass(frozen=True)
class Case:
    fixer: str
    job: str
    #: The failing step's script, as the workflow has it.
    command: str
    files: dict[str, str]
    #: Workflow steps before the failing one.
    setup: tuple[str, ...] = ()
    #: Run (with network) in the scratch copy before the command, to make the log (npm ci).
    prepare: str | None = None
    #: Files the fix changes.
    fixed: tuple[str, ...] = ()
    #: How the summary names the tool that ran.
    tool: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def workflow(self) -> str:
        return workflow(self.job, *self.setup, run_step(self.command))


def _sh(cwd: Path, script: str, *, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env={"PATH": HOST_PATH, "HOME": str(cwd.parent / "home"), "LANG": "C.UTF-8", **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def _git_repo(root: Path, files: Mapping[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "-qm", "base"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


def real_log(case: Case, scratch: Path) -> str:
    """The job log of the failing step, by really running it on a copy of the repository."""
    repo = _git_repo(scratch / "widgets", case.files)
    (scratch / "home").mkdir(exist_ok=True)
    if case.prepare:
        code, out = _sh(repo, case.prepare)
        assert code == 0, out
    code, output = _sh(repo, case.command, env={"CI": "true"})
    assert code != 0, output
    lines = output.replace(str(repo), RUNNER_TREE).rstrip("\n").splitlines()
    lines.append(f"##[error]Process completed with exit code {code}.")
    title = case.command.splitlines()[0]
    log = job_log((title, run_header(*case.command.splitlines()), lines))
    return log.replace("Complete job name: test", f"Complete job name: {case.job}")


# --- the repositories -----------------------------------------------------------------------------

ESLINT_CONFIG = """export default [
  {
    rules: {
      "no-var": "error",
      "prefer-const": "warn",
      "object-shorthand": "error",
      "no-implicit-coercion": "error",
    },
  },
];
"""


def eslint_package(script: str = "eslint .") -> str:
    return json.dumps(
        {
            "name": "widgets",
            "version": "1.0.0",
            "type": "module",
            "scripts": {"lint": script},
            "devDependencies": {"eslint": ESLINT_VERSION},
        },
        indent=2,
    )


@dataclass(frozen=True)
class EslintInstall:
    lock: str
    #: A directory holding the installed node_modules, copied where a log is made.
    root: Path


@pytest.fixture(scope="module")
def eslint_lock(tmp_path_factory: pytest.TempPathFactory) -> EslintInstall:
    """A real package-lock.json for the eslint repositories and its node_modules (npm, from
    the registry), made once for the module."""
    root = tmp_path_factory.mktemp("eslint-lock")
    (root / "package.json").write_text(eslint_package())
    code, out = _sh(root, "npm install --ignore-scripts --no-audit --no-fund")
    assert code == 0, out
    return EslintInstall((root / "package-lock.json").read_text(), root)


@pytest.fixture
def world(world: World, tmp_path_factory: pytest.TempPathFactory) -> World:
    """The e2e world with one warm pool for the module: repositories with the same setup (the
    eslint ones) start from the first one's environment, as on a busy server."""
    from bot.app.web import METRICS, STORE
    from bot.app.worker import WorkerPool
    from bot.kernel.settings import Settings

    pool = tmp_path_factory.getbasetemp() / "fixers-e2e-pool"
    settings = Settings(**{**world.settings.model_dump(), "jobenv_pool_dir": pool})
    world.settings = settings
    world.pool = WorkerPool(
        store=world.client.app[STORE],
        settings=settings,
        metrics=world.client.app[METRICS],
        count=0,
    )
    return world


def eslint_case(install: EslintInstall, command: str = "npx eslint .", **sources: str) -> Case:
    return Case(
        fixer="eslint",
        job="lint",
        command=command,
        files={
            "package.json": eslint_package(),
            "package-lock.json": install.lock,
            "eslint.config.js": ESLINT_CONFIG,
            ".gitignore": "node_modules/\n",
            **sources,
        },
        setup=("uses: actions/setup-node@v4", "run: npm ci"),
        prepare=f"cp -a {install.root / 'node_modules'} .",
        fixed=tuple(sources),
        tool=f"eslint {ESLINT_VERSION} (the repository's node_modules)",
    )


GO_UGLY = "package main\n\nfunc main()  {\nprintln(1)\n}\n"
GO_FIXED = "package main\n\nfunc main() {\n\tprintln(1)\n}\n"
GOFMT_SCRIPT = (
    'unformatted="$(gofmt -l .)"\n'
    'if [ -n "$unformatted" ]; then\n'
    '  echo "These files are not gofmt-ed:"\n'
    '  echo "$unformatted"\n'
    "  gofmt -d .\n"
    "  exit 1\n"
    "fi"
)
GOFMT = Case(
    fixer="gofmt",
    job="gofmt",
    command=GOFMT_SCRIPT,
    files={"go.mod": "module example.com/widgets\n\ngo 1.19\n", "main.go": GO_UGLY},
    fixed=("main.go",),
    tool="gofmt go1.19",
)
RUSTFMT = Case(
    fixer="rustfmt",
    job="fmt",
    command="cargo fmt --all -- --check",
    files={
        "Cargo.toml": '[package]\nname = "widgets"\nversion = "0.1.0"\nedition = "2021"\n',
        "src/main.rs": 'fn main()  {\nlet x=1;println!("{}",x);\n}\n',
        ".gitignore": "target/\n",
    },
    fixed=("src/main.rs",),
    tool="rustfmt 1.5.1-stable (bundled)",
)
PRECOMMIT_CONFIG = """repos:
  - repo: local
    hooks:
      - id: pyupgrade
        name: pyupgrade
        entry: pyupgrade --py311-plus
        language: python
        types: [python]
        additional_dependencies: ["pyupgrade==3.19.1"]
"""
PRE_COMMIT = Case(
    fixer="pre-commit",
    job="pre-commit",
    command="pre-commit run --all-files --show-diff-on-failure",
    files={
        ".pre-commit-config.yaml": PRECOMMIT_CONFIG,
        "requirements-dev.txt": "pre-commit==4.7.0\n",
        "app.py": "print('{}'.format(1))\n",
    },
    setup=(
        "uses: actions/setup-python@v5\n        with:\n          python-version: '3.11'",
        "run: pip install -r requirements-dev.txt",
    ),
    fixed=("app.py",),
    tool="pre-commit 4.7.0 (the job environment's)",
)
NPM_LOCK_BEFORE = {"debug": "4.3.4"}
NPM_LOCK_AFTER = {"debug": "4.3.4", "ms": "2.1.3"}


@pytest.fixture(scope="module")
def npm_lock(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("npm-lock")
    (root / "package.json").write_text(json.dumps({"name": "w", "dependencies": NPM_LOCK_BEFORE}))
    code, out = _sh(root, "npm install --package-lock-only --ignore-scripts --no-audit --no-fund")
    assert code == 0, out
    return (root / "package-lock.json").read_text()


def lockfile_case(lock: str) -> Case:
    return Case(
        fixer="lockfile",
        job="install",
        command="npm ci",
        files={
            "package.json": json.dumps({"name": "w", "dependencies": NPM_LOCK_AFTER}),
            "package-lock.json": lock,
        },
        setup=("uses: actions/setup-node@v4",),
        fixed=("package-lock.json",),
        tool="npm",
    )


# --- the server -----------------------------------------------------------------------------------


def base_with(world: World, case: Case, config: str = "") -> None:
    files = {".github/workflows/ci.yml": case.workflow}
    if config:
        files[".github/shepherd.yml"] = config
    world.base_sha = commit_files(world.bare, "main", files, "CI")


def outcome_of(world: World, pr: int) -> dict[str, Any]:
    [comment] = world.sticky_comments(pr)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    return outcome


async def repair(world: World, case: Case, log: str, *, pr: int, branch: str, **pull: Any) -> str:
    opened = world.open_pull(branch, case.files, number=pr, **pull)
    head = opened.head_sha  # the simulator moves the pull's head when the branch moves
    run, job = world.fail_job(head, case.job, log)
    assert await world.deliver("workflow_job", world.workflow_job_event(run, job)) == 202
    await world.drain()
    return head


def assert_fixed_in_one_commit(
    world: World, case: Case, head: str, outcome: dict[str, Any]
) -> None:
    assert outcome["outcome"] == "fixed", json.dumps(outcome, indent=1)[:5000]
    [environment] = outcome["environment"]
    assert environment["reproduced"] is True, environment
    assert "in its job environment" in outcome["verification"]
    assert outcome["failures"][0]["fixers"] == [case.fixer]
    [fix] = [f for f in outcome["fixes"] if f["changed"]]
    assert fix["fixer"] == case.fixer
    assert fix["tool_version"].startswith(case.tool), fix["tool_version"]
    new_head = world.branch_sha("feature")
    assert outcome["commit"] == new_head
    assert git(world.bare, "rev-parse", f"{new_head}^") == head
    changed = git(world.bare, "diff", "--name-only", head, new_head).splitlines()
    assert changed == list(case.fixed)
    assert "Shepherd-Job: acme/widgets#" in git(world.bare, "log", "-1", "--format=%B", new_head)
    world.sim.assert_no_violations()


@pytest.fixture
def cases(eslint_lock: EslintInstall, npm_lock: str) -> dict[str, Case]:
    return {
        "eslint": eslint_case(
            eslint_lock, **{"src/app.js": "var a = 1;\nconst o = { a: a };\nconsole.log(o);\n"}
        ),
        "gofmt": GOFMT,
        "rustfmt": RUSTFMT,
        "pre-commit": PRE_COMMIT,
        "lockfile": lockfile_case(npm_lock),
    }


@pytest.mark.parametrize("name", ["eslint", "gofmt", "rustfmt", "pre-commit", "lockfile"])
async def test_each_fixer_through_the_server(
    name: str, cases: dict[str, Case], world: World, tmp_path: Path
) -> None:
    case = cases[name]
    log = real_log(case, tmp_path / "ci")
    base_with(world, case)
    head = await repair(world, case, log, pr=40, branch="feature")
    outcome = outcome_of(world, 40)
    assert_fixed_in_one_commit(world, case, head, outcome)
    if name == "gofmt":
        assert git(world.bare, "show", f"{outcome['commit']}:main.go") + "\n" == GO_FIXED
    if name == "lockfile":
        lock = git(world.bare, "show", f"{outcome['commit']}:package-lock.json")
        assert '"node_modules/ms"' in lock
        assert '"version": "4.3.4"' in lock


# --- forks ----------------------------------------------------------------------------------------


def fork_of(world: World, owner: str, *, installation_id: int) -> Path:
    """The contributor's fork: a copy of the base repository (the PR's branch included)."""
    fork = world.bare.parent.parent / owner / "widgets.git"
    fork.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(world.bare), str(fork)],
        check=True,
        capture_output=True,
    )
    world.sim.add_repo(owner, "widgets", git_dir=fork, installation_id=installation_id)
    return fork


@pytest.mark.parametrize("installed_on_fork", [False, True])
async def test_fork_with_maintainer_edits_gets_the_push(
    world: World, tmp_path: Path, installed_on_fork: bool
) -> None:
    """Maintainer edits allowed: the fix is committed to the fork's branch, through the Git Data
    API where the installation can write the fork, else with ``git push`` to it (with a lease);
    the base repository's branches do not move."""
    case = GOFMT
    log = real_log(case, tmp_path / "ci")
    base_with(world, case)
    opened = world.open_pull("feature", case.files, number=41)
    head = opened.head_sha
    fork = fork_of(world, "mallory", installation_id=1 if installed_on_fork else 2)
    opened.head_repo_full_name = "mallory/widgets"
    opened.maintainer_can_modify = True
    base_heads = git(world.bare, "for-each-ref", "refs/heads")
    run, job = world.fail_job(opened.head_sha, case.job, log)
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.drain()

    outcome = outcome_of(world, 41)
    assert outcome["outcome"] == "fixed", json.dumps(outcome, indent=1)[:4000]
    new_head = git(fork, "rev-parse", "refs/heads/feature")
    assert outcome["commit"] == new_head
    assert git(fork, "rev-parse", f"{new_head}^") == head
    assert git(fork, "show", f"{new_head}:main.go") + "\n" == GO_FIXED
    message = git(fork, "log", "-1", "--format=%B", new_head)
    assert "Shepherd-Job: acme/widgets#41/" in message
    assert git(world.bare, "for-each-ref", "refs/heads") == base_heads
    assert "Pushed to mallory/widgets" in outcome["detail"]
    updates = world.sim.calls("git/update-ref")
    if installed_on_fork:
        assert [u.path for u in updates] == ["/repos/mallory/widgets/git/refs/heads/feature"]
    else:
        assert not updates
        [blob] = world.sim.calls("git/create-blob")
        assert blob.path == "/repos/mallory/widgets/git/blobs"
        assert blob.status == 403
    world.sim.assert_no_violations()


async def test_fork_without_maintainer_edits_gets_the_patch(world: World, tmp_path: Path) -> None:
    case = GOFMT
    log = real_log(case, tmp_path / "ci")
    base_with(world, case)
    opened = world.open_pull(
        "feature",
        case.files,
        number=42,
        head_repo_full_name="mallory/widgets",
        maintainer_can_modify=False,
    )
    fork = fork_of(world, "mallory", installation_id=2)
    run, job = world.fail_job(opened.head_sha, case.job, log)
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.drain()

    outcome = outcome_of(world, 42)
    assert outcome["outcome"] == "handoff"
    assert outcome["next_action"] == "apply_patch"
    assert "+\tprintln(1)" in outcome["patch"]
    assert "does not allow edits by maintainers" in outcome["detail"]
    assert git(fork, "rev-parse", "refs/heads/feature") == opened.head_sha
    assert not world.sim.calls("git/update-ref")
    assert not world.sim.calls("git/create-blob")
    world.sim.assert_no_violations()


async def test_a_refused_fork_push_falls_back_to_the_patch(world: World, tmp_path: Path) -> None:
    case = GOFMT
    log = real_log(case, tmp_path / "ci")
    base_with(world, case)
    opened = world.open_pull("feature", case.files, number=43)
    fork = fork_of(world, "mallory", installation_id=2)
    hook = fork / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'maintainer edits were turned off' >&2\nexit 1\n")
    os.chmod(hook, 0o755)  # noqa: S103 - the fork's server-side hook
    opened.head_repo_full_name = "mallory/widgets"
    run, job = world.fail_job(opened.head_sha, case.job, log)
    await world.deliver("workflow_job", world.workflow_job_event(run, job))
    await world.drain()

    outcome = outcome_of(world, 43)
    assert outcome["outcome"] == "handoff"
    assert outcome["next_action"] == "apply_patch"
    assert "refused the push to the fork's branch" in outcome["detail"]
    assert git(fork, "rev-parse", "refs/heads/feature") == opened.head_sha


# --- scope, behaviour, declared commands ----------------------------------------------------------


async def test_scope_changed_leaves_other_files_alone(
    world: World, tmp_path: Path, eslint_lock: EslintInstall
) -> None:
    """A PR touching two files; the repository has older files with eslint warnings that
    ``eslint --fix .`` would also rewrite. With the default ``scope: changed`` only the PR's
    two files change, and the summary says so."""
    legacy = "let unchanged = 1;\nconsole.log(unchanged);\n"  # prefer-const: a warning
    case = eslint_case(
        eslint_lock,
        **{
            "src/a.js": "var a = 1;\nconsole.log(a);\n",
            "src/b.js": "const b = 1;\nconsole.log({ b: b });\n",
        },
    )
    base = {**case.files, "src/legacy.js": legacy}
    base.pop("src/a.js")
    base.pop("src/b.js")
    log_case = Case(**{**case.__dict__, "files": {**case.files, "src/legacy.js": legacy}})
    log = real_log(log_case, tmp_path / "ci")
    world.base_sha = commit_files(world.bare, "main", base, "base")
    base_with(world, case)
    head = await repair(world, case, log, pr=44, branch="feature")
    outcome = outcome_of(world, 44)
    assert outcome["outcome"] == "fixed", json.dumps(outcome, indent=1)[:5000]
    assert outcome["scope"] == {"scope": "changed", "files_outside_pr": 0}
    new_head = outcome["commit"]
    changed = git(world.bare, "diff", "--name-only", head, new_head).splitlines()
    assert changed == ["src/a.js", "src/b.js"]
    assert git(world.bare, "show", f"{new_head}:src/legacy.js") + "\n" == legacy
    [comment] = world.sticky_comments(44)
    assert "Scope: changed; 0 files outside the pull request touched" in comment["body"]


async def test_a_behaviour_changing_fix_is_suggested_not_pushed(
    world: World, tmp_path: Path, eslint_lock: EslintInstall
) -> None:
    case = eslint_case(eslint_lock, **{"src/app.js": "const a = 1;\nconsole.log(!!a);\n"})
    log = real_log(case, tmp_path / "ci")
    base_with(world, case)
    head = await repair(world, case, log, pr=45, branch="feature")
    outcome = outcome_of(world, 45)
    assert outcome["title"] == "Fix verified; posted for review (it may change behaviour)"
    assert outcome["next_action"] == "review"
    assert any("no-implicit-coercion" in note for note in outcome["behaviour_changes"])
    assert world.branch_sha("feature") == head
    [review] = world.sim.calls("pulls/create-review")
    assert "Boolean(a)" in json.dumps(review.json)
    world.sim.assert_no_violations()


async def test_behaviour_changing_fixes_are_pushed_when_the_repository_says_so(
    world: World, tmp_path: Path, eslint_lock: EslintInstall
) -> None:
    case = eslint_case(eslint_lock, **{"src/app.js": "const a = 1;\nconsole.log(!!a);\n"})
    log = real_log(case, tmp_path / "ci")
    base_with(world, case, "autofix:\n  behaviour_changes: push\n")
    head = await repair(world, case, log, pr=46, branch="feature")
    outcome = outcome_of(world, 46)
    assert outcome["outcome"] == "fixed"
    assert world.branch_sha("feature") != head


async def test_a_repository_declared_fix_command(world: World, tmp_path: Path) -> None:
    """``autofix.commands: [{check: make lint, fix: make fmt}]``: the failing ``make lint`` is
    repaired by ``make fmt`` in the sandbox and verified with ``make lint``."""
    makefile = 'lint:\n\t@test -z "$$(gofmt -l .)" || (gofmt -l . && exit 1)\nfmt:\n\tgofmt -w .\n'
    case = Case(
        fixer="command",
        job="lint",
        command="make lint",
        files={**GOFMT.files, "Makefile": makefile},
        fixed=("main.go",),
        tool="command `make fmt` (declared in .github/shepherd.yml)",
    )
    log = real_log(case, tmp_path / "ci")
    config = "autofix:\n  commands:\n    - check: make lint\n      fix: make fmt\n"
    base_with(world, case, config)
    head = await repair(world, case, log, pr=47, branch="feature")
    outcome = outcome_of(world, 47)
    assert_fixed_in_one_commit(world, case, head, outcome)


# --- shepherd diagnose --------------------------------------------------------------------------


async def test_diagnose_names_the_fixer_from_the_log_alone(
    cases: dict[str, Case], eslint_lock: EslintInstall, tmp_path: Path
) -> None:
    """Every kind of failure of the issue, from the log alone (no repository): a multi-line
    ``run:`` script (gofmt), eslint run directly and through ``npm run``/``pnpm``, cargo fmt,
    pre-commit with a hook that rewrote a file, ``npm ci`` out of sync with its lock."""
    kinds = dict(cases)
    kinds["eslint via npm run"] = eslint_case(
        eslint_lock, "npm run lint", **{"src/app.js": "var a = 1;\na += 1;\n"}
    )
    kinds["eslint via pnpm"] = eslint_case(
        eslint_lock, "pnpm lint", **{"src/app.js": "var a = 1;\na += 1;\n"}
    )
    for i, (kind, case) in enumerate(kinds.items()):
        path = tmp_path / f"{i}.log"
        path.write_text(real_log(case, tmp_path / f"ci{i}"))
        result = diagnose_log(path, fixers=FIXERS)
        data = result.to_json()
        [failure] = data["failures"]
        assert failure["category"] == "autofix", (kind, failure)
        assert failure["fixers"] == [case.fixer], (kind, failure)
        assert data["title"] == f"Fixable: {case.fixer}"
