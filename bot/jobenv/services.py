"""Private per-job instances of the services a workflow declares (postgres, redis, mysql/mariadb).

A job whose workflow says ``services: postgres: {image: postgres:16, ports: ["5432:5432"]}`` gets
its own PostgreSQL for the length of the job, with the declared user, password and database, and
the sandboxed command reaches it at ``localhost:5432`` (and ``postgres:5432``), as in CI.

How an instance is isolated:

- **No TCP on the host.** A server listens only on a unix socket in the job's private directory
  (postgres ``listen_addresses=''``, redis ``port 0``, mariadbd ``--skip-networking``). Nothing on
  the host network reaches it, and two jobs never compete for a port.
- **The server runs in its own bubblewrap sandbox**: private pid, ipc, network and mount namespaces,
  only its data and socket directories writable, nothing else of the host visible. This matters:
  the job's user is a superuser, and PR code could otherwise leave the command sandbox through the
  server (``COPY ... TO PROGRAM`` runs a shell as the server's OS user; redis and mariadb can write
  files). When Shepherd runs as root, the server runs as the Debian package's user (``postgres``,
  ``mysql``, ``redis``, else ``nobody``): the servers refuse or should not run as root. The
  directories are bound into the server's sandbox by bwrap, so the user needs no access to the
  path above them (which stays 0700, out of reach of other host users).
- **Inside the command's sandbox** (its own network namespace, loopback only), ``socat``
  forwarders listen where the workflow says and pass each connection to the bound socket
  (``RunningServices.wrap``); a generated ``/etc/hosts`` maps each service name to an address of
  its own (``RunningServices.bwrap_args``). So the failing command has no network except its
  services.
- **Destroyed with the job**: the server's namespace is killed (every process in it, including
  anything PR SQL started) and its directories are deleted.

Start-up is fast because ``initdb``/``mariadb-install-db`` run once per (server, version) into a
template under ``<root>/templates``; each job takes a copy of it (postgres and mariadb write their
files in place, so no hardlinks). A small pool of ready copies is refilled beside each job, so
the next start is a rename; without one, the copy is made at start (holes kept sparse, reflinks
where the filesystem has them).

Credentials are those the official image's entrypoint creates from the service's ``env``
(``postgres_setup``, ``mariadb_setup``), refusals included (no POSTGRES_PASSWORD, no root password
option): CI would have failed at "Initialize containers" too. The password is really required
(postgres ``scram-sha-256``, or POSTGRES_HOST_AUTH_METHOD; mariadb's accounts have it), as for a TCP
client of the image, so a wrong password in the repository fails here as it failed in CI; trust
would have been safe (only the job reaches the instance) but would hide that failure.

What differs from the images: the server version is the host's (Debian's packages), which may
differ from the image tag, and each ``RunningService`` says which server ran so the caller can
report it; mysql images are served by MariaDB; postgres' locale is C.UTF-8 (the image's is
en_US.utf8, which Debian does not ship by default); POSTGRES_INITDB_ARGS and the like are ignored
(noted); a service's ``options:``, ``volumes:`` and ``credentials:`` are not part of a
``ServiceDeclaration``.

Layout under ``root`` (``<data_dir>/jobenv``)::

    templates/<server>-<version>-<uid>/   data/ (and admin-password for postgres)
    templates/<key>.pool/<copy>/          ready copies of data/, taken by a rename
    templates/<key>.lock                  shared while copying, exclusive while building
    services/.lock                        held while claiming a job directory or reaping
    services/<job>/lock                   flock held by the owning process for the job's life
    services/<job>/hosts                  the command sandbox's /etc/hosts
    services/<job>/<i>/{data,run,log,pid} one service: data dir, socket dir, server output, pids

Leftovers of a crashed Shepherd are found by their lock: a job directory whose ``lock`` can be
flocked (or is missing) belongs to no live process. Its servers died with Shepherd (bwrap
``--die-with-parent``); any still alive are killed by the pid recorded in ``pid``, checked against
its recorded start time and pid namespace so a reused pid is never hit. Then the directory is deleted. This runs
before every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from bot.kernel.errors import ConfigError, ServiceError, ServiceUnavailable

logger = logging.getLogger(__name__)


class ServiceKind(StrEnum):
    """A kind of service image Shepherd can stand in for."""

    POSTGRES = "postgres"
    REDIS = "redis"
    MYSQL = "mysql"
    MARIADB = "mariadb"


class Server(StrEnum):
    """The program on this host that serves a kind (mysql images are served by MariaDB)."""

    POSTGRES = "postgres"
    REDIS = "redis"
    MARIADB = "mariadb"


SERVER_FOR_KIND = {
    ServiceKind.POSTGRES: Server.POSTGRES,
    ServiceKind.REDIS: Server.REDIS,
    ServiceKind.MYSQL: Server.MARIADB,
    ServiceKind.MARIADB: Server.MARIADB,
}

#: Where the Docker Hub official images are published under another name. Only the official images
#: are provided: their environment contract (POSTGRES_*, MYSQL_*/MARIADB_*) is the one reproduced
#: here. Others (bitnami/postgresql, postgis/postgis, mysql/mysql-server, ...) read other variables
#: or need extensions this host lacks: providing them would give the job the wrong users silently.
_OFFICIAL_PREFIXES = (
    "",
    "library/",
    "docker.io/",
    "docker.io/library/",
    "index.docker.io/",
    "index.docker.io/library/",
    "registry-1.docker.io/library/",
    "public.ecr.aws/docker/library/",
)


def provider_for(image: str) -> ServiceKind | None:
    """The kind of service an image is, when Shepherd can provide it; None otherwise.

    Any tag or digest is accepted (``postgres:16-alpine``, ``redis@sha256:...``): the server is the
    host's, whatever version the tag asks for.
    """
    ref = image.strip()
    if not ref or "${{" in ref or any(c.isspace() for c in ref):
        return None
    name = ref.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name = name[:colon]
    for prefix in _OFFICIAL_PREFIXES:
        if name.startswith(prefix):
            with contextlib.suppress(ValueError):
                return ServiceKind(name[len(prefix) :])
    return None


class ServiceDeclaration(Protocol):
    """One ``services:`` entry of the failing job, expressions already resolved."""

    @property
    def name(self) -> str:
        """The service's id in the workflow (``jobs.<job>.services.<name>``); also its host name."""
        ...

    @property
    def image(self) -> str: ...

    @property
    def env(self) -> Mapping[str, str]: ...

    @property
    def ports(self) -> Sequence[tuple[int, int]]:
        """``(host_port, container_port)`` pairs. A port given without a host port: the caller
        picks one (the container port is the natural choice) and resolves
        ``job.services.<name>.ports[...]`` to the same."""
        ...


@dataclass(frozen=True)
class ServiceSpec:
    """A plain ``ServiceDeclaration``."""

    name: str
    image: str
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[tuple[int, int], ...] = ()


# --- Credentials, as the official images' entrypoints create them (pure) ---------------------

_PG_AUTH_METHODS = ("scram-sha-256", "md5", "password", "trust")


@dataclass(frozen=True)
class PostgresSetup:
    """What the postgres image's entrypoint would create from the service's env."""

    user: str
    password: str
    database: str
    #: How clients authenticate (POSTGRES_HOST_AUTH_METHOD); the password is really required
    #: unless this is ``trust``, as for a TCP client of the image.
    auth_method: str
    notes: tuple[str, ...] = ()


