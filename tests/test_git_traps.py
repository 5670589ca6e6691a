"""Attack tests: code from a pull request tries to make Shepherd's own git run its programs.

The threat (issue "code from a pull request can run outside the sandbox through git"): PR code,
run in the sandbox, (1) makes a git directory of its own in the worktree whose configuration names
programs (filters, fsmonitor, hooks, textconv, external diff, pager, sshCommand, includes,
core.worktree), (2) writes ``.gitattributes`` with ``* filter=x diff=x``, and (3) points the
worktree's ``.git`` at that directory (or plants it as a nested repository). If any host-side git
command of Shepherd's then ran one of those programs, the PR would run code with Shepherd's
secrets. Every planted program touches a file in a canary directory outside the worktree (and
outside the sandbox's view): the canary directory must stay empty.

Two layers:
- ``TRAPS``: one table over every trap kind, planted where git would look first — the checkout's
  own ``.git/config`` — and driven through every tree operation Shepherd runs on the host.
- The PR-code paths: the verification command, a fixer whose configuration executes repository
  code (``prettier.config.cjs``) and the LLM's ``run_check``; each through ``shepherd fix`` and
  through the server against the GitHub simulator, with the git directory planted behind a
  rewritten ``.git`` pointer and as a nested repository. The job must end in a clean hand-off
  that says what happened, with nothing pushed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bot.app.web import METRICS, STORE
from bot.app.worker import WorkerPool
from bot.git.workspace import (
    changed_paths,
    changes_between,
    commit,
    reset_to,
    restore_paths,
    snapshot_tree,
    tree_diff,
    tree_of,
)
from bot.jobenv.environment import EnvironmentsFactory
from bot.kernel.errors import UnsafeWorktree
from bot.kernel.settings import Settings
from bot.llm.factory import make_agent
from bot.ops.local import fix_repo
from bot.reporting.summary import extract_outcome
from bot.sandbox import make_runner
from fixers import FIXERS
from fixers.tools import bundled_tool_dirs
from tests.anthropic_sim import MessagesSimulator, reply, text, tool_use
from tests.e2e_support import World, git
from tests.fixer_support import checkout_of
from tests.ghsim import commit_files
from tests.test_logs import job_log, run_header

ServerFactory = Callable[..., Awaitable[TestServer]]

#: Every hook git runs for the commands Shepherd uses (and then some).
HOOKS = (
    "applypatch-msg",
    "pre-applypatch",
    "post-applypatch",
    "pre-commit",
    "pre-merge-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "pre-rebase",
    "post-checkout",
    "post-merge",
    "pre-push",
    "pre-receive",
    "update",
    "proc-receive",
    "post-receive",
    "post-update",
    "reference-transaction",
    "push-to-checkout",
    "pre-auto-gc",
    "post-rewrite",
    "sendemail-validate",
    "fsmonitor-watchman",
    "p4-changelist",
    "p4-prepare-changelist",
    "p4-post-changelist",
    "p4-pre-submit",
    "post-index-change",
)


def trap_script(traps: Path, canary: Path, kind: str) -> str:
    """A program that proves it ran (a canary file named after the trap) and passes data on."""
    path = traps / kind
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\ntouch "{canary}/{kind}"\nexec cat "$@"\n')
    path.chmod(0o755)
    return str(path)


def trap_config(kind: str, traps: Path, canary: Path) -> str:
    """The git configuration of one trap kind."""

    def s(name: str) -> str:
        return trap_script(traps, canary, name)

    if kind == "hooks":
        for hook in HOOKS:
            s(f"hooks/{hook}")
        return f"[core]\n\thooksPath = {traps / 'hooks'}\n"
    included = traps / f"{kind}.cfg"
    bodies = {
        "filter-clean": f'[filter "x"]\n\tclean = {s("filter-clean")}\n\trequired = true\n',
        "filter-smudge": f'[filter "x"]\n\tsmudge = {s("filter-smudge")}\n\trequired = true\n',
        "filter-process": f'[filter "x"]\n\tprocess = {s("filter-process")}\n',
        "fsmonitor": f"[core]\n\tfsmonitor = {s('fsmonitor')}\n",
        "textconv": f'[diff "x"]\n\ttextconv = {s("textconv")}\n',
        "diff-command": f'[diff "x"]\n\tcommand = {s("diff-command")}\n',
        "diff-external": f"[diff]\n\texternal = {s('diff-external')}\n",
        "pager": f"[core]\n\tpager = {s('pager')}\n[pager]\n\tdiff = {s('pager-diff')}\n",
        "ssh-command": f"[core]\n\tsshCommand = {s('ssh-command')}\n",
        "askpass": f"[core]\n\taskPass = {s('askpass')}\n[credential]\n\thelper = {s('helper')}\n",
        "core-worktree": f"[core]\n\tworktree = {canary / 'core-worktree'}\n",
        "include-path": f"[include]\n\tpath = {included}\n",
        "include-if": f'[includeIf "gitdir:/"]\n\tpath = {included}\n',
    }
    if kind in ("include-path", "include-if"):
        # The included file carries a program of its own.
        included.parent.mkdir(parents=True, exist_ok=True)
        included.write_text(
            f"[core]\n\tfsmonitor = {s(kind + '-fsmonitor')}\n"
            f'[filter "x"]\n\tclean = {s(kind + "-clean")}\n'
        )
    return bodies[kind]


TRAPS = [
    "filter-clean",
    "filter-smudge",
    "filter-process",
    "fsmonitor",
    "hooks",
    "textconv",
    "diff-command",
    "diff-external",
    "pager",
    "ssh-command",
    "askpass",
    "core-worktree",
    "include-path",
    "include-if",
]


def run(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def make_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    run(root, "init", "-q", "-b", "main")
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    run(root, "add", "-A")
    run(root, "-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "-qm", "base")
    return root


@pytest.mark.parametrize("kind", TRAPS)
async def test_no_tree_operation_runs_a_program_the_repository_configures(
    kind: str, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n", "b.bin": "two\n"})
    wt = checkout_of(repo)  # the record, taken before anything is planted
    with (repo / ".git" / "config").open("a") as config:
        config.write(trap_config(kind, tmp_path / "traps", canary))
    (repo / ".gitattributes").write_text("* filter=x diff=x\n")
    (repo / "a.txt").write_text("one\nchanged\n")
    (repo / "new.txt").write_text("new\n")
    base = tree_of(wt, wt.sha)

    tree = snapshot_tree(wt)
    assert changed_paths(wt, base, tree) == [".gitattributes", "a.txt", "new.txt"]
    patch = tree_diff(wt, base, tree)
    assert "+changed" in patch
    assert [c.path for c in changes_between(wt, base, tree)] == [
        ".gitattributes",
        "a.txt",
        "new.txt",
    ]
    made = await commit(wt, "m", author_name="Bot", author_email="bot@example.com")
    assert made is not None
    restore_paths(wt, base, ["a.txt"])
    assert (repo / "a.txt").read_text() == "one\n"
    assert sorted(reset_to(wt, base)) == [".gitattributes", "new.txt"]
    assert not (repo / "new.txt").exists()

    assert sorted(p.name for p in canary.iterdir()) == []


def test_attributes_cannot_change_the_bytes_shepherd_commits(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n"})
    wt = checkout_of(repo)
    # Attributes that would rewrite content on `git add`: line endings and re-encoding.
    (repo / ".gitattributes").write_text("* text eol=crlf working-tree-encoding=UTF-16\n")
    (repo / "a.txt").write_bytes(b"one\r\ntwo\r\n")
    changes = {c.path: c.content for c in changes_between(wt, wt.sha, snapshot_tree(wt))}
    assert changes["a.txt"] == b"one\r\ntwo\r\n"


def test_a_rewritten_pointer_or_nested_repository_stops_every_tree_operation(
    tmp_path: Path,
) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n"})
    wt = checkout_of(repo)
    nested = repo / "vendor" / ".git"
    nested.mkdir(parents=True)
    (nested / "config").write_text(trap_config("fsmonitor", tmp_path / "traps", canary))
    with pytest.raises(UnsafeWorktree, match=r"vendor/\.git"):
        snapshot_tree(wt)
    with pytest.raises(UnsafeWorktree):
        reset_to(wt, tree_of(wt, wt.sha))
    assert list(canary.iterdir()) == []


# --- the planted attack, run by PR code inside the sandbox -------------------------------------

PLANT = '''\
"""A hostile check: plants git traps, then fails as CI did."""
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent
CANARY = pathlib.Path({canary!r})
MODE = {mode!r}
HOOKS = {hooks!r}
TRAPS = ROOT / ".traps"
report = []

# Earlier runs (the reproduction of the failure, say) behave: the trap is set once the
# path's condition holds.
# A counter kept in the tree would not do: the reproduction rightly restores the tree after it.
if not ({when}):
    {early}


def script(kind):
    path = TRAPS / kind
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\\ntouch "%s/%s"\\nexec cat "$@"\\n' % (CANARY, kind))
    path.chmod(0o755)
    return str(path)


def attempt(what, action):
    try:
        action()
        report.append(what + ": done")
    except OSError as exc:
        report.append(what + ": " + exc.strerror)


gitdir = ROOT / (".evil-git" if MODE == "pointer" else "vendor/.git")
for sub in ("objects", "refs/heads", "hooks"):
    (gitdir / sub).mkdir(parents=True, exist_ok=True)
(gitdir / "HEAD").write_text("ref: refs/heads/main\\n")
for hook in HOOKS:
    script("hooks/" + hook)
    attempt("hook " + hook, lambda h=hook: (gitdir / "hooks" / h).write_text(
        (TRAPS / "hooks" / h).read_text()) or (gitdir / "hooks" / h).chmod(0o755))
(TRAPS / "included.cfg").write_text(
    "[core]\\n\\tfsmonitor = %s\\n" % script("include-path"))
(TRAPS / "included-if.cfg").write_text(
    "[core]\\n\\tpager = %s\\n" % script("include-if"))
config = (
    "[core]\\n\\trepositoryformatversion = 0\\n\\tbare = false\\n"
    "\\tfsmonitor = %s\\n\\thooksPath = %s\\n\\tpager = %s\\n\\tsshCommand = %s\\n"
    "\\taskPass = %s\\n"
    "[filter \\"x\\"]\\n\\tclean = %s\\n\\tsmudge = %s\\n\\tprocess = %s\\n\\trequired = true\\n"
    "[diff \\"x\\"]\\n\\ttextconv = %s\\n\\tcommand = %s\\n"
    "[diff]\\n\\texternal = %s\\n"
    "[include]\\n\\tpath = %s\\n"
    "[includeIf \\"gitdir:/\\"]\\n\\tpath = %s\\n"
) % (
    script("fsmonitor"), TRAPS / "hooks", script("pager"), script("ssh-command"),
    script("askpass"),
    script("filter-clean"), script("filter-smudge"), script("filter-process"),
    script("textconv"), script("diff-command"), script("diff-external"),
    TRAPS / "included.cfg", TRAPS / "included-if.cfg",
)
(gitdir / "config").write_text(config)
(ROOT / ".gitattributes").write_text("* filter=x diff=x\\n")
pointer = ROOT / ".git"
if MODE == "pointer":
    if pointer.is_dir():
        attempt("write .git/config", lambda: (pointer / "config").write_text(config))
        attempt("move .git", lambda: pointer.rename(ROOT / ".git-old"))
    attempt("rewrite .git", lambda: pointer.write_text("gitdir: %s\\n" % gitdir))
print("planted:", "; ".join(report))
sys.exit(1)
'''

PRETTIER_CONFIG = """\
try {
  require("child_process").execFileSync("python3", [__dirname + "/check.py"], {
    stdio: "inherit",
  });
} catch (e) {}
module.exports = {};
"""

UGLY_JS = "const  a = {b:1,\n  c:2}\n"
APP_PY = "import os\n\nprint('hello')\n"


def plant_source(canary: Path, mode: str, when: str = "True", early: str = "sys.exit(0)") -> str:
    return PLANT.format(canary=str(canary), mode=mode, hooks=list(HOOKS), when=when, early=early)


RUFF = "ruff check --output-format=concise app.py"
RUFF_OUTPUT = [
    "app.py:1:8: F401 [*] `os` imported but unused",
    "Found 1 error.",
    "[*] 1 fixable with `--fix`.",
]
INSTALL_RUFF = "pip install ruff==0.17.6"
INSTALL_PRETTIER = "npm install --no-save --no-audit --no-fund prettier@3.10.1"


@dataclass(frozen=True)
class Path_:
    """One way PR code runs: the CI job's setup steps and failing command, its log output, the
    PR's files, and when ``check.py`` sets the trap (a Python condition it evaluates)."""

    setup: tuple[str, ...]
    command: str
    output: tuple[str, ...]
    files: dict[str, str]
    when: str


