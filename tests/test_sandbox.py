"""The bubblewrap sandbox, for real: isolation, env scrubbing, limits, refusal without bwrap."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.kernel.errors import SandboxError, SandboxUnavailable, UnsafeWorktree
from bot.sandbox import (
    BubblewrapSandbox,
    UnsandboxedRunner,
    is_secret_name,
    make_runner,
    scrubbed_env,
)
from tests.fixer_support import sandbox


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    path = tmp_path / "worktree"
    path.mkdir()
    return path


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A TCP server on 127.0.0.1 in the test process, accepting connections until closed."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.sendall(b"hello")
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


_CONNECT = (
    "import socket,sys\n"
    "s=socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
    "print('GOT', s.recv(5))\n"
)


async def test_network_is_unreachable_inside(worktree: Path, listening_port: int) -> None:
    # The same program outside the sandbox reaches the server: the probe itself works.
    outside = await UnsandboxedRunner().run(
        ["python", "-c", _CONNECT, str(listening_port)], cwd=worktree, writable=worktree
    )
    assert outside.ok
    assert "GOT b'hello'" in outside.output
    inside = await sandbox().run(
        ["python", "-c", _CONNECT, str(listening_port)], cwd=worktree, writable=worktree
    )
    assert not inside.ok
    assert "GOT" not in inside.output
    assert "Error" in inside.output


async def test_environment_is_scrubbed(worktree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_parent_secret")
    monkeypatch.setenv("SHEPHERD_X", "parent-only")
    result = await sandbox().run(
        ["env"],
        cwd=worktree,
        writable=worktree,
        env={"ANTHROPIC_API_KEY": "sk-explicit", "MY_PASSWORD": "pw", "FOO": "bar"},
    )
    assert result.ok
    names = {line.split("=", 1)[0] for line in result.output.splitlines()}
    assert "ghs_parent_secret" not in result.output
    assert "parent-only" not in result.output
    assert "sk-explicit" not in result.output
    assert "MY_PASSWORD" not in names
    assert {"PATH", "HOME", "LANG", "FOO"} <= names
    assert "HOME=/tmp" in result.output.splitlines()


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("GITHUB_TOKEN", True),
        ("github_app_id", True),
        ("ANTHROPIC_BASE_URL", True),
        ("AWS_REGION", True),
        ("DATABASE_URL", True),
        ("NPM_AUTH_TOKEN", True),
        ("SSH_KEY_PATH", True),
        ("DB_PASSWORD", True),
        ("CLIENT_SECRET", True),
        ("PATH", False),
        ("PYTHONPATH", False),
        ("CI", False),
        ("UV_PYTHON_DOWNLOADS", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret
    assert (name in scrubbed_env({name: "v"}, network=False)) is (not secret or name == "PATH")


def test_network_env_passes_only_tls_settings() -> None:
    host = {"SSL_CERT_FILE": "/etc/ssl/certs/ca.crt", "GITHUB_TOKEN": "x", "HTTP_PROXY": "p"}
    with_net = scrubbed_env(None, network=True, host_env=host)
    assert with_net["SSL_CERT_FILE"] == "/etc/ssl/certs/ca.crt"
    assert "GITHUB_TOKEN" not in with_net
    assert "HTTP_PROXY" not in with_net
    assert "SSL_CERT_FILE" not in scrubbed_env(None, network=False, host_env=host)


async def test_writes_outside_the_worktree_fail(worktree: Path, tmp_path: Path) -> None:
    marker = f"escape-{uuid.uuid4().hex}"
    home = Path.home()
    script = (
        f"echo x > {tmp_path}/{marker}; echo x > {home}/{marker}; echo x > /{marker}; "
        f"echo x > /usr/{marker}; echo x > /tmp/{marker}; echo inside > {worktree}/ok.txt"
    )
    result = await sandbox().run(["bash", "-c", script], cwd=worktree, writable=worktree)
    assert result.returncode == 0, result.output  # the last write, inside, succeeded
    assert (worktree / "ok.txt").read_text() == "inside\n"
    for parent in (tmp_path, home, Path("/"), Path("/usr"), Path("/tmp")):
        assert not (parent / marker).exists()


async def test_files_outside_the_worktree_are_invisible(worktree: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "private-key.pem").write_text("-----BEGIN PRIVATE KEY-----")
    (tmp_path / "sibling.txt").write_text("sibling secret")
    result = await sandbox().run(
        [
            "bash",
            "-c",
            f"cat {data_dir}/private-key.pem; cat {tmp_path}/sibling.txt; ls {Path.home()}; "
            "cat /etc/shadow; ls /work/main/bot",
        ],
        cwd=worktree,
        writable=worktree,
    )
    assert "PRIVATE KEY" not in result.output
    assert "sibling secret" not in result.output
    assert "No such file or directory" in result.output
    assert "root:" not in result.output  # /etc/shadow is not mounted
    assert "sandbox.py" not in result.output


async def test_tools_run_inside(worktree: Path) -> None:
    result = await sandbox().run(["ruff", "--version"], cwd=worktree, writable=worktree)
    assert result.ok
    assert result.output.startswith("ruff ")


def _running_with(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize("unsandboxed", [False, True])
async def test_timeout_kills_the_process_tree(worktree: Path, unsandboxed: bool) -> None:
    # A distinctive duration finds the processes in /proc; a child and a grandchild both sleep.
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.5"
    script = f"sleep {marker} & bash -c 'sleep {marker}' & sleep {marker}; wait"
    runner = UnsandboxedRunner() if unsandboxed else sandbox()
    result = await runner.run(["bash", "-c", script], cwd=worktree, writable=worktree, timeout=1.0)
    assert result.timed_out
    assert not result.ok
    for _ in range(100):  # killed processes may take a moment to be reaped
        if not _running_with(f"sleep {marker}"):
            break
        await asyncio.sleep(0.05)
    assert _running_with(f"sleep {marker}") == []


async def test_output_is_truncated_head_and_tail(worktree: Path) -> None:
    runner = BubblewrapSandbox(output_limit=1000)
    script = "echo FIRST; head -c 50000 /dev/zero | tr '\\0' x; echo; echo LAST"
    result = await runner.run(["bash", "-c", script], cwd=worktree, writable=worktree)
    assert result.ok
    assert result.truncated
    assert result.output.startswith("FIRST")
    assert result.output.rstrip().endswith("LAST")
    assert "bytes of output omitted" in result.output
    assert len(result.output) < 1200


async def test_small_output_is_not_truncated(worktree: Path) -> None:
    result = await sandbox().run(["echo", "hello"], cwd=worktree, writable=worktree)
    assert result == type(result)(argv=("echo", "hello"), returncode=0, output="hello\n")


@pytest.mark.parametrize(
    "hostile",
    [
        "feature/$(touch pwned)",
        "x; touch pwned",
        "`touch pwned`",
        "a && touch pwned",
        "--help",
        "name with spaces | touch pwned",
    ],
)
async def test_argv_is_not_interpreted_by_a_shell(worktree: Path, hostile: str) -> None:
    result = await sandbox().run(["printf", "%s", hostile], cwd=worktree, writable=worktree)
    assert result.output == hostile
    assert not (worktree / "pwned").exists()
    # The same string as a file name (a path separator would need a directory).
    file_name = hostile.replace("/", "_")
    (worktree / "f.txt").write_text("content")
    copied = await sandbox().run(["cp", "--", "f.txt", file_name], cwd=worktree, writable=worktree)
    assert copied.ok, copied.output
    assert (worktree / file_name).read_text() == "content"
    assert not (worktree / "pwned").exists()


async def test_cwd_must_be_inside_the_writable_worktree(worktree: Path, tmp_path: Path) -> None:
    with pytest.raises(SandboxError):
        await sandbox().run(["true"], cwd=tmp_path, writable=worktree)


def test_missing_bwrap_is_refused(tmp_path: Path) -> None:
    bogus = str(tmp_path / "no-such-bwrap")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        BubblewrapSandbox(bwrap=bogus)
    with pytest.raises(SandboxUnavailable, match="SHEPHERD_ALLOW_UNSANDBOXED=true"):
        make_runner(allow_unsandboxed=False, bwrap=bogus)


def test_bwrap_that_cannot_create_namespaces_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(SandboxUnavailable, match="cannot create namespaces"):
        make_runner(allow_unsandboxed=False, bwrap=str(fake))


async def test_unsandboxed_only_when_allowed(
    tmp_path: Path,
    worktree: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING)
    runner = make_runner(allow_unsandboxed=True, bwrap=str(tmp_path / "no-such-bwrap"))
    assert isinstance(runner, UnsandboxedRunner)
    assert "WITHOUT a sandbox" in caplog.text
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_parent_secret")
    result = await runner.run(["env"], cwd=worktree, writable=worktree)
    assert result.ok
    assert "ghs_parent_secret" not in result.output


def test_real_bwrap_is_chosen_when_available() -> None:
    assert isinstance(make_runner(allow_unsandboxed=True), BubblewrapSandbox)


async def test_network_when_asked(worktree: Path, listening_port: int) -> None:
    result = await sandbox().run(
        ["python", "-c", _CONNECT, str(listening_port)],
        cwd=worktree,
        writable=worktree,
        network=True,
    )
    assert result.ok
    assert "GOT b'hello'" in result.output


async def test_git_metadata_is_read_only_inside(worktree: Path) -> None:
    pointer = worktree / ".git"
    pointer.write_text("gitdir: /srv/mirror.git/worktrees/job-1\n")
    result = await sandbox().run(
        [
            "sh",
            "-c",
            "echo 'gitdir: evil' > .git; mv .git moved; rm -f .git; test -e moved && echo MOVED",
        ],
        cwd=worktree,
        writable=worktree,
    )
    assert "MOVED" not in result.output
    assert pointer.read_text() == "gitdir: /srv/mirror.git/worktrees/job-1\n"


@pytest.mark.parametrize("unsandboxed", [False, True])
@pytest.mark.parametrize(
    "plant",
    [
        "mkdir -p vendor/.git",
        "mkdir -p lib && echo 'gitdir: /tmp/x' > lib/.git",
        "mkdir -p own/objects own/refs && echo 'ref: refs/heads/main' > own/HEAD",
    ],
)
async def test_git_metadata_written_by_a_command_stops_the_job(
    worktree: Path, plant: str, unsandboxed: bool
) -> None:
    runner = UnsandboxedRunner() if unsandboxed else sandbox()
    with pytest.raises(UnsafeWorktree, match="git metadata"):
        await runner.run(["sh", "-c", plant], cwd=worktree, writable=worktree)


async def test_git_metadata_already_there_is_not_reported(worktree: Path) -> None:
    # A tracked fixture repository (HEAD, objects/, refs/) is data, as long as nothing changes it.
    fixture = worktree / "tests" / "fixture.git"
    (fixture / "objects").mkdir(parents=True)
    (fixture / "refs").mkdir()
    (fixture / "HEAD").write_text("ref: refs/heads/main\n")
    result = await sandbox().run(["sh", "-c", "echo ok"], cwd=worktree, writable=worktree)
    assert result.ok
