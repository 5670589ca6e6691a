"""bot.commands.parse: the parser, the registry-generated help and the check-run buttons."""

from __future__ import annotations

import pytest

from bot.commands.parse import (
    BUTTON_PREFIX,
    COMMANDS,
    MAX_BUTTON_DESCRIPTION,
    MAX_BUTTON_IDENTIFIER,
    MAX_BUTTON_LABEL,
    MAX_COMMANDS,
    MAX_LINE_LENGTH,
    Command,
    button_action,
    button_identifier,
    is_actionable_comment,
    parse_button,
    parse_commands,
    render_help,
    spec_for,
)

SLUG = "shepherd-bot"


def verbs(body: str, slug: str = SLUG) -> list[tuple[str, tuple[str, ...]]]:
    return [(c.verb, c.args) for c in parse_commands(body, app_slug=slug)]


FIX: list[tuple[str, tuple[str, ...]]] = [("fix", ())]

PARSER_CASES: list[tuple[str, str, list[tuple[str, tuple[str, ...]]]]] = [
    ("plain", "/shepherd fix", FIX),
    ("no command", "looks good to me", []),
    ("empty", "", []),
    ("after prose", "CI is red.\n/shepherd fix\nthanks", FIX),
    ("leading spaces", "   /shepherd fix", FIX),
    ("leading tab", "\t/shepherd fix", FIX),
    ("trailing spaces", "/shepherd fix   ", FIX),
    ("spaces between", "/shepherd    fix", FIX),
    ("upper case", "/SHEPHERD FIX", FIX),
    ("mixed case", "/Shepherd Fix", FIX),
    ("args", "/shepherd fix ruff  black", [("fix", ("ruff", "black"))]),
    ("args keep case", "/shepherd explain Lint", [("explain", ("Lint",))]),
    ("bare prefix is help", "/shepherd", [("help", ())]),
    ("bare prefix with spaces", "  /shepherd  ", [("help", ())]),
    ("glued verb", "/shepherdfix", []),
    ("plural", "/shepherds fix", []),
    ("not at line start", "please /shepherd fix", []),
    ("inline code", "run `/shepherd fix` to fix", []),
    ("inline code at start", "`/shepherd fix`", []),
    ("list item", "- /shepherd fix", []),
    ("mention", "@shepherd-bot fix", FIX),
    ("mention case", "@Shepherd-Bot FIX", FIX),
    ("mention alone is help", "@shepherd-bot", [("help", ())]),
    ("wrong mention", "@other-bot fix", []),
    ("longer slug", "@shepherd-bot-two fix", []),
    ("slug prefix", "@shepherd fix", []),
    ("mention glued", "@shepherd-botfix", []),
    ("mention not at start", "hey @shepherd-bot fix", []),
    ("mention with empty slug", "@ fix", []),
    (
        "several in order",
        "/shepherd stop\nsome words\n@shepherd-bot explain lint\n/shepherd resume",
        [("stop", ()), ("explain", ("lint",)), ("resume", ())],
    ),
    ("unknown verb", "/shepherd frobnicate now", [("frobnicate", ("now",))]),
    (
        "windows line endings",
        "hello\r\n/shepherd fix\r\n/shepherd retry\r\n",
        [*FIX, ("retry", ())],
    ),
    ("old mac line endings", "hello\r/shepherd fix\r", FIX),
    # Markdown has only \n, \r\n and \r as line breaks: the other code points splitlines() knows
    # do not start a new rendered line, so they must not start a command either.
    ("unicode line separator", "hello\u2028/shepherd fix", []),
    ("vertical tab", "hello\x0b/shepherd fix", []),
    # Code fences.
    ("backtick fence", "```\n/shepherd fix\n```", []),
    ("after backtick fence", "```\n/shepherd fix\n```\n/shepherd retry", [("retry", ())]),
    ("fence with info", "```bash\n/shepherd fix\n```", []),
    ("tilde fence", "~~~\n/shepherd fix\n~~~\n/shepherd retry", [("retry", ())]),
    ("indented fence", "  ```\n  /shepherd fix\n  ```\n/shepherd retry", [("retry", ())]),
    ("list item fence", "- step\n    ```\n    /shepherd fix\n    ```", []),
    ("unterminated fence", "/shepherd retry\n```\n/shepherd fix\n/shepherd stop", [("retry", ())]),
    ("unterminated tilde fence", "~~~~\n/shepherd fix", []),
    ("tilde does not close backtick", "```\n~~~\n/shepherd fix\n```", []),
    ("backtick does not close tilde", "~~~\n```\n/shepherd fix\n~~~", []),
    (
        "shorter fence does not close",
        "````\n```\n/shepherd fix\n````\n/shepherd retry",
        [("retry", ())],
    ),
    ("longer fence closes", "```\n/shepherd fix\n`````\n/shepherd retry", [("retry", ())]),
    ("closing fence with text is content", "```\n``` x\n/shepherd fix\n```", []),
    ("one-line code span is no fence", "```x``` \n/shepherd fix", FIX),
    # Quoted replies.
    ("quote", "> /shepherd fix", []),
    ("quote no space", ">/shepherd fix", []),
    ("indented quote", "  > /shepherd fix", []),
    ("nested quote", "> > /shepherd fix\n>> /shepherd stop", []),
    ("reply below quote", "> /shepherd fix\n\n/shepherd retry", [("retry", ())]),
    ("line right after quote", "> why is CI red?\n/shepherd explain", [("explain", ())]),
    ("fence inside quote does not swallow", "> ```\n/shepherd retry", [("retry", ())]),
    # HTML comments are invisible in the rendered comment.
    ("html comment block", "<!--\n/shepherd fix\n-->\n/shepherd retry", [("retry", ())]),
    ("one-line html comment", "<!-- note -->\n/shepherd retry", [("retry", ())]),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in PARSER_CASES], ids=[c[0] for c in PARSER_CASES]
)
def test_parse_commands(body: str, expected: list[tuple[str, tuple[str, ...]]]) -> None:
    assert verbs(body) == expected


