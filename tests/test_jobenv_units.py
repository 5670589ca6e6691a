"""Table tests for the pure parts of job environments: reproduction, toolchains, the proxy's
allowlist, fingerprints, GitHub's step files and shells."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bot.jobenv.egress import filter_lines, registries_from
from bot.jobenv.environment import (
    JobEnvironments,
    files_read,
    fingerprint,
    installs_project,
    parse_github_env,
    shell_argv,
)
from bot.jobenv.reproduce import compare
from bot.jobenv.toolchains import HostTool, HostToolchains, choose, closest, is_covered
from bot.jobenv.workflow import find_job
from bot.sandbox import BubblewrapSandbox

# -- reproduction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ci", "exit_code", "output", "reproduced", "says"),
    [
        # Passing here is never a reproduction.
        (["E   assert 3 == 2"], 0, "1 passed", False, "passed here"),
        # The same failing line, with other numbers (durations, values).
        (["FAILED t.py::x - assert 3 == 2", "1 failed in 0.05s"], 1,
         "FAILED t.py::x - assert 4 == 2\n1 failed in 0.31s", True, "failed as in CI"),
        # A summary line alone does not show it failed the same way.
        (["E   assert 3 == 2", "1 failed in 0.05s"], 1,
         "E   ModuleNotFoundError: No module named 'x'\n1 failed in 0.1s", False,
         "failed differently"),
        # Only summary lines to go by: the failure counts.
        (["1 failed in 0.05s"], 1, "1 failed in 0.2s", True, "failed as in CI"),
        # The runner's checkout path differs from the sandbox's when the names differ.
        (["ERROR: /home/runner/work/demo/demo/src/a.py Imports are incorrectly sorted"], 1,
         "ERROR: /home/runner/work/widgets/widgets/src/a.py Imports are incorrectly sorted",
         True, "failed as in CI"),
        # The distiller's repeat count and cut marks are not part of the line.
        (["E   assert [1, 2] == [2] (×2)"], 1, "E   assert [1, 2] == [2]", True, "failed as in CI"),
        # Colours in the output here do not matter.
        (["error: expected `;`"], 1, "\x1b[31merror\x1b[0m: expected `;`", True, "failed as in CI"),
        # No CI lines at all: any failure counts.
        ([], 2, "boom", True, "failed as in CI"),
    ],
)  # fmt: skip
def test_reproduction(
    ci: list[str], exit_code: int, output: str, reproduced: bool, says: str
) -> None:
    found = compare(ci, exit_code=exit_code, timed_out=False, output=output)
    assert found.reproduced is reproduced
    assert found.detail.startswith(says)


def test_a_timeout_is_not_a_reproduction() -> None:
    found = compare(["x"], exit_code=-9, timed_out=True, output="x")
    assert not found.reproduced
    assert "timed out" in found.detail


# -- toolchains -----------------------------------------------------------------------------

PYTHONS = [
    HostTool("python", v, ()) for v in ("3.8.18", "3.10.13", "3.11.2", "3.11.7", "3.12.1", "3.13.0")
]


@pytest.mark.parametrize(
    ("requested", "version", "exact"),
    [
        ("3.11", "3.11.7", True),  # the newest of the series
        ("3.11.2", "3.11.2", True),
        ("3.x", "3.13.0", True),
        (">=3.12", "3.13.0", True),
        ("3.9", "3.8.18", False),  # not here: the closest
        ("3.14", "3.13.0", False),
        (None, "3.13.0", True),
        ("v3.10", "3.10.13", True),
    ],
)
def test_closest_python(requested: str | None, version: str, exact: bool) -> None:
    tool, found_exact = closest(requested, PYTHONS)
    assert tool is not None
    assert (tool.version, found_exact) == (version, exact)


def test_setup_actions_map_to_host_toolchains() -> None:
    host = HostToolchains((*PYTHONS, HostTool("node", "20.20.2", ())))
    python = choose("actions/setup-python@v5", {"python-version": "3.12"}, host)
    assert python is not None
    assert python.note == "python 3.12.1 (requested 3.12)"
    node = choose("actions/setup-node@v4", {"node-version": "18"}, host)
    assert node is not None
    assert node.note == "node 20.20.2 (requested 18; closest on this host)"
    go = choose(
        "actions/setup-go@v5",
        {"go-version-file": "go.mod"},
        host,
        files={"go.mod": "module x\n\ngo 1.22\n"},
    )
    assert go is not None
    assert (go.tool, go.requested, go.note) == (None, "1.22", "go: not installed on this host")
    pnpm = choose("pnpm/action-setup@v4", {"version": "9.15.0"}, host)
    assert pnpm is not None
    assert pnpm.install == "9.15.0"
    assert choose("actions/checkout@v4", {}, host) is None
    assert is_covered("actions/cache@v4")
    assert not is_covered("some/deploy-action@v1")


# -- the proxy's allowlist --------------------------------------------------------------------


def test_allowlist_is_exact_host_names() -> None:
    assert filter_lines(["pypi.org", "Registry.NPMjs.org."]) == (
        "^pypi\\.org$\n^registry\\.npmjs\\.org$\n"
    )
    with pytest.raises(ValueError, match="not a host name"):
        filter_lines(["pypi.org/simple"])
    assert registries_from("+mirror.example.com")[-1] == "mirror.example.com"
    assert "pypi.org" in registries_from("+mirror.example.com")
    assert registries_from("only.example.com") == ("only.example.com",)


# -- fingerprints -------------------------------------------------------------------------------

WORKFLOW = """\
on: pull_request
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: pip install -r ci/requirements.txt -c constraints.txt
      - run: pytest
