"""The agent lane: keep humans out of an agent PR's loop until it is worth their time.

An agent-authored PR gets no review request while its checks are running or red. When a commit's
check suite completes (the ``agent_lane`` job) or the PR is re-triaged, the head's check runs
(other than Shepherd's own) are read: once every one has completed green, the code owners are
asked to review, once per episode; if the checks are red and Shepherd has handed off on this head,
the human who launched the agent is called in instead. The lane's state is the ``status`` section
of the sticky comment, edited in place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from bot.github.resources import CheckRun, PullRequest, parse_list
from bot.kernel import JSONObject
from bot.kernel.errors import GitHubError
from bot.kernel.repoconfig import CONFIG_PATH, RepoConfig, load_config
from bot.kernel.target import RepoTarget
from bot.reporting.report import Reporter, ReportGitHub
from bot.reporting.summary import CHECK_NAME
from bot.store import Store
from bot.store.episodes import EventKind, episode_events, last_event
from bot.triage.codeowners import split_reviewers

log = logging.getLogger(__name__)

STATUS_SECTION = "status"
#: Conclusions that let a PR through (GitHub's own "passing" set for required checks).
GREEN = frozenset({"success", "neutral", "skipped"})
LANE_REASON = "agent-lane"
HANDOFF_REASON = "handoff"
ChecksState = Literal["none", "running", "red", "green"]


class LaneGitHub(ReportGitHub, Protocol):
    """Every GitHub operation the agent lane uses (all in the OpenAPI subset)."""

    async def get_pull(self, owner: str, repo: str, number: int) -> JSONObject: ...
    async def get_content(self, owner: str, repo: str, path: str, ref: str) -> str | None: ...
    async def request_reviewers(
        self,
        owner: str,
        repo: str,
        number: int,
        *,
        reviewers: Sequence[str] = ...,
        team_reviewers: Sequence[str] = ...,
    ) -> JSONObject: ...


class LaneRequest(RepoTarget):
    KIND: ClassVar[str] = "agent_lane"

    pr: int
    sha: str


def latest_runs(runs: Sequence[CheckRun], *, app_slug: str) -> list[CheckRun]:
    """Other apps' check runs, the newest per (app, name): a re-run adds a run with the same name
    and the old red one must not hold the PR back. Shepherd's own check is not CI."""
    newest: dict[tuple[str, str], CheckRun] = {}
    for run in runs:
        slug = run.app_slug or ""
        if slug == app_slug or run.name == CHECK_NAME:
            continue
        key = (slug, run.name)
        if key not in newest or run.id > newest[key].id:
            newest[key] = run
    return list(newest.values())


def checks_state(runs: Sequence[CheckRun]) -> ChecksState:
    """``none`` until some CI reports (right after a push nothing may be registered yet, and
    green-by-absence would ask reviewers too early), then ``running``, ``red`` or ``green``."""
    if not runs:
        return "none"
    if any(run.status != "completed" for run in runs):
        return "running"
    if any(run.conclusion not in GREEN for run in runs):
        return "red"
    return "green"


@dataclass(frozen=True)
class LaneFacts:
    """What the lane reads of a PR's triage (the ``triaged`` event's JSON, or the triage itself):
    whether an agent wrote it, the human who launched the agent, the suggested reviewers."""

    is_agent: bool = False
    launched_by: str | None = None
    reviewers: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, triage_json: Mapping[str, object]) -> LaneFacts:
        agent = triage_json.get("agent")
        agent = agent if isinstance(agent, Mapping) else {}
        reviewers = triage_json.get("reviewers")
        launched_by = agent.get("launched_by")
        return cls(
            is_agent=bool(agent.get("is_agent")),
            launched_by=str(launched_by) if launched_by else None,
            reviewers=tuple(str(r) for r in reviewers) if isinstance(reviewers, list) else (),
        )


def handoff_human(pull: PullRequest, facts: LaneFacts, config: RepoConfig) -> str | None:
    """Who takes over an agent PR: a human assignee, else the human who launched the agent
    (the triage's ``launched_by``), else the configured fallback."""
    for assignee in pull.assignees:
        login = assignee.login
        if login and not assignee.is_bot and not login.lower().endswith("[bot]"):
            return login
    return facts.launched_by or config.agent_lane.fallback_assignee


