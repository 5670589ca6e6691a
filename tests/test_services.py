"""Per-job services for real: private postgres, redis and mariadb servers reached from a bubblewrap
sandbox through the forwarders, isolated from each other and from the host, and gone afterwards.

The command sandbox is built here in the shape of ``BubblewrapSandbox.bwrap_argv`` (its own network
namespace with loopback only, capabilities dropped, the system read-only) plus what
``RunningServices.bwrap_args`` adds.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from bot.jobenv.services import (
    WRAPPER_FAILED,
    MariadbSetup,
    PostgresSetup,
    RunningServices,
    Server,
    ServiceHost,
    ServiceKind,
    ServiceSpec,
    Template,
    hosts_file,
    mariadb_setup,
    mariadb_setup_sql,
    plan_services,
    postgres_setup,
    process_start_time,
    provider_for,
)
from bot.kernel.errors import ConfigError, ServiceError, ServiceUnavailable

REPO_ROOT = Path(__file__).resolve().parents[1]

# --- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "kind"),
    [
        ("postgres:16", ServiceKind.POSTGRES),
        ("postgres", ServiceKind.POSTGRES),
        ("postgres:16-alpine", ServiceKind.POSTGRES),
        ("library/postgres:15", ServiceKind.POSTGRES),
        ("docker.io/library/postgres:16", ServiceKind.POSTGRES),
        ("docker.io/postgres:16", ServiceKind.POSTGRES),
        ("public.ecr.aws/docker/library/postgres:16", ServiceKind.POSTGRES),
        ("postgres@sha256:" + "a" * 64, ServiceKind.POSTGRES),
        ("redis:7", ServiceKind.REDIS),
        ("redis:7-alpine", ServiceKind.REDIS),
        ("mysql:8.0", ServiceKind.MYSQL),
        ("mysql:5.7", ServiceKind.MYSQL),
        ("mariadb:10.11", ServiceKind.MARIADB),
        ("mariadb:latest", ServiceKind.MARIADB),
    ],
)
def test_provider_for_official_images(image: str, kind: ServiceKind) -> None:
    assert provider_for(image) is kind


@pytest.mark.parametrize(
    "image",
    [
        "bitnami/postgresql:16",  # other env contract (POSTGRESQL_USERNAME, ...)
        "postgis/postgis:16-3.4",  # needs PostGIS
        "mysql/mysql-server:8.0",
        "ghcr.io/someone/postgres:16",
        "memcached:1.6",
        "mongo:7",
        "postgres:${{ matrix.pg }}",  # an unresolved expression
        "",
        "localhost:5000/postgres:16",
    ],
)
def test_provider_for_anything_else(image: str) -> None:
    assert provider_for(image) is None


def test_unsupported_image_message() -> None:
    with pytest.raises(ServiceUnavailable) as caught:
        plan_services([ServiceSpec("cache", "memcached:1.6", {}, ((11211, 11211),))])
    assert str(caught.value) == "service cache (image memcached:1.6) cannot be provided here"
    assert (caught.value.name, caught.value.image) == ("cache", "memcached:1.6")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"POSTGRES_PASSWORD": "pw"}, PostgresSetup("postgres", "pw", "postgres", "scram-sha-256")),
        (
            {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "pw"},
            PostgresSetup("app", "pw", "app", "scram-sha-256"),
        ),
        (
            {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "pw", "POSTGRES_DB": "db"},
            PostgresSetup("app", "pw", "db", "scram-sha-256"),
        ),
        (
            {"POSTGRES_HOST_AUTH_METHOD": "trust"},
            PostgresSetup("postgres", "", "postgres", "trust"),
        ),
        (
            {"POSTGRES_PASSWORD": "pw", "POSTGRES_INITDB_ARGS": "--data-checksums"},
            PostgresSetup(
                "postgres",
                "pw",
                "postgres",
                "scram-sha-256",
                ("POSTGRES_INITDB_ARGS is ignored (the data directory comes from a template)",),
            ),
        ),
    ],
)
def test_postgres_setup_as_the_image(env: dict[str, str], expected: PostgresSetup) -> None:
    assert postgres_setup("db", "postgres:16", env) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "refuses to start without POSTGRES_PASSWORD"),
        ({"POSTGRES_USER": "app"}, "refuses to start without POSTGRES_PASSWORD"),
        ({"POSTGRES_PASSWORD": "pw", "POSTGRES_HOST_AUTH_METHOD": "ident"}, "not supported"),
    ],
)
def test_postgres_setup_refused_as_by_the_image(env: dict[str, str], message: str) -> None:
    with pytest.raises(ServiceError, match=message):
        postgres_setup("db", "postgres:16", env)


def test_mariadb_setup_reads_mariadb_then_mysql_variables() -> None:
    env = {
        "MARIADB_ROOT_PASSWORD": "mariadb-root",
        "MYSQL_ROOT_PASSWORD": "mysql-root",
        "MYSQL_DATABASE": "shop",
        "MYSQL_USER": "u",
        "MYSQL_PASSWORD": "p",
    }
    mariadb = mariadb_setup("db", "mariadb:11", ServiceKind.MARIADB, env)
    assert mariadb == MariadbSetup("mariadb-root", "%", "shop", "u", "p")
    mysql = mariadb_setup("db", "mysql:8", ServiceKind.MYSQL, env)
    assert (mysql.root_password, mysql.database, mysql.user) == ("mysql-root", "shop", "u")
    assert mysql.notes == ("db: a mysql image is served by MariaDB here",)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MYSQL_DATABASE": "shop"}, "refuses to start without MYSQL_ROOT_PASSWORD"),
        ({"MYSQL_ROOT_PASSWORD": "r", "MYSQL_USER": "root", "MYSQL_PASSWORD": "p"}, "root"),
    ],
)
def test_mariadb_setup_refused_as_by_the_image(env: dict[str, str], message: str) -> None:
    with pytest.raises(ServiceError, match=message):
        mariadb_setup("db", "mysql:8", ServiceKind.MYSQL, env)


def test_mariadb_setup_sql_escapes_and_grants_like_the_image() -> None:
    sql = mariadb_setup_sql(MariadbSetup("r'oot\\", "%", "my_db`x", "u'", "p"))
    assert "PASSWORD('r\\'oot\\\\')" in sql
    assert "CREATE DATABASE IF NOT EXISTS `my_db``x`;" in sql
    assert "GRANT ALL ON `my\\_db``x`.* TO 'u\\''@'%';" in sql
    assert "CREATE USER 'root'@'%'" in sql


def test_plan_publishes_host_ports_on_localhost_and_container_ports_on_the_name() -> None:
    plans = plan_services(
        [
            ServiceSpec("postgres", "postgres:16", {"POSTGRES_PASSWORD": "pw"}, ((5433, 5432),)),
            ServiceSpec("redis", "redis:7"),
        ]
    )
    listeners = [(f.address, f.port) for plan in plans for f in plan.forwards]
    assert listeners == [
        ("127.0.0.1", 5433),
        ("::1", 5433),
        ("127.0.0.2", 5432),
        ("127.0.0.3", 6379),
    ]
    assert hosts_file(plans).splitlines()[2:] == ["127.0.0.2\tpostgres", "127.0.0.3\tredis"]


@pytest.mark.parametrize(
    ("specs", "error", "message"),
    [
        (
            [
                ServiceSpec("a", "redis:7", {}, ((6379, 6379),)),
                ServiceSpec("b", "redis:7", {}, ((6379, 6379),)),
            ],
            ServiceError,
            "services a and b both publish port 6379",
        ),
        ([ServiceSpec("a", "redis:7"), ServiceSpec("A", "redis:7")], ServiceError, "used twice"),
        ([ServiceSpec("a b", "redis:7")], ServiceError, "not a valid service id"),
        (
            [ServiceSpec("web", "redis:7", {}, ((80, 6379),))],
            ServiceUnavailable,
            "port 80 is privileged",
        ),
        ([ServiceSpec("localhost", "redis:7")], ServiceError, "reserved"),
    ],
)
def test_plan_refuses(specs: list[ServiceSpec], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        plan_services(specs)


def test_root_too_long_for_unix_sockets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="too long for unix sockets"):
        ServiceHost(tmp_path / ("x" * 80))


# --- real servers ----------------------------------------------------------------------------

POSTGRES_ENV = {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "s3cret", "POSTGRES_DB": "appdb"}
PSQL = "/usr/lib/postgresql/15/bin/psql"


@pytest.fixture(scope="module")
def host() -> Iterator[ServiceHost]:
    """One host for the module, so each template is built once. Its root is short (unix socket
    paths), and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="svc-", dir="/tmp"))
    try:
        yield ServiceHost(root / "jobenv")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def command_sandbox(
    running: RunningServices, argv: Sequence[str], env: Mapping[str, str]
) -> list[str]:
    """A command sandbox like the production one: new namespaces (a network of its own with only
    loopback), no capabilities, the system read-only, a private /tmp; plus the services' glue."""
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    for system_dir in ("/usr", "/bin", "/sbin", "/lib", "/lib64"):
        path = Path(system_dir)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), system_dir]
        elif path.exists():
            args += ["--ro-bind", system_dir, system_dir]
    for etc_file in ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ld.so.cache"):
        args += ["--ro-bind", etc_file, etc_file]
    args += ["--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev"]
    args += running.bwrap_args()
    args += [
        "--chdir",
        "/tmp",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/tmp",
    ]
    for name, value in env.items():
        args += ["--setenv", name, value]
    return [*args, "--", *running.wrap(argv)]


