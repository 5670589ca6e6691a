"""The GitHub simulator itself: routing and request validation against the OpenAPI subset,
shared examples, auth, fault injection and the Git Data API over a real bare repository."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.ghsim import (
    GitHubSim,
    SimRepo,
    commit_files,
    example_bodies,
    init_bare_repo,
    load_openapi_index,
)
from tests.ghsim import github_sim as github_sim


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def repo(github_sim: GitHubSim, tmp_path: Path) -> SimRepo:
    bare, _ = init_bare_repo(tmp_path / "demo.git", {"README.md": "hello\n", "src/a.py": "a\n"})
    return github_sim.add_repo("octo", "demo", git_dir=bare)


def auth(sim: GitHubSim) -> dict[str, str]:
    return {"Authorization": f"token {sim.mint_token().token}"}


async def send(
    http: aiohttp.ClientSession,
    sim: GitHubSim,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with http.request(
        method,
        sim.base_url + path,
        json=body,
        headers=headers if headers is not None else auth(sim),
        allow_redirects=False,
    ) as resp:
        data: Any = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, data


def git(bare: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=bare, capture_output=True, text=True, check=True
    ).stdout.strip()


def check_run(**extra: Any) -> dict[str, Any]:
    return {"name": "shepherd", "head_sha": "a" * 40, **extra}


def annotation(level: str = "failure") -> dict[str, Any]:
    return {
        "path": "a.py",
        "start_line": 1,
        "end_line": 1,
        "annotation_level": level,
        "message": "m",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/repos/octo/demo/issues/1/events"),  # exists on GitHub, not in the subset
        ("POST", "/repos/octo/demo/issues/1/assignees"),  # add_assignees is deliberately absent
        ("PUT", "/repos/octo/demo/check-runs"),  # known path, wrong method
        ("GET", "/nowhere"),
    ],
)
async def test_unknown_operation_is_404_and_a_violation(
    github_sim: GitHubSim, http: aiohttp.ClientSession, method: str, path: str
) -> None:
    status, _ = await send(http, github_sim, method, path, body={} if method != "GET" else None)
    assert status == 404
    assert github_sim.violations == [f"unknown operation: {method} {path}"]
    with pytest.raises(AssertionError, match="unknown operation"):
        github_sim.assert_no_violations()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (check_run(status="completed"), "conclusion"),
        (check_run(status="done"), "status"),
        ({"name": "shepherd"}, "head_sha"),
        (
            check_run(output={"title": "t", "summary": "s", "annotations": [annotation("error")]}),
            "'error' is not one of",
        ),
        (
            check_run(output={"title": "t", "summary": "s", "annotations": [annotation()] * 51}),
            "[maxItems]",
        ),
        (check_run(conclusion="success", status="completed", started_at=5), "5 is not of type"),
    ],
)
async def test_checks_create_rejects_bodies_that_break_the_schema(
    github_sim: GitHubSim,
    repo: SimRepo,
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    error: str,
) -> None:
    status, data = await send(http, github_sim, "POST", "/repos/octo/demo/check-runs", body)
    assert status == 422
    assert any(error in e for e in data["errors"]), data
    assert github_sim.violations
    assert github_sim.check_runs == {}


@pytest.mark.parametrize(
    "body",
    [
        check_run(),
        check_run(status="in_progress"),
        check_run(status="completed", conclusion="failure"),
        check_run(conclusion="neutral"),
        check_run(output={"title": "t", "summary": "s", "annotations": [annotation()] * 50}),
    ],
)
async def test_checks_create_accepts_valid_bodies(
    github_sim: GitHubSim, repo: SimRepo, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    status, data = await send(http, github_sim, "POST", "/repos/octo/demo/check-runs", body)
    assert status == 201, data
    github_sim.assert_no_violations()
    assert github_sim.check_run_history == [("create", data["id"], body)]


SAMPLE_PARAMS = {
    "owner": "octo",
    "repo": "demo",
    "installation_id": "1",
    "pull_number": "1",
    "issue_number": "1",
    "comment_id": "1",
    "check_run_id": "1",
    "check_suite_id": "1",
    "run_id": "1",
    "job_id": "1",
    "sha": "a" * 40,
    "path": "README.md",
    "ref": "heads/main",
    "name": "bug",
}


def fill(template: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: SAMPLE_PARAMS[m.group(1)], template)


REQUEST_EXAMPLES = list(example_bodies("request"))


def test_every_request_example_is_valid_offline() -> None:
    index = load_openapi_index()
    assert len(REQUEST_EXAMPLES) >= 25
    for operation_id, name, body in REQUEST_EXAMPLES:
        assert index.validate_body(index.by_id[operation_id], body, present=True) == [], name


@pytest.mark.parametrize(
    ("operation_id", "name", "body"),
    REQUEST_EXAMPLES,
    ids=[f"{o}:{n}" for o, n, _ in REQUEST_EXAMPLES],
)
async def test_shared_request_examples_are_accepted_over_http(
    github_sim: GitHubSim,
    repo: SimRepo,
    http: aiohttp.ClientSession,
    operation_id: str,
    name: str,
    body: Any,
) -> None:
    op = load_openapi_index().by_id[operation_id]
    headers = auth(github_sim)
    if op.template.startswith("/app"):
        headers = {"Authorization": f"Bearer {app_jwt(github_sim)}"}
    status, _ = await send(http, github_sim, op.method, fill(op.template), body, headers)
    github_sim.assert_no_violations()
    assert status < 500
    assert github_sim.requests[-1].operation_id == operation_id


def app_jwt(sim: GitHubSim, *, lifetime: int = 540, iss: str | None = None) -> str:
    now = int(time.time()) - 60
    claims = {"iat": now, "exp": now + lifetime, "iss": iss or str(sim.app_id)}
    assert sim.private_key_pem is not None
    return jwt.encode(claims, sim.private_key_pem, algorithm="RS256")


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        (None, True),  # filled in with a valid App JWT below
        ({"Authorization": "Bearer not-a-jwt"}, False),
        ({}, False),
        ("too-long", False),
        ("wrong-iss", False),
    ],
)
async def test_app_endpoints_verify_the_jwt(
    github_sim: GitHubSim, http: aiohttp.ClientSession, headers: Any, ok: bool
) -> None:
    if headers is None:
        headers = {"Authorization": f"Bearer {app_jwt(github_sim)}"}
    elif headers == "too-long":
        headers = {"Authorization": f"Bearer {app_jwt(github_sim, lifetime=900)}"}
    elif headers == "wrong-iss":
        headers = {"Authorization": f"Bearer {app_jwt(github_sim, iss='999')}"}
    status, data = await send(http, github_sim, "GET", "/app", headers=headers)
    assert (status == 200) is ok
    assert bool(github_sim.violations) is not ok
    if ok:
        assert data["id"] == github_sim.app_id


async def test_repository_endpoints_need_a_live_installation_token(
    github_sim: GitHubSim, repo: SimRepo, http: aiohttp.ClientSession
) -> None:
    status, _ = await send(http, github_sim, "GET", "/repos/octo/demo", headers={})
    assert status == 401
    expired = github_sim.mint_token()
    expired.expires_at = expired.expires_at.replace(year=2000)
    headers = {"Authorization": f"token {expired.token}"}
    status, _ = await send(http, github_sim, "GET", "/repos/octo/demo", headers=headers)
    assert status == 401
    scoped = github_sim.mint_token(repositories=["other"])
    headers = {"Authorization": f"token {scoped.token}"}
    status, _ = await send(http, github_sim, "GET", "/repos/octo/demo", headers=headers)
    assert status == 403
    assert len(github_sim.violations) == 2


async def test_tokens_are_not_40_characters(github_sim: GitHubSim) -> None:
    assert len(github_sim.mint_token().token) > 40


async def test_git_data_round_trip_makes_a_real_commit(
    github_sim: GitHubSim, repo: SimRepo, http: aiohttp.ClientSession
) -> None:
    assert repo.git_dir is not None
    head = git(repo.git_dir, "rev-parse", "refs/heads/main")
    base_tree = git(repo.git_dir, "rev-parse", "main^{tree}")
    status, blob = await send(
        http, github_sim, "POST", "/repos/octo/demo/git/blobs", {"content": "b = 2\n"}
    )
    assert status == 201
    entries = [
        {"path": "src/b.py", "mode": "100644", "type": "blob", "sha": blob["sha"]},
        {"path": "src/a.py", "mode": "100644", "type": "blob", "sha": None},
        {"path": "NOTES", "mode": "100644", "type": "blob", "content": "inline\n"},
    ]
    status, tree = await send(
        http,
        github_sim,
        "POST",
        "/repos/octo/demo/git/trees",
        {"base_tree": base_tree, "tree": entries},
    )
    assert status == 201, tree
    assert sorted(e["path"] for e in tree["tree"]) == ["NOTES", "README.md", "src/b.py"]
    message = "Fix lint\n\nShepherd-Job: 42"
    status, commit = await send(
        http,
        github_sim,
        "POST",
        "/repos/octo/demo/git/commits",
        {"message": message, "tree": tree["sha"], "parents": [head]},
    )
    assert status == 201
    assert commit["verification"]["verified"] is True
    status, ref = await send(
        http, github_sim, "PATCH", "/repos/octo/demo/git/refs/heads/main", {"sha": commit["sha"]}
    )
    assert status == 200
    assert ref["object"]["sha"] == commit["sha"]
    github_sim.assert_no_violations()

    assert git(repo.git_dir, "rev-parse", "refs/heads/main") == commit["sha"]
    assert git(repo.git_dir, "show", "main:src/b.py") == "b = 2"
    assert git(repo.git_dir, "log", "-1", "--format=%B", "main") == message
    assert git(repo.git_dir, "rev-parse", "main^") == head
    assert "src/a.py" not in git(repo.git_dir, "ls-tree", "-r", "--name-only", "main")


async def test_update_ref_refuses_non_fast_forward_and_protected_refs(
    github_sim: GitHubSim, repo: SimRepo, http: aiohttp.ClientSession
) -> None:
    assert repo.git_dir is not None
    base = git(repo.git_dir, "rev-parse", "main")
    feature = commit_files(repo.git_dir, "feat", {"x": "1\n"}, "feature")
    sideways = commit_files(repo.git_dir, "other", {"y": "1\n"}, "unrelated")
    path = "/repos/octo/demo/git/refs/heads/feat"
    status, data = await send(http, github_sim, "PATCH", path, {"sha": sideways})
    assert (status, data["message"]) == (422, "Update is not a fast forward")
    assert git(repo.git_dir, "rev-parse", "feat") == feature
    status, _ = await send(http, github_sim, "PATCH", path, {"sha": base, "force": True})
    assert status == 200
    repo.protected_refs.add("feat")
    status, data = await send(http, github_sim, "PATCH", path, {"sha": feature})
    assert status == 422
    assert "Protected" in data["message"]
    assert git(repo.git_dir, "rev-parse", "feat") == base


async def test_job_log_redirect_target_rejects_authorization(
    github_sim: GitHubSim, repo: SimRepo, http: aiohttp.ClientSession
) -> None:
    run = github_sim.add_run(repo, head_sha="a" * 40, jobs=[("lint", "E501 line too long\n")])
    job_id = run.jobs[0].id
    async with http.get(
        f"{github_sim.base_url}/repos/octo/demo/actions/jobs/{job_id}/logs",
        headers=auth(github_sim),
        allow_redirects=False,
    ) as resp:
        assert resp.status == 302
        location = resp.headers["Location"]
    async with http.get(location, headers=auth(github_sim)) as resp:
        assert resp.status == 401
    assert github_sim.violations == ["Authorization header forwarded to the log download URL"]
    async with http.get(location) as resp:
        assert await resp.text() == "E501 line too long\n"


async def test_fault_injection_by_operation_and_by_glob(
    github_sim: GitHubSim, repo: SimRepo, http: aiohttp.ClientSession
) -> None:
    github_sim.inject("repos/get", status=503, times=1)
    github_sim.inject("/repos/*/demo/pulls/*", status=429, headers={"retry-after": "7"}, times=2)
    assert (await send(http, github_sim, "GET", "/repos/octo/demo"))[0] == 503
    assert (await send(http, github_sim, "GET", "/repos/octo/demo"))[0] == 200
    for _ in range(2):
        async with http.get(
            f"{github_sim.base_url}/repos/octo/demo/pulls/3", headers=auth(github_sim)
        ) as resp:
            assert (resp.status, resp.headers["retry-after"]) == (429, "7")
    assert (await send(http, github_sim, "GET", "/repos/octo/demo/pulls/3"))[0] == 404


async def test_lists_paginate_with_link_headers(
    github_sim: GitHubSim, repo: SimRepo, http: aiohttp.ClientSession
) -> None:
    for i in range(5):
        github_sim.add_comment(repo, 1, f"c{i}", user="someone")
    url = f"{github_sim.base_url}/repos/octo/demo/issues/1/comments?per_page=2"
    bodies: list[str] = []
    while url:
        async with http.get(url, headers=auth(github_sim)) as resp:
            bodies += [c["body"] for c in await resp.json()]
            next_link = resp.links.get("next")
            url = str(next_link["url"]) if next_link else ""
    assert bodies == [f"c{i}" for i in range(5)]


async def test_conditional_get_answers_304(
    github_sim: GitHubSim, repo: SimRepo, http: aiohttp.ClientSession
) -> None:
    headers = auth(github_sim)
    async with http.get(f"{github_sim.base_url}/repos/octo/demo", headers=headers) as resp:
        etag = resp.headers["ETag"]
    headers["If-None-Match"] = etag
    async with http.get(f"{github_sim.base_url}/repos/octo/demo", headers=headers) as resp:
        assert resp.status == 304
    headers["If-None-Match"] = '"stale"'
    async with http.get(f"{github_sim.base_url}/repos/octo/demo", headers=headers) as resp:
        assert resp.status == 200


async def test_pull_files_and_compare_come_from_git(
    github_sim: GitHubSim, repo: SimRepo, http: aiohttp.ClientSession
) -> None:
    assert repo.git_dir is not None
    base = git(repo.git_dir, "rev-parse", "main")
    head = commit_files(repo.git_dir, "feat", {"src/a.py": "a\nb\n"}, "Edit\n\nCo-authored-by: x")
    github_sim.add_pull(repo, number=5, head_ref="feat", head_sha=head, base_sha=base)
    status, files = await send(http, github_sim, "GET", "/repos/octo/demo/pulls/5/files")
    assert status == 200
    assert [(f["filename"], f["status"], f["additions"]) for f in files] == [
        ("src/a.py", "modified", 1)
    ]
    assert files[0]["patch"].startswith("@@")
    status, cmp = await send(http, github_sim, "GET", "/repos/octo/demo/compare/main...feat")
    assert status == 200
    assert [c["commit"]["message"] for c in cmp["commits"]] == ["Edit\n\nCo-authored-by: x"]
    assert (cmp["status"], cmp["ahead_by"]) == ("ahead", 1)
