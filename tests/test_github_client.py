"""bot.github.client over real HTTP against the GitHub simulator (tests/ghsim.py)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from pydantic import SecretStr

from bot.github.client import API_VERSION, GitHubApp, GitHubClient, RetryPolicy
from bot.kernel.errors import GitHubError, GitHubRateLimited, PushRejected
from tests.ghsim import GitHubSim, SimRepo, commit_files, init_bare_repo
from tests.ghsim import github_sim as github_sim


@dataclass
class GitHubStats:
    """In-process counters; satisfies ``GitHubMetrics``."""

    calls: Counter[tuple[str, int]] = field(default_factory=Counter)
    rate_limit_remaining: int | None = None

    def observe_call(self, method: str, status: int) -> None:
        self.calls[(method, status)] += 1

    def observe_rate_limit(self, remaining: int) -> None:
        self.rate_limit_remaining = remaining


FAST = RetryPolicy(max_retries=3, max_total_wait=5.0, backoff_base=0.01, backoff_max=0.05)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def stats() -> GitHubStats:
    return GitHubStats()


@pytest.fixture
def app(github_sim: GitHubSim, session: aiohttp.ClientSession, stats: GitHubStats) -> GitHubApp:
    assert github_sim.private_key_pem is not None
    return GitHubApp(
        app_id=github_sim.app_id,
        private_key=SecretStr(github_sim.private_key_pem),
        session=session,
        api_url=github_sim.base_url,
        retry=FAST,
        metrics=stats,
    )


@pytest.fixture
def repo(github_sim: GitHubSim, tmp_path: Path) -> SimRepo:
    bare, _ = init_bare_repo(tmp_path / "demo.git", {"README.md": "hello\n"})
    return github_sim.add_repo("octo", "demo", git_dir=bare)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's back-off sleeps instead of waiting them out."""
    recorded: list[float] = []

    async def fake_sleep(self: GitHubClient, seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(GitHubClient, "sleep", fake_sleep)
    return recorded


async def test_installation_tokens_are_minted_once_and_cached(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo
) -> None:
    first = await app.installation_client(1)
    await first.get_repo("octo", "demo")
    second = await app.installation_client(1)
    await second.get_repo("octo", "demo")
    mints = github_sim.calls("apps/create-installation-access-token")
    assert len(mints) == 1
    assert mints[0].json == {}
    scoped = await app.installation_client(1, repo="demo")
    await scoped.get_repo("octo", "demo")
    mints = github_sim.calls("apps/create-installation-access-token")
    assert [m.json for m in mints] == [{}, {"repositories": ["demo"]}]
    github_sim.assert_no_violations()


async def test_app_jwt_is_backdated_and_short_lived(github_sim: GitHubSim, app: GitHubApp) -> None:
    await app.installation_client(7)
    header = github_sim.calls("apps/create-installation-access-token")[0].headers["authorization"]
    scheme, _, token = header.partition(" ")
    assert scheme.lower() == "bearer"
    claims = jwt.decode(token, options={"verify_signature": False})
    now = time.time()
    assert claims["iss"] == str(github_sim.app_id)
    assert claims["iat"] <= now - 59
    assert claims["exp"] - claims["iat"] <= 600
    assert claims["exp"] > now
    github_sim.assert_no_violations()


async def test_tokens_close_to_expiry_are_refreshed(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo
) -> None:
    # Four minutes left is inside the five-minute refresh margin: every request re-mints.
    github_sim.token_ttl = timedelta(minutes=4)
    await app.installation_client(1)
    await app.installation_client(1)
    assert len(github_sim.calls("apps/create-installation-access-token")) == 2
    github_sim.token_ttl = timedelta(hours=1)
    await app.installation_client(1)
    await app.installation_client(1)
    assert len(github_sim.calls("apps/create-installation-access-token")) == 3


async def test_app_client_authenticates_with_the_jwt(github_sim: GitHubSim, app: GitHubApp) -> None:
    client = await app.app_client()
    assert (await client.get_app())["id"] == github_sim.app_id
    github_sim.assert_no_violations()


async def test_every_request_carries_api_version_and_user_agent(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo
) -> None:
    client = await app.installation_client(1)
    await client.get_repo("octo", "demo")
    await client.create_comment("octo", "demo", 1, "hi")
    assert len(github_sim.requests) == 3
    for request in github_sim.requests:
        assert request.headers["x-github-api-version"] == API_VERSION
        assert request.headers["user-agent"] == "shepherd-bot"


async def test_etag_304_serves_the_cached_body(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo, stats: GitHubStats
) -> None:
    head = commit_files(repo.git_dir or Path(), "feat", {"a.py": "x = 1\n"}, "Add a")
    base = github_sim.add_pull(repo, number=3, head_ref="feat", head_sha=head, base_sha=head)
    base.diff = "diff --git a/a.py b/a.py\n"
    client = await app.installation_client(1)
    first = await client.get_pull("octo", "demo", 3)
    # A fresh client of the same installation shares the ETag cache.
    again = await (await app.installation_client(1)).get_pull("octo", "demo", 3)
    assert again == first
    # Same URL, other media type: must not be answered from the JSON entry.
    assert await client.get_pull_diff("octo", "demo", 3) == "diff --git a/a.py b/a.py\n"
    gets = github_sim.calls("pulls/get")
    assert [r.status for r in gets] == [200, 304, 200]
    assert "if-none-match" not in gets[0].headers
    assert gets[1].headers["if-none-match"].startswith('"')
    assert "if-none-match" not in gets[2].headers
    assert stats.calls[("GET", 304)] == 1


async def test_server_errors_are_retried_then_succeed(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo, sleeps: list[float], stats: GitHubStats
) -> None:
    github_sim.inject("repos/get", status=502, times=2)
    client = await app.installation_client(1)
    assert (await client.get_repo("octo", "demo"))["full_name"] == "octo/demo"
    assert [r.status for r in github_sim.calls("repos/get")] == [502, 502, 200]
    assert len(sleeps) == 2
    assert all(0 < s <= FAST.backoff_max for s in sleeps)
    assert stats.calls[("GET", 502)] == 2
    assert stats.rate_limit_remaining is not None


async def test_server_errors_exhaust_the_retries(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo, sleeps: list[float]
) -> None:
    github_sim.inject("repos/get", status=500, times=None)
    client = await app.installation_client(1)
    with pytest.raises(GitHubError) as info:
        await client.get_repo("octo", "demo")
    assert (info.value.status, info.value.retryable) == (500, True)
    assert len(github_sim.calls("repos/get")) == FAST.max_retries + 1


async def test_non_idempotent_posts_are_not_retried_on_server_errors(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo, sleeps: list[float]
) -> None:
    # The comment may have been created before the 502: retrying could post it twice.
    github_sim.inject("issues/create-comment", status=502, times=1)
    client = await app.installation_client(1)
    with pytest.raises(GitHubError) as info:
        await client.create_comment("octo", "demo", 1, "once")
    assert (info.value.status, info.value.retryable) == (502, True)
    assert len(github_sim.calls("issues/create-comment")) == 1
    # Content-addressed Git Data writes are safe to repeat.
    github_sim.inject("git/create-blob", status=502, times=1)
    assert len(await client.create_blob("octo", "demo", "x")) == 40
    assert len(github_sim.calls("git/create-blob")) == 2


async def test_retry_after_is_honoured(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo, sleeps: list[float]
) -> None:
    github_sim.inject("repos/get", status=429, headers={"retry-after": "2"}, times=1)
    client = await app.installation_client(1)
    await client.get_repo("octo", "demo")
    assert sleeps == [2.0]
    assert [r.status for r in github_sim.calls("repos/get")] == [429, 200]


async def test_primary_rate_limit_waits_until_reset(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo, sleeps: list[float]
) -> None:
    reset = str(int(time.time()) + 3)
    headers = {
        "x-ratelimit-remaining": "0",
        "x-ratelimit-limit": "5000",
        "x-ratelimit-reset": reset,
    }
    github_sim.inject("repos/get", status=403, headers=headers, times=1)
    client = await app.installation_client(1)
    await client.get_repo("octo", "demo")
    assert len(sleeps) == 1
    assert 0 < sleeps[0] <= 3


async def test_secondary_rate_limit_raises_after_bounded_retries(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo, sleeps: list[float]
) -> None:
    body = {"message": "You have exceeded a secondary rate limit."}
    github_sim.inject(
        "issues/create-comment", status=403, headers={"retry-after": "1"}, body=body, times=None
    )
    client = await app.installation_client(1)
    with pytest.raises(GitHubRateLimited) as info:
        await client.create_comment("octo", "demo", 1, "hello")
    assert (info.value.status, info.value.retry_after, info.value.retryable) == (403, 1.0, True)
    assert sleeps == [1.0] * FAST.max_retries
    assert len(github_sim.calls("issues/create-comment")) == FAST.max_retries + 1


async def test_rate_limit_longer_than_the_wait_budget_is_not_slept(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo, sleeps: list[float]
) -> None:
    github_sim.inject("repos/get", status=429, headers={"retry-after": "3600"}, times=None)
    client = await app.installation_client(1)
    with pytest.raises(GitHubRateLimited) as info:
        await client.get_repo("octo", "demo")
    assert info.value.retry_after == 3600.0
    assert sleeps == []
    assert len(github_sim.calls("repos/get")) == 1


async def test_timeouts_are_retried(
    github_sim: GitHubSim, session: aiohttp.ClientSession, repo: SimRepo, sleeps: list[float]
) -> None:
    assert github_sim.private_key_pem is not None
    policy = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.01, request_timeout=0.2)
    app = GitHubApp(
        app_id=github_sim.app_id,
        private_key=github_sim.private_key_pem,
        session=session,
        api_url=github_sim.base_url,
        retry=policy,
    )
    github_sim.inject("repos/get", delay=1.0, times=1)
    client = await app.installation_client(1)
    assert (await client.get_repo("octo", "demo"))["name"] == "demo"
    assert len(sleeps) == 1
    github_sim.inject("repos/get", delay=1.0, times=None)
    with pytest.raises(GitHubError) as info:
        await client.get_repo("octo", "demo")
    assert info.value.retryable is True
    assert "TimeoutError" in str(info.value)


