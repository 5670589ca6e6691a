"""End-to-end harness: the real server and workers, the GitHub simulator, a bare git remote.

Everything runs for real over HTTP on 127.0.0.1; only time is compressed (no debounce, short
settle waits).
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.app.web import METRICS, STORE, create_app
from bot.app.worker import WorkerPool
from bot.kernel.settings import Settings
from tests.conftest import SHARED, load_payload, webhook_headers
from tests.ghsim import (
    GitHubSim,
    SimJob,
    SimPull,
    SimRepo,
    SimRun,
    commit_files,
    init_bare_repo,
    start_simulator,
)

Client = TestClient[web.Request, web.Application]


def scenario_files(name: str) -> dict[str, str]:
    root = SHARED / "scenarios" / "cases" / name / "repo"
    return {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.parts
    }


def scenario_log(name: str) -> str:
    return (SHARED / "scenarios" / "cases" / name / "job.log").read_text(encoding="utf-8-sig")


def scenario_workflows() -> str:
    """One workflow with every scenario's jobs: the base branch runs these commands, so the
    repair may execute them to verify a fix (bot.diagnosis.workflows)."""
    jobs: dict[str, Any] = {}
    for case in sorted((SHARED / "scenarios" / "cases").iterdir()):
        ci = yaml.safe_load((case / "ci.yml").read_text())
        for name, job in (ci.get("jobs") or {}).items():
            jobs[f"{case.name}-{name}"] = job
    return yaml.safe_dump({"name": "CI", "on": "pull_request", "jobs": jobs}, sort_keys=False)


def git(bare: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=bare, capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass
class World:
    sim: GitHubSim
    repo: SimRepo
    bare: Path
    base_sha: str
    client: Client
    pool: WorkerPool
    settings: Settings

    def open_pull(
        self,
        branch: str,
        files: Mapping[str, str | None],
        *,
        number: int,
        user: str = "alice",
        body: str = "",
        title: str = "A change",
        message: str = "Change things",
        **extra: Any,
    ) -> SimPull:
        sha = commit_files(self.bare, branch, files, message)
        git(self.bare, "update-ref", f"refs/pull/{number}/head", sha)  # as GitHub keeps it
        return self.sim.add_pull(
            self.repo,
            head_ref=branch,
            head_sha=sha,
            base_sha=self.base_sha,
            number=number,
            user=user,
            body=body,
            title=title,
            **extra,
        )

    def fail_job(self, sha: str, name: str, log: str) -> tuple[SimRun, SimJob]:
        """A failed GitHub Actions job on ``sha``, visible as its check run (id = job id)."""
        run = self.sim.add_run(self.repo, head_sha=sha, jobs=[(name, log)])
        job = run.jobs[0]
        self.sim.check_runs[job.id] = {
            "id": job.id,
            "head_sha": sha,
            "name": name,
            "status": "completed",
            "conclusion": "failure",
            "started_at": "2026-11-17T07:02:44Z",
            "completed_at": "2026-11-17T07:03:44Z",
            "output": {"title": None, "summary": None, "text": None, "annotations_count": 0},
            "app": {"id": 15368, "slug": "github-actions"},
            "_repo": self.repo.full_name,
        }
        return run, job

    def repo_payload(self) -> dict[str, Any]:
        return {
            "id": self.repo.id,
            "name": self.repo.name,
            "full_name": self.repo.full_name,
            "owner": {"login": self.repo.owner, "id": 1, "type": "Organization"},
            "clone_url": self.repo.clone_url,
            "default_branch": "main",
            "private": self.repo.private,
            "fork": False,
        }

    def workflow_job_event(self, run: SimRun, job: SimJob, *, attempt: int = 1) -> dict[str, Any]:
        payload = copy.deepcopy(
            load_payload("workflow_job", "completed.failure.with-organization.payload.json")
        )
        payload["installation"] = {"id": self.repo.installation_id}
        payload["repository"].update(self.repo_payload())
        payload["workflow_job"].update(
            {
                "id": job.id,
                "run_id": run.id,
                "run_attempt": attempt,
                "head_sha": job.head_sha,
                "name": job.name,
                "conclusion": "failure",
                "status": "completed",
            }
        )
        return payload

    def comment_event(
        self, pr: int, body: str, *, user: str = "alice", action: str = "created"
    ) -> dict[str, Any]:
        """An ``issue_comment`` on PR ``pr``, its comment stored in the simulator (reactions need
        it). Built from GitHub's issue example with ``issue.pull_request`` added: GitHub's
        published examples have no comment on a pull request."""
        comment = self.sim.add_comment(self.repo, pr, body, user=user)
        payload = copy.deepcopy(
            load_payload("issue_comment", "created.with-installation.payload.json")
        )
        author = {
            "login": user,
            "id": comment["user"]["id"],
            "type": "Bot" if user.endswith("[bot]") else "User",
        }
        payload["action"] = action
        payload["installation"] = {"id": self.repo.installation_id}
        payload["repository"].update(self.repo_payload())
        payload["sender"] = {**payload["sender"], **author}
        payload["issue"].update(
            {
                "number": pr,
                "state": "open",
                "pull_request": {
                    "url": f"https://api.github.com/repos/{self.repo.full_name}/pulls/{pr}",
                    "html_url": f"https://github.com/{self.repo.full_name}/pull/{pr}",
                },
            }
        )
        payload["comment"].update(
            {
                "id": comment["id"],
                "body": body,
                "user": {**payload["comment"]["user"], **author},
                # Deliberately generous: the bot must not trust it.
                "author_association": "OWNER",
            }
        )
        return payload

    def button_event(self, pr: int, sha: str, identifier: str, *, user: str) -> dict[str, Any]:
        """A click on a ``shepherd`` check run button (``check_run`` ``requested_action``)."""
        runs = self.shepherd_runs(sha)
        stub = {
            "id": self.repo.id,
            "url": f"https://api.github.com/repos/{self.repo.full_name}",
            "name": self.repo.name,
        }
        payload = copy.deepcopy(load_payload("check_run", "requested_action.payload.json"))
        payload["installation"] = {"id": self.repo.installation_id}
        payload["repository"].update(self.repo_payload())
        payload["sender"] = {**payload["sender"], "login": user, "type": "User"}
        payload["requested_action"] = {"identifier": identifier}
        payload["check_run"].update(
            {
                "id": runs[0]["id"] if runs else 1,
                "name": "shepherd",
                "head_sha": sha,
                "status": "completed",
                "conclusion": "action_required",
                "app": {**payload["check_run"]["app"], "slug": self.settings.app_slug},
                "pull_requests": [
                    {
                        "url": f"https://api.github.com/repos/{self.repo.full_name}/pulls/{pr}",
                        "id": pr,
                        "number": pr,
                        "head": {"ref": "feature", "sha": sha, "repo": stub},
                        "base": {"ref": "main", "sha": self.base_sha, "repo": stub},
                    }
                ],
            }
        )
        return payload

    async def deliver(
        self, event: str, payload: dict[str, Any], *, delivery: str | None = None
    ) -> int:
        body = json.dumps(payload).encode()
        resp = await self.client.post(
            "/webhook", data=body, headers=webhook_headers(event, body, delivery=delivery)
        )
        return resp.status

    async def drain(self, rounds: int = 50) -> None:
        """Run the worker until it finds nothing to do."""
        idle = 0
        for _ in range(rounds):
            worked = await self.pool.run_once("test-worker")
            idle = 0 if worked else idle + 1
            if idle >= 2:
                return
        raise AssertionError("worker did not become idle")

    def branch_sha(self, branch: str) -> str:
        return git(self.bare, "rev-parse", f"refs/heads/{branch}")

    def shepherd_runs(self, sha: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.sim.check_runs.values()
            if r["head_sha"] == sha and r["name"] == "shepherd"
        ]

    def sticky_comments(self, pr: int) -> list[dict[str, Any]]:
        return [
            c
            for c in self.sim.comments.values()
            if c["_issue"] == pr and "<!-- shepherd:sticky -->" in c["body"]
        ]

    def pull_request_event(
        self,
        pull: SimPull,
        action: str | None = None,
        *,
        sender: str | None = None,
        example: str = "opened.payload.json",
    ) -> dict[str, Any]:
        """A ``pull_request`` delivery for ``pull`` (as the simulator knows it), built from one
        of GitHub's examples with the installation, repository, number, refs and author replaced;
        ``action`` None keeps the example's."""
        payload = copy.deepcopy(load_payload("pull_request", example))
        repo = self.repo_payload()
        login = sender or pull.user
        payload["action"] = action or payload["action"]
        payload["number"] = pull.number
        payload["installation"] = {"id": self.repo.installation_id}
        payload["repository"].update(repo)
        payload["sender"] = {
            **payload["sender"],
            "login": login,
            "type": "Bot" if login.endswith("[bot]") else "User",
        }
        payload["pull_request"].update(
            {
                "number": pull.number,
                "user": {
                    **payload["pull_request"]["user"],
                    "login": pull.user,
                    "type": "Bot" if pull.user.endswith("[bot]") else "User",
                },
                "head": {
                    **payload["pull_request"]["head"],
                    "ref": pull.head_ref,
                    "sha": pull.head_sha,
                    "repo": {**payload["pull_request"]["head"]["repo"], **repo},
                },
                "base": {
                    **payload["pull_request"]["base"],
                    "ref": pull.base_ref,
                    "sha": pull.base_sha,
                    "repo": {**payload["pull_request"]["base"]["repo"], **repo},
                },
            }
        )
        return payload

    def check_suite_event(
        self, pull: SimPull, sha: str, *, conclusion: str = "success"
    ) -> dict[str, Any]:
        """A ``check_suite`` ``completed`` delivery for ``sha``, listing ``pull`` as GitHub does
        for a same-repository PR whose head is ``sha``."""
        payload = copy.deepcopy(load_payload("check_suite", "completed.payload.json"))
        stub = {
            "id": self.repo.id,
            "url": f"https://api.github.com/repos/{self.repo.full_name}",
            "name": self.repo.name,
        }
        payload["installation"] = {"id": self.repo.installation_id}
        payload["repository"].update(self.repo_payload())
        payload["check_suite"].update(
            {
                "id": self.sim.next_id(),
                "head_branch": pull.head_ref,
                "head_sha": sha,
                "status": "completed",
                "conclusion": conclusion,
                "pull_requests": [
                    {
                        "url": f"https://api.github.com/repos/{self.repo.full_name}/pulls/{pull.number}",
                        "id": pull.number,
                        "number": pull.number,
                        "head": {"ref": pull.head_ref, "sha": sha, "repo": stub},
                        "base": {"ref": pull.base_ref, "sha": pull.base_sha, "repo": stub},
                    }
                ],
            }
        )
        return payload

    def pass_check(self, sha: str, name: str = "CI / test") -> dict[str, Any]:
        """A green GitHub Actions check run on ``sha`` in the simulator."""
        run_id = self.sim.next_id()
        self.sim.check_runs[run_id] = {
            "id": run_id,
            "head_sha": sha,
            "name": name,
            "status": "completed",
            "conclusion": "success",
            "started_at": "2026-11-17T07:02:44Z",
            "completed_at": "2026-11-17T07:03:44Z",
            "output": {"title": None, "summary": None, "text": None, "annotations_count": 0},
            "app": {"id": 15368, "slug": "github-actions"},
            "_repo": self.repo.full_name,
        }
        return self.sim.check_runs[run_id]


@pytest_asyncio.fixture
async def world(
    tmp_path: Path, aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> AsyncIterator[World]:
    sim, base_url = await start_simulator()
    bare, base_sha = init_bare_repo(
        tmp_path / "remote" / "acme" / "widgets.git",
        {"README.md": "widgets\n", ".github/workflows/ci.yml": scenario_workflows()},
    )
    repo = sim.add_repo("acme", "widgets", git_dir=bare)
    settings = make_settings(
        github_app_id=sim.app_id,
        github_private_key=sim.private_key_pem,
        github_api_url=base_url,
        settle_timeout_seconds=2,
        settle_poll_seconds=0.1,
    )
    app = create_app(settings)
    client = await aiohttp_client(app)
    pool = WorkerPool(store=app[STORE], settings=settings, metrics=app[METRICS], count=0)
    try:
        yield World(sim, repo, bare, base_sha, client, pool, settings)
    finally:
        await pool.stop()
        await sim.close()