async def request_reviewers(
    gh: LaneGitHub,
    reporter: Reporter,
    pull: PullRequest,
    *,
    users: Sequence[str],
    teams: Sequence[str],
    sha: str,
    reason: str,
) -> tuple[list[str], list[str]]:
    """Ask ``users`` and ``teams`` to review, skipping the author and anyone already asked, and
    record the request (even an empty one: the record is what makes the lane ask only once).

    GitHub answers 422 for the whole request when one login is not a collaborator; the names are
    then asked one at a time so one outsider does not block the others, and the refused ones are
    logged and recorded. Returns (users, teams) asked, including those already asked before.
    """
    author = pull.user.login.lower()
    have_users = {r.login.lower() for r in pull.requested_reviewers}
    have_teams = {t.slug.lower() for t in pull.requested_teams}
    new_users = [u for u in dict.fromkeys(users) if u.lower() not in have_users | {author}]
    new_teams = [t for t in dict.fromkeys(teams) if t.lower() not in have_teams]
    asked_users = [u for u in users if u.lower() in have_users]
    asked_teams = [t for t in teams if t.lower() in have_teams]
    refused: list[str] = []
    owner, repo, number = reporter.owner, reporter.repo, reporter.pr
    if new_users or new_teams:
        try:
            await gh.request_reviewers(
                owner, repo, number, reviewers=new_users, team_reviewers=new_teams
            )
            asked_users += new_users
            asked_teams += new_teams
        except GitHubError as exc:
            if exc.status != 422:
                raise
            log.info("review request for %s#%s refused (%s); asking one by one", repo, number, exc)
            for login in new_users:
                if await _request_one(gh, reporter, reviewers=[login]):
                    asked_users.append(login)
                else:
                    refused.append(login)
            for slug in new_teams:
                if await _request_one(gh, reporter, team_reviewers=[slug]):
                    asked_teams.append(slug)
                else:
                    refused.append(f"team:{slug}")
    await reporter.record(
        EventKind.REVIEWERS_REQUESTED,
        sha=sha,
        reason=reason,
        reviewers=[u for u in new_users if u not in refused],
        teams=[t for t in new_teams if f"team:{t}" not in refused],
        refused=refused,
    )
    return asked_users, asked_teams


async def _request_one(
    gh: LaneGitHub,
    reporter: Reporter,
    *,
    reviewers: Sequence[str] = (),
    team_reviewers: Sequence[str] = (),
) -> bool:
    try:
        await gh.request_reviewers(
            reporter.owner,
            reporter.repo,
            reporter.pr,
            reviewers=reviewers,
            team_reviewers=team_reviewers,
        )
    except GitHubError as exc:
        if exc.status != 422:
            raise
        log.warning(
            "GitHub refused review by %s on %s#%s: %s",
            ", ".join([*reviewers, *team_reviewers]),
            reporter.full_name,
            reporter.pr,
            exc,
        )
        return False
    return True


def _names(users: Sequence[str], teams: Sequence[str], owner: str) -> str:
    # Code spans, not @-mentions: the review request itself notifies them.
    return ", ".join([f"`{u}`" for u in users] + [f"`{owner}/{t}`" for t in teams])