PATHS: dict[str, Path_] = {
    # A setup step of the job runs the PR's code while the environment is built.
    "setup": Path_(
        (INSTALL_RUFF, "python3 check.py"),
        RUFF,
        tuple(RUFF_OUTPUT),
        {"app.py": APP_PY},
        "True",
    ),
    # The failing command runs first to reproduce the failure.
    "reproduce": Path_(
        (INSTALL_RUFF,),
        f"python3 check.py && {RUFF}",
        tuple(RUFF_OUTPUT),
        {"app.py": APP_PY},
        "True",
    ),
    # ruff-check fixes app.py (no PR code runs), then verification runs the failing command.
    "verify": Path_(
        (INSTALL_RUFF,),
        f"python3 check.py && {RUFF}",
        tuple(RUFF_OUTPUT),
        {"app.py": APP_PY},
        # Once ruff-check has fixed app.py.
        "'import os' not in (ROOT / 'app.py').read_text()",
    ),
    # prettier loads prettier.config.cjs, which runs the PR's code: the reproduction, then the
    # fixer's `prettier --write`.
    "fixer-config": Path_(
        (INSTALL_PRETTIER,),
        "npx prettier --check .",
        (
            "Checking formatting...",
            "[warn] src/app.js",
            "[warn] Code style issues found in the above file. Run Prettier with --write to fix.",
        ),
        {"src/app.js": UGLY_JS, "prettier.config.cjs": PRETTIER_CONFIG},
        # When prettier (check.py's parent) runs with --write.
        "b'--write' in pathlib.Path('/proc/%d/cmdline' % os.getppid()).read_bytes()",
    ),
    # A failing test: reproduced, then the LLM rung's run_check re-runs the command.
    "run-check": Path_(
        (),
        "python3 check.py",
        (
            "FAILED tests/test_totals.py::test_sum - assert 3 == 4",
            "========================= 1 failed, 2 passed in 0.05s =========================",
        ),
        {},
        # Once the model has created go.txt (its first step, before run_check).
        "(ROOT / 'go.txt').exists()",
    ),
}


