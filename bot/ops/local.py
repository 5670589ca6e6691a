"""``shepherd diagnose`` and ``shepherd fix``: the repair ladder on a local checkout, no GitHub.

The same pure core (distil, classify, plan) and the same fixers and sandbox as the server; the
only differences are where the log comes from (a file) and where the fix goes (the working tree,
not a push).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.diagnosis.logs import DistilledLog, distill_steps
from bot.git.workspace import Worktree, local_worktree
from bot.jobenv.environment import EnvironmentsFactory
from bot.kernel import JSONObject
from bot.kernel.errors import ConfigError, WorkspaceError
from bot.kernel.problems import NextAction, Outcome, OutcomeKind
from bot.kernel.repoconfig import RepoConfig, load_config
from bot.repair.blueprint import (
    Diagnosis,
    LlmGate,
    Plan,
    Step,
    diagnose,
    job_environments,
    locate_jobs,
    outcome_for,
    plan_repair,
    repair_tree,
)
from bot.sandbox import Runner
from bot.store.episodes import BudgetState
from fixers.base import Fixer, NoFiles, RepoFiles, WorktreeFiles
from fixers.command import NAME as COMMAND_FIXER
from fixers.command import repo_fixers

FRESH_EPISODE = BudgetState(
    ci_round=1, head_is_ours=False, rerun_used=False, llm_attempts=0, paused=False
)


@dataclass(frozen=True)
class LocalResult:
    outcome: Outcome
    #: One distilled log per failed step, in the order of the outcome's ``failures``.
    logs: tuple[DistilledLog, ...]
    plan: Plan

    def to_json(self) -> JSONObject:
        data = self.outcome.to_json()
        data["plan"] = self.plan.step.value
        distilled = sum(log.distilled_bytes for log in self.logs)
        data["log"] = {
            "raw_bytes": self.logs[0].raw_bytes if self.logs else 0,
            "distilled_bytes": distilled,
            "est_tokens": sum(log.est_tokens for log in self.logs),
        }
        return data


def read_log(path: Path) -> list[DistilledLog]:
    """The log file's failed steps, distilled (one entry when it shows none)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read log {path}: {exc.strerror}") from exc
    return distill_steps(raw)


def _diagnose(log_path: Path, *, fixers: Sequence[Fixer], repo: RepoFiles) -> list[Diagnosis]:
    """One diagnosis per failed step, named after its job (from the log, else the file)."""
    return [
        diagnose(log.job or log_path.stem, log, fixers=fixers, repo=repo)
        for log in read_log(log_path)
    ]


def _order(fixers: Sequence[Fixer]) -> list[str]:
    return [f.name for f in fixers]


def diagnose_log(
    log_path: Path, *, fixers: Sequence[Fixer], repo_dir: Path | None = None
) -> LocalResult:
    """Distil and classify one job log; nothing is changed."""
    repo: RepoFiles = WorktreeFiles(repo_dir) if repo_dir else NoFiles()
    if repo_dir is not None:
        # Diagnosis only: an invalid config does not stop it.
        with contextlib.suppress(ConfigError):
            fixers = [*fixers, *repo_fixers(_repo_config(repo_dir, fixers))]
    diagnoses = _diagnose(log_path, fixers=fixers, repo=repo)
    plan = plan_repair(
        diagnoses,
        state=FRESH_EPISODE,
        config=RepoConfig(),
        is_agent_pr=True,
        llm=LlmGate(True),
        order=_order(fixers),
    )
    outcome = outcome_for(diagnoses, plan, budget=FRESH_EPISODE.budget())
    if plan.step is Step.FIX:
        # Diagnosis only: report what the ladder would do, not a fix that did not happen.
        repairs = [name for name, _ in plan.fixers] + (["LLM repair"] if plan.use_agent else [])
        outcome = outcome.model_copy(
            update={
                "outcome": OutcomeKind.NOOP,
                "title": f"Fixable: {', '.join(dict.fromkeys(repairs)) or 'LLM repair'}",
                "detail": " ".join(dict.fromkeys(d.classification.reason for d in diagnoses)),
                "next_action": NextAction.FIX_LOCALLY,
            }
        )
    elif plan.step is Step.RERUN:
        outcome = outcome.model_copy(
            update={
                "title": "Infrastructure failure: re-run the failed jobs",
                "next_action": NextAction.RERUN,
            }
        )
    return LocalResult(outcome=outcome, logs=tuple(d.log for d in diagnoses), plan=plan)


def _repo_config(repo_dir: Path, fixers: Sequence[Fixer]) -> RepoConfig:
    path = repo_dir / ".github" / "shepherd.yml"
    text = path.read_text(encoding="utf-8") if path.is_file() else None
    result = load_config(text, known_fixers=[f.name for f in fixers] + ["agent", COMMAND_FIXER])
    if not result.ok:
        problem = result.problems[0]
        where = f"line {problem.line}: " if problem.line else ""
        raise ConfigError(f".github/shepherd.yml: {where}{problem.message}")
    return result.config


