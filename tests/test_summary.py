"""The summary a reviewer reads, and the machine-readable outcome hidden in it."""

from __future__ import annotations

from bot.kernel.problems import Category, FailureRecord, NextAction, Outcome, OutcomeKind
from bot.reporting.report import COMMENT_LIMIT, PATCH_ELSEWHERE, compose_comment, split_sections
from bot.reporting.summary import extract_outcome, render_check_run, render_outcome_markdown

FORGED = (
    "<!-- /shepherd:section -->\n<!-- shepherd:section:triage -->\nforged\n"
    '<!-- shepherd:outcome\n{"outcome": "fixed", "title": "forged"}\n-->'
)


def outcome(excerpt: str = "error: x", command: str = "ruff check .") -> Outcome:
    return Outcome(
        title="Needs a human",
        outcome=OutcomeKind.HANDOFF,
        next_action=NextAction.FIX_LOCALLY,
        detail="A failure needs a maintainer's decision.",
        failures=[
            FailureRecord(job="lint", category=Category.HUMAN, command=command, excerpt=excerpt)
        ],
    )


def test_first_line_says_what_happened_and_what_to_do() -> None:
    text = render_outcome_markdown(outcome())
    first = text.splitlines()[0]
    assert "Needs a human" in first
    assert "Fix it locally and push." in first
    assert "CI round 1/2" in text


def test_the_outcome_round_trips_through_the_comment() -> None:
    o = outcome(excerpt="a -- b --> c")
    body = compose_comment({"repair": render_outcome_markdown(o)}, o)
    assert extract_outcome(body) == o.to_json()


def test_hostile_log_text_cannot_forge_markers_or_the_outcome() -> None:
    o = outcome(excerpt=FORGED, command="x --> <!-- y")
    body = compose_comment({"repair": render_outcome_markdown(o)}, o)
    data = extract_outcome(body)
    assert data is not None
    assert data["outcome"] == "handoff"
    assert set(split_sections(body)) == {"repair"}  # no forged triage section
    assert "forged" in body  # still shown, as text


def test_check_run_output_respects_github_limits() -> None:
    huge = outcome(excerpt="E" * 100_000)
    out = render_check_run(huge)
    assert len(out.summary) <= 65_535
    assert out.conclusion == "neutral"


def test_a_large_patch_keeps_the_comment_within_githubs_limit() -> None:
    patch = ""
    for i in range(1000):
        if len(patch) > 60 * 1024:
            break
        patch += (
            f"diff --git a/f{i}.py b/f{i}.py\n--- a/f{i}.py\n+++ b/f{i}.py\n@@ -1 +1 @@\n"
            f"-x = {i}\n+x = {i}  # fixed by the formatter, with a long enough line to add up\n"
        )
    assert 60 * 1024 < len(patch) < 62 * 1024
    o = outcome().model_copy(update={"patch": patch, "title": "Fix verified but not pushed"})
    body = compose_comment({"repair": render_outcome_markdown(o), "triage": "size/M"}, o)
    assert len(body) <= COMMENT_LIMIT
    assert PATCH_ELSEWHERE in body
    data = extract_outcome(body)  # the JSON is never cut
    assert data is not None
    assert data["patch"] is None
    assert data["title"] == "Fix verified but not pushed"
    assert split_sections(body)["triage"] == "size/M"
    # The whole patch is in the check run.
    check = render_check_run(o, triage_markdown="size/M")
    assert check.text is not None
    assert patch in check.text
    assert len(check.text) <= 65_535


def test_sections_are_cut_to_fit_when_nothing_else_does() -> None:
    o = outcome()
    body = compose_comment({"repair": "r" * 70_000, "triage": "t" * 10}, o)
    assert len(body) <= COMMENT_LIMIT
    assert extract_outcome(body) == o.to_json()
    assert split_sections(body)["triage"] == "t" * 10
    assert "cut to fit GitHub's comment size" in split_sections(body)["repair"]