async def in_sandbox(
    running: RunningServices, script: str, env: Mapping[str, str] | None = None
) -> tuple[int, str]:
    """Run a shell script in the command sandbox: its exit status and output."""
    proc = await asyncio.create_subprocess_exec(
        *command_sandbox(running, ["sh", "-c", script], env or {}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def boot_ticks() -> int:
    """Now, in the unit of a process's start time (clock ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def processes_in(namespace: str, started_before: int | None = None) -> list[int]:
    """Processes in a pid namespace. Namespace numbers are reused (other sandboxes run on this
    machine), so after a namespace is gone only processes started before it went count."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                    continue
            except OSError:
                continue
            started = process_start_time(int(entry))
            if started_before is None or (started is not None and started <= started_before):
                found.append(int(entry))
    return found


def psql(
    host: str, database: str, sql: str, password: str = POSTGRES_ENV["POSTGRES_PASSWORD"]
) -> str:
    """A psql command line for the app user, quiet and unaligned, stopping at the first error."""
    url = f"postgresql://app:{password}@{host}:5432/{database}"
    return f"{PSQL} -q -w -v ON_ERROR_STOP=1 -At -c {shlex.quote(sql)} {url}"


def mariadb(host: str, user: str, password: str, sql: str, database: str = "") -> str:
    """A mariadb client command line over TCP, batch output without column names."""
    return (
        f"mariadb --no-defaults --protocol=tcp --batch --skip-column-names -h {host} -P 3306 "
        f"-u{user} -p{password} -e {shlex.quote(sql)} {database}"
    )


def postgres(name: str = "postgres", env: Mapping[str, str] = POSTGRES_ENV) -> ServiceSpec:
    return ServiceSpec(name, "postgres:16", env, ((5432, 5432),))


async def test_postgres_with_the_declared_credentials(host: ServiceHost) -> None:
    async with host.start([postgres()]) as running:
        (service,) = running.services
        assert service.server.startswith("PostgreSQL ")
        assert service.template in (Template.COLD, Template.WARM)
        assert service.endpoints == ("localhost:5432", "postgres:5432")
        status, out = await in_sandbox(
            running,
            " && ".join(
                [
                    psql("localhost", "appdb", "CREATE TABLE t (v text); INSERT INTO t VALUES (1)"),
                    psql("postgres", "appdb", "SELECT v, current_user, current_database() FROM t"),
                    psql("127.0.0.1", "postgres", "SELECT rolname FROM pg_roles WHERE rolsuper"),
                ]
            ),
        )
        assert status == 0, out
        assert out.splitlines() == ["1|app|appdb", "app"]  # no "postgres" role, as in the image


async def test_postgres_requires_the_declared_password(host: ServiceHost) -> None:
    async with host.start([postgres()]) as running:
        status, out = await in_sandbox(running, psql("localhost", "appdb", "SELECT 1", "wrong"))
        assert status != 0
        assert 'password authentication failed for user "app"' in out


async def test_postgres_defaults_and_a_python_client(host: ServiceHost) -> None:
    """POSTGRES_PASSWORD alone: user and database postgres. The client is asyncpg from Shepherd's
    own virtualenv, bound read-only into the sandbox."""
    spec = ServiceSpec("db", "postgres:15", {"POSTGRES_PASSWORD": "pw"}, ((5432, 5432),))
    async with host.start([spec]) as running:
        script = (
            "import asyncio, asyncpg\n"
            "async def main():\n"
            "    conn = await asyncpg.connect('postgresql://postgres:pw@db:5432/postgres')\n"
            "    print(await conn.fetchval('SELECT current_user || current_database()'))\n"
            "asyncio.run(main())\n"
        )
        prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix)}
        extra = [arg for prefix in prefixes for arg in ("--ro-bind", str(prefix), str(prefix))]
        command = command_sandbox(running, [sys.executable, "-c", script], {})
        # After the sandbox's own mounts: a checkout under /tmp stays visible past its tmpfs.
        separator = command.index("--")
        command[separator:separator] = extra
        result = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "postgrespostgres"


