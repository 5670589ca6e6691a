"""The server's triage job: the pure triage core (:mod:`bot.triage.rules`) with its GitHub edges.

Get the PR → its diff (or, when GitHub refuses or truncates it, the paginated files API) → the
base SHA's ``.github/shepherd.yml``, ``.gitattributes`` and CODEOWNERS (a PR cannot change the
rules it is judged by) → the commit messages from compare (agent trailers) → triage → labels, the
triage section of the sticky comment, the triage part of the ``shepherd`` check run, reviewer
requests, and a ``pr.triaged`` event that ``explain`` and the repair ladder read. Running it again
(``synchronize``, ``/shepherd triage``, a retry after a crash) edits everything in place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from bot.github.resources import CheckRun, CommitComparison, PullFile, PullRequest, parse_list
from bot.kernel import JSONObject
from bot.kernel.errors import GitHubError
from bot.kernel.repoconfig import CONFIG_PATH, RepoConfig, load_config
from bot.kernel.target import RepoTarget
from bot.reporting.report import Reporter
from bot.reporting.summary import CHECK_TEXT_LIMIT, CheckRunOutput
from bot.store import Store
from bot.store.episodes import EventKind, is_paused, last_event
from bot.triage.codeowners import CODEOWNERS_LOCATIONS, Rule, parse_codeowners, split_reviewers
from bot.triage.lane import LaneFacts, LaneGitHub, advance_lane, request_reviewers
from bot.triage.rules import (
    DEFAULT_RISK_LABELS,
    ChangedFile,
    GeneratedMatcher,
    PullFacts,
    Triage,
    TriageConfig,
    diff_facts,
    files_from_api,
    managed_labels,
    relabel,
    render_triage_markdown,
    triage,
)

log = logging.getLogger(__name__)


#: GitHub refuses the diff media type for PRs over 300 files (or over its line/byte limits) with
#: 406 ("too_large"), and some proxies answer 422; the files API then gives the same numbers,
#: 3,000 files at most.
#: https://docs.github.com/en/rest/pulls/pulls#get-a-pull-request
DIFF_MAX_FILES = 300
DIFF_REFUSED = frozenset({406, 422})
FILES_API_MAX = 3000
TRIAGE_SECTION = "triage"
TRIAGE_JSON_OPEN = "<!-- shepherd:triage"


class TriageGitHub(LaneGitHub, Protocol):
    """Every GitHub operation the triage job uses (all in the OpenAPI subset)."""

    async def get_pull_diff(self, owner: str, repo: str, number: int) -> str: ...
    async def list_pull_files(self, owner: str, repo: str, number: int) -> list[JSONObject]: ...
    async def compare(self, owner: str, repo: str, base: str, head: str) -> JSONObject: ...


class TriageRequest(RepoTarget):
    KIND: ClassVar[str] = "triage"

    pr: int
    sha: str
    action: str = "opened"


@dataclass(frozen=True)
class TriageResult:
    #: ``triaged``, ``noop`` (closed or superseded) or ``config-error``.
    outcome: str
    triage: Triage | None = None
    detail: str = ""

    def to_json(self) -> JSONObject:
        return {
            "outcome": self.outcome,
            "detail": self.detail,
            "triage": self.triage.as_json() if self.triage is not None else None,
        }


def triage_config(config: RepoConfig, *, shepherd_login: str) -> TriageConfig:
    """Map ``.github/shepherd.yml`` onto the pure core's config."""
    return TriageConfig(
        size_thresholds=tuple(config.triage.size_thresholds),
        area_rules={label: tuple(globs) for label, globs in config.triage.areas.items()},
        security_paths=tuple(config.triage.security_paths),
        risk_labels=dict(DEFAULT_RISK_LABELS),
        agent_logins=tuple(config.triage.agent_logins),
        shepherd_login=shepherd_login,
        agent_label=config.labels.agent,
        require_tests=config.agent_lane.require_tests,
        max_changed_lines=config.agent_lane.max_changed_lines,
        forbid_github_dir=config.agent_lane.forbid_github_changes,
    )