def workflow(path: str) -> str:
    steps = "".join(f"      - run: {step}\n" for step in (*PATHS[path].setup, PATHS[path].command))
    return (
        "name: CI\non: pull_request\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n" + steps
    )


def failing_log(path: str) -> str:
    command = PATHS[path].command
    return job_log(
        (
            command,
            run_header(command),
            [*PATHS[path].output, "##[error]Process completed with exit code 1."],
        )
    )


def pr_files(path: str, canary: Path, mode: str) -> dict[str, str]:
    # For the LLM rung, the earlier run fails as CI saw it (the test's own failure).
    early = (
        "sys.exit('FAILED tests/test_totals.py::test_sum - assert 3 == 4')"
        if path == "run-check"
        else "sys.exit(0)"
    )
    source = plant_source(canary, mode, PATHS[path].when, early)
    return {"check.py": source, ".github/workflows/ci.yml": workflow(path), **PATHS[path].files}


def check_model() -> list[Any]:
    """A model that re-runs the check (the PR's code runs), then gives up."""
    return [
        reply(
            text("Let me see the failure."),
            tool_use("create_file", {"path": "go.txt", "content": "go\n"}),
        ),
        reply(tool_use("run_check", {})),
        reply(tool_use("finish", {"explanation": "Could not fix it."})),
    ]


