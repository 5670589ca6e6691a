"""App installations: forget the mirror clones of repositories the App lost access to."""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.github.webhooks import InstallationEvent, InstallationRepositoriesEvent
from bot.kernel.target import ForgetReposRequest
from handlers.context import HandlerContext

router = routing.Router()


def _forget(ctx: HandlerContext, installation_id: int, repos: list[str]) -> None:
    if repos:
        ctx.enqueue(
            ForgetReposRequest(repos=tuple(sorted(repos))),
            f"forget:{installation_id}/{ctx.delivery_id}",
        )


@router.register("installation", action="deleted")
async def uninstalled(event: sansio.Event, ctx: HandlerContext) -> None:
    payload = InstallationEvent.model_validate(event.data)
    _forget(ctx, payload.installation.id, [r.full_name for r in payload.repositories or []])


@router.register("installation_repositories", action="removed")
async def repositories_removed(event: sansio.Event, ctx: HandlerContext) -> None:
    payload = InstallationRepositoriesEvent.model_validate(event.data)
    _forget(ctx, payload.installation.id, [r.full_name for r in payload.repositories_removed])
