#!/usr/bin/env bash
# Install the system tools Shepherd needs beyond the Python virtualenv; idempotent: each step runs
# only when what it provides is missing.
#   bubblewrap  the sandbox for untrusted PR code (Debian package)
#   git         worktrees and fixtures (Debian package)
#   node, npm   the runtime of the bundled node tools (Debian packages)
#   prettier, eslint, pnpm, yarn
#               the bundled versions (fallbacks when a repository pins none and its job
#               environment has none installed), into the project-local prefix .tools/node
#   golang-go, golang-golang-x-tools
#               gofmt and goimports: the bundled Go formatters (Debian packages)
#   cargo, rustfmt
#               `cargo fmt` and `cargo update`: the bundled Rust tools (Debian packages)
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
# Usage: scripts/install-system-deps.sh [--no-node] [--no-services] [--no-go] [--no-rust]
#                                        [--no-browser]
#   Run as root (or with sudo available) for the apt-get part. Re-running is cheap.
#   The bundled node tools' versions are those of BUNDLED_NODE_VERSIONS in fixers/tools.py.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
node_tools=(prettier@3.10.1 eslint@10.16.0 pnpm@10.34.8 yarn@1.22.22)
with_node=1
with_services=1
with_go=1
with_rust=1
with_browser=1
for arg in "$@"; do
    case "$arg" in
        --no-node) with_node=0 ;;
        --no-services) with_services=0 ;;
        --no-go) with_go=0 ;;
        --no-rust) with_rust=0 ;;
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
if [ "$with_go" -eq 1 ]; then
    [ -x /usr/bin/gofmt ] || missing+=(golang-go)
    [ -x /usr/bin/goimports ] || missing+=(golang-golang-x-tools)
fi
if [ "$with_rust" -eq 1 ]; then
    # Debian's, at /usr/bin: the sandbox sees /usr, not a rustup toolchain under a home.
    [ -x /usr/bin/cargo ] || missing+=(cargo)
    [ -x /usr/bin/rustfmt ] && [ -x /usr/bin/cargo-fmt ] || missing+=(rustfmt)
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
    wanted=()
    for spec in "${node_tools[@]}"; do
        tool="${spec%@*}"
        version="${spec##*@}"
        installed=""
        if [ -x "$prefix/bin/$tool" ]; then
            installed="$("$prefix/bin/$tool" --version 2>/dev/null || true)"
        fi
        [ "${installed#v}" = "$version" ] || wanted+=("$spec")
    done
    if [ "${#wanted[@]}" -gt 0 ]; then
        echo "installing ${wanted[*]} into $prefix"
        npm install --global --prefix "$prefix" --ignore-scripts --no-audit --no-fund \
            "${wanted[@]}"
    fi
fi

# Probe that bubblewrap can create namespaces here (containers sometimes forbid it).
if ! bwrap --unshare-all --ro-bind / / true 2>/dev/null; then
    echo "warning: bwrap is installed but cannot create namespaces on this machine;" \
        "Shepherd will refuse untrusted commands unless SHEPHERD_ALLOW_UNSANDBOXED=true" >&2
fi
