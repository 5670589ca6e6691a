"""Pre-building the warm pool for a base branch when a pull request opens.

The first failure of a PR should not wait for its job's install steps: when a PR opens, Shepherd
checks out its base commit and prepares the environment of each job of the base branch's
workflows up to the job's last ``run:`` step (where test jobs fail), filling the warm pool. A
failure there then starts warm. Only jobs with something to set up are built, at most
``MAX_JOBS`` of them; a job that cannot be built is skipped (the repair will say why if it fails
there). ``candidates`` is pure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from bot.git.workspace import Worktree, tracked_files
from bot.jobenv.environment import JobEnvironments
from bot.jobenv.workflow import WorkflowJob, find_job, parse_workflow
from bot.kernel.errors import ShepherdError

log = logging.getLogger(__name__)

MAX_JOBS = 6


@dataclass(frozen=True)
class Candidate:
    name: str
    job: WorkflowJob


def candidates(files: Mapping[str, str], *, limit: int = MAX_JOBS) -> list[Candidate]:
    """The jobs worth preparing: each job's last ``run:`` step is taken as the failing one, and
    the job is kept when a step before it installs or sets something up."""
    found: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    for path, text in sorted(files.items()):
        if not path.endswith((".yml", ".yaml")):
            continue
        document = parse_workflow(text)
        jobs = document.get("jobs") if document else None
        if not isinstance(jobs, dict):
            continue
        for job_id, body in jobs.items():
            if isinstance(body, dict) and isinstance(body.get("strategy"), dict):
                # A matrix job fails in one combination, which names it; which one is not
                # known before it fails, so nothing is built ahead for it.
                continue
            steps = body.get("steps") if isinstance(body, dict) else None
            runs = [
                s["run"]
                for s in steps or []
                if isinstance(s, dict) and isinstance(s.get("run"), str)
            ]
            if len(runs) < 2 and not any(
                isinstance(s, dict) and s.get("uses") for s in steps or []
            ):
                continue  # nothing before the check to set up
            job = find_job({path: text}, job_name=None, failing_command=runs[-1] if runs else None)
            if job is None or job.failing_step is None or not job.replayable_steps:
                continue
            key = (job.workflow, job.name)
            if key in seen:
                continue
            seen.add(key)
            found.append(Candidate(f"{job.name} ({job_id})", job))
            if len(found) >= limit:
                return found
    return found


async def prewarm(
    environments: JobEnvironments, wt: Worktree, files: Mapping[str, str], *, key: str, name: str
) -> list[dict[str, object]]:
    """Prepare each candidate job of the workflow ``files`` on the base commit ``wt``; returns
    what happened to each (``cache``: ``hit`` already pooled, ``cold`` built now)."""
    tracked = await asyncio.to_thread(tracked_files, wt)
    done: list[dict[str, object]] = []
    for n, candidate in enumerate(candidates(files)):
        try:
            async with environments.open(
                wt, candidate.job, key=f"{key}-{n}", name=name, tracked=tracked
            ) as environment:
                record = environment.record
            done.append(
                {"job": candidate.name, "cache": record.cache, "seconds": record.seconds_to_ready}
            )
        except ShepherdError as exc:
            log.info("prewarm: %s not prepared: %s", candidate.name, exc)
            done.append({"job": candidate.name, "error": str(exc)[:300]})
    return done
