"""app.yml, the GitHub App manifest, agrees with the code: the events the routers handle are
subscribed, and the permissions are exactly what bot/github/client.py's operations need, each explained.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import yaml
from gidgethub.routing import Router

from handlers import ROUTERS
from tests.conftest import REPO_ROOT

MANIFEST = REPO_ROOT / "app.yml"
CLIENT_SOURCE = REPO_ROOT / "bot" / "github" / "client.py"

#: GitHub delivers these to every App without a subscription (and rejects them in
#: ``default_events``): https://docs.github.com/en/webhooks/webhook-events-and-payloads#installation
IMPLICIT_EVENTS = {"installation", "installation_repositories"}

#: The installation permission each REST operation group needs, from the "Fine-grained access"
#: section of each endpoint's docs (https://docs.github.com/en/rest/authentication/
#: permissions-required-for-github-apps). Reactions on a PR's conversation comments are
#: authorized by ``issues``, like the comments themselves.
GROUP_PERMISSION = {
    "actions": "actions",
    "checks": "checks",
    "git": "contents",
    "issues": "issues",
    "pulls": "pull_requests",
    "reactions": "issues",
    "repos": "contents",
}
WRITE_VERBS = {"_post", "_patch", "_put", "_delete"}
READ_VERBS = {"_get", "_iter", "_send"}


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    return data


def routed_events(routers: tuple[Router, ...]) -> set[str]:
    events: set[str] = set()
    for router in routers:
        # gidgethub keeps registrations in these two maps, keyed by event name.
        events |= set(router._shallow_routes) | set(router._deep_routes)
    return events


def test_every_routed_event_is_subscribed() -> None:
    subscribed = set(manifest()["default_events"])
    routed = routed_events(ROUTERS)
    assert routed, "no handler is registered: the check below would pass vacuously"
    missing = routed - subscribed - IMPLICIT_EVENTS
    assert not missing, f"handlers exist for {sorted(missing)} but app.yml does not subscribe"
    assert not subscribed & IMPLICIT_EVENTS, "GitHub rejects installation events in the manifest"


def test_no_event_is_subscribed_that_nothing_handles() -> None:
    unused = set(manifest()["default_events"]) - routed_events(ROUTERS)
    assert not unused, f"app.yml subscribes to {sorted(unused)} but no handler uses them"


def test_every_permission_and_event_group_has_a_comment_above_it() -> None:
    lines = MANIFEST.read_text(encoding="utf-8").splitlines()
    section = None
    uncommented: list[str] = []
    for number, line in enumerate(lines):
        if not line.startswith(" ") and line.rstrip().endswith(":"):
            section = line.rstrip(":")
            continue
        entry = re.match(r"^\s+(?:- )?([a-z_]+)(?::|$)", line)
        if section not in ("default_permissions", "default_events") or entry is None:
            continue
        above = lines[number - 1].strip()
        # An event may share its group's comment with the event listed just before it.
        grouped = section == "default_events" and above.startswith("- ")
        if not above.startswith("#") and not grouped:
            uncommented.append(f"{section}.{entry.group(1)}")
    assert not uncommented, f"say why in a comment above: {uncommented}"
    assert manifest()["default_permissions"], "the check above saw no permissions"


def client_operations() -> list[tuple[str, str | None, set[str]]]:
    """(method, operation group or "app" for App-JWT calls, verbs used) per public method."""
    tree = ast.parse(CLIENT_SOURCE.read_text(encoding="utf-8"))
    client = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GitHubClient")
    found = []
    for fn in client.body:
        if not isinstance(fn, ast.AsyncFunctionDef) or fn.name.startswith("_"):
            continue
        verbs: set[str] = set()
        app_level = False
        for call in ast.walk(fn):
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id == "self"
            ):
                continue
            verbs.add(call.func.attr)
            first = call.args[0] if call.args else None
            text = ast.unparse(first) if first is not None else ""
            app_level |= call.func.attr in WRITE_VERBS | READ_VERBS and "'/app" in text
        doc_line = (ast.get_docstring(fn) or "").splitlines()[0:1]
        op = re.search(r"``([a-z]+)/[a-z-]+``", doc_line[0]) if doc_line else None
        group = "app" if app_level else (op.group(1) if op else None)
        found.append((fn.name, group, verbs & (WRITE_VERBS | READ_VERBS)))
    return found


def test_permissions_are_exactly_what_the_client_operations_need() -> None:
    operations = client_operations()
    unknown = [name for name, group, verbs in operations if verbs and group is None]
    assert not unknown, f"name the REST operation (``group/op``) in the docstring of {unknown}"
    needs_write = {
        GROUP_PERMISSION[group]
        for _, group, verbs in operations
        if group not in (None, "app") and verbs & WRITE_VERBS
    }
    needs_read = {
        GROUP_PERMISSION[group] for _, group, verbs in operations if group not in (None, "app")
    }
    permissions: dict[str, str] = manifest()["default_permissions"]
    granted_write = {name for name, level in permissions.items() if level == "write"}

    assert granted_write - needs_write == set(), "write permissions no operation needs"
    assert needs_write - granted_write == set(), "operations whose write permission is missing"
    assert needs_read <= permissions.keys()
    assert permissions.get("metadata") == "read"
    assert set(permissions.values()) <= {"read", "write"}
    # Never needed, and dangerous: DESIGN.md's push fallback exists so `workflows` is not.
    assert not {"workflows", "administration", "secrets", "members"} & permissions.keys()