def desired_labels(t: Triage, config: RepoConfig) -> list[str]:
    """The labels the PR should carry; risk flags only when ``triage.risk_labels`` is on."""
    risk = {flag.label for flag in t.risks}
    return [label for label in t.labels if config.triage.risk_labels or label not in risk]


def label_changes(
    current: Sequence[str], t: Triage, config: RepoConfig, tconfig: TriageConfig
) -> tuple[list[str], list[str]]:
    """(labels to add, labels to remove), sorted.

    Size, area and risk labels are managed: a stale one goes on re-triage. The agent label is
    only ever added: people add it by hand when detection misses an agent, and a later push does
    not make a PR less agent-written.
    """
    managed = managed_labels(tconfig) - {tconfig.agent_label}
    remove, add = relabel(current, desired_labels(t, config), managed=managed)
    remove.discard(tconfig.agent_label)
    return sorted(add), sorted(remove)


def render_section(t: Triage) -> str:
    """The triage section of the sticky comment: the markdown plus the JSON, hidden."""
    text = json.dumps(t.as_json(), separators=(",", ":"), ensure_ascii=False)
    # "--" cannot appear inside an HTML comment; only JSON strings can hold it (see summary.py).
    safe = text.replace("--", "-\\u002d")
    return f"{render_triage_markdown(t).rstrip()}\n\n{TRIAGE_JSON_OPEN}\n{safe}\n-->"


def check_output(t: Triage) -> CheckRunOutput:
    """The ``shepherd`` check run when triage is all there is on this SHA.

    Agent-policy findings fail the check, one line each in the summary (never comments).
    """
    markdown = render_triage_markdown(t)[: CHECK_TEXT_LIMIT - 100]
    if t.policy_findings:
        count = len(t.policy_findings)
        title = f"Agent policy: {count} problem{'s' if count != 1 else ''}"
        return CheckRunOutput(title=title, summary=markdown, conclusion="failure")
    title = f"Triage: {t.size}, {t.files} file{'s' if t.files != 1 else ''}"
    if t.risks:
        title += " · risk: " + ", ".join(flag.code for flag in t.risks)
    return CheckRunOutput(title=title[:250], summary=markdown, conclusion="success")


async def fetch_changes(
    gh: TriageGitHub, req: TriageRequest, pull: PullRequest, matcher: GeneratedMatcher
) -> tuple[list[ChangedFile], bool]:
    """The PR's file changes and whether they are incomplete.

    The diff is one request; the files API is one request per 100 files, so the diff comes first.
    A diff GitHub refuses, one that does not parse completely, or one with fewer files than the
    PR has (truncated) is replaced by the files API's numbers.
    """
    changed_files = pull.changed_files
    if changed_files <= DIFF_MAX_FILES:
        try:
            text = await gh.get_pull_diff(req.owner, req.repo, req.pr)
        except GitHubError as exc:
            if exc.status not in DIFF_REFUSED:
                raise
            log.info("diff of %s#%s refused (%s); using the files API", req.full_name, req.pr, exc)
        else:
            facts = diff_facts(text, generated=matcher)
            if not facts.partial and len(facts.files) >= changed_files:
                return list(facts.files), False
            log.info(
                "diff of %s#%s incomplete (%d of %d files, %d unparsed); using the files API",
                req.full_name,
                req.pr,
                len(facts.files),
                changed_files,
                len(facts.unparsed),
            )
    entries = parse_list(PullFile, await gh.list_pull_files(req.owner, req.repo, req.pr))
    # The files API stops at 3,000 files; past that the numbers are a lower bound.
    partial = len(entries) >= FILES_API_MAX and changed_files > len(entries)
    return files_from_api(entries, generated=matcher), partial


