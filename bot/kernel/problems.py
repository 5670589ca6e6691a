"""RFC 9457 problem details, and Shepherd's outcome records built on them.

Pure: no I/O. HTTP errors of the webhook endpoint are ``Problem``s; every action the bot takes
ends in an ``Outcome`` (a problem-details object extended with Shepherd's fields), rendered as JSON
for agents and scripts and as markdown for people.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from bot.kernel import JSONObject

PROBLEM_BASE = "https://shepherd.dev/problems/"
PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem-details object, with ``retryable`` as an extension member."""

    model_config = ConfigDict(frozen=True)

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str | None = None
    retryable: bool = False
    retry_after: float | None = None

    @classmethod
    def of(
        cls,
        slug: str,
        title: str,
        status: int,
        detail: str = "",
        *,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> Problem:
        return cls(
            type=PROBLEM_BASE + slug,
            title=title,
            status=status,
            detail=detail,
            retryable=retryable,
            retry_after=retry_after,
        )

    def to_json(self) -> JSONObject:
        return self.model_dump(mode="json", exclude_none=True)

    def to_markdown(self) -> str:
        lines = [f"### {self.title} ({self.status})", ""]
        if self.detail:
            lines += [self.detail, ""]
        lines.append(f"- type: `{self.type}`")
        lines.append(f"- retryable: {'yes' if self.retryable else 'no'}")
        if self.retry_after is not None:
            lines.append(f"- retry after: {self.retry_after:g} s")
        return "\n".join(lines) + "\n"


class OutcomeKind(StrEnum):
    """What an action ended in (the ``outcome`` field of every JSON output)."""

    FIXED = "fixed"
    RERUN = "rerun"
    HANDOFF = "handoff"
    NOOP = "noop"


class Category(StrEnum):
    """Failure categories (DESIGN.md, repair step 3)."""

    AUTOFIX = "autofix"
    INFRA = "infra"
    AGENT = "agent"
    HUMAN = "human"


class Confidence(StrEnum):
    """How sure a failure's category is: ``low`` when no rule recognised the failure and the
    classifier's fallback read it from the failure lines alone."""

    HIGH = "high"
    LOW = "low"


class NextAction(StrEnum):
    NONE = "none"
    WAIT_FOR_CI = "wait_for_ci"
    RERUN = "rerun"
    REVIEW = "review"
    FIX_LOCALLY = "fix_locally"
    APPLY_PATCH = "apply_patch"
    CONFIGURE = "configure"
    RETRY_LATER = "retry_later"


class Budget(BaseModel):
    """The episode's hard limits and what was spent (shown in every summary)."""

    ci_rounds_used: int = 1
    ci_rounds_max: int = 2
    llm_attempts_used: int = 0
    llm_attempts_max: int = 1
    reruns_used: int = 0
    reruns_max: int = 1

    def describe(self) -> str:
        return (
            f"CI round {self.ci_rounds_used}/{self.ci_rounds_max} · "
            f"LLM attempt {self.llm_attempts_used}/{self.llm_attempts_max} used · "
            f"infra re-run {self.reruns_used}/{self.reruns_max} used"
        )


class FailureRecord(BaseModel):
    """One failed job as reported in the JSON outcome."""

    job: str | None = None
    step: str | None = None
    category: Category
    fixers: list[str] = Field(default_factory=list)
    command: str | None = None
    excerpt: str = ""
    evidence: list[str] = Field(default_factory=list)
    retryable: bool = False
    owner_action_required: bool = False
    confidence: Confidence = Confidence.HIGH


class FixRecord(BaseModel):
    """One fixer that ran."""

    fixer: str
    tool_version: str | None = None
    changed: bool = False
    files: list[str] = Field(default_factory=list)
    detail: str = ""
    #: The fixer says its fix may change what the code does (see ``behaviour_changes``).
    changes_behaviour: bool = False


class ScopeRecord(BaseModel):
    """Which files the deterministic fixers were allowed to change (``autofix.scope``)."""

    #: ``changed`` (the pull request's files), ``all``, or ``changed, widened to all`` (the
    #: check still failed with the pull request's files alone).
    scope: str
    #: Files changed by the fix that the pull request had not changed (None: the pull
    #: request's files are not known, e.g. ``shepherd fix`` on a checkout).
    files_outside_pr: int | None = None


class StepRecord(BaseModel):
    """One step of the CI job as the job environment handled it."""

    name: str
    #: replayed, failed, skipped (with the reason), toolchain (a setup action mapped to a host
    #: toolchain) or covered (an action a replay does not need, like checkout).
    status: str
    detail: str = ""
    seconds: float | None = None


class EnvironmentRecord(BaseModel):
    """How the failing CI job was rebuilt to reproduce the failure and verify the fix."""

    #: ``<workflow path>: <job name>``; None when no job of the base branch's workflows matched.
    job: str | None = None
    working_directory: str = ""
    toolchains: list[str] = Field(default_factory=list)
    steps: list[StepRecord] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)
    #: ``hit`` (started from the warm pool), ``cold`` (set up now) or ``none`` (no setup).
    cache: str = "none"
    seconds_to_ready: float = 0.0
    #: Whether the failing command failed here as it did in CI; None when it was not run.
    reproduced: bool | None = None
    #: ``failed as in CI``, or what differed (the first CI line that did not show up here).
    reproduction: str = ""
    notes: list[str] = Field(default_factory=list)

    def summary_line(self) -> str:
        """One line for the sticky comment."""
        parts = [f"job {self.job}" if self.job else "no matching CI job"]
        if self.toolchains:
            parts.append(", ".join(self.toolchains))
        replayed = sum(1 for s in self.steps if s.status == "replayed")
        skipped = sum(1 for s in self.steps if s.status == "skipped")
        if self.steps:
            parts.append(f"{replayed} setup step(s) replayed, {skipped} skipped")
        if self.services:
            parts.append("services: " + ", ".join(self.services))
        if self.cache != "none":
            parts.append(
                f"{'warm' if self.cache == 'hit' else 'cold'}, ready in "
                f"{self.seconds_to_ready:.1f} s"
            )
        if self.reproduced is not None:
            parts.append("reproduced" if self.reproduced else "not reproduced")
        return " · ".join(parts)


class Outcome(BaseModel):
    """An outcome record: RFC 9457 members plus Shepherd's machine-readable fields."""

    type: str = PROBLEM_BASE + "outcome"
    title: str
    detail: str = ""
    outcome: OutcomeKind
    category: Category | None = None
    retryable: bool = False
    retry_after: float | None = None
    owner_action_required: bool = False
    next_action: NextAction = NextAction.NONE
    failures: list[FailureRecord] = Field(default_factory=list)
    fixes: list[FixRecord] = Field(default_factory=list)
    verification: str | None = None
    budget: Budget = Field(default_factory=Budget)
    commit: str | None = None
    patch: str | None = None
    #: LLM tokens spent by this action: input, output, cache_read, cache_write.
    llm_usage: dict[str, int] = Field(default_factory=dict)
    #: The rebuilt CI job of each failed job that was set up (empty when none was).
    environment: list[EnvironmentRecord] = Field(default_factory=list)
    #: Which files the fixers were allowed to change; None when no fixer ran.
    scope: ScopeRecord | None = None
    #: Why the fix may change behaviour (then it goes to review unless the repository allows
    #: pushing such fixes); empty when no fixer said so.
    behaviour_changes: list[str] = Field(default_factory=list)

    def to_json(self) -> JSONObject:
        return self.model_dump(mode="json")