async def test_job_log_download_drops_authorization_on_redirect(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo
) -> None:
    run = github_sim.add_run(repo, head_sha="a" * 40, jobs=[("lint", "##[error]boom\n")])
    client = await app.installation_client(1)
    assert await client.download_job_log("octo", "demo", run.jobs[0].id) == "##[error]boom\n"
    first = github_sim.calls("actions/download-job-logs-for-workflow-run")[0]
    assert first.headers["authorization"].startswith("token ")
    blob = [r for r in github_sim.requests if r.path.startswith("/_logs/")]
    assert len(blob) == 1
    assert "authorization" not in blob[0].headers
    github_sim.assert_no_violations()


async def test_update_ref_rejections_raise_push_rejected(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo
) -> None:
    assert repo.git_dir is not None
    head = commit_files(repo.git_dir, "feat", {"a.py": "1\n"}, "feature")
    other = commit_files(repo.git_dir, "other", {"b.py": "1\n"}, "elsewhere")
    client = await app.installation_client(1, repo="demo")
    with pytest.raises(PushRejected) as info:
        await client.update_ref("octo", "demo", "heads/feat", other)
    assert info.value.status == 422
    assert github_sim.calls("git/update-ref")[0].json == {"sha": other, "force": False}
    repo.protected_refs.add("feat")
    child = commit_files(repo.git_dir, "tmp", {"c.py": "1\n"}, "child", start="feat")
    with pytest.raises(PushRejected):
        await client.update_ref("octo", "demo", "refs/heads/feat", child)
    assert (await client.get_ref("octo", "demo", "heads/feat"))["object"]["sha"] == head


