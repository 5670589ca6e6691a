"""Attacks through what the new fixers execute: an eslint config and pre-commit hooks are the
pull request's code. Each must stay inside the sandbox: no host file outside the worktree, no
network (not even the host's loopback), no secret in the environment, no write to the git view,
the hook cache or the tree's git metadata."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.kernel.errors import UnsafeWorktree
from fixers.eslint import ESLINT
from fixers.precommit import PRE_COMMIT
from tests.fixer_support import apply_fixer, commit_all, make_log, make_repo


@contextlib.contextmanager
def listener() -> Iterator[tuple[int, list[bool]]]:
    """A TCP server on the host's loopback that records whether anyone connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    seen: list[bool] = []
    try:
        yield server.getsockname()[1], seen
    finally:
        with contextlib.suppress(BlockingIOError):
            server.accept()
            seen.append(True)
        server.close()


@pytest.fixture
def host_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_should_never_be_seen")
    return secret


def _eslint_config(secret: Path, port: int) -> str:
    return f"""import fs from "node:fs";
import net from "node:net";
const out = [];
try {{ out.push("secret:" + fs.readFileSync({json.dumps(str(secret))}, "utf8")); }}
catch (e) {{ out.push("secret:denied"); }}
try {{ fs.writeFileSync({json.dumps(str(secret.parent / "planted.txt"))}, "x"); out.push("write:ok"); }}
catch (e) {{ out.push("write:denied"); }}
out.push("token:" + (process.env.GITHUB_TOKEN || "none"));
const sock = net.connect({port}, "127.0.0.1");
sock.on("connect", () => fs.appendFileSync("probe.txt", "net:connected\\n"));
sock.on("error", () => {{}});
fs.writeFileSync("probe.txt", out.join("\\n") + "\\n");
export default [{{ rules: {{ "no-var": "error" }} }}];
"""


async def test_an_eslint_config_cannot_reach_the_host(tmp_path: Path, host_secret: Path) -> None:
    with listener() as (port, seen):
        repo = make_repo(
            tmp_path / "repo",
            {
                "eslint.config.js": _eslint_config(host_secret, port),
                "package.json": '{"type": "module"}',
                "app.js": "var a = 1;\na += 1;\n",
            },
        )
        log = make_log(
            "npx eslint .",
            "✖ 1 problem (1 error, 0 warnings)\n"
            "  1 error and 0 warnings potentially fixable with the `--fix` option.\n",
        )
        result = await apply_fixer(ESLINT, repo, log)
        await asyncio.sleep(0.2)
    probe = (repo / "probe.txt").read_text()
    assert "secret:denied" in probe
    assert "token:none" in probe
    assert "net:connected" not in probe
    assert not seen
    # The write went to the sandbox's private /tmp, never the host's.
    assert not (host_secret.parent / "planted.txt").exists()
    assert (repo / "app.js").read_text() == "let a = 1;\na += 1;\n"
    assert result.changed


HOSTILE_HOOK = """repos:
  - repo: local
    hooks:
      - id: evil
        name: evil
        language: system
        entry: ./evil.sh
        pass_filenames: false
        always_run: true
"""


def _evil_script(secret: Path, port: int) -> str:
    return f"""#!/bin/sh
out=probe.txt
: > $out
cat {secret} >> $out 2>/dev/null && echo "secret:read" >> $out || echo "secret:denied" >> $out
echo "token:${{GITHUB_TOKEN:-none}}" >> $out
python3 -c "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)" 2>/dev/null \\
  && echo "net:connected" >> $out || echo "net:denied" >> $out
git config core.hooksPath /tmp/x 2>/dev/null && echo "gitview:written" >> $out \\
  || echo "gitview:denied" >> $out
touch "$PRE_COMMIT_HOME/planted" 2>/dev/null && echo "cache:private" >> $out
echo 'x = 1' > app.py
exit 1
"""


async def test_a_pre_commit_hook_cannot_reach_the_host_or_the_cache(
    tmp_path: Path, host_secret: Path
) -> None:
    with listener() as (port, seen):
        repo = make_repo(
            tmp_path / "repo",
            {
                ".pre-commit-config.yaml": HOSTILE_HOOK,
                "evil.sh": _evil_script(host_secret, port),
                "app.py": "x = 2\n",
            },
        )
        os.chmod(repo / "evil.sh", 0o755)  # noqa: S103 - a script the hook runs
        commit_all(repo, "exec bit")
        log = make_log(
            "pre-commit run --all-files",
            "evil.....................................................................Failed\n"
            "- hook id: evil\n- exit code: 1\n- files were modified by this hook\n",
        )
        cache = tmp_path / "cache"
        result = await apply_fixer(PRE_COMMIT, repo, log, tool_cache=cache)
    probe = (repo / "probe.txt").read_text()
    assert "secret:denied" in probe
    assert "token:none" in probe
    assert "net:denied" in probe
    assert "gitview:denied" in probe
    assert not seen
    # The hook wrote into its private copy of the hook environments, never the cache.
    assert not any(p.name == "planted" for p in cache.rglob("planted"))
    assert not result.self_check_passed  # the hook always fails


async def test_a_hook_that_writes_git_metadata_into_the_tree_stops_the_job(tmp_path: Path) -> None:
    config = HOSTILE_HOOK.replace(
        "./evil.sh", "sh -c 'mkdir -p sub/.git && echo x > sub/.git/HEAD'"
    )
    repo = make_repo(tmp_path / "repo", {".pre-commit-config.yaml": config, "app.py": "x = 1\n"})
    log = make_log(
        "pre-commit run --all-files",
        "evil.....Failed\n- hook id: evil\n- exit code: 1\n- files were modified by this hook\n",
    )
    with pytest.raises(UnsafeWorktree):
        await apply_fixer(PRE_COMMIT, repo, log, tool_cache=tmp_path / "cache")
