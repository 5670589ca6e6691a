"""The command verbs: one module each (its spec, help, button and ``run``), listed here once.

The order is the order of ``/shepherd help``. Adding a verb is one module here, one line below
and one test file.
"""

from __future__ import annotations

from bot.commands.spec import CommandVerb
from bot.commands.verbs import explain, fix, help, resume, retry, stop, triage

VERBS: tuple[CommandVerb, ...] = (
    fix.VERB,
    retry.VERB,
    triage.VERB,
    explain.VERB,
    stop.VERB,
    resume.VERB,
    help.VERB,
)
