#!/usr/bin/env bash
# Install the system tools Shepherd needs beyond the Python virtualenv; idempotent: each step runs
# only when what it provides is missing.
#   bubblewrap  the sandbox for untrusted PR code (Debian package)
#   git         worktrees and fixtures (Debian package)
#   node, npm   prettier's runtime (Debian packages)
#   prettier    the bundled version, installed into the project-local prefix .tools/node
#   postgresql, redis-server, mariadb-server, socat
#               the private per-job instances of a workflow's `services:` (bot/jobenv/services.py)
#               and the forwarders that make them reachable inside the sandbox (Debian packages;
#               each job starts its own servers; the package's main cluster is what `make
#               postgres` starts for the store tests)
#   tinyproxy   the registry-only network of a job environment's setup steps: an allowlisting
#               proxy reached through socat (bot/jobenv/egress.py; Debian package tinyproxy-bin)
#   chromium, fonts-dejavu-core
#               the browser the web UI's tests drive through playwright (tests only: the
#               Dockerfile passes --no-browser; fonts so screenshots show text)
#
# Usage: scripts/install-system-deps.sh [--no-node] [--no-services] [--no-browser]
#   Run as root (or with sudo available) for the apt-get part. Re-running is cheap.
#   PRETTIER_VERSION overrides the bundled prettier version (default 3.10.1).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prettier_version="${PRETTIER_VERSION:-3.10.1}"
with_node=1
with_services=1
with_browser=1
for arg in "$@"; do
    case "$arg" in
        --no-node) with_node=0 ;;
        --no-services) with_services=0 ;;
        --no-browser) with_browser=0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1
    fi
}

missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v git >/dev/null || missing+=(git)
if [ "$with_node" -eq 1 ]; then
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
fi
if [ "$with_services" -eq 1 ]; then
    command -v socat >/dev/null || missing+=(socat)
    command -v tinyproxy >/dev/null || missing+=(tinyproxy-bin)
    compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || command -v postgres >/dev/null \
        || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
fi
if [ "$with_browser" -eq 1 ]; then
    command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -d /usr/share/fonts/truetype/dejavu ] || missing+=(fonts-dejavu-core)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
fi

if [ "$with_node" -eq 1 ]; then
    prefix="$root/.tools/node"
    installed=""
    if [ -x "$prefix/bin/prettier" ]; then
        installed="$("$prefix/bin/prettier" --version 2>/dev/null || true)"
    fi
    if [ "$installed" != "$prettier_version" ]; then
        echo "installing prettier $prettier_version into $prefix"
        npm install --global --prefix "$prefix" --ignore-scripts --no-audit --no-fund \
            "prettier@$prettier_version"
    fi
fi

# Probe that bubblewrap can create namespaces here (containers sometimes forbid it).
if ! bwrap --unshare-all --ro-bind / / true 2>/dev/null; then
    echo "warning: bwrap is installed but cannot create namespaces on this machine;" \
        "Shepherd will refuse untrusted commands unless SHEPHERD_ALLOW_UNSANDBOXED=true" >&2
fi
