"""Test helpers for the sandbox and the fixers: real git repos, real sandbox, scenario cases."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bot.diagnosis.logs import DistilledLog, distill
from bot.git.workspace import Worktree, local_worktree
from bot.sandbox import BubblewrapSandbox, CommandResult, Runner
from fixers.base import FixContext, Fixer, FixResult, WorktreeFiles
from fixers.tools import bundled_tool_dirs

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
CASES = SHARED / "scenarios" / "cases"

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
    "PATH": "/usr/bin:/bin",
}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, env=_GIT_ENV, capture_output=True, text=True, check=True
    )
    return done.stdout


def commit_all(repo: Path, message: str = "initial") -> None:
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", message)


def make_repo(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """A git repository at ``root`` with ``files`` committed."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "--quiet", "-b", "main")
    write_files(root, files)
    commit_all(root)
    return root


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_bytes(content.encode("utf-8"))


def read_files(root: Path, names: Sequence[str]) -> dict[str, str]:
    return {name: (root / name).read_bytes().decode("utf-8") for name in names}


def make_log(
    command: str | None = None, excerpt: str = "", working_directory: str | None = None
) -> DistilledLog:
    return DistilledLog(
        step=f"Run {command}" if command else None,
        command=command,
        working_directory=working_directory,
        exit_code=1,
        excerpt=excerpt,
    )


def sandbox(tool_cache: Path | None = None) -> BubblewrapSandbox:
    """The real bubblewrap sandbox with the bundled tools (and a pinned-tool cache) mounted."""
    return BubblewrapSandbox(tool_dirs=bundled_tool_dirs(), tool_cache=tool_cache)


def checkout_of(repo: Path) -> Worktree:
    """Shepherd's record of a local checkout, as ``shepherd fix --repo`` takes it."""
    home = repo.parent / f"{repo.name}-git-home"
    home.mkdir(exist_ok=True)
    return local_worktree(repo, home)


async def apply_fixer(
    fixer: Fixer,
    repo: Path,
    log: DistilledLog,
    *,
    subdir: str = "",
    protected: Sequence[str] = (),
    tool_cache: Path | None = None,
    scope: frozenset[str] | None = None,
    runner: Runner | None = None,
    repository: str = "",
) -> FixResult:
    ctx = FixContext(
        checkout=checkout_of(repo),
        subdir=subdir,
        log=log,
        runner=runner or sandbox(tool_cache),
        protected_paths=protected,
        scope=scope,
        repository=repository,
    )
    return await fixer.apply(ctx)


# --- scenario cases ------------------------------------------------------------------------------


def case_dir(name: str) -> Path:
    path = CASES / name
    assert path.is_dir(), f"scenario {name} not found at {path} (clone next to ../shared)"
    return path


def case_expect(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((case_dir(name) / "expect.json").read_text())
    return data


def all_cases() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "job.log").is_file())


def _make_writable(path: Path) -> None:
    for item in [path, *path.rglob("*")]:
        if not item.is_symlink():
            item.chmod(item.stat().st_mode | stat.S_IWUSR)


def copy_case(name: str, dest: Path) -> Path:
    """The scenario's repo/ copied to ``dest`` (writable) and committed as a git repository."""
    shutil.copytree(case_dir(name) / "repo", dest)
    _make_writable(dest)
    git(dest, "init", "--quiet", "-b", "main")
    commit_all(dest)
    return dest


def case_log(name: str) -> DistilledLog:
    return distill((case_dir(name) / "job.log").read_bytes())


def assert_matches_only_its_scenarios(fixer: Fixer, case: str) -> None:
    """``fixer`` claims ``case`` exactly when the case's expect.json names it."""
    expect = case_expect(case)
    wanted = fixer.name in [expect.get("fixer"), *expect.get("fixers", [])]
    assert fixer.matches(case_log(case), WorktreeFiles(case_dir(case) / "repo")) is wanted


async def fix_scenario(fixer: Fixer, name: str, tmp_path: Path) -> tuple[Path, FixResult]:
    """Copy scenario ``name``, check ``fixer`` claims it, apply it; the repo and the result."""
    repo = copy_case(name, tmp_path / "repo")
    log = case_log(name)
    assert fixer.matches(log, WorktreeFiles(repo))
    result = await apply_fixer(fixer, repo, log)
    assert result.changed
    assert result.self_check_passed
    return repo, result


async def run_in_sandbox(command: str, cwd: Path, *, network: bool = False) -> CommandResult:
    """A CI step's shell command, run as the verifier runs it."""
    env = {
        "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:{REPO_ROOT / '.tools' / 'node' / 'bin'}:"
        "/usr/local/bin:/usr/bin:/bin"
    }
    return await sandbox().run(
        ["bash", "-c", command], cwd=cwd, writable=cwd, env=env, network=network
    )