def _failing(runs: Sequence[CheckRun]) -> str:
    names = [r.name for r in runs if r.conclusion not in GREEN]
    shown = ", ".join(f"`{n[:80]}`" for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


@dataclass(frozen=True)
class _Lane:
    """One agent PR on the lane: where to write, what it is, and what triage found."""

    gh: LaneGitHub
    reporter: Reporter
    pull: PullRequest
    sha: str
    config: RepoConfig
    facts: LaneFacts


async def advance_lane(
    gh: LaneGitHub,
    reporter: Reporter,
    *,
    pull: PullRequest,
    sha: str,
    config: RepoConfig,
    facts: LaneFacts,
    app_slug: str,
) -> str:
    """Move an agent PR along the lane; returns ``requested``, ``handoff``, ``waiting`` or
    ``noop``. Safe to call any number of times: every request is recorded and not repeated."""
    lane = _Lane(gh, reporter, pull, sha, config, facts)
    if not facts.is_agent or not config.agent_lane.enabled:
        return "noop"
    events = await reporter.events()
    episode = episode_events(events)
    done = last_event(episode, EventKind.REVIEWERS_REQUESTED, reason=LANE_REASON)
    if done is not None:
        return "noop"  # asked once this episode; a push by someone else starts a new one
    if pull.draft:
        await reporter.comment(
            STATUS_SECTION, "⏳ Agent PR in draft: review is requested once it is ready and green."
        )
        return "waiting"
    listed = await gh.list_check_runs_for_ref(reporter.owner, reporter.repo, sha)
    runs = latest_runs(parse_list(CheckRun, listed), app_slug=app_slug)
    state = checks_state(runs)
    if state == "green":
        return await _green(lane, runs)
    if state == "red":
        outcome = last_event(events, EventKind.OUTCOME, sha=sha)
        if outcome is not None and outcome.data.get("outcome") == "handoff":
            return await _hand_off(lane)
        await reporter.comment(
            STATUS_SECTION,
            f"❌ Failing: {_failing(runs)}. Review is held until the checks pass.",
        )
        return "waiting"
    pending = sum(1 for r in runs if r.status != "completed")
    text = (
        f"⏳ Waiting for {pending} running check{'s' if pending != 1 else ''} before "
        "requesting review."
        if pending
        else "⏳ Waiting for CI to report before requesting review."
    )
    await reporter.comment(STATUS_SECTION, text)
    return "waiting"


async def _green(lane: _Lane, runs: Sequence[CheckRun]) -> str:
    """Every check passed: ask the code owners (or the agent's launcher) to review, once."""
    reporter, sha = lane.reporter, lane.sha
    count = f"{len(runs)} check{'s' if len(runs) != 1 else ''}"
    suggested = list(lane.facts.reviewers)
    if not lane.config.triage.request_reviewers:
        # The repository asked for suggestions only; say the PR is ready, once.
        await reporter.record(
            EventKind.REVIEWERS_REQUESTED, sha=sha, reason=LANE_REASON, reviewers=[]
        )
        hint = f" Suggested reviewers: {', '.join(suggested)}." if suggested else ""
        await reporter.comment(
            STATUS_SECTION, f"✅ All {count} passed: ready for human review.{hint}"
        )
        return "requested"
    users, teams = split_reviewers(suggested)
    launcher = lane.facts.launched_by
    if not users and not teams and launcher:
        users = [launcher]  # no code owner: the person who launched the agent reviews
    asked_users, asked_teams = await request_reviewers(
        lane.gh, reporter, lane.pull, users=users, teams=teams, sha=sha, reason=LANE_REASON
    )
    if asked_users or asked_teams:
        text = (
            f"✅ All {count} passed: review requested from "
            f"{_names(asked_users, asked_teams, reporter.owner)}. The triage is below."
        )
    else:
        text = f"✅ All {count} passed. No code owner to ask: please request a review."
    await reporter.comment(STATUS_SECTION, text)
    return "requested"


async def _hand_off(lane: _Lane) -> str:
    """Shepherd gave up on this head: call in the human behind the agent.

    The issue asks to *assign* that person, but ``issues/add-assignees`` is not among the
    operations the App may call (../shared/github/openapi-subset.json). An @-mention in the
    status line notifies them just as well, and a review request puts the PR in their queue;
    both stay within the subset.
    """
    reporter, sha = lane.reporter, lane.sha
    episode = episode_events(await reporter.events())
    if last_event(episode, EventKind.REVIEWERS_REQUESTED, reason=HANDOFF_REASON, sha=sha):
        return "noop"
    human = handoff_human(lane.pull, lane.facts, lane.config)
    if human is None:
        await reporter.comment(
            STATUS_SECTION,
            "🙋 Shepherd could not fix this agent PR and no human is named for it "
            "(no human assignee or co-author; `agent_lane.fallback_assignee` is unset).",
        )
        await reporter.record(
            EventKind.REVIEWERS_REQUESTED, sha=sha, reason=HANDOFF_REASON, reviewers=[]
        )
        return "handoff"
    await request_reviewers(
        lane.gh, reporter, lane.pull, users=[human], teams=[], sha=sha, reason=HANDOFF_REASON
    )
    await reporter.comment(
        STATUS_SECTION,
        f"🙋 @{human}: Shepherd could not get this agent PR green. Please take over; "
        "the repair summary below says what failed and what was tried.",
    )
    return "handoff"


async def run_agent_lane(
    gh: LaneGitHub,
    req: LaneRequest,
    *,
    store: Store,
    app_slug: str,
    known_fixers: Sequence[str],
) -> str:
    """The ``agent_lane`` job: a check suite of the head completed; see whether the lane moves."""
    pull = PullRequest.model_validate(await gh.get_pull(req.owner, req.repo, req.pr))
    if not pull.is_open or pull.head.sha != req.sha:
        return "noop"  # closed, or a newer head has its own checks and its own lane job
    loaded = load_config(
        await gh.get_content(req.owner, req.repo, CONFIG_PATH, pull.base.sha),
        known_fixers=known_fixers,
    )
    if not loaded.ok:
        return "noop"  # the triage job reports the invalid file; nothing acts on it meanwhile
    reporter = Reporter(
        gh, store, owner=req.owner, repo=req.repo, pr=req.pr, app_slug=app_slug, job_id=req.job_id
    )
    events = await reporter.events()
    # Agent-ness and owners rarely change with a push, so an older head's triage will do while
    # this head's triage job (serialized before or after this one) catches up.
    triaged = last_event(events, EventKind.TRIAGED, sha=req.sha) or last_event(
        events, EventKind.TRIAGED
    )
    if triaged is None:
        return "noop"  # the triage job advances the lane itself when it runs
    return await advance_lane(
        gh,
        reporter,
        pull=pull,
        sha=req.sha,
        config=loaded.config,
        facts=LaneFacts.from_json(triaged.data.get("triage") or {}),
        app_slug=app_slug,
    )