async def start_model(aiohttp_server: ServerFactory) -> tuple[MessagesSimulator, str]:
    sim = MessagesSimulator(script=check_model())
    server = await aiohttp_server(sim.app())
    return sim, str(server.make_url("")).rstrip("/")


def assert_stopped(outcome: dict[str, Any], canary: Path) -> None:
    assert sorted(p.name for p in canary.iterdir()) == [], "a planted program ran on the host"
    assert outcome["outcome"] == "handoff", outcome
    assert outcome["title"] == "Stopped: the pull request wrote git metadata", outcome["detail"]
    assert "git metadata" in outcome["detail"]
    assert outcome["commit"] is None
    assert outcome["patch"] is None


@pytest.mark.parametrize("mode", ["pointer", "nested"])
@pytest.mark.parametrize("path", list(PATHS))
async def test_shepherd_fix_stops_when_pr_code_plants_git_traps(
    path: str,
    mode: str,
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    make_settings: Callable[..., Settings],
) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    repo = make_repo(tmp_path / "repo", pr_files(path, canary, mode))
    head = run(repo, "rev-parse", "HEAD")
    git_dir_before = sorted(p.name for p in (repo / ".git").iterdir())
    log = tmp_path / "job.log"
    log.write_text(failing_log(path))
    agent = None
    if path == "run-check":
        sim, url = await start_model(aiohttp_server)
        agent, why_not = make_agent(
            make_settings(anthropic_api_key=sim.api_key, anthropic_base_url=url)
        )
        assert agent is not None, why_not
    runner = make_runner(allow_unsandboxed=False, tool_dirs=bundled_tool_dirs())
    environments = EnvironmentsFactory.from_settings(make_settings())

    result = await fix_repo(
        repo, log, fixers=FIXERS, runner=runner, agent=agent, environments=environments
    )

    assert_stopped(result.outcome.to_json(), canary)
    # The checkout's own git directory is as it was: the pointer could not be moved or edited.
    assert (repo / ".git").is_dir()
    assert sorted(p.name for p in (repo / ".git").iterdir()) == git_dir_before
    assert "trap" not in (repo / ".git" / "config").read_text()
    assert run(repo, "rev-parse", "HEAD") == head
    # The plant really ran in the sandbox (so the test tests something).
    assert (repo / ".gitattributes").read_text() == "* filter=x diff=x\n"
    planted = repo / (".evil-git" if mode == "pointer" else "vendor/.git") / "config"
    assert "fsmonitor" in planted.read_text()


