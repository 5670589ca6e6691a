"""Time from webhook to verified push on a mid-size real repository, warm mirror vs fresh clone.

The repository is the installed ``anthropic`` SDK's source (its ~300 modules outside ``types/``,
about 5 MB), committed to a bare git remote with a workflow that runs ``ruff check .``. Each run
opens a PR that adds unused imports to a few modules, produces the job log by really running
ruff on the PR tree, and delivers the signed ``workflow_job`` failure to the real server; the
clock stops when the worker has pushed the verified fix (the GitHub simulator moved the branch).
"Fresh" deletes the mirror clone before every job, "warm" keeps it, as production does.

Also prints, for every scenario in ../shared/scenarios, raw log bytes vs distilled bytes.

Run: ``.venv/bin/python bench/repair.py [--runs 5]`` (``make bench``). Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from bot.app.web import METRICS, STORE, create_app  # noqa: E402
from bot.app.worker import WorkerPool  # noqa: E402
from bot.diagnosis.logs import distill  # noqa: E402
from bot.kernel.settings import Settings  # noqa: E402
from tests.conftest import SHARED, WEBHOOK_SECRET, load_payload, webhook_headers  # noqa: E402
from tests.ghsim import GitHubSim, commit_files, init_bare_repo, start_simulator  # noqa: E402

PACKAGE = "anthropic"
INJECTED = "\nimport json\nimport textwrap\n"
WORKFLOW = "name: CI\non: pull_request\njobs:\n  lint:\n    steps:\n      - run: ruff check .\n"
PYPROJECT = (
    '[project]\nname = "sdk"\nversion = "0"\n\n[tool.ruff]\nline-length = 100\n\n'
    '[tool.ruff.lint]\nselect = ["F401"]\n\n[tool.ruff.lint.per-file-ignores]\n'
    '"__init__.py" = ["F401"]\n'
)
RUFF = str(Path(sys.executable).parent / "ruff")


def project_files() -> dict[str, str]:
    source = Path(__import__(PACKAGE).__file__).parent  # type: ignore[arg-type]
    files = {
        f"src/{PACKAGE}/{p.relative_to(source)}": p.read_text(encoding="utf-8")
        for p in sorted(source.rglob("*.py"))
        if "types" not in p.relative_to(source).parts
    }
    files["pyproject.toml"] = PYPROJECT
    files[".github/workflows/ci.yml"] = WORKFLOW
    return files


def clean_baseline(files: dict[str, str], work: Path) -> dict[str, str]:
    """The upstream code with the bench's lint rule already satisfied."""
    tree = work / "baseline"
    for path, text in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
    subprocess.run([RUFF, "check", "--fix", "--unsafe-fixes", "-q", "."], cwd=tree, check=False)
    return {path: (tree / path).read_text() for path in files}


def actions_log(output: str, command: str) -> str:
    """The ruff output wrapped as GitHub Actions writes a failed step's log."""
    stamp = "2026-11-22T02:00:00.0000000Z "
    lines = [f"##[group]Run {command}", command, "shell: /usr/bin/bash -e {0}", "##[endgroup]"]
    lines += output.splitlines()
    lines.append("##[error]Process completed with exit code 1.")
    return "\ufeff" + "".join(stamp + line + "\n" for line in lines)


