"""``/shepherd <verb>`` in PR comments, and the same verbs as ``shepherd`` check-run buttons.

The handler only parses and enqueues: authorization needs the collaborator-permission API, and
every API call happens in the command job. The job key is the comment id (or the delivery for a
button), so a redelivered comment is acted on once.
"""

from __future__ import annotations

from gidgethub import routing, sansio

from bot.commands.job import CommandRequest, RequestedCommand
from bot.commands.parse import is_actionable_comment, parse_button, parse_commands
from bot.github.webhooks import CheckRunEvent, IssueCommentEvent
from bot.store.episodes import EventKind
from handlers.context import HandlerContext

router = routing.Router()


@router.register("issue_comment", action="created")
async def comment_created(event: sansio.Event, ctx: HandlerContext) -> None:
    payload = IssueCommentEvent.model_validate(event.data)
    comment, issue = payload.comment, payload.issue
    if payload.installation is None or not is_actionable_comment(
        payload.action,
        issue.is_pull_request,
        comment.user.type,
        comment.user.login,
        ctx.bot_login,
    ):
        return
    commands = parse_commands(comment.body, app_slug=ctx.app_slug)
    if not commands:
        return
    repo = payload.repository.full_name
    request = CommandRequest(
        installation=payload.installation.id,
        owner=payload.repository.owner.login,
        repo=payload.repository.name,
        clone_url=payload.repository.clone_url,
        private=payload.repository.private,
        pr=issue.number,
        comment_id=comment.id,
        actor=comment.user.login,
        commands=tuple(RequestedCommand(verb=c.verb, args=c.args, known=c.known) for c in commands),
        source="comment",
    )
    ctx.enqueue(
        request,
        f"command:{repo}#{issue.number}/c{comment.id}",
        concurrency_key=f"{repo}#{issue.number}",
    )
    ctx.record(
        repo,
        issue.number,
        EventKind.COMMAND_RECEIVED,
        actor=comment.user.login,
        verbs=[c.verb[:40] for c in commands],
        comment_id=comment.id,
    )


@router.register("check_run", action="requested_action")
async def button_clicked(event: sansio.Event, ctx: HandlerContext) -> None:
    payload = CheckRunEvent.model_validate(event.data)
    run = payload.check_run
    if payload.installation is None or payload.requested_action is None:
        return
    if run.name != "shepherd":
        return
    verb = parse_button(payload.requested_action.identifier)
    if verb is None:
        return
    prs = [pr.number for pr in run.pull_requests]
    if not prs:
        return
    repo = payload.repository.full_name
    request = CommandRequest(
        installation=payload.installation.id,
        owner=payload.repository.owner.login,
        repo=payload.repository.name,
        clone_url=payload.repository.clone_url,
        private=payload.repository.private,
        pr=prs[0],
        comment_id=None,
        actor=payload.sender.login,
        commands=(RequestedCommand(verb=verb, known=True),),
        source="button",
    )
    ctx.enqueue(
        request, f"button:{repo}#{prs[0]}/{ctx.delivery_id}", concurrency_key=f"{repo}#{prs[0]}"
    )
