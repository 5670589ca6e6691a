"""The baseline for bench/ingest.py: a bare aiohttp + gidgethub webhook receiver.

It does what every gidgethub bot does on a request, and nothing more: verify the signature and
parse the body (``sansio.Event.from_http``), route through a ``Router`` to handlers that do
nothing, answer 202. It stores nothing, so it loses every delivery a crash catches in flight;
Shepherd's ingest is measured against it.

Run: ``.venv/bin/python bench/bare_receiver.py --port 8090 --secret S``.
"""

from __future__ import annotations

import argparse

from aiohttp import web
from gidgethub import BadRequest, ValidationFailure, routing, sansio

router = routing.Router()


@router.register("check_run")
@router.register("pull_request")
async def ignore(event: sansio.Event) -> None:
    """Handlers exist, so routing does real work; they do nothing, like Probot's hello world."""


def create_app(secret: str) -> web.Application:
    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = sansio.Event.from_http(request.headers, body, secret=secret)
        except ValidationFailure:
            return web.Response(status=401)
        except BadRequest as exc:
            return web.Response(status=int(exc.status_code))
        await router.dispatch(event)
        return web.json_response({"delivery": event.delivery_id}, status=202)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=25 * 1024 * 1024)
    app.router.add_post("/webhook", webhook)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    web.run_app(
        create_app(args.secret), host=args.host, port=args.port, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
