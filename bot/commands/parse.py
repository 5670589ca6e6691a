"""Prow-style PR comment commands: the parser, help and check-run buttons.

``COMMANDS`` (the specs of the verb registry, ``bot.commands.verbs``) is the single source of
truth: the parser recognises exactly its verbs, ``render_help`` renders it, and the check-run
buttons are derived from it, so help text cannot drift from what the bot accepts. Pure: no I/O.

A command is one line of a comment, at the start of the line (leading whitespace allowed),
case-insensitive: ``/shepherd <verb> [args...]`` or ``@<app-slug> <verb> [args...]``. Lines in
fenced code blocks, quoted replies and HTML comments are not commands: people quote and paste
commands when they talk about them, and only typed commands should run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from bot.commands.spec import COMMAND_PREFIX, CommandSpec
from bot.commands.verbs import VERBS
from bot.reporting.summary import Button

__all__ = [
    "BUTTON_PREFIX",
    "COMMANDS",
    "COMMAND_PREFIX",
    "MAX_BUTTON_DESCRIPTION",
    "MAX_BUTTON_IDENTIFIER",
    "MAX_BUTTON_LABEL",
    "MAX_COMMANDS",
    "MAX_LINE_LENGTH",
    "Command",
    "CommandSpec",
    "button_action",
    "button_identifier",
    "check_run_button",
    "is_actionable_comment",
    "parse_button",
    "parse_commands",
    "render_help",
    "spec_for",
]

#: Hostile input bound: a comment yields at most this many commands; the rest are dropped.
MAX_COMMANDS = 10
#: Lines longer than this are never commands (and are not even matched).
MAX_LINE_LENGTH = 1000

# GitHub's limits for check run ``actions[]`` (label, identifier, description):
# https://docs.github.com/en/rest/checks/runs#create-a-check-run
MAX_BUTTON_LABEL = 20
MAX_BUTTON_IDENTIFIER = 20
MAX_BUTTON_DESCRIPTION = 40
BUTTON_PREFIX = "shepherd:"


#: In help's order; ``spec_for`` and the buttons read it.
COMMANDS: tuple[CommandSpec, ...] = tuple(verb.spec for verb in VERBS)
#: What ``/shepherd`` alone means.
BARE_VERB = "help"


@dataclass(frozen=True, slots=True)
class Command:
    """A command found in a comment.

    ``verb`` is lower-cased; ``known`` is False for verbs not in ``COMMANDS`` so the caller can
    answer "unknown command". ``line`` is the 1-based line number in the comment.
    """

    verb: str
    args: tuple[str, ...]
    line: int
    known: bool


def spec_for(verb: str) -> CommandSpec | None:
    """The spec of ``verb`` (case-insensitive), or None when it is not a Shepherd verb."""
    wanted = verb.lower()
    for spec in COMMANDS:
        if spec.verb == wanted:
            return spec
    return None


# Markdown only knows these line breaks; str.splitlines would also split on \x0b, \x1c, \u2028 ...
# and so see "lines" that GitHub renders as one.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# A code fence opener: 3+ backticks or tildes, any indentation (fences inside list items are
# indented), then an info string. https://spec.commonmark.org/0.31.2/#fenced-code-blocks
_FENCE_OPEN = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_QUOTE = re.compile(r"^[ \t]*>")
_HTML_COMMENT_OPEN = "<!--"
_HTML_COMMENT_CLOSE = "-->"


def _command_pattern(app_slug: str) -> re.Pattern[str]:
    prefixes = [re.escape(COMMAND_PREFIX)]
    if app_slug:
        prefixes.append("@" + re.escape(app_slug))
    # The prefix must end at whitespace or end of line: "/shepherdfix" and "/shepherds" are not
    # commands, nor is "@shepherd-bot-two" for the slug "shepherd-bot".
    return re.compile(
        r"^[ \t]*(?:" + "|".join(prefixes) + r")(?:[ \t]+(?P<rest>.*))?$",
        re.IGNORECASE,
    )


def _is_fence_close(line: str, fence: str) -> bool:
    stripped = line.strip(" \t")
    char = fence[0]
    return len(stripped) >= len(fence) and stripped == char * len(stripped)


def _command_lines(body: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based number, text) of the lines outside code fences, quotes and HTML comments."""
    fence: str | None = None
    in_html_comment = False
    for number, line in enumerate(_LINE_BREAK.split(body), start=1):
        if fence is not None:
            if _is_fence_close(line, fence):
                fence = None
            continue
        if in_html_comment:
            if _HTML_COMMENT_CLOSE in line:
                in_html_comment = False
            continue
        # The start-of-line anchor already rules out quoted commands; skipping quoted lines here
        # also keeps a quoted fence or HTML comment from hiding the reply below it. A line right
        # after a quote (markdown's "lazy continuation") is treated as the reply, as people mean it.
        if _QUOTE.match(line):
            continue
        opener = _FENCE_OPEN.match(line)
        # A backtick "fence" whose info string has a backtick is an inline code span instead.
        if opener and not (opener["fence"][0] == "`" and "`" in opener["info"]):
            fence = opener["fence"]
            continue
        stripped = line.lstrip(" \t")
        if stripped.startswith(_HTML_COMMENT_OPEN):
            in_html_comment = _HTML_COMMENT_CLOSE not in stripped[len(_HTML_COMMENT_OPEN) :]
            continue
        yield number, line