def test_known_flag_and_line_numbers() -> None:
    body = "intro\r\n/shepherd fix\r\n\r\n/shepherd nope\n@shepherd-bot\n"
    assert parse_commands(body, app_slug=SLUG) == [
        Command(verb="fix", args=(), line=2, known=True),
        Command(verb="nope", args=(), line=4, known=False),
        Command(verb="help", args=(), line=5, known=True),
    ]


def test_every_registered_verb_parses_as_known() -> None:
    for spec in COMMANDS:
        (command,) = parse_commands(f"/shepherd {spec.verb.upper()}", app_slug=SLUG)
        assert command.verb == spec.verb
        assert command.known


def test_mention_with_regex_characters_in_slug() -> None:
    assert verbs("@a.b fix", slug="a.b") == FIX
    assert verbs("@axb fix", slug="a.b") == []


def test_empty_slug_only_accepts_slash_command() -> None:
    assert verbs("/shepherd fix", slug="") == FIX
    assert verbs("@ fix", slug="") == []


def test_at_most_ten_commands() -> None:
    body = "\n".join(f"/shepherd fix {i}" for i in range(50))
    commands = parse_commands(body, app_slug=SLUG)
    assert len(commands) == MAX_COMMANDS == 10
    assert [c.args for c in commands] == [(str(i),) for i in range(10)]


def test_unknown_verbs_count_towards_the_bound() -> None:
    body = "\n".join(["/shepherd x"] * 10 + ["/shepherd fix"])
    commands = parse_commands(body, app_slug=SLUG)
    assert len(commands) == 10
    assert not any(c.known for c in commands)


def test_long_lines_are_ignored() -> None:
    at_limit = "/shepherd fix " + "a" * (MAX_LINE_LENGTH - len("/shepherd fix "))
    over_limit = at_limit + "a"
    assert len(at_limit) == MAX_LINE_LENGTH
    assert [c.verb for c in parse_commands(at_limit, app_slug=SLUG)] == ["fix"]
    assert parse_commands(over_limit + "\n/shepherd retry", app_slug=SLUG) == [
        Command(verb="retry", args=(), line=2, known=True)
    ]


def test_hostile_body_is_bounded() -> None:
    # A whole comment's worth of near-commands must still parse quickly and stay bounded.
    body = ("/shepherd " + " " * 5000 + "x\n") * 20 + "/shepherd fix\n" * 1000
    commands = parse_commands(body, app_slug=SLUG)
    assert len(commands) == MAX_COMMANDS