async def _first_file(
    gh: TriageGitHub, req: TriageRequest, paths: Sequence[str], ref: str
) -> tuple[str, str] | None:
    for path in paths:
        text = await gh.get_content(req.owner, req.repo, path, ref)
        if text is not None:
            return path, text
    return None


async def run_triage(
    gh: TriageGitHub,
    req: TriageRequest,
    *,
    store: Store,
    app_slug: str,
    known_fixers: Sequence[str],
    respect_pause: bool = True,
) -> TriageResult:
    """Triage the PR. Automatic triage respects ``/shepherd stop`` (no label changes while
    paused); ``/shepherd triage`` passes ``respect_pause=False``: a person asked for it."""
    if respect_pause and is_paused(await store.list_events(req.full_name, req.pr)):
        return TriageResult("noop", detail="Shepherd is paused on this pull request")
    pull = PullRequest.model_validate(await gh.get_pull(req.owner, req.repo, req.pr))
    if not pull.is_open:
        return TriageResult("noop", detail="the pull request is closed")
    if pull.head.sha != req.sha:
        # A newer push has its own triage job queued; this one would only flap the labels.
        return TriageResult("noop", detail=f"superseded by {pull.head.sha[:12]}")
    reporter = Reporter(
        gh, store, owner=req.owner, repo=req.repo, pr=req.pr, app_slug=app_slug, job_id=req.job_id
    )
    # Policy comes from the base branch: a PR cannot change its own rules (or owners).
    loaded = load_config(
        await gh.get_content(req.owner, req.repo, CONFIG_PATH, pull.base.sha),
        known_fixers=known_fixers,
    )
    await reporter.record(
        EventKind.CONFIG, sha=pull.base.sha, from_file=loaded.from_file, ok=loaded.ok
    )
    if not loaded.ok:
        if loaded.error is not None:
            await reporter.config_problem(pull.head.sha, loaded.error)
        return TriageResult("config-error", detail=loaded.error.message if loaded.error else "")
    config = loaded.config
    tconfig = triage_config(config, shepherd_login=f"{app_slug}[bot]")
    result, owners_path = await _triage_pull(gh, req, pull, config, tconfig)
    await _publish(gh, reporter, req, pull, result, config, tconfig, owners_path)
    await _ask_for_review(gh, reporter, pull, result, config, app_slug=app_slug)
    return TriageResult("triaged", result)


async def _ask_for_review(
    gh: TriageGitHub,
    reporter: Reporter,
    pull: PullRequest,
    result: Triage,
    config: RepoConfig,
    *,
    app_slug: str,
) -> None:
    """Who reviews next: an agent PR moves along the agent lane (review once green), a human
    PR's code owners are asked now."""
    if result.agent.is_agent and config.agent_lane.enabled:
        # The agent lane requests review itself, once the checks are green.
        await advance_lane(
            gh,
            reporter,
            pull=pull,
            sha=pull.head.sha,
            config=config,
            facts=LaneFacts(
                is_agent=result.agent.is_agent,
                launched_by=result.agent.launched_by,
                reviewers=tuple(result.reviewers),
            ),
            app_slug=app_slug,
        )
    elif config.triage.request_reviewers and not pull.draft:
        # GitHub does not ask code owners to review drafts either; ready_for_review re-triages.
        await _request_owners(gh, reporter, pull, result, pull.head.sha)