async def test_git_data_commit_through_the_client(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo
) -> None:
    assert repo.git_dir is not None
    head = commit_files(repo.git_dir, "feat", {"a.py": "x=1\n"}, "feature")
    github_sim.add_pull(repo, number=9, head_ref="feat", head_sha=head, base_sha=head)
    client = await app.installation_client(1, repo="demo")
    ref = await client.get_ref("octo", "demo", "heads/feat")
    blob = await client.create_blob("octo", "demo", "x = 1\n")
    base_tree = (await client.compare("octo", "demo", "main", "feat"))["commits"][-1]["commit"]
    tree = await client.create_tree(
        "octo",
        "demo",
        [{"path": "a.py", "mode": "100644", "type": "blob", "sha": blob}],
        base_tree=base_tree["tree"]["sha"],
    )
    commit = await client.create_commit(
        "octo",
        "demo",
        message="style: format\n\nShepherd-Job: 1",
        tree=tree,
        parents=[ref["object"]["sha"]],
    )
    await client.update_ref("octo", "demo", "heads/feat", commit["sha"])
    assert await client.get_content("octo", "demo", "a.py", commit["sha"]) == "x = 1\n"
    assert await client.get_content("octo", "demo", "missing.py", commit["sha"]) is None
    assert github_sim.pulls[("octo/demo", 9)].head_sha == commit["sha"]
    github_sim.assert_no_violations()