"""


def test_fingerprint_follows_the_setup_and_the_files_it_reads() -> None:
    job = find_job({"ci.yml": WORKFLOW}, job_name="test", failing_command="pytest")
    assert job is not None
    tracked = ["ci/requirements.txt", "constraints.txt", "pyproject.toml", "src/app.py"]
    assert files_read(job, tracked) == ["ci/requirements.txt", "constraints.txt", "pyproject.toml"]
    base = fingerprint(job, ["python 3.11.7"], {"ci/requirements.txt": b"a==1\n"})
    assert base == fingerprint(job, ["python 3.11.7"], {"ci/requirements.txt": b"a==1\n"})
    assert base != fingerprint(job, ["python 3.11.7"], {"ci/requirements.txt": b"a==2\n"})
    assert base != fingerprint(job, ["python 3.12.1"], {"ci/requirements.txt": b"a==1\n"})
    assert base != fingerprint(job, ["python 3.11.7"], {"ci/requirements.txt": b"a==1\n"}, tree="x")
    assert not installs_project(job)


@pytest.mark.parametrize(
    ("script", "itself"),
    [
        ("pip install .", True),
        ("pip install .[test]", True),
        ("pip install -e .", False),
        ("pip install --editable '.[test]'", False),
        ("pip install -r requirements.txt", False),
    ],
)
def test_installing_the_project_itself_keys_on_the_tree(script: str, itself: bool) -> None:
    workflow = WORKFLOW.replace("pip install -r ci/requirements.txt -c constraints.txt", script)
    job = find_job({"ci.yml": workflow}, job_name="test", failing_command="pytest")
    assert job is not None
    assert installs_project(job) is itself


# -- GitHub's step files and shells ----------------------------------------------------------


def test_github_env_file() -> None:
    text = "A=1\nB=x=y\nMULTI<<EOF\nline 1\nline 2\nEOF\nbad name=3\nC=\n"
    assert parse_github_env(text) == {"A": "1", "B": "x=y", "MULTI": "line 1\nline 2", "C": ""}


@pytest.mark.parametrize(
    ("shell", "argv"),
    [
        (None, ["bash", "-e", "/s.sh"]),
        ("bash", ["bash", "--noprofile", "--norc", "-eo", "pipefail", "/s.sh"]),
        ("sh", ["sh", "-e", "/s.sh"]),
        ("python", ["python", "/s.sh"]),
        ("perl {0}", ["perl", "/s.sh"]),
        ("pwsh", None),
    ],
)
def test_shells(shell: str | None, argv: list[str] | None) -> None:
    assert shell_argv(shell, "/s.sh") == argv


def test_the_pool_keeps_to_its_size_least_recently_used_out(tmp_path: Path) -> None:
    environments = JobEnvironments(
        tmp_path / "jobenv",
        sandbox=BubblewrapSandbox(),
        host=HostToolchains(),
        pool=tmp_path / "pool",
        pool_bytes=2500,
    )
    for n, used in enumerate((30, 10, 20)):  # seconds ago
        entry = tmp_path / "pool" / f"fp{n}"
        (entry / "home").mkdir(parents=True)
        (entry / "home" / "blob").write_bytes(b"x" * 1000)
        manifest = entry / "manifest.json"
        manifest.write_text("{}")
        os.utime(manifest, (time.time() - used, time.time() - used))
    environments._evict()
    # 3000 bytes over a 2500 budget: the one used longest ago goes, the others stay.
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == ["fp1", "fp2"]
