"""What every command verb is made of: its spec (grammar, help, who may run it, button), what it
sees while it runs (``CommandContext``, a narrow interface) and what it returns. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from bot.kernel import JSONObject
from bot.kernel.problems import Outcome
from bot.store import PrEvent

COMMAND_PREFIX = "/shepherd"


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: its verb, what it does, who may run it, and its check-run button if any."""

    verb: str
    help: str
    needs_write: bool
    button_label: str | None
    button_description: str | None = None


@dataclass(frozen=True)
class VerbResult:
    #: One line for the sticky comment's ``command`` section; empty when nothing changed there.
    summary: str = ""
    #: Text for the reply comment; empty when the visible change speaks for itself.
    reply: str = ""
    ok: bool = True


class TriageDone(NamedTuple):
    #: ``triaged``, ``noop`` (closed or superseded) or ``config-error``.
    outcome: str
    detail: str


class CommandContext(Protocol):
    """What a verb sees of the pull request and may do to it: the PR as the previous verb of the
    same comment left it, and the few actions verbs take (all recorded in the event log by the
    implementation in ``bot.commands.job``)."""

    @property
    def head(self) -> str: ...
    @property
    def is_open(self) -> bool: ...
    @property
    def events(self) -> Sequence[PrEvent]: ...
    @property
    def actor(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def job_id(self) -> int: ...
    @property
    def help_text(self) -> str: ...

    async def record(self, kind: str, **data: Any) -> None: ...
    async def repair(self, trigger: str) -> Outcome:
        """Run the repair job's function on the head now (``trigger``: command or resume)."""
        ...

    async def triage(self) -> TriageDone:
        """Re-triage the head now, even while paused (a person asked)."""
        ...

    async def failed_runs(self) -> list[JSONObject]:
        """Other apps' failed check runs on the head."""
        ...

    async def workflow_run_of(self, check_run_id: int) -> int | None:
        """The Actions workflow run a check run (= Actions job) belongs to."""
        ...

    async def rerun_failed_jobs(self, run_id: int) -> None: ...
    async def set_paused_label(self, paused: bool) -> None: ...
    async def set_status(self, text: str) -> None:
        """The sticky comment's ``status`` section (empty removes it)."""
        ...

    async def set_buttons(self, verbs: Sequence[str]) -> None:
        """Swap the buttons on the head's ``shepherd`` check run, if Shepherd made one."""
        ...


@dataclass(frozen=True)
class CommandVerb:
    """One verb as the command registry (``bot.commands.verbs.VERBS``) lists it."""

    spec: CommandSpec
    run: Callable[[CommandContext], Awaitable[VerbResult]]