class Bench:
    def __init__(
        self,
        sim: GitHubSim,
        client: TestClient[Any, Any],
        pool: WorkerPool,
        bare: Path,
        base: dict[str, str],
        base_sha: str,
        work: Path,
    ) -> None:
        self.sim, self.client, self.pool, self.bare = sim, client, pool, bare
        self.base, self.base_sha, self.work = base, base_sha, work
        self.repo = sim.repos["acme/sdk"]
        self.number = 0

    async def one_repair(self, *, fresh: bool) -> float:
        self.number += 1
        n = self.number
        modules = sorted(p for p in self.base if p.endswith(".py") and "__init__" not in p)
        changed = {p: self.base[p] + INJECTED for p in modules[n * 7 % len(modules) :][:5]}
        branch = f"pr-{n}"
        head = commit_files(self.bare, branch, changed, f"PR {n}")
        subprocess.run(
            ["git", "update-ref", f"refs/pull/{n}/head", head], cwd=self.bare, check=True
        )
        self.sim.add_pull(
            self.repo, head_ref=branch, head_sha=head, base_sha=self.base_sha, number=n
        )
        tree = self.work / f"pr-{n}"
        subprocess.run(["git", "clone", "-q", "-b", branch, str(self.bare), str(tree)], check=True)
        ruff = subprocess.run(
            [RUFF, "check", "."], cwd=tree, capture_output=True, text=True, check=False
        )
        run = self.sim.add_run(
            self.repo, head_sha=head, jobs=[("lint", actions_log(ruff.stdout, "ruff check ."))]
        )
        job = run.jobs[0]
        self.sim.check_runs[job.id] = {
            "id": job.id,
            "head_sha": head,
            "name": "lint",
            "status": "completed",
            "conclusion": "failure",
            "output": {"title": None, "summary": None},
            "app": {"id": 15368, "slug": "github-actions"},
            "_repo": "acme/sdk",
        }
        payload = load_payload("workflow_job", "completed.failure.with-organization.payload.json")
        payload["installation"] = {"id": 1}
        payload["repository"].update(
            {"full_name": "acme/sdk", "name": "sdk", "clone_url": self.repo.clone_url}
        )
        payload["workflow_job"].update(
            {
                "id": job.id,
                "run_id": run.id,
                "run_attempt": 1,
                "head_sha": head,
                "conclusion": "failure",
            }
        )
        if fresh:
            shutil.rmtree(self.pool.deps.workspaces.root / "mirrors", ignore_errors=True)
        body = json.dumps(payload).encode()
        started = time.perf_counter()
        response = await self.client.post(
            "/webhook", data=body, headers=webhook_headers("workflow_job", body)
        )
        assert response.status == 202
        while await self.pool.run_once("bench"):
            pass
        elapsed = time.perf_counter() - started
        pushed = subprocess.run(
            ["git", "rev-parse", f"refs/heads/{branch}"],
            cwd=self.bare,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if pushed == head:
            sys.exit(f"bench: PR {n} was not fixed; see the worker log")
        return elapsed


async def repair_times(runs: int) -> tuple[list[float], list[float], int]:
    work = Path(tempfile.mkdtemp(prefix="shepherd-bench-repair-"))
    sim, base_url = await start_simulator()
    files = clean_baseline(project_files(), work)
    bare, base_sha = init_bare_repo(work / "remote" / "sdk.git", files)
    sim.add_repo("acme", "sdk", git_dir=bare)
    settings = Settings(
        data_dir=work / "data",
        github_webhook_secret=WEBHOOK_SECRET,
        workers=0,
        repair_debounce_seconds=0,
        settle_timeout_seconds=0,
        log_format="text",
        log_level="WARNING",
        github_app_id=sim.app_id,
        github_private_key=sim.private_key_pem,
        github_api_url=base_url,
    )
    app = create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    pool = WorkerPool(store=app[STORE], settings=settings, metrics=app[METRICS], count=0)
    bench = Bench(sim, client, pool, bare, files, base_sha, work)
    try:
        await bench.one_repair(fresh=True)  # warm-up: imports, first clone, tool caches
        fresh = [await bench.one_repair(fresh=True) for _ in range(runs)]
        warm = [await bench.one_repair(fresh=False) for _ in range(runs)]
    finally:
        await pool.stop()
        await client.close()
        await sim.close()
        shutil.rmtree(work, ignore_errors=True)
    return fresh, warm, sum(1 for p in files if p.endswith(".py"))


def distillation() -> None:
    print(f"\n{'scenario':34} {'raw bytes':>10} {'distilled':>10} {'smaller':>8}")
    total_raw = total_distilled = 0
    for case in sorted((SHARED / "scenarios" / "cases").iterdir()):
        log = distill((case / "job.log").read_bytes())
        total_raw += log.raw_bytes
        total_distilled += log.distilled_bytes
        print(
            f"{case.name:34} {log.raw_bytes:>10} {log.distilled_bytes:>10} "
            f"{1 - log.distilled_bytes / log.raw_bytes:>8.1%}"
        )
    print(
        f"{'all':34} {total_raw:>10} {total_distilled:>10} {1 - total_distilled / total_raw:>8.1%}"
        "   (goal >= 95% smaller)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    fresh, warm, modules = asyncio.run(repair_times(args.runs))
    print(f"\nwebhook → verified push, {PACKAGE} source ({modules} modules), {args.runs} runs each")
    print(f"{'mirror':8} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, times in (("fresh", fresh), ("warm", warm)):
        print(f"{name:8} {statistics.median(times):>9.2f} {min(times):>7.2f} {max(times):>7.2f}")
    ratio = statistics.median(fresh) / statistics.median(warm)
    print(f"fresh/warm: {ratio:.2f}x   goal: warm median < 3 s")
    distillation()


if __name__ == "__main__":
    main()