async def _triage_pull(
    gh: TriageGitHub,
    req: TriageRequest,
    pull: PullRequest,
    config: RepoConfig,
    tconfig: TriageConfig,
) -> tuple[Triage, str | None]:
    """Read what triage needs at the base (``.gitattributes``, CODEOWNERS) and of the PR (its
    changes, its commits' messages) and triage it. Returns the triage and the CODEOWNERS path."""
    base_sha, head_sha = pull.base.sha, pull.head.sha
    gitattributes = await gh.get_content(req.owner, req.repo, ".gitattributes", base_sha)
    matcher = GeneratedMatcher(
        gitattributes=gitattributes or "", globs=config.triage.generated_files
    )
    owners_file = await _first_file(gh, req, CODEOWNERS_LOCATIONS, base_sha)
    rules: list[Rule] = parse_codeowners(owners_file[1]) if owners_file else []
    changes, partial = await fetch_changes(gh, req, pull, matcher)
    comparison = CommitComparison.model_validate(
        await gh.compare(req.owner, req.repo, base_sha, head_sha)
    )
    facts = PullFacts(
        author_login=pull.user.login,
        author_type=pull.user.type,
        body=pull.body,
        commit_messages=tuple(comparison.messages),
        head_ref=pull.head.ref,
    )
    result = triage(changes, facts, config=tconfig, codeowners=rules, partial=partial)
    return result, owners_file[0] if owners_file else None


async def _publish(
    gh: TriageGitHub,
    reporter: Reporter,
    req: TriageRequest,
    pull: PullRequest,
    result: Triage,
    config: RepoConfig,
    tconfig: TriageConfig,
    owners_path: str | None,
) -> None:
    """Labels, the sticky comment's triage section, the check run, and the ``triaged`` event."""
    current = pull.label_names
    add, remove = label_changes(current, result, config, tconfig)
    await reporter.labels(add=add, remove=remove, current=current)
    await reporter.comment(TRIAGE_SECTION, render_section(result))
    await _report_check_run(gh, reporter, req, pull.head.sha, result)
    await reporter.record(
        EventKind.TRIAGED,
        sha=pull.head.sha,
        action=req.action,
        codeowners=owners_path,
        triage=result.as_json(),
        markdown=render_triage_markdown(result),
    )


async def _report_check_run(
    gh: TriageGitHub, reporter: Reporter, req: TriageRequest, sha: str, t: Triage
) -> None:
    """Write the triage part of the SHA's ``shepherd`` check run.

    When the repair ladder already reported on this SHA, its conclusion and summary stay (they
    say what happened to CI) and the triage goes into ``text``; otherwise triage is the summary.
    """
    events = await reporter.events()
    repaired = last_event(events, EventKind.OUTCOME, sha=sha) is not None
    known = last_event(events, EventKind.CHECK_RUN, sha=sha)
    if repaired and known is not None:
        runs = parse_list(CheckRun, await gh.list_check_runs_for_ref(req.owner, req.repo, sha))
        existing = next((run for run in runs if run.id == int(known.data["id"])), None)
        if existing is not None and existing.conclusion:
            await reporter.check_run(
                sha,
                CheckRunOutput(
                    title=existing.output.title or "Shepherd",
                    summary=existing.output.summary or "",
                    conclusion=existing.conclusion,
                    text=render_triage_markdown(t)[: CHECK_TEXT_LIMIT - 100],
                ),
            )
            return
    await reporter.check_run(sha, check_output(t))


async def _request_owners(
    gh: TriageGitHub, reporter: Reporter, pull: PullRequest, t: Triage, sha: str
) -> None:
    """Request review from the suggested code owners of a human PR, each at most once per PR
    (someone who already reviewed is not asked again because a push re-triaged the PR)."""
    events = await reporter.events()
    asked: set[str] = set()
    for event in events:
        if event.kind == EventKind.REVIEWERS_REQUESTED:
            asked.update(str(r).lower() for r in event.data.get("reviewers", []))
            asked.update(f"team:{str(r).lower()}" for r in event.data.get("teams", []))
    users, teams = split_reviewers(t.reviewers)
    users = [u for u in users if u.lower() not in asked]
    teams = [team for team in teams if f"team:{team.lower()}" not in asked]
    if not users and not teams:
        return
    await request_reviewers(
        gh, reporter, pull, users=users, teams=teams, sha=sha, reason="codeowners"
    )
