"""Toolchains for a job's ``uses:`` steps: which host interpreter or runtime stands in for each
setup action (pure choice over what ``discover`` found on the host).

GitHub's setup actions download a toolchain into the runner's tool cache. Shepherd has no network
to do that and no wish to run downloaded binaries, so each known setup action maps to what this
host already has: ``actions/setup-python`` to a CPython on the host (pyenv's versions, then
``/usr/bin/python3.X``), ``actions/setup-node`` to the host's node (with npm; pnpm and yarn through
corepack or an install step), ``actions/setup-go`` to ``go``, ``dtolnay/rust-toolchain`` and
friends to cargo/rustc, ``astral-sh/setup-uv`` to the bundled uv. The requested version is used
when the host has it; otherwise the closest one, and the report says which ran. Actions that do
nothing a replay needs (checkout: the worktree is the checkout; cache: nothing is restored;
artifacts) are covered. Any other action is skipped, with a note.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Actions that a replay does not need: the worktree is the checkout, caches and artifacts are
#: GitHub's storage. Compared without the ``@ref``, case-insensitively.
COVERED_ACTIONS = frozenset(
    {
        "actions/checkout",
        "actions/cache",
        "actions/cache/restore",
        "actions/cache/save",
        "actions/upload-artifact",
        "actions/download-artifact",
        "actions/github-script",
        "actions/setup-java",  # the host's JDK is used as is
        "swatinem/rust-cache",
    }
)

#: Setup actions (lower case, without ``@ref``) and the toolchain kind each one sets up.
_SETUP = {
    "actions/setup-python": "python",
    "actions/setup-node": "node",
    "actions/setup-go": "go",
    "astral-sh/setup-uv": "uv",
    "pnpm/action-setup": "pnpm",
    "dtolnay/rust-toolchain": "rust",
    "actions-rust-lang/setup-rust-toolchain": "rust",
    "actions-rs/toolchain": "rust",
}

_VERSION = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


@dataclass(frozen=True)
class HostTool:
    """One toolchain installed on this host."""

    kind: str  # python, node, go, rust, uv
    version: str  # "3.11.7", "20.20.2", ...
    #: Directories to put first on PATH inside the sandbox.
    bin_dirs: tuple[Path, ...]
    #: Directories the sandbox must mount read-only for the toolchain to run.
    mounts: tuple[Path, ...] = ()
    #: Environment the toolchain needs (``RUSTUP_HOME``).
    env: Mapping[str, str] = field(default_factory=dict)
    #: The interpreter itself, where one exists (``python3.11``).
    executable: Path | None = None


@dataclass(frozen=True)
class HostToolchains:
    tools: tuple[HostTool, ...] = ()

    def of(self, kind: str) -> list[HostTool]:
        return [t for t in self.tools if t.kind == kind]


@dataclass(frozen=True)
class ToolchainChoice:
    """What stands in for one setup action."""

    action: str
    kind: str
    requested: str | None
    tool: HostTool | None
    #: e.g. ``python 3.11.7 (requested 3.11)``, ``node 20.20.2 (requested 18; closest)``,
    #: ``go: not installed on this host``.
    note: str
    #: For pnpm: the version to install in the setup replay (``npm install -g pnpm@<v>``).
    install: str | None = None


def action_name(uses: str) -> str:
    return uses.split("@", 1)[0].strip().rstrip("/")


def _key(version: str) -> tuple[int, ...]:
    match = _VERSION.search(version)
    if not match:
        return ()
    return tuple(int(g) for g in match.groups() if g is not None)


def closest(requested: str | None, available: Sequence[HostTool]) -> tuple[HostTool | None, bool]:
    """The host tool for ``requested`` (``3.11``, ``3.x``, ``>=3.9``, ``20``, ``lts/*``,
    ``stable``): an exact prefix match (the newest one), else the closest by version, else the
    newest. Returns (tool, exact)."""
    if not available:
        return None, False
    newest = sorted(available, key=lambda t: _key(t.version))
    if not requested or requested.strip() in {"", "x", "*", "latest", "stable", "lts/*", "node"}:
        return newest[-1], True
    wanted = requested.strip().lstrip("v=~^")
    if wanted.startswith(">="):
        floor = _key(wanted[2:])
        ok = [t for t in newest if _key(t.version) >= floor]
        return (ok[-1], True) if ok else (newest[-1], False)
    prefix = wanted.replace(".x", "").replace(".*", "")
    target = _key(prefix)
    if not target:
        return newest[-1], False
    exact = [t for t in newest if _key(t.version)[: len(target)] == target]
    if exact:
        return exact[-1], True

    def distance(tool: HostTool) -> tuple[int, ...]:
        have = _key(tool.version)
        return tuple(abs(a - b) for a, b in zip(have, target, strict=False))

    return min(newest, key=distance), False


def _requested(kind: str, with_: Mapping[str, str], files: Mapping[str, str]) -> str | None:
    inputs = {
        "python": ("python-version", "python-version-file"),
        "node": ("node-version", "node-version-file"),
        "go": ("go-version", "go-version-file"),
        "rust": ("toolchain", None),
        "uv": ("version", None),
        "pnpm": ("version", None),
    }[kind]
    value, file_input = inputs
    if with_.get(value, "").strip():
        return with_[value].strip().splitlines()[0]
    path = with_.get(file_input or "", "").strip()
    text = files.get(path) if path else None
    if text is None:
        return None
    if path.endswith("go.mod"):
        match = re.search(r"^go\s+(\S+)", text, re.M)
        return match.group(1) if match else None
    if path.endswith("package.json"):
        try:
            engines = json.loads(text).get("engines", {})
        except (ValueError, AttributeError):
            return None
        return (
            str(engines.get("node")) if isinstance(engines, dict) and engines.get("node") else None
        )
    first = text.strip().splitlines()[:1]
    return first[0].strip() if first else None


def choose(
    uses: str,
    with_: Mapping[str, str],
    host: HostToolchains,
    *,
    files: Mapping[str, str] | None = None,
    rust_ref: str | None = None,
) -> ToolchainChoice | None:
    """The toolchain for one ``uses:`` step, or None when the action is covered (checkout,
    cache, ...) or unknown (the caller skips it, with a note). ``files`` are repository files a
    version input may name (``.python-version``, ``.nvmrc``, ``go.mod``)."""
    kind = _SETUP.get(action_name(uses).lower())
    if kind is None:
        return None
    requested = _requested(kind, with_, files or {})
    if kind == "rust" and not requested:
        requested = rust_ref or uses.partition("@")[2] or None
    if kind == "pnpm":
        # pnpm is a package: the setup replay installs it with the host's npm.
        version = requested or "latest"
        node, _ = closest(None, host.of("node"))
        return ToolchainChoice(
            uses,
            kind,
            requested,
            node,
            f"pnpm {version} (installed with npm)"
            if node
            else "pnpm: node is not installed on this host",
            install=version if node else None,
        )
    tool, exact = closest(requested, host.of(kind))
    if tool is None:
        return ToolchainChoice(uses, kind, requested, None, f"{kind}: not installed on this host")
    asked = f"requested {requested}" if requested else "no version requested"
    how = asked if exact else f"{asked}; closest on this host"
    return ToolchainChoice(uses, kind, requested, tool, f"{kind} {tool.version} ({how})")


def is_covered(uses: str) -> bool:
    return action_name(uses).lower() in COVERED_ACTIONS


def is_setup(uses: str) -> bool:
    return action_name(uses).lower() in _SETUP


# -- what this host has (impure) --------------------------------------------------------------


def _version_of(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str | None:
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
            env={**os.environ, **(env or {})},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(done.stdout + done.stderr)
    return match.group(0) if done.returncode == 0 and match else None


def _pythons(roots: Iterable[Path]) -> list[HostTool]:
    found: dict[str, HostTool] = {}
    for root in roots:
        for prefix in sorted(root.glob("*")) if root.is_dir() else []:
            exe = next(iter(sorted(prefix.glob("bin/python3.[0-9]*"))), None)
            if exe is None or not re.fullmatch(r"\d+\.\d+\.\d+", prefix.name):
                continue
            if int(prefix.name.split(".")[1]) < 8:
                continue  # no venv/pip that current packaging supports
            found.setdefault(
                prefix.name,
                HostTool("python", prefix.name, (prefix / "bin",), (prefix,), executable=exe),
            )
    for exe in sorted(Path("/usr/bin").glob("python3.[0-9]*")):
        if not re.fullmatch(r"python3\.\d+", exe.name):
            continue
        version = _version_of([str(exe), "--version"])
        if version and version not in found:
            found[version] = HostTool("python", version, (), (), executable=exe)
    return list(found.values())


def discover(home: Path | None = None) -> HostToolchains:
    """The toolchains installed on this host (pyenv's Pythons, the system Pythons, node, go,
    rustup's or Debian's cargo, the bundled uv)."""
    home = home or Path(os.environ.get("HOME", "/root"))
    tools: list[HostTool] = []
    pyenv = Path(os.environ.get("PYENV_ROOT", home / ".pyenv")) / "versions"
    tools += _pythons([pyenv])
    node = shutil.which("node")
    if node and (version := _version_of([node, "--version"])):
        tools.append(HostTool("node", version, (Path(node).parent,), executable=Path(node)))
    go = shutil.which("go") or (
        "/usr/lib/go/bin/go" if Path("/usr/lib/go/bin/go").exists() else None
    )
    if go and (version := _version_of([go, "version"])):
        real = Path(go).resolve()
        tools.append(HostTool("go", version, (real.parent,), (real.parents[1],), executable=real))
    rustup_home = Path(os.environ.get("RUSTUP_HOME", home / ".rustup"))
    cargo_bin = Path(os.environ.get("CARGO_HOME", home / ".cargo")) / "bin"
    if (cargo_bin / "cargo").exists() and rustup_home.is_dir():
        env = {"RUSTUP_HOME": str(rustup_home)}
        version = _version_of([str(cargo_bin / "rustc"), "--version"], env)
        if version:
            # Only the proxies and the toolchains: never CARGO_HOME's credentials.
            tools.append(HostTool("rust", version, (cargo_bin,), (cargo_bin, rustup_home), env))
    elif (cargo := shutil.which("cargo")) and (version := _version_of(["rustc", "--version"])):
        tools.append(HostTool("rust", version, (Path(cargo).parent,)))
    uv = Path(sys.executable).parent / "uv"
    if uv.exists() and (version := _version_of([str(uv), "--version"])):
        tools.append(HostTool("uv", version, (), executable=uv))
    return HostToolchains(tuple(tools))