def test_registry_shape() -> None:
    verbs = [spec.verb for spec in COMMANDS]
    assert verbs[:7] == ["fix", "retry", "triage", "explain", "stop", "resume", "help"]
    assert len(set(verbs)) == len(COMMANDS)
    writers = {spec.verb for spec in COMMANDS if spec.needs_write}
    assert writers >= {"fix", "retry", "stop", "resume", "triage"}
    assert not writers & {"explain", "help"}
    assert spec_for("FIX") is COMMANDS[0]
    assert spec_for("frobnicate") is None


def test_render_help_lists_every_verb() -> None:
    text = render_help(SLUG)
    assert "@shepherd-bot" in text
    rows = [line for line in text.splitlines() if line.startswith("| `/shepherd ")]
    assert len(rows) == len(COMMANDS)
    for spec, row in zip(COMMANDS, rows, strict=True):
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert cells[0] == f"`/shepherd {spec.verb}`"
        assert ("write" in cells[1]) == spec.needs_write
        assert cells[2] == spec.help
    assert "| command | who may run it | what it does |" in text


def test_help_rows_parse_back_to_their_verb() -> None:
    # The help shows the exact command text: pasting it back must run that verb.
    for row in render_help(SLUG).splitlines():
        if row.startswith("| `/shepherd "):
            shown = row.split("`")[1]
            (command,) = parse_commands(shown, app_slug=SLUG)
            assert command.known


ACTIONABLE_CASES = [
    ("human on PR", "created", True, "User", "alice", True),
    ("edited", "edited", True, "User", "alice", False),
    ("deleted", "deleted", True, "User", "alice", False),
    ("on issue", "created", False, "User", "alice", False),
    ("the bot itself", "created", True, "User", "shepherd-bot[bot]", False),
    ("the bot, other case", "created", True, "User", "Shepherd-Bot[bot]", False),
    ("bot type", "created", True, "Bot", "renovate[bot]", False),
    ("our bot with Bot type", "created", True, "Bot", "shepherd-bot[bot]", False),
    ("organization account", "created", True, "Organization", "acme", True),
]


@pytest.mark.parametrize(
    ("action", "is_pr", "author_type", "author", "expected"),
    [c[1:] for c in ACTIONABLE_CASES],
    ids=[c[0] for c in ACTIONABLE_CASES],
)
def test_is_actionable_comment(
    action: str, is_pr: bool, author_type: str, author: str, expected: bool
) -> None:
    assert (
        is_actionable_comment(action, is_pr, author_type, author, "shepherd-bot[bot]") is expected
    )


BUTTON_VERBS = [spec.verb for spec in COMMANDS if spec.button_label is not None]


def test_some_verbs_have_buttons() -> None:
    assert set(BUTTON_VERBS) >= {"fix", "retry"}


@pytest.mark.parametrize("verb", BUTTON_VERBS)
def test_button_round_trip_and_limits(verb: str) -> None:
    identifier = button_identifier(verb)
    assert identifier.startswith(BUTTON_PREFIX)
    assert len(identifier) <= MAX_BUTTON_IDENTIFIER
    assert parse_button(identifier) == verb
    action = button_action(verb)
    assert action["identifier"] == identifier
    assert 0 < len(action["label"]) <= MAX_BUTTON_LABEL
    assert 0 < len(action["description"]) <= MAX_BUTTON_DESCRIPTION


@pytest.mark.parametrize("verb", ["help", "explain", "triage", "frobnicate"])
def test_verbs_without_buttons_are_refused(verb: str) -> None:
    with pytest.raises(ValueError, match="no check-run button"):
        button_identifier(verb)
    with pytest.raises(ValueError, match="no check-run button"):
        button_action(verb)


@pytest.mark.parametrize(
    "identifier",
    [
        "lgtm|26764",  # another App's button (real example payload)
        "",
        "fix",
        "shepherd:",
        "shepherd:help",  # a verb without a button
        "shepherd:frobnicate",
        "SHEPHERD:FIX",
        "shepherd:FIX",
        "shepherd:fix ",
        "shepherd:fix" + "x" * 20,
    ],
)
def test_parse_button_rejects_foreign_identifiers(identifier: str) -> None:
    assert parse_button(identifier) is None