def postgres_setup(name: str, image: str, env: Mapping[str, str]) -> PostgresSetup:
    """POSTGRES_USER (default postgres), POSTGRES_PASSWORD, POSTGRES_DB (default: the user),
    POSTGRES_HOST_AUTH_METHOD (default scram-sha-256). Raises ``ServiceError`` where the image
    refuses to start."""
    user = env.get("POSTGRES_USER") or "postgres"
    password = env.get("POSTGRES_PASSWORD", "")
    method = env.get("POSTGRES_HOST_AUTH_METHOD") or "scram-sha-256"
    if method not in _PG_AUTH_METHODS:
        raise ServiceError(
            f"service {name} (image {image}): POSTGRES_HOST_AUTH_METHOD={method} is not supported "
            f"here (one of {', '.join(_PG_AUTH_METHODS)})"
        )
    if not password and method != "trust":
        raise ServiceError(
            f"service {name} (image {image}): the image refuses to start without "
            "POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)"
        )
    notes = tuple(
        f"{var} is ignored (the data directory comes from a template)"
        for var in ("POSTGRES_INITDB_ARGS", "POSTGRES_INITDB_WALDIR", "PGDATA")
        if env.get(var)
    )
    return PostgresSetup(user, password, env.get("POSTGRES_DB") or user, method, notes)


@dataclass(frozen=True)
class MariadbSetup:
    """What the mysql/mariadb image's entrypoint would create from the service's env."""

    #: root@localhost and root@<root_host> get this password (empty when allowed).
    root_password: str
    root_host: str
    database: str
    user: str
    password: str
    notes: tuple[str, ...] = ()


def mariadb_setup(name: str, image: str, kind: ServiceKind, env: Mapping[str, str]) -> MariadbSetup:
    """MYSQL_* variables; the mariadb image also reads MARIADB_* first. Raises ``ServiceError``
    where the image refuses to start (no root password option, MYSQL_USER=root)."""

    def get(suffix: str, mysql_suffix: str | None = None) -> str:
        names = [f"MYSQL_{mysql_suffix or suffix}"]
        if kind is ServiceKind.MARIADB:
            names.insert(0, f"MARIADB_{suffix}")
        return next((env[n] for n in names if env.get(n)), "")

    root_password = get("ROOT_PASSWORD")
    allow_empty = get("ALLOW_EMPTY_ROOT_PASSWORD", "ALLOW_EMPTY_PASSWORD")
    random_root = get("RANDOM_ROOT_PASSWORD")
    if not (root_password or allow_empty or random_root):
        raise ServiceError(
            f"service {name} (image {image}): the image refuses to start without "
            "MYSQL_ROOT_PASSWORD, MYSQL_ALLOW_EMPTY_PASSWORD or MYSQL_RANDOM_ROOT_PASSWORD"
        )
    if not root_password and random_root:
        root_password = secrets.token_urlsafe(24)
    user, password = get("USER"), get("PASSWORD")
    if user == "root":
        raise ServiceError(
            f"service {name} (image {image}): MYSQL_USER=root is refused by the image "
            "(MYSQL_USER and MYSQL_PASSWORD configure a regular user)"
        )
    notes: list[str] = []
    if user and not password:
        notes.append(f"{name}: MYSQL_USER without MYSQL_PASSWORD: the user is not created")
        user = ""
    if kind is ServiceKind.MYSQL:
        notes.append(f"{name}: a mysql image is served by MariaDB here")
    return MariadbSetup(
        root_password=root_password,
        root_host=get("ROOT_HOST") or "%",
        database=get("DATABASE"),
        user=user,
        password=password,
        notes=tuple(notes),
    )


def _my_string(value: str) -> str:
    # As the images' docker_sql_escape_string_literal, with NO_BACKSLASH_ESCAPES cleared below.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _my_ident(value: str) -> str:
    return "`" + value.replace("`", "``") + "`"


def mariadb_setup_sql(setup: MariadbSetup) -> str:
    """The SQL the image's entrypoint runs on first start, for a template whose only accounts are
    root@localhost (no password) and mariadb.sys."""
    pw = _my_string(setup.root_password)
    lines = [
        "SET @@SESSION.SQL_LOG_BIN=0;",
        "SET @@SESSION.SQL_MODE=REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');",
        f"SET PASSWORD FOR 'root'@'localhost' = PASSWORD({pw});",
    ]
    if setup.root_host != "localhost":
        host = _my_string(setup.root_host)
        lines += [
            f"CREATE USER 'root'@{host} IDENTIFIED BY {pw};",
            f"GRANT ALL ON *.* TO 'root'@{host} WITH GRANT OPTION;",
            f"GRANT PROXY ON ''@'%' TO 'root'@{host} WITH GRANT OPTION;",
        ]
    if setup.database:
        lines.append(f"CREATE DATABASE IF NOT EXISTS {_my_ident(setup.database)};")
    if setup.user:
        lines.append(
            f"CREATE USER {_my_string(setup.user)}@'%' IDENTIFIED BY {_my_string(setup.password)};"
        )
        if setup.database:
            # As the image: '_' is a wildcard in a database grant, so it is escaped.
            grant_db = _my_ident(setup.database.replace("_", "\\_"))
            lines.append(f"GRANT ALL ON {grant_db}.* TO {_my_string(setup.user)}@'%';")
    return "\n".join(lines) + "\n"


# --- Where each service is reachable inside the command's sandbox (pure) ---------------------

#: Socket directories appear here inside the command's sandbox, one per service name.
SANDBOX_SERVICES_DIR = "/run/services"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,62}")
_DEFAULT_PORT = {Server.POSTGRES: 5432, Server.REDIS: 6379, Server.MARIADB: 3306}
_SOCKET_NAME = {
    Server.POSTGRES: ".s.PGSQL.5432",
    Server.REDIS: "redis.sock",
    Server.MARIADB: "mysqld.sock",
}
#: Wrapper exit status when a forwarder could not listen (as ``env``/``docker run`` use 125).
WRAPPER_FAILED = 125


@dataclass(frozen=True)
class Forward:
    """One listener inside the command's sandbox, passing connections to a service's socket."""

    service: str
    address: str
    port: int
    #: The socket's path inside the command's sandbox.
    socket: str


@dataclass(frozen=True)
class _Plan:
    index: int
    name: str
    image: str
    kind: ServiceKind
    #: The service's own loopback address; its name resolves to it.
    address: str
    forwards: tuple[Forward, ...]
    postgres: PostgresSetup | None = None
    mariadb: MariadbSetup | None = None

    @property
    def server(self) -> Server:
        return SERVER_FOR_KIND[self.kind]

    @property
    def notes(self) -> tuple[str, ...]:
        setup = self.postgres or self.mariadb
        return setup.notes if setup is not None else ()