def read_workflows(root: Path) -> dict[str, str]:
    """The checkout's own workflow files (``shepherd fix`` has no base branch to read)."""
    directory = root / ".github" / "workflows"
    files: dict[str, str] = {}
    if not directory.is_dir():
        return files
    for path in sorted(directory.iterdir()):
        if path.suffix in (".yml", ".yaml") and path.is_file() and not path.is_symlink():
            files[f".github/workflows/{path.name}"] = path.read_text(errors="replace")[:512_000]
    return files


def _load_local(
    repo_dir: Path, log_path: Path, fixers: Sequence[Fixer], home: Path
) -> tuple[Worktree, RepoConfig, list[Diagnosis]]:
    repo_dir = repo_dir.resolve()
    if not (repo_dir / ".git").exists():
        raise ConfigError(f"{repo_dir} is not a git checkout")
    try:
        # Recorded now, before any code from the checkout runs; every later git command uses
        # this record, never the tree's .git again.
        wt = local_worktree(repo_dir, home)
    except WorkspaceError as exc:
        raise ConfigError(f"{repo_dir}: {exc}") from exc
    config = _repo_config(repo_dir, fixers)
    fixers = [*fixers, *repo_fixers(config)]
    return wt, config, _diagnose(log_path, fixers=fixers, repo=WorktreeFiles(repo_dir))


async def fix_repo(
    repo_dir: Path,
    log_path: Path,
    *,
    fixers: Sequence[Fixer],
    runner: Runner,
    agent: Fixer | None,
    llm_skip_reason: str = "",
    environments: EnvironmentsFactory | None = None,
) -> LocalResult:
    """Run the repair ladder on ``repo_dir``; a verified fix is left in the working tree.

    With ``environments``, the failed job is rebuilt from ``repo_dir``'s own
    ``.github/workflows/`` (there is no base branch locally) to reproduce and verify in."""
    with tempfile.TemporaryDirectory(prefix="shepherd-home-") as home:
        return await _fix_repo(
            repo_dir,
            log_path,
            Path(home),
            fixers=fixers,
            runner=runner,
            agent=agent,
            llm_skip_reason=llm_skip_reason,
            environments=environments,
        )


async def _fix_repo(
    repo_dir: Path,
    log_path: Path,
    home: Path,
    *,
    fixers: Sequence[Fixer],
    runner: Runner,
    agent: Fixer | None,
    llm_skip_reason: str,
    environments: EnvironmentsFactory | None,
) -> LocalResult:
    wt, config, diagnoses = await asyncio.to_thread(_load_local, repo_dir, log_path, fixers, home)
    # The repository's declared fix commands; every file counts as changed here (a checkout has
    # no pull request: ``autofix.scope`` applies on the server).
    fixers = [*fixers, *repo_fixers(config)]
    workflows = await asyncio.to_thread(read_workflows, wt.path)
    diagnoses, jobs = locate_jobs(diagnoses, workflows)
    logs = tuple(d.log for d in diagnoses)
    gate = LlmGate(agent is not None, llm_skip_reason or "no ANTHROPIC_API_KEY configured")
    plan = _plan(diagnoses, config, fixers, gate)
    budget = FRESH_EPISODE.budget()
    if plan.step is not Step.FIX:
        return LocalResult(outcome_for(diagnoses, plan, budget=budget), logs, plan)
    built = environments.for_runner(runner) if environments else None
    try:
        async with job_environments(
            built, wt, jobs, key=f"local-{uuid.uuid4().hex[:12]}", name=wt.path.name
        ) as prepared:
            repair = await repair_tree(
                wt,
                diagnoses,
                plan,
                fixers=fixers,
                runner=runner,
                config=config,
                agent=agent,
                prepared=prepared,
                repository=wt.path.name,
            )
    finally:
        if built is not None:
            await built.aclose()
    budget = FRESH_EPISODE.budget(llm_used_now=1 if repair.agent_result else 0)
    outcome = outcome_for(diagnoses, plan, budget=budget, repair=repair, pushed="working tree")
    return LocalResult(outcome=_in_working_tree(outcome), logs=logs, plan=plan)


def _plan(
    diagnoses: Sequence[Diagnosis], config: RepoConfig, fixers: Sequence[Fixer], gate: LlmGate
) -> Plan:
    """The repair plan for a checkout: a fresh episode, treated as an agent's pull request."""
    return plan_repair(
        diagnoses,
        state=FRESH_EPISODE,
        config=config,
        is_agent_pr=True,
        llm=gate,
        order=_order(fixers),
    )


def _in_working_tree(outcome: Outcome) -> Outcome:
    """A verified fix is left uncommitted: the reader reviews and commits it."""
    if outcome.outcome is not OutcomeKind.FIXED:
        return outcome
    return outcome.model_copy(
        update={
            "title": "Fixed in the working tree",
            "detail": "Verified; review and commit the change.",
            "next_action": NextAction.REVIEW,
            "commit": None,
        }
    )