async def test_annotations_are_sent_in_batches_of_50(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo
) -> None:
    annotations = [
        {
            "path": "a.py",
            "start_line": i,
            "end_line": i,
            "annotation_level": "failure",
            "message": f"m{i}",
        }
        for i in range(1, 121)
    ]
    client = await app.installation_client(1)
    run = await client.create_check_run(
        "octo",
        "demo",
        name="shepherd",
        head_sha="a" * 40,
        status="completed",
        conclusion="failure",
        title="3 problems",
        summary="details",
        annotations=annotations,
    )
    sizes = [
        (op, len(body["output"]["annotations"])) for op, _, body in github_sim.check_run_history
    ]
    assert sizes == [("create", 50), ("update", 50), ("update", 20)]
    assert github_sim.annotations(run["id"]) == annotations
    assert run["output"]["annotations_count"] == 120
    await client.update_check_run("octo", "demo", run["id"], annotations=annotations[:60])
    assert [len(b["output"]["annotations"]) for _, _, b in github_sim.check_run_history[3:]] == [
        50,
        10,
    ]
    listed = await client.list_check_runs_for_ref("octo", "demo", "a" * 40)
    assert [r["id"] for r in listed] == [run["id"]]
    github_sim.assert_no_violations()


async def test_pagination_follows_link_headers(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo
) -> None:
    files = [{"filename": f"f{i}.py", "status": "added", "additions": 1} for i in range(250)]
    github_sim.add_pull(
        repo, number=4, head_ref="x", head_sha="b" * 40, base_sha="c" * 40, files=files
    )
    client = await app.installation_client(1)
    got = await client.list_pull_files("octo", "demo", 4)
    assert [f["filename"] for f in got] == [f["filename"] for f in files]
    assert len(github_sim.calls("pulls/list-files")) == 3


async def test_fork_pull_found_by_head_sha(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo
) -> None:
    github_sim.add_pull(
        repo,
        number=11,
        head_ref="patch-1",
        head_sha="d" * 40,
        base_sha="c" * 40,
        head_repo_full_name="someone/demo",
        maintainer_can_modify=False,
    )
    client = await app.installation_client(1)
    pulls = await client.list_pulls_for_commit("octo", "demo", "d" * 40)
    assert [(p["number"], p["head"]["repo"]["fork"]) for p in pulls] == [(11, True)]
    assert await client.list_pulls_for_commit("octo", "demo", "e" * 40) == []


async def test_issue_operations_round_trip(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo
) -> None:
    github_sim.add_pull(repo, number=2, head_ref="x", head_sha="b" * 40, base_sha="c" * 40)
    repo.permissions["alice"] = "write"
    client = await app.installation_client(1)
    comment = await client.create_comment("octo", "demo", 2, "<!-- shepherd -->\nfirst")
    await client.update_comment("octo", "demo", comment["id"], "<!-- shepherd -->\nsecond")
    assert [c["body"] for c in await client.list_comments("octo", "demo", 2)] == [
        "<!-- shepherd -->\nsecond"
    ]
    assert (await client.create_reaction("octo", "demo", comment["id"]))["content"] == "eyes"
    await client.add_labels("octo", "demo", 2, ["size/S", "shepherd/needs-human"])
    assert await client.remove_label("octo", "demo", 2, "size/S") is True
    assert await client.remove_label("octo", "demo", 2, "size/S") is False
    await client.request_reviewers("octo", "demo", 2, reviewers=["alice"])
    assert github_sim.pulls[("octo/demo", 2)].requested_reviewers == ["alice"]
    assert await client.get_collaborator_permission("octo", "demo", "alice") == "write"
    assert await client.get_collaborator_permission("octo", "demo", "mallory") == "none"
    await client.create_review(
        "octo",
        "demo",
        2,
        body="Suggested fix",
        comments=[{"path": "a.py", "line": 1, "body": "```suggestion\nx = 1\n```"}],
    )
    assert github_sim.reviews[0]["comments"][0]["path"] == "a.py"
    run = github_sim.add_run(repo, head_sha="b" * 40, jobs=[("test", "")])
    await client.rerun_failed_jobs("octo", "demo", run.id)
    assert run.rerun_failed_jobs == 1
    github_sim.assert_no_violations()