def plan_services(declarations: Sequence[ServiceDeclaration]) -> list[_Plan]:
    """Check every declaration and decide where each service listens. Raises
    ``ServiceUnavailable`` for an image Shepherd cannot provide and ``ServiceError`` for a
    declaration CI would refuse too (a port published twice, credentials the image rejects).

    Each ``host_port`` listens on ``localhost`` (127.0.0.1 and ::1), as the runner publishes it.
    The service's name resolves to an address of its own (127.0.0.2, 127.0.0.3, ...), where the
    server's default port and every container port listen, as a container job reaches
    ``name:port``. A distinct address per service keeps two services with the same container
    port apart, and a host port the workflow did not publish closed, as in CI.
    """
    plans: list[_Plan] = []
    seen_names: set[str] = set()
    host_ports: dict[int, str] = {}
    if len(declarations) > 250:
        raise ServiceError(f"{len(declarations)} services: at most 250 are supported")
    for index, decl in enumerate(declarations):
        name, image = decl.name, decl.image
        if not _NAME.fullmatch(name):
            raise ServiceError(f"service {name!r} (image {image}): not a valid service id")
        if name.lower() in {"localhost", "ip6-localhost", "ip6-loopback"}:
            raise ServiceError(f"service {name} (image {image}): the name is reserved")
        if name.lower() in seen_names:
            raise ServiceError(f"service {name} (image {image}): the name is used twice")
        seen_names.add(name.lower())
        kind = provider_for(image)
        if kind is None:
            raise ServiceUnavailable(name, image)
        server = SERVER_FOR_KIND[kind]
        socket = f"{SANDBOX_SERVICES_DIR}/{name}/{_SOCKET_NAME[server]}"
        address = f"127.0.0.{index + 2}"
        forwards: list[Forward] = []
        container_ports = [_DEFAULT_PORT[server]]
        for host_port, container_port in decl.ports:
            for port in (host_port, container_port):
                if not 1 <= port <= 65535:
                    raise ServiceError(f"service {name} (image {image}): port {port} is invalid")
                if port < 1024:
                    # The sandbox keeps no capability, so it cannot bind a privileged port.
                    raise ServiceUnavailable(name, image, f"port {port} is privileged")
            if host_port in host_ports:
                raise ServiceError(
                    f"services {host_ports[host_port]} and {name} both publish port {host_port}"
                )
            host_ports[host_port] = name
            forwards += [
                Forward(name, "127.0.0.1", host_port, socket),
                Forward(name, "::1", host_port, socket),
            ]
            if container_port not in container_ports:
                container_ports.append(container_port)
        forwards += [Forward(name, address, port, socket) for port in container_ports]
        postgres = postgres_setup(name, image, decl.env) if kind is ServiceKind.POSTGRES else None
        mariadb = mariadb_setup(name, image, kind, decl.env) if server is Server.MARIADB else None
        plans.append(_Plan(index, name, image, kind, address, tuple(forwards), postgres, mariadb))
    return plans


def hosts_file(plans: Sequence[_Plan]) -> str:
    """The command sandbox's /etc/hosts: localhost, and each service's name at its address."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{plan.address}\t{plan.name}" for plan in plans]
    return "\n".join(lines) + "\n"


def _proc_net_address(address: str, port: int) -> tuple[str, str]:
    """The /proc/net table listing address:port, and how it writes it (kernel byte order)."""
    if address == "::1":
        return "/proc/net/tcp6", f"00000000000000000000000001000000:{port:04X}"
    octets = [int(part) for part in address.split(".")]
    return "/proc/net/tcp", "".join(f"{o:02X}" for o in reversed(octets)) + f":{port:04X}"


def forward_script(forwards: Sequence[Forward], *, socat: str) -> str:
    """The ``sh`` script of ``RunningServices.wrap``: start the forwarders, wait until each
    listens, run ``"$@"``, stop the forwarders, exit with the command's status.

    A forwarder listens when /proc/net shows a LISTEN socket on its address whose inode is one of
    the forwarder's own descriptors: another listener there (a sandbox sharing the host's network,
    where 127.0.0.1:5432 may be the host's database) is a failure, never a success.
    """
    lines = [
        "set -u",
        "pids=''",
        'fail() { echo "shepherd: $1" >&2; [ -z "$pids" ] || kill $pids 2>/dev/null; '
        f"exit {WRAPPER_FAILED}; }}",
        f'forward() {{ {shlex.quote(socat)} -lf /dev/null "$1" "UNIX-CONNECT:$2" '
        '</dev/null >/dev/null 2>&1 & last=$!; pids="$pids $last"; }',
        # owns PID INODE: whether the socket is one of the process's descriptors.
        'owns() { for fd in /proc/"$1"/fd/*; do [ "$(readlink "$fd" 2>/dev/null)" = '
        '"socket:[$2]" ] && return 0; done; return 1; }',
        # listening PID TABLE ADDRESS WHAT: until PID listens on ADDRESS, or fail.
        "listening() { n=0; while :; do",
        "  while read -r _ local _ st _ _ _ _ _ inode _; do",
        '    [ "$local" = "$3" ] && [ "$st" = 0A ] && owns "$1" "$inode" && return 0',
        '  done < "$2"',
        '  kill -0 "$1" 2>/dev/null || fail "$4: cannot listen"',
        '  n=$((n+1)); [ $n -le 2000 ] || fail "$4: not listening after 10 s"; sleep 0.005',
        "done; }",
        # IPv6 forwarders only where the sandbox's loopback has ::1.
        "ipv6=0",
        "grep -q '^00000000000000000000000000000001 ' /proc/net/if_inet6 2>/dev/null && ipv6=1",
    ]
    waits: list[str] = []
    for number, fwd in enumerate(forwards):
        table, local = _proc_net_address(fwd.address, fwd.port)
        if ":" in fwd.address:
            listen = f"TCP6-LISTEN:{fwd.port},bind=[{fwd.address}],ipv6only=1,fork,reuseaddr"
            where, guard = f"[{fwd.address}]:{fwd.port}", "[ $ipv6 = 0 ] || "
        else:
            listen = f"TCP4-LISTEN:{fwd.port},bind={fwd.address},fork,reuseaddr"
            where, guard = f"{fwd.address}:{fwd.port}", ""
        lines.append(f"{guard}{{ forward '{listen}' '{fwd.socket}'; p{number}=$last; }}")
        waits.append(
            f"{guard}listening \"$p{number}\" {table} {local} 'service {fwd.service} at {where}'"
        )
    lines += waits
    lines += ['"$@"', "status=$?", '[ -z "$pids" ] || kill $pids 2>/dev/null', 'exit "$status"']
    return "\n".join(lines) + "\n"


# --- Running services --------------------------------------------------------------------------


class Template(StrEnum):
    """Where a service's data directory came from."""

    WARM = "warm"  # a copy of an existing template (from the pool, or made at start)
    COLD = "cold"  # the template was built for this start
    NONE = "none"  # the server needs no template (redis starts empty)


@dataclass(frozen=True)
class RunningService:
    name: str
    image: str
    kind: ServiceKind
    #: The server that really ran, e.g. "PostgreSQL 15.20" for image postgres:16.
    server: str
    version: str
    template: Template
    seconds_to_ready: float
    #: Where the command reaches it: "localhost:5432", "postgres:5432", ...
    endpoints: tuple[str, ...]
    notes: tuple[str, ...]
    #: The server's socket on the host (Shepherd's side; the sandbox sees it elsewhere).
    socket: Path
    #: The server's pid namespace, "pid:[inode]": every process of the instance lives in it.
    pid_namespace: str

    def describe(self) -> str:
        """One line for a report: what ran for which image, where, and how fast."""
        where = ", ".join(self.endpoints)
        return (
            f"{self.name} ({self.image}): {self.server} at {where}, ready in "
            f"{self.seconds_to_ready:.2f} s (template {self.template})"
        )


