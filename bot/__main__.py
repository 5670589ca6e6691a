"""The ``shepherd`` command: serve, worker, diagnose, fix, replay, doctor."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr

from bot.app.observability import Metrics, setup_logging
from bot.kernel.errors import ConfigError, ShepherdError
from bot.kernel.problems import OutcomeKind
from bot.kernel.settings import Settings, load_settings
from bot.ops.local import LocalResult, diagnose_log, fix_repo
from bot.reporting.summary import render_outcome_markdown
from bot.webui.credentials import DEV_SECRET_FILE, apply_stored_app

log = logging.getLogger("shepherd")

SECRET_FILE = DEV_SECRET_FILE


def _fail(message: str, code: int = 2) -> int:
    print(f"shepherd: {message}", file=sys.stderr)
    return code


def dev_secret(data_dir: Path) -> str:
    """Load the development webhook secret from the data dir, creating it once (mode 0600)."""
    path = data_dir / SECRET_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    path.touch(mode=0o600)
    path.write_text(value + "\n", encoding="utf-8")
    return value


def announce_github_mode(settings: Settings) -> None:
    if not settings.github_enabled:
        log.warning(
            "GitHub writes are disabled until a GitHub App is configured: register one from the "
            "setup page of `shepherd serve`, or set GITHUB_APP_ID and GITHUB_PRIVATE_KEY (or "
            "GITHUB_PRIVATE_KEY_PATH); webhooks are still verified and stored"
        )


def local_url(host: str, port: int) -> str:
    """The URL a browser on this machine uses for ``--host``/``--port``."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 (naming the wildcard, not binding it)
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from bot.app.web import create_app

    if settings.public_url is None:
        settings.public_url = local_url(args.host, args.port)
    public = settings.public_url
    if settings.github_webhook_secret is None and args.generate_secret:
        settings.github_webhook_secret = SecretStr(dev_secret(settings.data_dir))
        print(
            f"shepherd: development webhook secret (kept in {settings.data_dir / SECRET_FILE}):\n"
            f"  {settings.github_webhook_secret.get_secret_value()}\n"
            f"shepherd: webhook URL: {public}/webhook",
            flush=True,
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    announce_github_mode(settings)
    setup_token = secrets.token_urlsafe(24)
    app = create_app(settings, workers=args.workers, setup_token=setup_token)
    freeze_startup_heap()
    store_kind = settings.effective_database_url.split(":", 1)[0]

    def started(_: str) -> None:
        # run_app calls this once the socket listens and its SIGTERM handler is installed, so
        # whoever waits for this line may stop the server gracefully from then on.
        log.info("listening on http://%s:%d (%s)", args.host, args.port, store_kind)
        if settings.github_enabled:
            print(f"shepherd: status page: {public}/status", flush=True)
        else:
            # Only whoever reads this output can register the App (the link's token says so).
            print(
                "shepherd: no GitHub App is configured yet; register one here:\n"
                f"  {public}/setup?token={setup_token}",
                flush=True,
            )

    web.run_app(
        app,
        host=args.host,
        port=args.port,
        print=started,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace_seconds,
    )
    return 0


def freeze_startup_heap() -> None:
    """Move everything allocated so far (modules, models, the app) out of the cyclic GC's reach.

    Those objects live as long as the process, yet every full collection would walk them all:
    with the SDKs this process imports that is a pause of tens of milliseconds, which showed up
    as webhook p99 of ~65 ms under load in bench/ingest.py (~10 ms after freezing). See
    https://docs.python.org/3/library/gc.html#gc.freeze
    """
    gc.collect()
    gc.freeze()


async def _run_workers(settings: Settings, count: int) -> None:
    from bot.app.worker import WorkerPool
    from bot.store.connect import open_store

    store = open_store(settings.effective_database_url)
    await store.open()
    pool = WorkerPool(store=store, settings=settings, metrics=Metrics(), count=count)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await pool.start()
    freeze_startup_heap()
    log.info("%d worker(s) running", count)
    try:
        await stop.wait()
        log.info("stopping: finishing in-flight jobs")
    finally:
        await pool.stop()
        await store.close()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    announce_github_mode(settings)
    asyncio.run(_run_workers(settings, args.workers or settings.workers or 1))
    return 0


def _print_result(result: LocalResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(render_outcome_markdown(result.outcome))


def cmd_diagnose(args: argparse.Namespace, settings: Settings) -> int:
    from fixers import FIXERS

    result = diagnose_log(args.log, fixers=FIXERS, repo_dir=args.repo)
    _print_result(result, args.json)
    return 0


def cmd_fix(args: argparse.Namespace, settings: Settings) -> int:
    from bot.jobenv.environment import EnvironmentsFactory
    from bot.llm.factory import make_agent
    from bot.sandbox import make_runner
    from fixers import FIXERS
    from fixers.tools import bundled_tool_dirs

    runner = make_runner(
        allow_unsandboxed=settings.allow_unsandboxed,
        tool_dirs=bundled_tool_dirs(),
        tool_cache=settings.data_dir / "tools",
    )
    agent, why_not = (None, "disabled with --no-agent") if args.no_agent else make_agent(settings)
    result = asyncio.run(
        fix_repo(
            args.repo,
            args.log,
            fixers=FIXERS,
            runner=runner,
            agent=agent,
            llm_skip_reason=why_not,
            environments=EnvironmentsFactory.from_settings(settings),
        )
    )
    _print_result(result, args.json)
    return 0 if result.outcome.outcome in (OutcomeKind.FIXED, OutcomeKind.NOOP) else 1


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from bot.ops.replay import replay

    report = asyncio.run(replay(args.payload, args.event, settings=settings, dry_run=args.dry_run))
    print(report.render())
    return 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from bot.ops.doctor import Status, render, run_checks

    checks = asyncio.run(run_checks(settings))
    print(render(checks))
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


async def _redeliver(settings: Settings, window: str, dry_run: bool) -> str:
    import aiohttp

    from bot.github.client import GitHubApp
    from bot.ops.redeliver import parse_duration, redeliver
    from bot.store.connect import open_store

    if not settings.github_enabled:
        raise ConfigError("redeliver needs GITHUB_APP_ID and the App's private key")
    assert settings.github_app_id is not None
    assert settings.github_private_key is not None
    delta = parse_duration(window)
    store = open_store(settings.effective_database_url)
    await store.open()
    try:
        async with aiohttp.ClientSession() as session:
            app = GitHubApp(
                app_id=settings.github_app_id,
                private_key=settings.github_private_key,
                session=session,
                api_url=settings.github_api_url,
            )
            report = await redeliver(await app.app_client(), store, window=delta, dry_run=dry_run)
    finally:
        await store.close()
    return report.render()


def cmd_redeliver(args: argparse.Namespace, settings: Settings) -> int:
    print(asyncio.run(_redeliver(settings, args.since, args.dry_run)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shepherd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="webhook server with in-process workers")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=None, help="in-process workers")
    serve.add_argument(
        "--generate-secret",
        action="store_true",
        help="development: when GITHUB_WEBHOOK_SECRET is unset, use (and create once) a random "
        "secret kept in the data dir",
    )
    serve.set_defaults(handler=cmd_serve)

    worker = sub.add_parser("worker", help="workers only (scale-out)")
    worker.add_argument("--workers", type=int, default=None)
    worker.set_defaults(handler=cmd_worker)

    diag = sub.add_parser("diagnose", help="distil and classify a raw GitHub Actions job log")
    diag.add_argument("--log", type=Path, required=True, help="raw job log file")
    diag.add_argument("--repo", type=Path, default=None, help="checkout to read files from")
    diag.add_argument("--json", action="store_true", help="print the JSON outcome")
    diag.set_defaults(handler=cmd_diagnose)

    fix = sub.add_parser("fix", help="run the repair ladder on a local checkout")
    fix.add_argument("--repo", type=Path, required=True, help="the git checkout to fix in place")
    fix.add_argument("--log", type=Path, required=True, help="raw job log of the failure")
    fix.add_argument("--no-agent", action="store_true", help="skip the LLM rung")
    fix.add_argument("--json", action="store_true", help="print the JSON outcome")
    fix.set_defaults(handler=cmd_fix)

    rep = sub.add_parser("replay", help="feed a webhook payload through the routers locally")
    rep.add_argument("payload", type=Path, help="the webhook payload (JSON)")
    rep.add_argument("--event", required=True, help="the X-GitHub-Event name, e.g. check_run")
    rep.add_argument(
        "--dry-run",
        action="store_true",
        help="use a throwaway store and print the GitHub writes instead of making them",
    )
    rep.set_defaults(handler=cmd_replay)

    red = sub.add_parser(
        "redeliver", help="ask GitHub to redeliver failed deliveries the store has not seen"
    )
    red.add_argument("--since", required=True, help="how far back to look, e.g. 30m, 6h, 2d")
    red.add_argument("--dry-run", action="store_true", help="list them, ask for nothing")
    red.set_defaults(handler=cmd_redeliver)

    doctor = sub.add_parser("doctor", help="check the configuration end to end")
    doctor.set_defaults(handler=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        setup_logging(settings.log_format, settings.log_level)
        apply_stored_app(settings)
        return int(args.handler(args, settings))
    except ConfigError as exc:
        return _fail(str(exc))
    except ShepherdError as exc:
        return _fail(f"{type(exc).__name__}: {exc}", code=1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `shepherd diagnose --json | head`: the reader left; nothing more to say.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
