"""Seconds to ready for a job environment, cold and from the warm pool, per kind of repository.

Run: ``.venv/bin/python bench/env.py [--warm N]``. For each repository kind (the cases of
``tests/test_jobenv_e2e.py``: a Python package installed with ``pip install -e``, one with
``requirements.txt`` and a postgres service, a Node package with ``npm ci``, one with pnpm):

- *cold*: the first preparation on an empty warm pool (virtualenv, install steps replayed with
  the registries' network, products moved out, the pool filled);
- *warm*: later preparations of the same job on a fresh worktree (the pool's copy shared in),
  repeated N times: median and range;
- *ratio*: cold over warm median. Goal: warm under 2 s (median) and at least 5x faster than cold.

Seconds to ready is what ``environment.seconds_to_ready`` reports (services are started per
command, so the first command's service start is printed beside, from the failing command's
first run). Prints, never asserts; the machine's load average comes first, since a busy machine
moves every column.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.jobenv.environment import EnvironmentsFactory
from bot.jobenv.workflow import find_job
from bot.repair.blueprint import job_environments
from bot.sandbox import BubblewrapSandbox
from fixers.tools import bundled_tool_dirs
from tests.fixer_support import checkout_of
from tests.test_git_traps import make_repo
from tests.test_jobenv_e2e import CASES, Case

KINDS = ("pip-editable", "requirements-postgres", "npm-ci", "pnpm")


async def prepare(case: Case, root: Path, factory: EnvironmentsFactory, n: int) -> float:
    """Prepare the case's job on a fresh checkout; seconds to ready (and one command run)."""
    repo = make_repo(root / f"repo-{n}", case.files)
    workflow = ".github/workflows/ci.yml"
    job = find_job(
        {workflow: case.files[workflow]}, job_name=case.job, failing_command=case.command
    )
    assert job is not None, case.job
    sandbox = BubblewrapSandbox(tool_dirs=bundled_tool_dirs())
    environments = factory.for_runner(sandbox)
    assert environments is not None
    try:
        async with job_environments(
            environments, checkout_of(repo), {case.job: job}, key=f"bench-{n}", name="bench"
        ) as ready:
            if ready.failure is not None:
                raise SystemExit(f"{case.job}: {ready.failure}")
            [record] = ready.records
            return record.seconds_to_ready
    finally:
        await environments.aclose()


async def main(warm_runs: int) -> None:
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'kind':24} {'cold s':>8} {'warm s (median, min-max)':>28} {'ratio':>7}")
    for kind in KINDS:
        case = CASES[kind]
        with tempfile.TemporaryDirectory(prefix="bench-env-") as tmp:
            root = Path(tmp)
            factory = EnvironmentsFactory(root / "jobenv", pool=root / "pool")
            started = time.monotonic()
            cold = await prepare(case, root, factory, 0)
            warm = [await prepare(case, root, factory, n) for n in range(1, warm_runs + 1)]
            median = statistics.median(warm)
            print(
                f"{kind:24} {cold:8.2f} "
                f"{f'{median:.2f} ({min(warm):.2f}-{max(warm):.2f})':>28} "
                f"{cold / median:6.1f}x"
                f"   ({time.monotonic() - started:.0f} s in all)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=5, help="warm preparations per kind")
    asyncio.run(main(parser.parse_args().warm))