@dataclass(frozen=True)
class RunningServices:
    """The services of one job, while they run. The sandbox glue is two calls:

    - ``bwrap_args()``: bubblewrap arguments that bind each service's socket directory
      (read-only) at ``/run/services/<name>`` and the generated hosts file at ``/etc/hosts``.
      Add them after the sandbox's own mounts (they mount over its /etc/hosts) and before
      ``--``. The sandbox must have its own network namespace (``--unshare-net``/``--unshare-all``
      without ``--share-net``) and mount /usr, /bin, /proc (for ``sh``, ``socat`` and the
      listener check).
    - ``wrap(argv)``: the argv to run inside the sandbox instead of ``argv``. It starts the socat
      forwarders, waits until each listens, runs ``argv`` and exits with its status. When a
      forwarder cannot listen it prints ``shepherd: service NAME at ADDR:PORT: cannot listen``
      and exits with ``WRAPPER_FAILED`` (125) without running ``argv``. A listener that is not
      the forwarder's own (in a sandbox sharing the host's network, where 127.0.0.1:5432 may be
      the host's database) counts as a failure.

    With no services both are no-ops (``[]`` and ``argv`` unchanged).
    """

    services: tuple[RunningService, ...] = ()
    #: The job's directory on the host (deleted when the job ends); None without services.
    directory: Path | None = None
    forwards: tuple[Forward, ...] = ()
    #: (socket directory on the host, where the sandbox sees it)
    mounts: tuple[tuple[Path, str], ...] = ()
    socat: str = "socat"

    def bwrap_args(self) -> list[str]:
        if self.directory is None:
            return []
        args = ["--ro-bind", str(self.directory / "hosts"), "/etc/hosts"]
        args += ["--perms", "0755", "--dir", SANDBOX_SERVICES_DIR]
        for host_dir, sandbox_dir in self.mounts:
            args += ["--ro-bind", str(host_dir), sandbox_dir]
        return args

    def wrap(self, argv: Sequence[str]) -> list[str]:
        if not self.forwards:
            return list(argv)
        script = forward_script(self.forwards, socat=self.socat)
        return ["/bin/sh", "-c", script, "shepherd-services", *argv]


# --- Host side: servers, templates, instances ----------------------------------------------------

#: Path of a server's files inside its own sandbox.
_SERVICE_DATA = "/service/data"
_SERVICE_RUN = "/service/run"
_SERVER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ETC_FILES = (
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
)
#: The longest unix socket path (sun_path is 108 bytes with its NUL).
_SUN_PATH_MAX = 107
#: The Debian package's user for each server, when Shepherd runs as root.
_SERVER_USER = {Server.POSTGRES: "postgres", Server.REDIS: "redis", Server.MARIADB: "mysql"}
_SERVER_NAME = {Server.POSTGRES: "PostgreSQL", Server.REDIS: "Redis", Server.MARIADB: "MariaDB"}

#: MariaDB options shared by the template build and every start (the redo log size must match).
#: Durability is off, as nothing survives the job: commits need not reach the disk.
_MARIADB_OPTIONS = (
    "--skip-name-resolve",
    "--skip-log-bin",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--innodb-buffer-pool-load-at-startup=0",
    "--innodb-buffer-pool-dump-at-shutdown=0",
    # The temporary tablespace is written out in full at every start: start it small.
    "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
    "--tmpdir=/tmp",
)
#: The only accounts a template keeps, as the image does (it drops root@127.0.0.1, root@::1 and
#: root@<hostname>).
_MARIADB_TEMPLATE_SQL = b"""\
DELETE FROM mysql.global_priv WHERE NOT (Host = 'localhost' AND User IN ('root', 'mariadb.sys'));
DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost';
"""
#: A database created from template1 when the template is built, renamed to POSTGRES_DB per job.
_PG_SPARE_DATABASE = "shepherd_spare_database"
#: Appended to a postgres template's postgresql.conf.
_POSTGRES_CONF = f"""
# Shepherd: a private per-job instance, reachable only through its unix socket.
listen_addresses = ''
unix_socket_directories = '{_SERVICE_RUN}'
# Nothing survives the job: commits need not reach the disk.
fsync = off
full_page_writes = off
"""


@dataclass(frozen=True)
class _User:
    uid: int
    gid: int


@dataclass(frozen=True)
class ServerSupport:
    """Whether this host can run a server, for ``shepherd doctor`` and for hand-off reasons."""

    server: Server
    #: "PostgreSQL 15.20", or None when it cannot run here.
    description: str | None
    version: str = ""
    reason: str = ""
    #: Program name -> absolute path (postgres, initdb, redis-server, mariadbd, ...).
    programs: Mapping[str, str] = field(default_factory=dict)


def _which(program: str, extra: Sequence[str] = ()) -> str | None:
    found = shutil.which(program)
    if found is None:
        for directory in extra:
            candidate = Path(directory) / program
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return found


def _postgres_bin_dirs() -> list[Path]:
    """Debian installs each major version under /usr/lib/postgresql/<major>/bin: newest first."""
    base = Path("/usr/lib/postgresql")
    majors = [p for p in base.glob("*/bin") if p.parent.name.isdigit()] if base.is_dir() else []
    return sorted(majors, key=lambda p: int(p.parent.name), reverse=True)


def _programs(server: Server) -> dict[str, str | None]:
    if server is Server.POSTGRES:
        for bin_dir in _postgres_bin_dirs():
            if (bin_dir / "postgres").exists() and (bin_dir / "initdb").exists():
                return {"postgres": str(bin_dir / "postgres"), "initdb": str(bin_dir / "initdb")}
        return {"postgres": _which("postgres"), "initdb": _which("initdb")}
    if server is Server.REDIS:
        return {"redis-server": _which("redis-server")}
    sbin = ("/usr/sbin", "/usr/local/sbin")
    return {
        "mariadbd": _which("mariadbd", sbin),
        "mariadb-install-db": _which("mariadb-install-db", sbin),
        "mariadb": _which("mariadb"),
    }


_VERSION = {
    Server.POSTGRES: re.compile(r"\)\s+(\d+(?:\.\d+)*)"),
    Server.REDIS: re.compile(r"v=(\d+(?:\.\d+)*)"),
    Server.MARIADB: re.compile(r"Ver\s+(\d+(?:\.\d+)*)"),
}


