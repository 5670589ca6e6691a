"""The git runner (``bot.git.runner``): the only place a git process starts, with a clean environment."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from bot.git.runner import HARDENING, UNSET_VARIABLES, GitRepo, git_env, run_git, run_git_sync
from bot.kernel.errors import WorkspaceError
from tests.fixer_support import checkout_of
from tests.test_git_traps import make_repo, trap_script

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("bot", "handlers", "fixers")
RUNNER = ROOT / "bot" / "git" / "runner.py"

#: Calls that start a process.
_STARTERS = {
    "run",
    "Popen",
    "call",
    "check_call",
    "check_output",
    "getoutput",
    "getstatusoutput",
    "create_subprocess_exec",
    "create_subprocess_shell",
    "system",
    "popen",
    "execv",
    "execve",
    "execvp",
    "execvpe",
    "execl",
    "execlp",
    "spawnv",
    "spawnvp",
    "posix_spawn",
    "posix_spawnp",
    "run_limited",
}


def _names_git(node: ast.AST) -> bool:
    """A literal that is, or starts a command line with, git."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        word = node.value.strip().split(" ", 1)[0]
        return word == "git" or word.endswith("/git")
    if isinstance(node, ast.List | ast.Tuple) and node.elts:
        return _names_git(node.elts[0])
    if isinstance(node, ast.Starred):
        return _names_git(node.value)
    return False


def git_starts_outside_the_runner() -> list[str]:
    found: list[str] = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == RUNNER:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                    if name in _STARTERS and any(_names_git(arg) for arg in node.args):
                        found.append(f"{where}: {name}(git ...)")
                elif isinstance(node, ast.List | ast.Tuple) and _names_git(node):
                    # An argv built first and started later.
                    found.append(f"{where}: an argv starting with git")
    return found


def test_no_git_process_starts_outside_the_runner_module() -> None:
    assert git_starts_outside_the_runner() == []


def test_the_scan_finds_a_git_process_started_elsewhere(tmp_path: Path) -> None:
    # The scan itself, on the forms it must catch.
    for source in (
        'subprocess.run(["git", "status"])',
        'asyncio.create_subprocess_exec("git", "add")',
        'argv = ("/usr/bin/git", "diff")',
        'os.system("git status")',
    ):
        tree = ast.parse(source)
        assert any(
            (isinstance(n, ast.Call) and any(_names_git(a) for a in n.args))
            or (isinstance(n, ast.List | ast.Tuple) and _names_git(n))
            for n in ast.walk(tree)
        ), source


def test_the_environment_is_built_from_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (*UNSET_VARIABLES, "GIT_DIR", "GIT_WORK_TREE", "GITHUB_TOKEN", "DATABASE_URL"):
        monkeypatch.setenv(name, "/hostile")
    repo = GitRepo(tmp_path / "repo.git", tmp_path / "home")
    env = git_env(repo, home=repo.home)
    assert env["GIT_DIR"] == str(tmp_path / "repo.git")
    assert "GIT_WORK_TREE" not in env
    assert env["HOME"] == str(tmp_path / "home")
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_CONFIG_GLOBAL"] == os.devnull
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    for name in (*UNSET_VARIABLES, "GITHUB_TOKEN", "DATABASE_URL"):
        assert name not in env
    pairs = {
        (env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"])
        for i in range(int(env["GIT_CONFIG_COUNT"]))
    }
    assert set(HARDENING) <= pairs
    assert ("core.bare", "true") in pairs  # objects only: no worktree file is read
    with_tree = git_env(GitRepo(repo.git_dir, repo.home, tmp_path), home=repo.home)
    assert with_tree["GIT_WORK_TREE"] == str(tmp_path)


@pytest.mark.parametrize("name", ["GIT_CONFIG_COUNT", "GIT_EXTERNAL_DIFF", "GIT_SSH_COMMAND"])
def test_callers_cannot_reopen_what_the_runner_closes(name: str, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match=name):
        git_env(None, home=tmp_path, extra={name: "x"})


async def test_the_hosts_own_git_configuration_is_never_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    traps = tmp_path / "traps"
    # The repository first, with the test's own git, before the host's configuration is poisoned.
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n"})
    (repo / "a.txt").write_text("two\n")
    user_home = tmp_path / "user"
    (user_home / ".config" / "git").mkdir(parents=True)
    config = (
        f"[core]\n\tfsmonitor = {trap_script(traps, canary, 'home-fsmonitor')}\n"
        f"\tpager = {trap_script(traps, canary, 'home-pager')}\n"
        f"\thooksPath = {traps}\n"
        f'[filter "x"]\n\tclean = {trap_script(traps, canary, "home-clean")}\n'
    )
    (user_home / ".gitconfig").write_text(config)
    (user_home / ".config" / "git" / "config").write_text(config)
    (user_home / ".config" / "git" / "attributes").write_text("* filter=x\n")
    global_file = tmp_path / "global.cfg"
    global_file.write_text(config)
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user_home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(global_file))
    monkeypatch.setenv("GIT_EXTERNAL_DIFF", trap_script(traps, canary, "env-external-diff"))
    monkeypatch.setenv("GIT_PAGER", trap_script(traps, canary, "env-pager"))
    wt = checkout_of(repo)

    out = run_git_sync(wt.git, ["diff", "HEAD"]).text
    await run_git(wt.git, ["status", "--porcelain"])
    assert "+two" in out
    assert list(canary.iterdir()) == []