async def test_redis(host: ServiceHost) -> None:
    async with host.start([ServiceSpec("redis", "redis:7", {}, ((6379, 6379),))]) as running:
        assert running.services[0].template is Template.NONE
        status, out = await in_sandbox(
            running,
            "redis-cli -h localhost -p 6379 SET k v && redis-cli -h redis -p 6379 GET k && "
            "redis-cli -h ::1 -p 6379 PING",
        )
        assert status == 0, out
        assert out.split() == ["OK", "v", "PONG"]


@pytest.mark.parametrize(
    ("image", "env"),
    [
        (
            "mysql:8.0",
            {
                "MYSQL_ROOT_PASSWORD": "rootpw",
                "MYSQL_DATABASE": "shop",
                "MYSQL_USER": "u",
                "MYSQL_PASSWORD": "pw",
            },
        ),
        (
            "mariadb:10.11",
            {
                "MARIADB_ROOT_PASSWORD": "rootpw",
                "MARIADB_DATABASE": "shop",
                "MARIADB_USER": "u",
                "MARIADB_PASSWORD": "pw",
            },
        ),
    ],
)
async def test_mysql_and_mariadb(host: ServiceHost, image: str, env: dict[str, str]) -> None:
    async with host.start([ServiceSpec("mysql", image, env, ((3306, 3306),))]) as running:
        (service,) = running.services
        assert service.server.startswith("MariaDB ")
        status, out = await in_sandbox(
            running,
            " && ".join(
                [
                    mariadb("127.0.0.1", "u", "pw", "CREATE TABLE t (v INT)", "shop"),
                    mariadb("localhost", "u", "pw", "INSERT INTO t VALUES (7)", "shop"),
                    mariadb("127.0.0.1", "u", "pw", "SELECT v FROM t", "shop"),
                    mariadb("mysql", "root", "rootpw", "SELECT COUNT(*) FROM shop.t"),
                    mariadb("127.0.0.1", "u", "wrong", "SELECT 1", "shop"),
                ]
            ),
        )
        assert status != 0  # the wrong password, last
        assert out.splitlines()[:2] == ["7", "1"], out
        assert "Access denied for user 'u'" in out