async def _run(
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    timeout: float,  # noqa: ASYNC109 - a bound on a host-side helper process
    what: str,
) -> str:
    """Run a host-side helper (cp, a server's --version, a client); its output; ServiceError on
    failure."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={"PATH": _SERVER_PATH, "LANG": "C.UTF-8"},
            start_new_session=True,
        )
    except OSError as exc:
        raise ServiceError(f"{what}: could not start {argv[0]}: {exc}") from exc
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError as exc:
        raise ServiceError(f"{what}: {argv[0]} took more than {timeout:.0f} s") from exc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    text = out.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        raise ServiceError(f"{what}: {argv[0]} failed ({proc.returncode}): {text.strip()[-2000:]}")
    return text


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def _flock(fd: int, operation: int) -> None:
    """Take a flock without blocking the event loop (polls; cancellation-safe)."""
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            await asyncio.sleep(0.02)
        else:
            return


def _rmtree(path: Path) -> None:
    """Delete a tree; what cannot be deleted is logged (the next reap retries), not raised."""

    def report(_function: object, failed: str, info: tuple[type, BaseException, object]) -> None:
        if not isinstance(info[1], FileNotFoundError):
            logger.warning("services: could not delete %s: %s", failed, info[1])

    shutil.rmtree(path, onerror=report)  # onexc is Python 3.12


@dataclass
class _Instance:
    """One server process: the outer bwrap (Shepherd's child) and its namespace's init."""

    plan: _Plan
    directory: Path
    user: _User | None
    proc: asyncio.subprocess.Process | None = None
    #: Host pid of the pid namespace's init, and that namespace, from bwrap --info-fd.
    init_pid: int | None = None
    pid_namespace: str = ""

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def run(self) -> Path:
        return self.directory / "run"

    @property
    def log(self) -> Path:
        return self.directory / "log"

    @property
    def socket(self) -> Path:
        return self.run / _SOCKET_NAME[self.plan.server]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def failure(self, what: str) -> ServiceError:
        tail = _tail(self.log)
        detail = f"\n{tail}" if tail else ""
        return ServiceError(f"service {self.plan.name} (image {self.plan.image}): {what}{detail}")

    def kill(self) -> None:
        """SIGKILL the namespace's init: the kernel then kills every process in the namespace
        (the server, its workers, anything PR SQL started) before the init can be reaped. The
        data is discarded, so a graceful shutdown would buy nothing."""
        if self.proc is None or self.proc.returncode is not None:
            return
        target, kill = (
            (self.init_pid, os.kill) if self.init_pid is not None else (self.proc.pid, os.killpg)
        )
        with contextlib.suppress(ProcessLookupError):
            kill(target, signal.SIGKILL)

    async def wait(self, bound: float) -> None:
        """Wait until the outer bwrap has reaped the init (so the namespace is empty)."""
        if self.proc is None:
            return
        try:
            await asyncio.wait_for(self.proc.wait(), bound)
        except TimeoutError:
            logger.warning("services: %s did not stop in %.0f s", self.plan.name, bound)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


@dataclass
class _JobDir:
    path: Path
    lock_fd: int


class ServiceHost:
    """Starts private service instances for jobs on this machine.

    ``root`` is Shepherd's job-environment directory (``<data_dir>/jobenv``); templates and running
    instances live beneath it. It must be short enough for unix socket paths (about 65
    characters). Everything else (bwrap, socat, the servers) is found on this host.
    """

    def __init__(
        self,
        root: Path,
        *,
        bwrap: str = "bwrap",
        socat: str = "socat",
        ready_timeout: float = 60.0,
        template_timeout: float = 300.0,
        pool_size: int = 2,
    ) -> None:
        self.root = root.resolve()
        longest = self.root / "services" / "0123abcd" / "249" / "run" / ".s.PGSQL.5432"
        if len(str(longest)) > _SUN_PATH_MAX:
            raise ConfigError(
                f"the job-environment directory {self.root} is too long for unix sockets "
                f"(at most {_SUN_PATH_MAX - len(str(longest)) + len(str(self.root))} characters): "
                "choose a shorter SHEPHERD_DATA_DIR"
            )
        self.bwrap = bwrap
        self.socat = socat
        self.ready_timeout = ready_timeout
        self.template_timeout = template_timeout
        #: Ready copies of each template kept for the next jobs (0: copy at every start).
        self.pool_size = pool_size
        self._support: dict[Server, ServerSupport] = {}
        self._problem: str | None = None

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def services(self) -> Path:
        return self.root / "services"

    # -- what this host can run --------------------------------------------------------------

    async def _host_problem(self) -> str:
        """What keeps this host from running any server sandbox ("" when nothing)."""
        if self._problem is not None:
            return self._problem
        tools = (self.bwrap, self.socat) + (("setpriv",) if os.geteuid() == 0 else ())
        missing = [tool for tool in tools if _which(tool) is None]
        problem = f"{', '.join(missing)} not installed" if missing else ""
        if not problem:
            # The namespaces a server's sandbox needs (user namespaces too, when not root).
            bwrap = _which(self.bwrap) or self.bwrap
            namespaces = (
                ["--unshare-all"] if os.geteuid() != 0 else ["--unshare-pid", "--unshare-net"]
            )
            try:
                await _run(
                    [bwrap, *namespaces, "--ro-bind", "/", "/", "true"],
                    timeout=30,
                    what="bubblewrap",
                )
            except ServiceError as exc:
                problem = f"bubblewrap cannot create namespaces here ({exc})"
        self._problem = problem
        return problem

    async def support(self, server: Server) -> ServerSupport:
        """Whether ``server`` can run here, and which version (probed once per host object)."""
        known = self._support.get(server)
        if known is not None:
            return known
        programs = _programs(server)
        absent = [name for name, path in programs.items() if path is None]
        reason = await self._host_problem()
        if absent:
            reason = f"{', '.join(absent)} not installed" + (f"; {reason}" if reason else "")
        if reason:
            result = ServerSupport(server, None, reason=reason)
        else:
            found = {name: path for name, path in programs.items() if path is not None}
            main = next(iter(found.values()))
            try:
                out = await _run([main, "--version"], timeout=30, what=f"{server} version")
            except ServiceError as exc:
                result = ServerSupport(server, None, reason=str(exc), programs=found)
            else:
                match = _VERSION[server].search(out)
                version = match.group(1) if match else "unknown"
                description = f"{_SERVER_NAME[server]} {version}"
                result = ServerSupport(server, description, version, programs=found)
        self._support[server] = result
        return result

    async def check(self, declarations: Sequence[ServiceDeclaration]) -> None:
        """Raise what ``start`` would raise before starting anything: ``ServiceUnavailable`` for
        an image or server this host lacks, ``ServiceError`` for a declaration CI refuses too."""
        await self._supports(plan_services(declarations))

    async def _supports(self, plans: Sequence[_Plan]) -> dict[Server, ServerSupport]:
        """How each planned server runs here; ``ServiceUnavailable`` for the first that cannot."""
        supports: dict[Server, ServerSupport] = {}
        for plan in plans:
            support = await self.support(plan.server)
            if support.description is None:
                raise ServiceUnavailable(plan.name, plan.image, support.reason)
            supports[plan.server] = support
        return supports

    # -- the job's lifetime --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def start(
        self, declarations: Sequence[ServiceDeclaration]
    ) -> AsyncIterator[RunningServices]:
        """Start every declared service (concurrently); yield them ready, with the declared
        credentials applied; destroy them on exit, whatever happened.

        Raises ``ServiceUnavailable`` (hand off: "service X (image Y) cannot be provided here")
        and ``ServiceError`` (a server did not start, or CI would have refused the declaration).
        """
        plans = plan_services(declarations)
        if not plans:
            yield RunningServices(socat=self.socat)
            return
        supports = await self._supports(plans)
        job = await self._claim_job()
        instances: list[_Instance] = []
        refills: list[asyncio.Task[None]] = []
        try:
            services = await self._start_all(job.path, plans, supports, instances)
            if self.pool_size > 0:
                # Owned by this job and awaited when it ends, whatever happens.
                refills = [
                    asyncio.create_task(self._refill_pool(server, supports[server]))
                    for server in dict.fromkeys(plan.server for plan in plans)
                    if server is not Server.REDIS
                ]
            yield RunningServices(
                services=services,
                directory=job.path,
                forwards=tuple(fwd for plan in plans for fwd in plan.forwards),
                mounts=tuple(
                    (job.path / str(plan.index) / "run", f"{SANDBOX_SERVICES_DIR}/{plan.name}")
                    for plan in plans
                ),
                socat=_which(self.socat) or self.socat,
            )
        finally:
            for instance in instances:
                instance.kill()
            await asyncio.gather(*(instance.wait(10.0) for instance in instances), *refills)
            await asyncio.to_thread(self._release, job)

    async def _claim_job(self) -> _JobDir:
        claim = asyncio.create_task(asyncio.to_thread(self._claim))
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            # The thread finishes the claim anyway (briefly): give the directory back first.
            await asyncio.to_thread(self._release, await claim)
            raise

    async def _start_all(
        self,
        job: Path,
        plans: Sequence[_Plan],
        supports: Mapping[Server, ServerSupport],
        instances: list[_Instance],
    ) -> tuple[RunningService, ...]:
        """Start the planned services together; ``instances`` collects what was started, for
        the caller to destroy."""
        (job / "hosts").write_text(hosts_file(plans))
        (job / "hosts").chmod(0o644)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._start_one(job, plan, supports[plan.server], instances))
                    for plan in plans
                ]
        except BaseExceptionGroup as failed:
            # One service failed and the others were cancelled: raise the failure itself.
            raise _first_error(failed) from None
        return tuple(task.result() for task in tasks)

    # -- job directories, their locks, leftovers -----------------------------------------------

    @contextlib.contextmanager
    def _services_lock(self) -> Iterator[None]:
        self.services.mkdir(parents=True, exist_ok=True)
        self.services.chmod(0o700)
        fd = os.open(self.services / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _claim(self) -> _JobDir:
        """Reap leftovers, then create and lock a job directory (under the services lock, so a
        reaper never sees a directory before its lock is held)."""
        with self._services_lock():
            self._reap_locked()
            while True:
                path = self.services / secrets.token_hex(4)
                try:
                    path.mkdir(mode=0o700)
                except FileExistsError:
                    continue
                fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return _JobDir(path, fd)

    def _release(self, job: _JobDir) -> None:
        """Delete the job's directory: its contents while its lock is held, then the lock and the
        directory itself under the services lock (so a directory without a lock file is always a
        leftover)."""
        try:
            for entry in job.path.iterdir():
                if entry.name != "lock":
                    _rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            with self._services_lock():
                (job.path / "lock").unlink(missing_ok=True)
                job.path.rmdir()
        finally:
            os.close(job.lock_fd)

    def _reap_locked(self) -> list[Path]:
        reaped: list[Path] = []
        for entry in sorted(self.services.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                fd: int | None = os.open(entry / "lock", os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = None
            try:
                if fd is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live job
                logger.warning("services: removing the leftovers of a crashed job in %s", entry)
                for pid_file in entry.glob("*/pid"):
                    _kill_leftover(pid_file)
                _rmtree(entry)
                reaped.append(entry)
            finally:
                if fd is not None:
                    os.close(fd)
        return reaped

    # -- one instance ------------------------------------------------------------------------

    def _user(self, server: Server) -> _User | None:
        """Who runs the server: None (Shepherd's own user) unless Shepherd is root."""
        if os.geteuid() != 0:
            return None
        for name in (_SERVER_USER[server], "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return _User(entry.pw_uid, entry.pw_gid)
        raise ServiceError(f"no unprivileged user to run {server} as (tried the package's, nobody)")

    def _sandbox(
        self,
        argv: Sequence[str],
        *,
        user: _User | None,
        data: Path,
        run: Path | None = None,
        read_only: Sequence[tuple[Path, str]] = (),
        info_fd: int | None = None,
    ) -> list[str]:
        """The server's own sandbox: private pid/ipc/net/uts (and user, when not root)
        namespaces, the system read-only, only its data and socket directories writable, no
        environment but PATH, LANG and TZ. As root, bwrap binds as root and ``setpriv`` drops to
        the server's user before exec (no capability is left)."""
        args = [_which(self.bwrap) or self.bwrap]
        if user is None:
            args.append("--unshare-all")
        else:
            args += ["--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts"]
            args.append("--unshare-cgroup-try")
        args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        if user is not None:
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        if info_fd is not None:
            args += ["--info-fd", str(info_fd)]
        for system_dir in _SYSTEM_DIRS:
            path = Path(system_dir)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), system_dir]
            elif path.exists():
                args += ["--ro-bind", system_dir, system_dir]
        args += ["--perms", "0755", "--dir", "/etc"]
        for etc_file in _ETC_FILES:
            if os.path.exists(etc_file):
                args += ["--ro-bind", os.path.realpath(etc_file), etc_file]
        args += ["--proc", "/proc", "--dev", "/dev"]
        # Private tmpfs mounts inside the server's sandbox, not the host's shared directories.
        args += ["--perms", "1777", "--tmpfs", "/dev/shm"]  # noqa: S108
        args += ["--perms", "1777", "--tmpfs", "/tmp"]  # noqa: S108
        args += ["--hostname", "service", "--perms", "0755", "--dir", "/service"]
        args += ["--bind", str(data), _SERVICE_DATA]
        if run is not None:
            args += ["--bind", str(run), _SERVICE_RUN]
        for source, target in read_only:
            args += ["--ro-bind", str(source), target]
        args += ["--clearenv", "--setenv", "PATH", _SERVER_PATH, "--setenv", "LANG", "C.UTF-8"]
        args += ["--setenv", "TZ", "Etc/UTC", "--"]
        if user is not None:
            setpriv = _which("setpriv") or "setpriv"
            args += [setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--"]
        return [*args, *argv]

    async def _sandboxed(
        self,
        argv: Sequence[str],
        *,
        user: _User | None,
        data: Path,
        what: str,
        read_only: Sequence[tuple[Path, str]] = (),
        stdin: bytes | None = None,
    ) -> None:
        """Run a template-building step (initdb, mariadb-install-db) in the server's sandbox."""
        command = self._sandbox(argv, user=user, data=data, read_only=read_only)
        await _run(command, stdin=stdin, timeout=self.template_timeout, what=what)

    def _chown(self, path: Path, user: _User | None) -> None:
        if user is not None:
            os.chown(path, user.uid, user.gid)

    async def _start_one(
        self, job: Path, plan: _Plan, support: ServerSupport, instances: list[_Instance]
    ) -> RunningService:
        started = time.monotonic()
        user = self._user(plan.server)
        instance = _Instance(plan, job / str(plan.index), user)
        instance.directory.mkdir(mode=0o700)
        admin_password = ""
        if plan.server is Server.REDIS:
            instance.data.mkdir(mode=0o700)
            self._chown(instance.data, user)
            template = Template.NONE
        else:
            built, admin_password = await self._copy_template(
                plan.server, support, user, instance.data
            )
            template = Template.COLD if built else Template.WARM
        instance.run.mkdir()
        instance.run.chmod(0o755)  # the command's sandbox (no CAP_DAC_OVERRIDE) must search it
        self._chown(instance.run, user)
        if plan.postgres is not None:
            self._write_postgres_config(instance.data, plan.postgres, user)
        instances.append(instance)
        await self._spawn(instance, self._server_argv(plan.server, support))
        deadline = started + self.ready_timeout
        if plan.server is Server.POSTGRES:
            assert plan.postgres is not None  # planned for every postgres service
            await self._postgres_ready(instance, plan.postgres, admin_password, deadline)
        elif plan.server is Server.REDIS:
            await self._redis_ready(instance, deadline)
        else:
            assert plan.mariadb is not None  # planned for every mysql/mariadb service
            await self._mariadb_ready(instance, plan.mariadb, support, deadline)
        assert support.description is not None  # checked by start()
        return RunningService(
            name=plan.name,
            image=plan.image,
            kind=plan.kind,
            server=support.description,
            version=support.version,
            template=template,
            seconds_to_ready=time.monotonic() - started,
            endpoints=_endpoints(plan),
            notes=plan.notes,
            socket=instance.socket,
            pid_namespace=instance.pid_namespace,
        )

    def _server_argv(self, server: Server, support: ServerSupport) -> list[str]:
        programs = support.programs
        if server is Server.POSTGRES:
            return [programs["postgres"], "-D", _SERVICE_DATA]
        if server is Server.REDIS:
            return [
                programs["redis-server"],
                *("--port", "0", "--unixsocket", f"{_SERVICE_RUN}/{_SOCKET_NAME[server]}"),
                *("--unixsocketperm", "777", "--dir", _SERVICE_DATA, "--save", ""),
                *("--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"),
            ]
        return [
            programs["mariadbd"],
            "--no-defaults",
            f"--datadir={_SERVICE_DATA}",
            f"--socket={_SERVICE_RUN}/{_SOCKET_NAME[server]}",
            "--skip-networking",
            f"--pid-file={_SERVICE_DATA}/mariadbd.pid",
            *_MARIADB_OPTIONS,
        ]

    async def _spawn(self, instance: _Instance, argv: Sequence[str]) -> None:
        read_fd, write_fd = os.pipe()
        try:
            with instance.log.open("ab") as log:
                command = self._sandbox(
                    argv, user=instance.user, data=instance.data, run=instance.run, info_fd=write_fd
                )
                instance.proc = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={"PATH": _SERVER_PATH},
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
        except OSError as exc:
            os.close(read_fd)
            raise instance.failure(f"could not start bwrap: {exc}") from exc
        finally:
            os.close(write_fd)
        # bwrap writes the namespace's init pid, then closes the pipe (EOF also when it fails).
        info_text = await asyncio.to_thread(_read_all, read_fd)
        try:
            info = json.loads(info_text)
            instance.init_pid = int(info["child-pid"])
            instance.pid_namespace = f"pid:[{int(info['pid-namespace'])}]"
        except (ValueError, KeyError, TypeError) as exc:
            await instance.wait(10.0)
            raise instance.failure("the server's sandbox did not start") from exc
        started = process_start_time(instance.init_pid)
        (instance.directory / "pid").write_text(
            f"{instance.init_pid} {started} {instance.pid_namespace}\n"
        )

    async def _poll(
        self,
        instance: _Instance,
        ready: Callable[[], Awaitable[bool]],
        deadline: float,
    ) -> None:
        while not await ready():
            if not instance.alive():
                raise instance.failure("the server exited while starting")
            if time.monotonic() > deadline:
                raise instance.failure(f"not ready after {self.ready_timeout:.0f} s")
            await asyncio.sleep(0.005)

    # -- templates -----------------------------------------------------------------------------

    async def _copy_template(
        self, server: Server, support: ServerSupport, user: _User | None, dest: Path
    ) -> tuple[bool, str]:
        """Put a copy of the server's template data directory at ``dest``: a ready copy from the
        pool if there is one (a rename), else a copy made now; the template is built first if it
        is missing. Whether it was built now, and the template's admin password (postgres)."""
        self.templates.mkdir(parents=True, exist_ok=True)
        key = _template_key(server, support, user)
        final = self.templates / key
        fd = os.open(self.templates / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        built = False
        try:
            await _flock(fd, fcntl.LOCK_SH)
            if not final.is_dir():
                # Converting the lock releases it first, so two converters cannot deadlock.
                await _flock(fd, fcntl.LOCK_EX)
                if not final.is_dir():
                    await self._build_template(server, support, user, key)
                    built = True
                await _flock(fd, fcntl.LOCK_SH)
            if not _take_from_pool(self.templates / f"{key}.pool", dest):
                await _run(
                    ["cp", "-a", "--reflink=auto", str(final / "data"), str(dest)],
                    timeout=self.template_timeout,
                    what=f"copying the {server} template",
                )
            password_file = final / "admin-password"
            admin_password = password_file.read_text() if password_file.exists() else ""
        finally:
            os.close(fd)
        return built, admin_password

    async def _refill_pool(self, server: Server, support: ServerSupport) -> None:
        """Copy the template into its pool until it holds ``pool_size`` ready copies. Runs beside
        the job that took a copy, so the next job's start is a rename instead of a copy."""
        user = self._user(server)
        key = _template_key(server, support, user)
        pool = self.templates / f"{key}.pool"
        fd = os.open(self.templates / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                # Nobody copies from the template now: an unfinished copy was left by a crash.
                for stale in pool.glob(".copy-*"):
                    _rmtree(stale)
            await _flock(fd, fcntl.LOCK_SH)
            if not (self.templates / key).is_dir():
                return
            pool.mkdir(mode=0o700, exist_ok=True)
            while sum(1 for p in pool.iterdir() if not p.name.startswith(".")) < self.pool_size:
                token = secrets.token_hex(4)
                partial = pool / f".copy-{token}"
                try:
                    await _run(
                        [
                            "cp",
                            "-a",
                            "--reflink=auto",
                            str(self.templates / key / "data"),
                            str(partial),
                        ],
                        timeout=self.template_timeout,
                        what=f"copying the {server} template",
                    )
                    os.rename(partial, pool / token)
                except BaseException:
                    _rmtree(partial)
                    raise
        except (ServiceError, OSError) as exc:
            logger.warning("services: could not refill the %s pool: %s", key, exc)
        finally:
            os.close(fd)

    async def _build_template(
        self, server: Server, support: ServerSupport, user: _User | None, key: str
    ) -> None:
        """Build a template atomically: in a private directory, renamed into place when done.
        Called with the template's lock held exclusively."""
        for stale in self.templates.glob(f".build-{key}-*"):
            _rmtree(stale)
        build = self.templates / f".build-{key}-{secrets.token_hex(4)}"
        build.mkdir(mode=0o700)
        try:
            data = build / "data"
            data.mkdir(mode=0o700)
            self._chown(data, user)
            started = time.monotonic()
            if server is Server.POSTGRES:
                await self._build_postgres(support, user, build)
            else:
                await self._build_mariadb(support, user, build)
            # Holes instead of zeros (WAL segments, redo logs): each copy writes less.
            for path in data.rglob("*"):
                if path.is_file() and path.stat().st_size >= 1 << 20:
                    with contextlib.suppress(ServiceError):
                        await _run(["fallocate", "--dig-holes", str(path)], timeout=60, what="")
            await _run(["sync", "--file-system", str(build)], timeout=120, what="sync")
            os.rename(build, self.templates / key)
            logger.info("services: built %s in %.1f s", key, time.monotonic() - started)
        except BaseException:
            _rmtree(build)
            raise
        # Templates of other versions of this server (an upgraded package) are no longer used.
        for other in self.templates.glob(f"{server}-*"):
            if other.is_dir() and other.name != key:
                _remove_template(other)

    async def _build_postgres(
        self, support: ServerSupport, user: _User | None, build: Path
    ) -> None:
        admin_password = secrets.token_urlsafe(24)
        password_file = build / "admin-password"
        password_file.write_text(admin_password)
        password_file.chmod(0o600)
        self._chown(password_file, user)  # initdb reads it as the server's user
        await self._sandboxed(
            [
                support.programs["initdb"],
                f"--pgdata={_SERVICE_DATA}",
                "--username=postgres",
                "--pwfile=/service/admin-password",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            user=user,
            data=build / "data",
            read_only=[(password_file, "/service/admin-password")],
            what="initdb",
        )
        os.chown(password_file, os.geteuid(), os.getegid())
        # CREATE DATABASE copies template1 page by page (a third of a second): the template has
        # one ready, which each job renames to POSTGRES_DB (or drops).
        await self._sandboxed(
            [support.programs["postgres"], "--single", "-D", _SERVICE_DATA, "postgres"],
            user=user,
            data=build / "data",
            # FILE_COPY: no WAL for the copied pages, so the template stays small.
            stdin=f"CREATE DATABASE {_PG_SPARE_DATABASE} STRATEGY = FILE_COPY\n".encode(),
            what="postgres --single",
        )
        with (build / "data" / "postgresql.conf").open("a") as conf:
            conf.write(_POSTGRES_CONF)

    async def _build_mariadb(self, support: ServerSupport, user: _User | None, build: Path) -> None:
        data = build / "data"
        await self._sandboxed(
            [
                support.programs["mariadb-install-db"],
                "--no-defaults",
                # It wants the host name to resolve, which the server's sandbox has no way to.
                "--force",
                f"--datadir={_SERVICE_DATA}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *_MARIADB_OPTIONS,
            ],
            user=user,
            data=data,
            what="mariadb-install-db",
        )
        await self._sandboxed(
            [
                support.programs["mariadbd"],
                "--no-defaults",
                "--bootstrap",
                f"--datadir={_SERVICE_DATA}",
                *_MARIADB_OPTIONS,
            ],
            user=user,
            data=data,
            stdin=_MARIADB_TEMPLATE_SQL,
            what="mariadbd --bootstrap",
        )

    # -- per-server set-up -----------------------------------------------------------------------

    def _write_postgres_config(self, data: Path, setup: PostgresSetup, user: _User | None) -> None:
        """pg_hba.conf as the image's: every client authenticates with the declared method. The
        command's clients arrive through the forwarded unix socket, so the rule is ``local``."""
        hba = data / "pg_hba.conf"
        hba.write_text(
            "# Shepherd: the job's clients arrive through the forwarded socket.\n"
            f"local all all {setup.auth_method}\n"
            f"local replication all {setup.auth_method}\n"
        )
        hba.chmod(0o600)
        self._chown(hba, user)
        if setup.auth_method == "md5":
            with (data / "postgresql.conf").open("a") as conf:
                conf.write("password_encryption = md5\n")

    async def _postgres_ready(
        self, instance: _Instance, setup: PostgresSetup, admin_password: str, deadline: float
    ) -> None:
        import asyncpg

        pid_file = instance.data / "postmaster.pid"

        async def ready() -> bool:
            # The postmaster's status line (the 8th) says "ready" once it accepts connections.
            try:
                lines = pid_file.read_text().splitlines()
            except OSError:
                return False
            return len(lines) >= 8 and lines[7].strip() == "ready"

        await self._poll(instance, ready, deadline)

        user = _pg_ident(setup.user)
        password = _pg_string(setup.password) if setup.password else "NULL"
        statements = [f"ALTER ROLE postgres PASSWORD {password}"]
        if setup.user != "postgres":
            # The image's bootstrap superuser *is* POSTGRES_USER (there is no "postgres" role):
            # rename the template's. A session cannot rename its own session user, so it
            # becomes a helper role for the rename, then back.
            helper = f"shepherd_setup_{secrets.token_hex(4)}"
            statements = [
                f"CREATE ROLE {helper} SUPERUSER",
                f"SET SESSION AUTHORIZATION {helper}",
                f"ALTER ROLE postgres RENAME TO {user}",
                f"ALTER ROLE {user} PASSWORD {password}",
                "RESET SESSION AUTHORIZATION",
                f"DROP ROLE {helper}",
            ]
        if setup.database == "postgres":
            statements.append(f"DROP DATABASE {_PG_SPARE_DATABASE}")
        elif setup.database != _PG_SPARE_DATABASE:
            # As CREATE DATABASE by POSTGRES_USER: a copy of template1 it owns.
            database = _pg_ident(setup.database)
            statements.append(f"ALTER DATABASE {_PG_SPARE_DATABASE} RENAME TO {database}")
        try:
            conn = await asyncpg.connect(
                host=str(instance.run),
                port=5432,
                user="postgres",
                password=admin_password,
                database="postgres",
                timeout=max(deadline - time.monotonic(), 1.0),
            )
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise instance.failure(f"applying the declared credentials failed: {exc}") from exc

    async def _redis_ready(self, instance: _Instance, deadline: float) -> None:
        async def ready() -> bool:
            try:
                reader, writer = await asyncio.open_unix_connection(str(instance.socket))
            except OSError:
                return False
            try:
                writer.write(b"*1\r\n$4\r\nPING\r\n")
                await writer.drain()
                return await asyncio.wait_for(reader.readline(), 5) == b"+PONG\r\n"
            except (OSError, TimeoutError):
                return False
            finally:
                writer.close()

        await self._poll(instance, ready, deadline)

    async def _mariadb_ready(
        self, instance: _Instance, setup: MariadbSetup, support: ServerSupport, deadline: float
    ) -> None:
        async def ready() -> bool:
            # mariadbd creates its socket once it accepts connections.
            return instance.socket.exists()

        await self._poll(instance, ready, deadline)
        client = [
            support.programs["mariadb"],
            "--no-defaults",
            "--protocol=socket",
            f"--socket={instance.socket}",
            "--user=root",
            "--batch",
            "--binary-mode",
        ]
        sql = mariadb_setup_sql(setup).encode()
        try:
            await _run(
                client,
                stdin=sql,
                timeout=max(deadline - time.monotonic(), 1.0),
                what="applying the declared credentials",
            )
        except ServiceError as exc:
            raise instance.failure(str(exc)) from exc


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending[:0] = error.exceptions
        else:
            leaves.append(error)
    return next((e for e in leaves if isinstance(e, ServiceError)), leaves[0])


def _read_all(fd: int) -> str:
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _template_key(server: Server, support: ServerSupport, user: _User | None) -> str:
    # The owner is part of the key: a template is copied with its ownership.
    uid = user.uid if user is not None else os.geteuid()
    return f"{server}-{support.version}-{uid}"


def _take_from_pool(pool: Path, dest: Path) -> bool:
    """Move a ready copy from the pool to ``dest``; whether there was one. The rename is what
    claims it: of two jobs taking the same copy, one finds it gone and tries the next."""
    try:
        ready = sorted(p for p in pool.iterdir() if not p.name.startswith("."))
    except FileNotFoundError:
        return False
    for copy in ready:
        try:
            os.rename(copy, dest)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("services: cannot take %s from the pool: %s", copy, exc)
            return False
        return True
    return False


def _remove_template(path: Path) -> None:
    fd = os.open(path.parent / f"{path.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return  # still being copied: the next build removes it
    try:
        _rmtree(path.parent / f"{path.name}.pool")
        _rmtree(path)
        (path.parent / f"{path.name}.lock").unlink(missing_ok=True)
    finally:
        os.close(fd)


def process_start_time(pid: int) -> int | None:
    """When a process started (clock ticks since boot): with its pid, names it uniquely."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which may contain spaces: ") state ppid ... starttime".
    return int(stat.rsplit(")", 1)[1].split()[19])


def _kill_leftover(pid_file: Path) -> None:
    """SIGKILL a crashed job's server namespace, if its init still runs. The pid, its start time
    and its pid namespace must all match: pids and namespace numbers are both reused."""
    try:
        pid_text, started, namespace = pid_file.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != namespace:
                return
        except OSError:
            return  # gone
        if str(process_start_time(pid)) != started:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    logger.warning("services: leftover server %d (%s) did not die", pid, namespace)


def _pg_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _pg_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _endpoints(plan: _Plan) -> tuple[str, ...]:
    seen: list[str] = []
    for fwd in plan.forwards:
        if fwd.address == "::1":
            continue
        host = "localhost" if fwd.address == "127.0.0.1" else plan.name
        endpoint = f"{host}:{fwd.port}"
        if endpoint not in seen:
            seen.append(endpoint)
    return tuple(seen)