def parse_commands(body: str, *, app_slug: str) -> list[Command]:
    """Find the commands in a comment body, in order, at most ``MAX_COMMANDS``.

    ``/shepherd`` (or the bare mention) alone means ``help``. Text after the verb becomes
    ``args``, split on whitespace.
    """
    pattern = _command_pattern(app_slug)
    commands: list[Command] = []
    for number, line in _command_lines(body):
        if len(line) > MAX_LINE_LENGTH:
            continue
        match = pattern.match(line)
        if match is None:
            continue
        words = (match["rest"] or "").split()
        verb = words[0].lower() if words else BARE_VERB
        commands.append(
            Command(
                verb=verb,
                args=tuple(words[1:]),
                line=number,
                known=spec_for(verb) is not None,
            )
        )
        if len(commands) == MAX_COMMANDS:
            break
    return commands


def _table_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_help(app_slug: str) -> str:
    """Markdown help for all commands, generated from ``COMMANDS``."""
    lines = [
        f"Write one command per line in a pull request comment, as `{COMMAND_PREFIX} <command>`"
        f" or `@{app_slug} <command>`. Several commands run in order.",
        "",
        "| command | who may run it | what it does |",
        "|---|---|---|",
    ]
    for spec in COMMANDS:
        who = "people with write access or above" if spec.needs_write else "anyone"
        lines.append(f"| `{COMMAND_PREFIX} {spec.verb}` | {who} | {_table_cell(spec.help)} |")
    return "\n".join(lines) + "\n"


def is_actionable_comment(
    action: str,
    is_pull_request: bool,
    author_type: str,
    author_login: str,
    bot_login: str,
) -> bool:
    """Whether an ``issue_comment`` delivery may carry commands for the bot.

    Only newly created comments on pull requests count: edits would re-run commands. Comments by
    the bot itself or by any other bot account are ignored, so bots cannot drive each other in a
    loop.
    """
    if action != "created" or not is_pull_request:
        return False
    if author_type == "Bot":
        return False
    # Logins are case-insensitive on GitHub.
    return author_login.casefold() != bot_login.casefold()


def button_identifier(verb: str) -> str:
    """The check-run ``requested_action`` identifier of a verb that has a button."""
    spec = spec_for(verb)
    if spec is None or spec.button_label is None:
        raise ValueError(f"{verb!r} has no check-run button")
    identifier = BUTTON_PREFIX + spec.verb
    if len(identifier) > MAX_BUTTON_IDENTIFIER:
        raise ValueError(f"button identifier {identifier!r} exceeds GitHub's limit")
    return identifier


def parse_button(identifier: str) -> str | None:
    """The verb of a Shepherd button identifier; None for anything else (other Apps, stale)."""
    if len(identifier) > MAX_BUTTON_IDENTIFIER or not identifier.startswith(BUTTON_PREFIX):
        return None
    spec = spec_for(identifier.removeprefix(BUTTON_PREFIX))
    if spec is None or spec.button_label is None or BUTTON_PREFIX + spec.verb != identifier:
        return None
    return spec.verb


def check_run_button(verb: str) -> Button:
    """``verb`` as a check-run button, for the repair's report (which cannot import commands)."""
    action = button_action(verb)
    return Button(action["label"], action["description"], action["identifier"])


def button_action(verb: str) -> dict[str, str]:
    """The ``actions[]`` item for a check run (label, description, identifier) of ``verb``."""
    spec = spec_for(verb)
    if spec is None or spec.button_label is None:
        raise ValueError(f"{verb!r} has no check-run button")
    description = spec.button_description or spec.button_label
    if len(spec.button_label) > MAX_BUTTON_LABEL or len(description) > MAX_BUTTON_DESCRIPTION:
        raise ValueError(f"button text of {verb!r} exceeds GitHub's limits")
    return {
        "label": spec.button_label,
        "description": description,
        "identifier": button_identifier(verb),
    }