@pytest.mark.parametrize("mode", ["pointer", "nested"])
@pytest.mark.parametrize("path", list(PATHS))
async def test_server_stops_when_pr_code_plants_git_traps(
    path: str, mode: str, world: World, tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    world.base_sha = commit_files(
        world.bare,
        "main",
        {
            ".github/workflows/ci.yml": workflow(path),
            ".github/shepherd.yml": "llm:\n  mode: auto\n",
            "check.py": "print('ok')\n",
        },
        "CI",
    )
    if path == "run-check":
        sim, url = await start_model(aiohttp_server)
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
    pull = world.open_pull(
        "copilot/traps", pr_files(path, canary, mode), number=66, user="Copilot", body="Fix."
    )
    run_, job = world.fail_job(pull.head_sha, "test", failing_log(path))

    assert await world.deliver("workflow_job", world.workflow_job_event(run_, job)) == 202
    await world.drain()

    assert world.branch_sha("copilot/traps") == pull.head_sha
    assert world.sim.calls("git/create-commit") == []
    assert world.sim.calls("git/update-ref") == []
    [comment] = world.sticky_comments(66)
    outcome = extract_outcome(comment["body"])
    assert outcome is not None
    assert_stopped(outcome, canary)
    [check] = world.shepherd_runs(pull.head_sha)
    assert check["conclusion"] != "success"
    # The job's worktree is gone and the mirror knows no worktree any more.
    jobs = Path(world.settings.data_dir) / "workspaces" / "jobs"
    assert not [p for p in jobs.iterdir() if p.suffix != ".lock"] if jobs.exists() else True
    mirror = next((Path(world.settings.data_dir) / "workspaces" / "mirrors").glob("*/*.git"))
    assert "trap" not in (mirror / "config").read_text()
    assert git(mirror, "worktree", "list").count("\n") == 0
    world.sim.assert_no_violations()