@pytest.mark.parametrize(
    ("fault", "error", "status", "retryable"),
    [
        ({"status": 404}, GitHubError, 404, False),
        (
            {"status": 422, "body": {"message": "Validation Failed", "errors": []}},
            GitHubError,
            422,
            False,
        ),
        ({"status": 503, "times": None}, GitHubError, 503, True),
        (
            {"status": 403, "body": {"message": "Resource not accessible by integration"}},
            GitHubError,
            403,
            False,
        ),
        ({"status": 429, "headers": {"retry-after": "999"}}, GitHubRateLimited, 429, True),
    ],
)
async def test_errors_are_mapped_and_never_leak_the_token(
    github_sim: GitHubSim,
    app: GitHubApp,
    repo: SimRepo,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    fault: dict[str, Any],
    error: type[GitHubError],
    status: int,
    retryable: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    github_sim.inject("repos/get", **fault)
    client = await app.installation_client(1)
    token = (await app.installation_token(1)).token
    with pytest.raises(error) as info:
        await client.get_repo("octo", "demo")
    assert type(info.value) is error
    assert (info.value.status, info.value.retryable) == (status, retryable)
    for text in (str(info.value), repr(info.value), caplog.text, repr(client), repr(app)):
        assert token not in text
    assert token not in repr(await app.installation_token(1))
    assert "PRIVATE KEY" not in caplog.text + repr(app)


async def test_token_in_error_text_is_scrubbed(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo, caplog: pytest.LogCaptureFixture
) -> None:
    client = await app.installation_client(1)
    token = (await app.installation_token(1)).token
    # A hostile or buggy server echoing the credential back must not put it in our errors.
    github_sim.inject("repos/get", status=400, body={"message": f"bad token {token}"})
    with pytest.raises(GitHubError) as info:
        await client.get_repo("octo", "demo")
    assert token not in str(info.value)
    assert "***" in str(info.value)


async def test_a_job_outliving_its_token_switches_to_a_fresh_one(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo
) -> None:
    # The first token is about to expire (inside the refresh margin) when the job is long.
    github_sim.token_ttl = timedelta(minutes=4)
    client = await app.installation_client(1)
    first = github_sim.calls("repos/get")
    github_sim.token_ttl = timedelta(hours=1)
    await client.get_repo("octo", "demo")
    await client.get_repo("octo", "demo")
    tokens = [r.headers.get("authorization", "") for r in github_sim.calls("repos/get")][
        len(first) :
    ]
    minted = github_sim.calls("apps/create-installation-access-token")
    assert len(minted) == 2  # the client asked the App for a fresh token once, then reused it
    assert tokens[0] == tokens[1]
    assert tokens[0].startswith("token ghs_")


async def test_a_rate_limit_slows_the_whole_installation(
    github_sim: GitHubSim, app: GitHubApp, repo: SimRepo, sleeps: list[float]
) -> None:
    first = await app.installation_client(1)
    second = await app.installation_client(1, repo="demo")
    github_sim.inject(
        "repos/get",
        status=403,
        headers={"retry-after": "2"},
        body={"message": "You have exceeded a secondary rate limit."},
        times=1,
    )
    await first.get_repo("octo", "demo")
    assert sleeps == [2.0]
    # Another client of the same installation waits out the pause before it sends anything
    # (the sleeps are recorded, not slept, so the pause is still ahead of it).
    await second.get_repo("octo", "demo")
    assert len(sleeps) == 2
    assert 1 < sleeps[1] <= 2
    other_installation = await app.installation_client(2)
    await other_installation.get_repo("octo", "demo")
    assert len(sleeps) == 2  # a different installation is not slowed down