async def test_two_jobs_with_the_same_service_are_isolated(host: ServiceHost) -> None:
    async with host.start([postgres()]) as first, host.start([postgres()]) as second:
        assert first.directory != second.directory
        for running, row in ((first, "first"), (second, "second")):
            sql = "CREATE TABLE t (v text); INSERT INTO t VALUES ($1)".replace("$1", repr(row))
            status, out = await in_sandbox(running, psql("localhost", "appdb", sql))
            assert status == 0, out
        # Both are up at once, each sees only its own row.
        select = psql("localhost", "appdb", "SELECT v FROM t")
        results = await asyncio.gather(*(in_sandbox(r, select) for r in (first, second)))
        assert [out.split() for _, out in results] == [["first"], ["second"]]


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP server on the host's 127.0.0.1, accepting until closed."""
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


async def test_nothing_but_the_services_is_reachable(host: ServiceHost, host_listener: int) -> None:
    """The shared host PostgreSQL also listens on 127.0.0.1:5432 (with a database "test"): inside
    the sandbox that address is the job's own instance. Host-only ports are closed."""
    async with host.start([postgres()]) as running:
        _, out = await in_sandbox(
            running,
            psql("127.0.0.1", "test", "SELECT 1") + "; "
            f"echo psql=$?; "
            f"{PSQL} -w -Atc 'SELECT 1' postgresql://postgres@127.0.0.1:5432/test; "
            "redis-cli -h 127.0.0.1 -p 6379 PING; "
            f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{host_listener}' && echo reached host listener",
        )
        assert 'database "test" does not exist' in out
        assert "psql=2" in out
        # No trust for the host's postgres role here: the image has no such role either.
        assert 'password authentication failed for user "postgres"' in out or "no password" in out
        assert "Connection refused" in out  # redis-cli: nothing on 6379 in this sandbox
        assert "reached host listener" not in out


async def test_the_server_cannot_reach_the_host_either(host: ServiceHost) -> None:
    """A job's user is a superuser: COPY ... PROGRAM runs a shell as the server's user. That shell
    is in the server's own sandbox: an unprivileged user, only the system and the instance's own
    files, no network, no host process in sight."""
    program = (
        "echo uid=$(id -u); echo root=$(ls /); "
        'echo processes=$(ls /proc | grep -c "^[0-9]"); echo tcp=$(grep -c ": " /proc/net/tcp); '
        'bash -c "echo > /dev/tcp/127.0.0.1/5432" 2>/dev/null && echo host-db-reached; true'
    )
    quoted = "'" + program.replace("'", "''") + "'"
    sql = "; ".join(
        ["CREATE TEMP TABLE out (line text)", "COPY out FROM PROGRAM " + quoted, "TABLE out"]
    )
    async with host.start([postgres()]) as running:
        status, out = await in_sandbox(running, psql("localhost", "appdb", sql))
    assert status == 0, out
    found = dict(line.split("=", 1) for line in out.splitlines())
    if os.geteuid() == 0:
        assert found["uid"] == str(pwd.getpwnam("postgres").pw_uid)
    assert set(found["root"].split()) <= {
        *("bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "service"),
        *("tmp", "usr"),
    }
    assert int(found["processes"]) < 20  # the instance's own, not the host's hundreds
    assert found["tcp"] == "0"
    assert "host-db-reached" not in out


async def test_teardown_leaves_no_process_and_no_directory(host: ServiceHost) -> None:
    specs = [
        postgres(),
        ServiceSpec("redis", "redis:7", {}, ((6379, 6379),)),
        ServiceSpec("mariadb", "mariadb:11", {"MARIADB_ROOT_PASSWORD": "r"}, ((3306, 3306),)),
    ]
    async with host.start(specs) as running:
        namespaces = [service.pid_namespace for service in running.services]
        assert all(processes_in(ns) for ns in namespaces)
        directory = running.directory
        assert directory is not None
        assert directory.is_dir()
        before_teardown = boot_ticks()
    assert not directory.exists()
    assert [processes_in(ns, before_teardown) for ns in namespaces] == [[], [], []]
    assert job_directories(host) == []


async def test_a_failed_start_cleans_up_the_services_already_started(host: ServiceHost) -> None:
    """Role names starting with pg_ are reserved (initdb refuses them in the image too)."""
    specs = [
        ServiceSpec("redis", "redis:7", {}, ((6379, 6379),)),
        ServiceSpec("db", "postgres:16", {"POSTGRES_USER": "pg_app", "POSTGRES_PASSWORD": "pw"}),
    ]
    with pytest.raises(ServiceError, match='role name "pg_app" is reserved'):
        async with host.start(specs):
            pytest.fail("started")
    assert job_directories(host) == []


async def test_unsupported_image_starts_nothing(host: ServiceHost) -> None:
    specs = [postgres(), ServiceSpec("search", "elasticsearch:8.13.0")]
    with pytest.raises(ServiceUnavailable) as caught:
        async with host.start(specs):
            pytest.fail("started")
    assert (
        str(caught.value) == "service search (image elasticsearch:8.13.0) cannot be provided here"
    )
    await host.check([postgres()])  # nothing missing on this host


async def test_wrap_passes_the_exit_status_through(host: ServiceHost) -> None:
    async with host.start([ServiceSpec("redis", "redis:7")]) as running:
        status, out = await in_sandbox(running, "echo out; exit 3")
        assert (status, out) == (3, "out\n")


async def test_wrap_fails_plainly_when_a_port_is_taken(host: ServiceHost) -> None:
    """Something already listens on 127.0.0.1:6379 in the sandbox: the wrapper says so, exits 125
    and does not run the command."""
    async with host.start([ServiceSpec("redis", "redis:7", {}, ((6379, 6379),))]) as running:
        occupy = (
            "socat TCP4-LISTEN:6379,bind=127.0.0.1,fork,reuseaddr EXEC:true & "
            "until grep -q ' 0100007F:18EB 00000000:0000 0A ' /proc/net/tcp; do sleep 0.01; done; "
            'exec "$@"'
        )
        command = command_sandbox(running, ["echo", "ran"], {})
        dash = command.index("--")
        command[dash + 1 : dash + 1] = ["sh", "-c", occupy, "occupy"]
        result = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == WRAPPER_FAILED
        assert "shepherd: service redis at 127.0.0.1:6379: cannot listen" in result.stderr
        assert "ran" not in result.stdout


_CRASHING_JOB = """
import asyncio, os, signal, sys
from pathlib import Path
from bot.jobenv.services import ServiceHost, ServiceSpec

async def main():
    host = ServiceHost(Path(sys.argv[1]))
    spec = ServiceSpec("db", "postgres:16", {"POSTGRES_PASSWORD": "pw"}, ((5432, 5432),))
    async with host.start([spec]) as running:
        print(running.directory, running.services[0].pid_namespace, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_the_next_start_reaps_what_a_crashed_process_left(host: ServiceHost) -> None:
    crashed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _CRASHING_JOB, str(host.root)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    directory, namespace = crashed.stdout.split()
    assert Path(directory).is_dir()  # nothing removed it
    crashed_at = boot_ticks()
    async with host.start([ServiceSpec("cache", "redis:7")]) as running:
        assert running.directory != Path(directory)
        assert not Path(directory).exists()
    assert processes_in(namespace, crashed_at) == []


async def test_support_names_the_servers_of_this_host(host: ServiceHost) -> None:
    for server in Server:
        support = await host.support(server)
        assert support.description is not None, support.reason
        assert support.version[0].isdigit()


async def test_a_pool_of_ready_copies_is_refilled_beside_each_job(host: ServiceHost) -> None:
    spec = ServiceSpec("db", "mariadb:11", {"MARIADB_ALLOW_EMPTY_ROOT_PASSWORD": "1"})
    async with host.start([spec]):
        pass
    (pool,) = host.templates.glob("mariadb-*.pool")
    copies = sorted(p.name for p in pool.iterdir())
    assert len(copies) == host.pool_size
    async with host.start([spec]) as running:
        assert running.services[0].template is Template.WARM
    after = sorted(p.name for p in pool.iterdir())
    assert len(after) == host.pool_size
    assert len(set(after) - set(copies)) == 1  # one copy taken, one made


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.05, 0.2])
async def test_a_cancelled_start_leaves_nothing(host: ServiceHost, delay: float) -> None:
    """Cancelled at whatever point the delay reaches (claiming, copying, starting, setting up)."""
    specs = [postgres(), ServiceSpec("mariadb", "mariadb:11", {"MARIADB_ROOT_PASSWORD": "r"})]

    async def job() -> None:
        async with host.start(specs):
            await asyncio.sleep(60)

    task = asyncio.create_task(job())
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert job_directories(host) == []
    assert [pid for pid in os.listdir("/proc") if pid.isdigit() and _bwrap_of(host, int(pid))] == []


def job_directories(host: ServiceHost) -> list[str]:
    if not host.services.exists():
        return []
    return [p.name for p in host.services.iterdir() if p.name != ".lock"]


def _bwrap_of(host: ServiceHost, pid: int) -> bool:
    """Whether a process is a server sandbox of this host (its command line names our root)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(host.services).encode() in cmdline
