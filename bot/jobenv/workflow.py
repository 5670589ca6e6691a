"""The failing job, read from the base branch's GitHub Actions workflow (pure, no I/O).

``find_job(files, job_name=…, failing_command=…)`` takes the workflow files (path → text; the
server reads them at the PR's base SHA, ``shepherd fix --repo DIR`` from DIR's
``.github/workflows/``) and describes the job whose log failed as a ``WorkflowJob``: its matrix
combination, ``runs-on``, container, ``services:``, the environment of every step, the steps before
the failing one and the failing step itself. The sandbox replay, toolchains and services of
``bot.jobenv`` build on that model; this module decides nothing about them.

Finding the job. A job's display name is what a log, a check run and ``workflow_job`` carry:
``name:`` (or the job id) followed, for a matrix job, by `` (v1, v2, …)``: the combination's values
in the order of the matrix keys, with values added by ``include:`` only when the include entry made
a combination of its own, and object values flattened to their leaves. A ``name:`` that contains
``${{ }}`` is evaluated instead and gets no suffix. Names longer than 100 characters are cut and
end in ``...``, as seen on real check runs; an empty matrix value is kept in the suffix as GitHub
shows it, and also accepted dropped. (Sources: docs.github.com "Running variations of jobs in a
workflow"; GitHub's behaviour as reproduced by ChristopherHX/runner.server's ``StrategyUtils``.)
When the name is missing, unknown or ambiguous, the job (and combination) is the one with a
``run:`` step whose script is the failing command (blank lines dropped, each line stripped and
its runs of blanks made one; an expression that cannot be evaluated matches anything, as in
``bot.diagnosis.workflows``). A called workflow's job is named
``<caller> / <job>`` (looked up in the local workflow the caller job ``uses:``), and some pages
prefix the workflow's ``name:`` the same way; both are tried when the whole name matches nothing.

What is resolved. ``env`` at workflow, job and step level (later wins), ``defaults.run``
(``shell``, ``working-directory``) at workflow and job level under a step's own, ``services:``,
``container:``, ``with:``, ``run:`` and ``if:`` — with ``${{ }}`` over these contexts:

- ``matrix.*`` and ``strategy.job-index|job-total|fail-fast|max-parallel`` of the combination;
- ``env.*``: the levels above the value being resolved (an unknown name is *not* empty: an earlier
  step may have written it to ``$GITHUB_ENV``, so it is unresolvable);
- ``secrets.*`` and ``github.token``: ``""``, named in ``WorkflowJob.secrets`` and in a note;
- ``github.workspace``: the placeholder ``WORKSPACE``, which the caller replaces by the path of the
  checkout in the sandbox; other ``github.*`` values only when the caller passes them (``github=``);
- ``runner.os`` from ``runs-on`` (``ubuntu-*`` → ``Linux``, ``windows-*``, ``macos-*``);
- ``job.services.<id>.ports['<port>']``: the declared host port, else the container port (GitHub
  picks a free host port there; Shepherd's service layer publishes it on the same number);
- ``steps.<id>.outcome|conclusion`` of an earlier step: ``skipped`` if its ``if:`` is false here,
  else ``success`` (see below); ``steps.<id>.outputs.cache-hit`` of an ``actions/cache`` step is
  ``'false'``: Shepherd never restores GitHub's cache.

Everything else (``steps.*.outputs``, ``needs.*``, ``inputs.*``, ``vars.*``, ``github.event.*``,
``hashFiles()``…) is unresolvable. A step with an unresolvable expression in ``run:``, ``with:``,
``env:``, ``shell:`` or ``working-directory:`` gets a ``skip_reason`` naming it, and a note. For the
failing step, expressions the file cannot resolve are read from the log's command when the rest
of the script matches it (the runner prints the script after substitution). An unresolvable
workflow- or job-level ``env`` value is left unset, with a note (skipping every step for it would
make the job impossible to reproduce).

``if:`` of a step before the failing one is evaluated assuming every earlier step succeeded (they
did, or the failing step would be an earlier one — ``continue-on-error`` aside): ``success()``
and ``always()`` are true, ``failure()`` and ``cancelled()`` false, comparisons of matrix, env,
literals and the values above work; a step whose ``if:`` is false or cannot be decided is
skipped, with the reason. The failing step's own ``if:`` is not evaluated: it ran.

Hostile input. The YAML comes from the repository. It is parsed with a safe loader restricted to
YAML 1.2's core schema, as GitHub parses it (so ``on:`` stays a string key, ``5432:5432`` is not a
base-60 integer and ``3.10`` is the number 3.1), with bounded file sizes, job, step, matrix and
entry counts; expressions are evaluated by ``bot.jobenv.expressions`` over data, never executed.
Unexpected shapes are skipped or noted; ``find_job`` returns None rather than raising. Values are
returned as written: ``working_directory`` may be absolute or contain ``..`` — the caller confines
it to the checkout.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import yaml

from bot.jobenv.expressions import (
    Context,
    Hole,
    Secret,
    Unresolvable,
    Value,
    condition,
    from_data,
    render,
    render_parts,
    split_template,
    to_string,
)
from bot.kernel import JSONObject

__all__ = [
    "WORKSPACE",
    "PortMapping",
    "WorkflowContainer",
    "WorkflowJob",
    "WorkflowService",
    "WorkflowStep",
    "find_job",
    "parse_workflow",
]

#: Stands for ``${{ github.workspace }}`` in every resolved value; the caller replaces it with the
#: path of the checkout in the sandbox (``value.replace(WORKSPACE, path)``).
WORKSPACE = "@@GITHUB_WORKSPACE@@"

# Bounds on hostile input. GitHub's own limits are 256 jobs per matrix and (far) fewer steps than
# this per job; a workflow file of half a megabyte is already unusually large.
MAX_WORKFLOW_FILES = 100
MAX_WORKFLOW_CHARS = 512 * 1024
MAX_JOBS_PER_WORKFLOW = 256
MAX_STEPS_PER_JOB = 1000
MAX_MATRIX_JOBS = 256
MAX_MATRIX_PRODUCT = 4096
MAX_CANDIDATES = 1024
MAX_ENTRIES = 1000  # env variables per level, with: inputs, services, ports
MAX_NOTES = 100
#: GitHub shows at most this many characters of a job name, ending a longer one with "...".
NAME_LIMIT = 100


# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class PortMapping:
    """One entry of a service's ``ports:``, in docker's ``-p`` forms.

    ``"5432:5432"`` → host 5432, container 5432; ``"5432"`` or ``6379`` → container port only
    (``host`` None: GitHub publishes it on a free host port, readable as
    ``job.services.<id>.ports['6379']``); ``"8080:80/udp"`` → protocol ``udp``.
    """

    container: int
    host: int | None
    protocol: str = "tcp"


@dataclass(frozen=True)
class WorkflowService:
    """One ``services:`` entry. Inside a container job it is reachable by ``name``; on the runner,
    on ``localhost`` at each port's host port."""

    #: The key under ``services:``: the service's hostname inside a container job.
    name: str
    #: Resolved image reference, e.g. ``postgres:16``.
    image: str
    #: The service container's env (``POSTGRES_DB``, ...), resolved; secrets are ``""``.
    env: Mapping[str, str]
    ports: tuple[PortMapping, ...]
    #: ``docker create`` options as written (health checks and such), resolved.
    options: str | None
    #: Set when the service cannot be described exactly (e.g. its image has an expression that
    #: cannot be resolved; ``image`` then holds the text as written). A service layer must not
    #: quietly leave such a service out: the job needs it.
    skip_reason: str | None = None


@dataclass(frozen=True)
class WorkflowContainer:
    """The job's ``container:``: its steps run inside this image."""

    image: str
    env: Mapping[str, str]
    options: str | None


@dataclass(frozen=True)
class WorkflowStep:
    """One step of the job, resolved for the job's matrix combination."""

    #: Position in the job's ``steps:`` (0-based).
    index: int
    id: str | None
    #: ``name:`` as written (resolved when it can be), else None; see ``display_name``.
    name: str | None
    #: ``actions/setup-python@v5``, ``./local-action``, ``docker://…``; None for a ``run:`` step.
    uses: str | None
    #: The resolved ``with:`` inputs of a ``uses:`` step (every value a string, as actions get them).
    with_: Mapping[str, str]
    #: The resolved script of a ``run:`` step (``${{ }}`` substituted), else None.
    run: str | None
    #: ``shell:`` of the step, else the job's, else the workflow's ``defaults.run.shell``. None is
    #: GitHub's default on Linux (``bash -e {0}``, or ``sh -e {0}`` without bash) — note that an
    #: explicit ``bash`` means ``bash --noprofile --norc -eo pipefail {0}``. None for ``uses:``.
    shell: str | None
    #: ``working-directory:`` of the step, else the job's, else the workflow's default; relative
    #: to the checkout (None: its root). None for ``uses:`` steps, which ``defaults.run`` skips.
    working_directory: str | None
    #: The step's full environment from the workflow: workflow < job < step ``env``, resolved.
    env: Mapping[str, str]
    #: Why the step will not be replayed (``if:`` false or undecidable here, an expression that
    #: cannot be resolved), else None. Whether a ``uses:`` action can be provided is the toolchain
    #: layer's decision, not this one's. For the failing step: why it could not be resolved
    #: exactly (the log's command then stands).
    skip_reason: str | None = None

    @property
    def display_name(self) -> str:
        """The name GitHub shows: ``name:``, else ``Run <first line of the script>`` or ``Run <uses>``."""
        if self.name:
            return self.name
        if self.run is not None:
            first = next((line.strip() for line in self.run.splitlines() if line.strip()), "")
            return f"Run {first}"
        return f"Run {self.uses or ''}".rstrip()


@dataclass(frozen=True)
class WorkflowJob:
    """The failing job as the base branch's workflow describes it."""

    #: Path of the workflow file, e.g. ``.github/workflows/ci.yml``.
    workflow: str
    job_id: str
    #: Display name as the log and the check run show it, matrix suffix included.
    name: str
    #: The matrix combination, every value as GitHub writes it into a string (objects as JSON).
    #: Empty for a job without a matrix, or when the combination is not known (see ``notes``).
    matrix: Mapping[str, str]
    #: ``runs-on`` labels, resolved (``("ubuntu-latest",)``); empty when unknown.
    runs_on: tuple[str, ...]
    #: ``Linux``, ``Windows`` or ``macOS`` when ``runs-on`` says so, else None.
    runner_os: str | None
    container: WorkflowContainer | None
    services: tuple[WorkflowService, ...]
    #: The job's environment before any step's own: workflow < job ``env``, resolved.
    env: Mapping[str, str]
    #: Every step before the failing one, in order (skipped ones included, with their reason).
    setup_steps: tuple[WorkflowStep, ...]
    #: None when the failing step is not found in the job (then ``setup_steps`` is empty too).
    failing_step: WorkflowStep | None
    #: The secrets the job's resolved values read, each replaced by ``""`` (``secrets.NPM_TOKEN``).
    secrets: tuple[str, ...] = ()
    #: Plain sentences for the summary: empty secrets, skipped steps and why, guesses made.
    notes: tuple[str, ...] = ()

    @property
    def replayable_steps(self) -> tuple[WorkflowStep, ...]:
        """The setup steps that are not skipped."""
        return tuple(step for step in self.setup_steps if step.skip_reason is None)


# ---------------------------------------------------------------------------------------------
# YAML, as GitHub reads it


_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _WorkflowLoader(_Base):  # type: ignore[misc]
    """A safe loader with YAML 1.2's core schema, which is what GitHub's parser uses.

    PyYAML's YAML 1.1 resolvers would turn the key ``on`` (and ``yes``/``no``/``off`` values) into
    booleans, ``5432:5432`` into the base-60 integer 331352, ``010`` into 8 and ``2024-01-01``
    into a date; GitHub reads them as strings (and ``010`` as 10).
    """

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - PyYAML's class-level registry


for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    _WorkflowLoader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first)
    )


def _construct_int(loader: Any, node: Any) -> int | str:
    text = str(loader.construct_scalar(node))
    if len(text) > 40:
        return text  # not a number anyone means; also avoids int()'s digit limit
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text)


def _construct_float(loader: Any, node: Any) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.endswith(".inf"):
        return -math.inf if text.startswith("-") else math.inf
    if text == ".nan":
        return math.nan
    return float(text)


_WorkflowLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_WorkflowLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def parse_workflow(text: str) -> JSONObject | None:
    """One workflow file as data, or None when it is too large, not YAML or not a mapping."""
    if len(text) > MAX_WORKFLOW_CHARS:
        return None
    loader = _WorkflowLoader(text)
    try:
        document = loader.get_single_data()
    except (yaml.YAMLError, RecursionError, ValueError, TypeError):
        return None
    finally:
        loader.dispose()
    return document if isinstance(document, dict) else None


# ---------------------------------------------------------------------------------------------
# Small helpers


def _mapping(value: object) -> JSONObject:
    return value if isinstance(value, dict) else {}


def _scalar_text(value: object) -> str | None:
    """A YAML scalar as the string GitHub sees (``true``, ``3.1``, ``""`` for null); None otherwise."""
    if value is None or isinstance(value, bool | int | float | str):
        return to_string(from_data(value))
    return None


def _same(a: Value, b: Value) -> bool:
    """Deep equality without Python's ``True == 1.0``; a mapping matches a superset of itself (as
    GitHub matches ``exclude``/``include`` entries against object values)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(k in a and _same(a[k], v) for k, v in b.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _leaves(value: Value) -> Iterable[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield to_string(value)


def _plain(value: Value) -> object:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _matrix_text(value: Value) -> str:
    try:
        return to_string(value)
    except Unresolvable:
        return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False)


def _frozen(values: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(values))


def _unresolved(exc: Unresolvable) -> str:
    return f"cannot resolve {exc}"


@dataclass
class _Notes:
    items: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    def add(self, text: str) -> None:
        if text not in self.items and len(self.items) < MAX_NOTES:
            self.items.append(text)

    def secret(self, names: Iterable[str]) -> None:
        for name in sorted(names):
            if name not in self.secrets:
                self.secrets.add(name)
                self.add(f"{name} is empty here: Shepherd runs the job without secrets")

    def extend(self, other: _Notes) -> None:
        for item in other.items:
            self.add(item)
        self.secret(other.secrets)


# ---------------------------------------------------------------------------------------------
# Matrix


@dataclass(frozen=True)
class _Combination:
    values: dict[str, Value]
    #: The values GitHub appends to the job name, in order.
    suffix: tuple[str, ...]


_MATRIX_EXPRESSION = "a matrix value is an expression"
_MATRIX_TOO_MANY = f"its matrix has more than {MAX_MATRIX_JOBS} combinations"


def _expand_matrix(strategy: object) -> list[_Combination] | str:
    """The combinations of ``strategy.matrix`` in GitHub's order, or why they are not known from
    the file (an expression such as ``fromJSON(needs.x.outputs.matrix)``, too many)."""
    matrix = _mapping(strategy).get("matrix")
    if matrix is None:
        return [_Combination({}, ())]
    if not isinstance(matrix, dict):
        return f"its matrix is {_brief(matrix)}"
    read = _read_matrix(matrix)
    if isinstance(read, str):
        return read
    flat, includes, excludes = read
    if any(isinstance(v, str) and "${{" in v for e in includes for v in _leaves(e)):
        return _MATRIX_EXPRESSION
    for entry in excludes:
        if isinstance(entry, dict) and entry:
            flat = [c for c in flat if not all(k in c and _same(c[k], v) for k, v in entry.items())]
    combinations = _include(flat or [{}], includes)
    return combinations if len(combinations) <= MAX_MATRIX_JOBS else _MATRIX_TOO_MANY


def _read_matrix(
    matrix: JSONObject,
) -> tuple[list[dict[str, Value]], list[Value], list[Value]] | str:
    """The product of the matrix's lists, its ``include`` and its ``exclude`` entries; or why
    they are not known."""
    budget = [100_000]
    flat: list[dict[str, Value]] = [{}]
    include: list[Any] = []
    exclude: list[Any] = []
    try:
        for key, raw in matrix.items():
            if key in ("include", "exclude") and not isinstance(raw, list | None):
                return f"its matrix {key} is {_brief(raw)}"
            if key == "include":
                include = raw or []
            elif key == "exclude":
                exclude = raw or []
            elif isinstance(key, str) and isinstance(raw, list):
                values = [from_data(item, budget) for item in raw]
                if any(isinstance(v, str) and "${{" in v for v in values):
                    return _MATRIX_EXPRESSION
                if len(flat) * len(values) > MAX_MATRIX_PRODUCT:
                    return _MATRIX_TOO_MANY
                flat = [{**combo, key: value} for combo in flat for value in values]
            else:
                return f"its matrix {key} is {_brief(raw)}"
        excludes = [from_data(e, budget) for e in exclude]
        includes = [from_data(e, budget) for e in include]
    except Unresolvable as exc:
        return f"its matrix is not understood ({exc.reason})"
    return flat, includes, excludes


def _include(flat: list[dict[str, Value]], includes: list[Value]) -> list[_Combination]:
    """GitHub's ``include`` rule: an entry extends every combination it does not contradict,
    else it is a combination of its own."""
    keys = list(flat[0])
    extra: list[dict[str, Value]] = []
    for entry in includes:
        if not isinstance(entry, dict):
            continue
        matched = False
        if keys:
            for combo in flat:
                if all(k not in entry or _same(combo[k], entry[k]) for k in keys):
                    matched = True
                    combo.update({k: v for k, v in entry.items() if k not in keys})
        if not matched:
            extra.append(dict(entry))
    combinations = [
        _Combination(combo, tuple(t for k in keys for t in _leaves(combo[k]))) for combo in flat
    ]
    if not keys and extra:
        combinations = []
    combinations += [
        _Combination(e, tuple(t for v in e.values() for t in _leaves(v))) for e in extra
    ]
    return combinations


# ---------------------------------------------------------------------------------------------
# Candidates: every (job, matrix combination) of every workflow


@dataclass(frozen=True)
class _Candidate:
    path: str
    document: JSONObject
    job_id: str
    job: JSONObject
    #: None: the matrix is not known (an expression, or several combinations fit the command).
    matrix: dict[str, Value] | None
    index: int = 0
    total: int = 1
    #: Display names GitHub may show for it (variants: empty matrix values kept or dropped).
    names: tuple[str, ...] = ()
    #: For a job whose matrix is unknown: ``"<name> ("``; any suffix after it matches.
    name_prefix: str | None = None
    #: Why the matrix is unknown, for the notes.
    matrix_note: str | None = None

    def matches(self, wanted: str) -> bool:
        if any(_name_matches(name, wanted) for name in self.names):
            return True
        return self.name_prefix is not None and (
            wanted.startswith(self.name_prefix) and wanted.endswith(")")
        )

    @property
    def template_name(self) -> str:
        """``name:`` when it is literal, else the job id (never raw ``${{ }}`` text)."""
        name = self.job.get("name")
        return name if isinstance(name, str) and name and "${{" not in name else self.job_id


def _name_matches(display: str, wanted: str) -> bool:
    if display == wanted or " ".join(display.split()) == " ".join(wanted.split()):
        return True
    for ellipsis in ("...", "\u2026"):
        head = wanted[: -len(ellipsis)]
        if (
            wanted.endswith(ellipsis)
            and len(wanted) >= NAME_LIMIT - 10
            and len(display) > len(head)
            and display.startswith(head)
        ):
            return True
    return False


def _github_context(github: Mapping[str, str]) -> Context:
    values: dict[str, Value] = {k: v for k, v in github.items() if isinstance(v, str)}
    values["workspace"] = WORKSPACE
    values["token"] = Secret("github.token")
    return Context("github", values)


def _static_contexts(
    github: Context, matrix: dict[str, Value] | None, index: int, total: int, strategy: object
) -> dict[str, Context]:
    """Contexts available anywhere in a job: what GitHub knows before the job starts."""
    strat = _mapping(strategy)
    fail_fast = strat.get("fail-fast", True)
    max_parallel = strat.get("max-parallel", total)
    strategy_values: dict[str, Value] = {
        "job-index": float(index),
        "job-total": float(total),
        "fail-fast": fail_fast if isinstance(fail_fast, bool) else True,
        "max-parallel": float(max_parallel) if isinstance(max_parallel, int | float) else total,
    }
    return {
        "github": github,
        "secrets": Context("secrets", secret=True),
        "matrix": Context("matrix", {})
        if matrix is None
        else Context("matrix", dict(matrix), closed=True),
        "strategy": Context("strategy", strategy_values if matrix is not None else {}),
        "vars": Context("vars"),
        "inputs": Context("inputs"),
        "needs": Context("needs"),
    }


def _candidates(
    workflows: list[tuple[str, JSONObject]], github: Context, notes: _Notes
) -> list[_Candidate]:
    found: list[_Candidate] = []
    for path, document in workflows:
        jobs = _mapping(document.get("jobs"))
        for job_id, job in list(jobs.items())[:MAX_JOBS_PER_WORKFLOW]:
            if not isinstance(job_id, str) or not isinstance(job, dict):
                continue
            if not isinstance(job.get("steps"), list):
                continue  # a called workflow (``uses:``) or a malformed job
            combos = _expand_matrix(job.get("strategy"))
            if isinstance(combos, str):
                name = job.get("name")
                literal = not (isinstance(name, str) and "${{" in name)
                base = _scalar_text(name) if name is not None and literal else job_id
                found.append(
                    _Candidate(
                        path,
                        document,
                        job_id,
                        job,
                        None,
                        name_prefix=f"{base or job_id} (" if literal else None,
                        matrix_note=f"the matrix combination is not known: {combos}",
                    )
                )
                continue
            for index, combo in enumerate(combos):
                names = _display_names(job_id, job, combo, index, len(combos), github)
                found.append(
                    _Candidate(path, document, job_id, job, combo.values, index, len(combos), names)
                )
                if len(found) >= MAX_CANDIDATES:
                    notes.add("the workflows define too many jobs; only the first ones are read")
                    return found
    return found


def _display_names(
    job_id: str, job: JSONObject, combo: _Combination, index: int, total: int, github: Context
) -> tuple[str, ...]:
    raw = job.get("name")
    if isinstance(raw, str) and "${{" in raw:
        contexts = _static_contexts(github, combo.values, index, total, job.get("strategy"))
        try:
            return (render(raw, contexts).text,)
        except Unresolvable:
            return ()
    base = (_scalar_text(raw) if raw is not None else None) or job_id
    if not combo.suffix:
        return (base,)
    names = [f"{base} ({', '.join(combo.suffix)})"]
    # GitHub's runner.server drops empty values from the suffix; a real GitHub name keeps them.
    kept = [v for v in combo.suffix if v]
    if len(kept) != len(combo.suffix):
        names.append(f"{base} ({', '.join(kept)})" if kept else base)
    return tuple(names)


# ---------------------------------------------------------------------------------------------
# Matching a failing command against a run: script


def _normalise(script: str) -> str:
    """Blank lines dropped, each line stripped and its runs of blanks made one space: how a
    ``run:`` script and a log's command are compared (``bot.diagnosis.workflows`` compares the same way,
    without the last step, for its trust decision)."""
    return "\n".join(" ".join(line.split()) for line in script.splitlines() if line.strip())


def _match(parts: list[str | Hole], wanted: str) -> list[str] | None:
    """The values of the ``Hole``s when the script matches the (normalised) command, else None.

    Literal text must match exactly (after normalisation); each hole takes the shortest text up to
    the next literal. Linear ``str.find`` scanning: the command is log text and must not be able
    to make matching slow (a backtracking regex with several wildcards can be).
    """
    holes = [p for p in parts if isinstance(p, Hole)]
    if any("\x00" in p for p in parts if isinstance(p, str)):
        return None
    joined = "".join(p if isinstance(p, str) else f"\x00{i}\x00" for i, p in enumerate(parts))
    pieces = re.split(r"\x00\d+\x00", _normalise(joined))
    if not holes:
        return [] if pieces[0] == wanted else None
    if len(pieces) != len(holes) + 1:
        return None  # normalisation ate a marker; cannot happen with the markers used
    first, *middle, last = pieces
    if not wanted.startswith(first) or not wanted.endswith(last):
        return None
    pos = len(first)
    end = len(wanted) - len(last)
    if end < pos:
        return None
    values: list[str] = []
    for piece in middle:
        found = wanted.find(piece, pos, end)
        if found < 0:
            return None
        values.append(wanted[pos:found])
        pos = found + len(piece)
    values.append(wanted[pos:end])
    return values


def _step_names(raw: JSONObject) -> set[str]:
    """Names a log or ``workflow_job`` may give the step."""
    names: set[str] = set()
    name = raw.get("name")
    if isinstance(name, str) and name.strip():
        names.add(name.strip())
    run = raw.get("run")
    if isinstance(run, str):
        first = next((line.strip() for line in run.splitlines() if line.strip()), "")
        names.add(first)
    uses = raw.get("uses")
    if isinstance(uses, str):
        names.add(uses.strip())
    return names | {f"Run {n}" for n in names}


# ---------------------------------------------------------------------------------------------
# Reading one job for one matrix combination


@dataclass(frozen=True)
class _Step:
    spec: WorkflowStep
    #: The ``run:`` script's parts (Holes where expressions could not be evaluated), for matching.
    parts: list[str | Hole] | None
    #: True/False: the ``if:`` as evaluated for a setup step; None: undecidable (or no step).
    if_value: bool | None
    #: Skip reason from an unresolvable value other than the ``run:`` script.
    value_reason: str | None
    #: Skip reason from the ``run:`` script (the failing step's may be completed from the log).
    run_reason: str | None
    notes: _Notes


@dataclass(frozen=True)
class _Script:
    """A step's ``run:`` script as far as it resolves."""

    #: Its parts (Holes where expressions could not be evaluated), for matching the command.
    parts: list[str | Hole] | None = None
    #: The whole script, when every part resolved.
    run: str | None = None
    #: Why it did not resolve.
    reason: str | None = None


def _render_script(text: str, contexts: Mapping[str, Context], notes: _Notes) -> _Script:
    try:
        parts, secrets = render_parts(text, contexts)
        notes.secret(secrets)
    except Unresolvable as exc:
        return _Script(reason=_unresolved(exc))
    hole = next((p for p in parts if isinstance(p, Hole)), None)
    if hole is None:
        return _Script(parts, "".join(p for p in parts if isinstance(p, str)))
    return _Script(parts, reason=_unresolved(Unresolvable(hole.reason, hole.expression)))


def _decide_if(
    raw: object, contexts: Mapping[str, Context], notes: _Notes
) -> tuple[bool | None, str | None]:
    """A step's ``if:``: True/False, or None when undecidable here; and the reason it skips."""
    if raw is None:
        return True, None
    text = raw if isinstance(raw, str) else _scalar_text(raw)
    shown = _brief(raw)
    try:
        if text is None:
            raise Unresolvable("not a condition")
        decided = condition(text, contexts)
        notes.secret(decided.secrets)
    except Unresolvable as exc:
        return None, f"if: {shown} cannot be decided here ({exc.reason})"
    if not decided.value:
        return False, f"if: {shown} is false here"
    return True, None


@dataclass(frozen=True)
class _FailingMatch:
    index: int
    #: 0: the resolved script is the command; 1: it matches with unresolved parts read from the
    #: command; 2: found by the step's name only.
    rank: int
    captured: tuple[str, ...] = ()


class _JobReader:
    """Resolves one job for one matrix combination (or an unknown one)."""

    def __init__(self, candidate: _Candidate, github: Context) -> None:
        self.candidate = candidate
        self.job = candidate.job
        self.document = candidate.document
        self.notes = _Notes()
        self.static = _static_contexts(
            github, candidate.matrix, candidate.index, candidate.total, self.job.get("strategy")
        )
        self.runs_on = self._runs_on()
        self.runner_os = _runner_os(self.runs_on)
        if self.runner_os is not None:
            self.static["runner"] = Context("runner", {"os": self.runner_os})
        else:
            self.static["runner"] = Context("runner")
        self.services = self._services()
        self.static["job"] = Context(
            "job",
            {
                "status": "success",
                "services": {
                    s.name: Context(
                        f"job.services.{s.name}",
                        {
                            "ports": {
                                str(p.container): float(p.host or p.container) for p in s.ports
                            }
                        },
                    )
                    for s in self.services
                },
            },
        )
        workflow_env = self._env_level(
            self.document.get("env"),
            self._contexts(None, "github", "secrets", "vars", "inputs"),
            "workflow",
        )
        # GitHub does not offer ``env`` to a job's own ``env:``; reading the workflow's is lenient.
        job_env = self._env_level(self.job.get("env"), self._contexts(workflow_env), "job")
        self.env: dict[str, str] = {**workflow_env, **job_env}
        self.container = self._container()
        # Workflow-level defaults may not use expressions at all (GitHub's rule); job-level ones
        # see the matrix and the env.
        self.workflow_defaults = self._defaults(self.document, self._contexts(None, "github"))
        self.job_defaults = self._defaults(self.job, self._contexts(self.env))
        self._steps: list[_Step] | None = None

    # -- contexts and values

    def _contexts(self, env: Mapping[str, str] | None, *only: str) -> dict[str, Context]:
        contexts = {k: v for k, v in self.static.items() if not only or k in only}
        if env is not None:
            contexts["env"] = Context("env", dict(env))
        return contexts

    def _text(self, raw: object, contexts: Mapping[str, Context], notes: _Notes) -> str:
        """A YAML scalar, resolved. Raises ``Unresolvable``."""
        if isinstance(raw, str):
            rendered = render(raw, contexts)
            notes.secret(rendered.secrets)
            return rendered.text
        text = _scalar_text(raw)
        if text is None:
            raise Unresolvable(f"expected a string, found {type(raw).__name__}")
        return text

    def _env_level(
        self, raw: object, contexts: Mapping[str, Context], level: str
    ) -> dict[str, str]:
        """A workflow- or job-level ``env:``; what cannot be resolved is left unset, with a note."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.notes.add(f"the {level} env is not a mapping here ({_brief(raw)}); it is ignored")
            return {}
        resolved: dict[str, str] = {}
        for key, value in list(raw.items())[:MAX_ENTRIES]:
            if not isinstance(key, str):
                continue
            try:
                resolved[key] = self._text(value, contexts, self.notes)
            except Unresolvable as exc:
                self.notes.add(f"{level} env {key} is left unset: {_unresolved(exc)}")
        return resolved

    def _runs_on(self) -> tuple[str, ...]:
        raw = self.job.get("runs-on")
        if isinstance(raw, dict):
            raw = raw.get("labels", raw.get("group"))
        items = raw if isinstance(raw, list) else [raw]
        labels: list[str] = []
        for item in items[:MAX_ENTRIES]:
            if item is None:
                continue
            try:
                labels.append(self._text(item, self.static, self.notes))
            except Unresolvable as exc:
                self.notes.add(f"runs-on is not known: {_unresolved(exc)}")
                return ()
        return tuple(labels)

    def _defaults(
        self, owner: JSONObject, contexts: Mapping[str, Context]
    ) -> dict[str, str | Unresolvable]:
        """``defaults.run``; an unresolvable value makes every ``run:`` step that uses it skipped."""
        run = _mapping(_mapping(owner.get("defaults")).get("run"))
        resolved: dict[str, str | Unresolvable] = {}
        for key in ("shell", "working-directory"):
            if run.get(key) is None:
                continue
            try:
                resolved[key] = self._text(run[key], contexts, self.notes)
            except Unresolvable as exc:
                resolved[key] = exc
        return resolved

    def _container(self) -> WorkflowContainer | None:
        raw = self.job.get("container")
        if raw is None:
            return None
        spec = raw if isinstance(raw, dict) else {"image": raw}
        contexts = self._contexts(None)
        try:
            image = self._text(spec.get("image"), contexts, self.notes)
        except Unresolvable as exc:
            self.notes.add(f"the job's container is not known: {_unresolved(exc)}")
            return None
        if not image:
            return None
        return WorkflowContainer(
            image=image,
            env=_frozen(self._env_level(spec.get("env"), contexts, "container")),
            options=self._optional_text(spec.get("options"), contexts, "container options"),
        )

    def _optional_text(self, raw: object, contexts: Mapping[str, Context], what: str) -> str | None:
        if raw is None:
            return None
        try:
            return self._text(raw, contexts, self.notes)
        except Unresolvable as exc:
            self.notes.add(f"{what} left out: {_unresolved(exc)}")
            return None

    def _services(self) -> tuple[WorkflowService, ...]:
        raw = self.job.get("services")
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.notes.add(f"services: is not a mapping here ({_brief(raw)}); no service is read")
            return ()
        contexts = {k: v for k, v in self.static.items() if k not in ("runner", "job")}
        services: list[WorkflowService] = []
        for name, spec in list(raw.items())[:MAX_ENTRIES]:
            if not isinstance(name, str):
                continue
            spec = spec if isinstance(spec, dict) else {"image": spec}
            skip: str | None = None
            try:
                image = self._text(spec.get("image"), contexts, self.notes)
            except Unresolvable as exc:
                image = str(spec.get("image"))
                skip = f"image {_unresolved(exc)}"
                self.notes.add(f"service {name}: {skip}")
            if not image and skip is None:
                # GitHub does not start a service whose image is empty (a matrix may blank it).
                self.notes.add(f"service {name} is not started: its image is empty here")
                continue
            if spec.get("credentials") is not None:
                self.notes.add(f"service {name}: registry credentials are not used here")
            services.append(
                WorkflowService(
                    name=name,
                    image=image,
                    env=_frozen(self._env_level(spec.get("env"), contexts, f"service {name}")),
                    ports=self._ports(name, spec.get("ports"), contexts),
                    options=self._optional_text(
                        spec.get("options"), contexts, f"service {name} options"
                    ),
                    skip_reason=skip,
                )
            )
        return tuple(services)

    def _ports(
        self, service: str, raw: object, contexts: Mapping[str, Context]
    ) -> tuple[PortMapping, ...]:
        if raw is None:
            return ()
        items = raw if isinstance(raw, list) else [raw]
        ports: list[PortMapping] = []
        for item in items[:MAX_ENTRIES]:
            try:
                text = self._text(item, contexts, self.notes)
            except Unresolvable as exc:
                self.notes.add(f"service {service}: a port is left out: {_unresolved(exc)}")
                continue
            port = _parse_port(text)
            if port is None:
                self.notes.add(f"service {service}: port {text[:40]!r} is not understood")
            else:
                ports.append(port)
        return tuple(ports)

    # -- steps

    def steps(self) -> list[_Step]:
        if self._steps is None:
            self._steps = self._read_steps()
        return self._steps

    def _read_steps(self) -> list[_Step]:
        raw_steps = self.job.get("steps")
        steps: list[_Step] = []
        known: dict[str, Value] = {}
        for index, raw in enumerate(
            raw_steps[:MAX_STEPS_PER_JOB] if isinstance(raw_steps, list) else []
        ):
            step = self._read_step(index, raw, Context("steps", dict(known)))
            steps.append(step)
            if step.spec.id:
                known[step.spec.id] = _step_context(step)
        return steps

    def _read_step(self, index: int, raw: object, steps_context: Context) -> _Step:
        notes = _Notes()
        if not isinstance(raw, dict):
            return self._unreadable_step(index, notes)
        contexts = self._contexts(self.env)
        contexts["steps"] = steps_context
        problems: list[str] = []

        step_env = dict(self.env)
        step_env.update(self._texts(raw.get("env"), ("env", "env"), contexts, notes, problems))
        contexts["env"] = Context("env", dict(step_env))

        step_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        name = self._lenient_text(raw.get("name"), contexts)
        uses = raw.get("uses") if isinstance(raw.get("uses"), str) else None
        run_raw = raw.get("run")
        run_text = run_raw if isinstance(run_raw, str) else _scalar_text(run_raw)
        if run_raw is None:
            run_text = None
        if (uses is None) == (run_text is None):
            problems.append("a step needs exactly one of run: and uses:")

        script = _Script() if run_text is None else _render_script(run_text, contexts, notes)
        with_ = self._texts(raw.get("with"), ("with", "with:"), contexts, notes, problems)

        shell = working_directory = None
        if run_text is not None:
            shell = self._run_option(raw, "shell", contexts, notes, problems)
            working_directory = self._run_option(
                raw, "working-directory", contexts, notes, problems
            )

        if_value, if_reason = _decide_if(raw.get("if"), contexts, notes)
        value_reason = problems[0] if problems else None
        spec = WorkflowStep(
            index=index,
            id=step_id,
            name=name,
            uses=uses,
            with_=_frozen(with_),
            run=script.run,
            shell=shell,
            working_directory=working_directory,
            env=_frozen(step_env),
            skip_reason=if_reason or value_reason or script.reason,
        )
        return _Step(spec, script.parts, if_value, value_reason, script.reason, notes)

    def _unreadable_step(self, index: int, notes: _Notes) -> _Step:
        spec = WorkflowStep(
            index=index,
            id=None,
            name=None,
            uses=None,
            with_=_frozen({}),
            run=None,
            shell=None,
            working_directory=None,
            env=_frozen(self.env),
            skip_reason="the step is not a mapping",
        )
        return _Step(spec, None, None, spec.skip_reason, None, notes)

    def _texts(
        self,
        raw: object,
        labels: tuple[str, str],
        contexts: Mapping[str, Context],
        notes: _Notes,
        problems: list[str],
    ) -> dict[str, str]:
        """A step's ``env:`` or ``with:`` mapping, resolved; ``labels`` name an entry and the
        whole mapping in the problems an unresolvable value or a non-mapping adds."""
        entry, whole = labels
        texts: dict[str, str] = {}
        if isinstance(raw, dict):
            for key, value in list(raw.items())[:MAX_ENTRIES]:
                if not isinstance(key, str):
                    continue
                try:
                    texts[key] = self._text(value, contexts, notes)
                except Unresolvable as exc:
                    problems.append(f"{entry} {key}: {_unresolved(exc)}")
        elif raw is not None:
            problems.append(f"its {whole} is not a mapping ({_brief(raw)})")
        return texts

    def _lenient_text(self, raw: object, contexts: Mapping[str, Context]) -> str | None:
        """A step's ``name:``: resolved when possible, else as written (it is only a label)."""
        if raw is None:
            return None
        try:
            return self._text(raw, contexts, _Notes())
        except Unresolvable:
            return raw if isinstance(raw, str) else None

    def _run_option(
        self,
        raw: JSONObject,
        key: str,
        contexts: Mapping[str, Context],
        notes: _Notes,
        problems: list[str],
    ) -> str | None:
        if raw.get(key) is not None:
            try:
                return self._text(raw[key], contexts, notes)
            except Unresolvable as exc:
                problems.append(f"{key}: {_unresolved(exc)}")
                return None
        value = self.job_defaults.get(key, self.workflow_defaults.get(key))
        if isinstance(value, Unresolvable):
            problems.append(f"defaults.run.{key}: {_unresolved(value)}")
            return None
        return value

    def find_failing(self, command: str | None, step_name: str | None) -> _FailingMatch | None:
        """The failing step: by its command (exactly, then with unresolved parts), else by name."""
        steps = self.steps()
        named = {
            s.spec.index
            for s, raw in zip(steps, self.job.get("steps") or [], strict=False)
            if step_name
            and isinstance(raw, dict)
            and step_name
            in _step_names(raw) | {s.spec.display_name, s.spec.display_name.removeprefix("Run ")}
        }
        if command:
            wanted = _normalise(command)
            for rank in (0, 1):
                matches: list[_FailingMatch] = []
                for step in steps:
                    if step.parts is None:
                        continue
                    captured = _match(step.parts, wanted)
                    holes = any(isinstance(p, Hole) for p in step.parts)
                    if captured is not None and holes == (rank == 1):
                        matches.append(_FailingMatch(step.spec.index, rank, tuple(captured)))
                if matches:
                    preferred = [m for m in matches if m.index in named] or matches
                    if len(preferred) > 1:
                        self.notes.add(
                            f"{len(preferred)} steps run the failing command; "
                            f"the first (step {preferred[0].index + 1}) is taken as the failing one"
                        )
                    return preferred[0]
        if named:
            return _FailingMatch(min(named), 2)
        return None

    def build(self, match: _FailingMatch | None, name: str) -> WorkflowJob:
        notes = _Notes()
        if self.candidate.matrix_note:
            notes.add(self.candidate.matrix_note)
        notes.extend(self.notes)
        if self.runner_os not in (None, "Linux"):
            notes.add(f"the job runs on {self.runner_os}; Shepherd's sandbox is Linux")
        setup: list[WorkflowStep] = []
        failing: WorkflowStep | None = None
        if match is None:
            notes.add("the failing step is not found in the job: no setup step is replayed")
        else:
            steps = self.steps()
            for step in steps[: match.index]:
                if step.spec.skip_reason is None:
                    notes.extend(step.notes)  # a skipped step's secrets are not used
                elif step.if_value is not False:
                    # A step whose if: is false here was skipped in CI as well: no divergence to
                    # report (its skip_reason still says why).
                    notes.add(f"step {step.spec.display_name!r} skipped: {step.spec.skip_reason}")
                setup.append(step.spec)
            failing = self._failing(steps[match.index], match, notes)
        return WorkflowJob(
            workflow=self.candidate.path,
            job_id=self.candidate.job_id,
            name=name,
            matrix=_frozen({k: _matrix_text(v) for k, v in (self.candidate.matrix or {}).items()}),
            runs_on=self.runs_on,
            runner_os=self.runner_os,
            container=self.container,
            services=self.services,
            env=_frozen(self.env),
            setup_steps=tuple(setup),
            failing_step=failing,
            secrets=tuple(sorted(notes.secrets)),
            notes=tuple(notes.items),
        )

    def _failing(self, step: _Step, match: _FailingMatch, notes: _Notes) -> WorkflowStep:
        """The failing step ran, so its ``if:`` does not apply; unresolved parts of its script
        come from the log's command when it matched."""
        notes.extend(step.notes)
        spec = replace(step.spec, skip_reason=step.value_reason or step.run_reason)
        if match.rank == 1 and step.parts is not None:
            holes = [p for p in step.parts if isinstance(p, Hole)]
            if all("\n" not in v for v in match.captured) and len(match.captured) == len(holes):
                values = iter(match.captured)
                script = "".join(p if isinstance(p, str) else next(values) for p in step.parts)
                for hole, value in zip(holes, match.captured, strict=True):
                    notes.add(
                        f"the failing step's ${{{{ {hole.expression} }}}} is taken from the log: "
                        f"{value[:80]!r}"
                    )
                spec = replace(spec, run=script, skip_reason=step.value_reason)
        if spec.skip_reason is not None:
            notes.add(f"the failing step is not fully resolved: {spec.skip_reason}")
        return spec


def _step_context(step: _Step) -> Value:
    """What ``steps.<id>`` of an earlier step is known to be (see the module docstring)."""
    spec = step.spec
    if step.if_value is None:
        return Context(f"steps.{spec.id}")
    if step.if_value is False:
        return {
            "outcome": "skipped",
            "conclusion": "skipped",
            "outputs": Context(f"steps.{spec.id}.outputs", closed=True),
        }
    outputs: dict[str, Value] = {}
    if spec.uses and re.match(r"actions/cache(?:/restore)?@", spec.uses):
        outputs["cache-hit"] = "false"  # Shepherd never restores GitHub's cache
    return {
        "outcome": "success",
        "conclusion": "success",
        "outputs": Context(f"steps.{spec.id}.outputs", outputs),
    }


def _runner_os(labels: tuple[str, ...]) -> str | None:
    lowered = [label.lower() for label in labels]
    for prefix, name in (("ubuntu", "Linux"), ("windows", "Windows"), ("macos", "macOS")):
        if any(label.startswith(prefix) for label in lowered):
            return name
    if "linux" in lowered:
        return "Linux"
    return None


_PORT = re.compile(
    r"(?:(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(?:(?P<host>\d{1,5}):)?(?P<container>\d{1,5})(?:/(?P<proto>tcp|udp|sctp))?"
)


def _parse_port(text: str) -> PortMapping | None:
    """Docker's ``[ip:][host:]container[/protocol]``; ranges are not understood."""
    m = _PORT.fullmatch(text.strip())
    if m is None:
        return None
    container = int(m.group("container"))
    host = int(m.group("host")) if m.group("host") else None
    if not 0 < container < 65536 or (host is not None and not 0 < host < 65536):
        return None
    return PortMapping(container=container, host=host, protocol=m.group("proto") or "tcp")


def _brief(value: object) -> str:
    """A short description of a value for a note; never ``repr`` of hostile structures (a deeply
    nested list would exhaust the recursion limit)."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    text = value if isinstance(value, str) else (_scalar_text(value) or type(value).__name__)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------
# The entry point


def _load(files: Mapping[str, str]) -> list[tuple[str, JSONObject]]:
    workflows: list[tuple[str, JSONObject]] = []
    paths = sorted(p for p in files if isinstance(p, str) and p.endswith((".yml", ".yaml")))
    for path in paths[:MAX_WORKFLOW_FILES]:
        text = files[path]
        document = parse_workflow(text) if isinstance(text, str) else None
        if document is not None:
            workflows.append((path, document))
    return workflows


def _job_could_match(job: JSONObject, wanted: str) -> bool:
    """Whether some ``run:`` of the job matches the command with every expression a wildcard
    (a cheap filter before resolving each matrix combination)."""
    for raw in job.get("steps") or []:
        run = raw.get("run") if isinstance(raw, dict) else None
        if not isinstance(run, str):
            continue
        try:
            parts = split_template(run)
        except Unresolvable:
            continue
        if _match(parts, wanted) is not None:
            return True
    return False


def find_job(
    files: Mapping[str, str],
    *,
    job_name: str | None,
    failing_command: str | None = None,
    failing_step_name: str | None = None,
    github: Mapping[str, str] | None = None,
) -> WorkflowJob | None:
    """The failing job, described from the workflow files; None when it cannot be identified.

    ``files``: workflow path → text (other paths are ignored). ``job_name``: the job's name as the
    log or check run shows it. ``failing_command``: the failing step's command from the log
    (``DistilledLog.command``); it finds the failing step, and the job when the name does not.
    ``failing_step_name``: the step's name, from ``workflow_job`` or the log's ``Run …`` title.
    ``github``: ``github.*`` values the caller knows for this run (``event_name``, ``ref``,
    ``repository``…); ``github.workspace`` is always ``WORKSPACE``.

    None means: no job has that name and no job's step runs that command, or several jobs fit.
    """
    notes = _Notes()
    wanted = _Wanted(
        job_name,
        failing_command if failing_command and failing_command.strip() else None,
        failing_step_name.strip() if failing_step_name and failing_step_name.strip() else None,
        _github_context(github or {}),
    )
    workflows = _load(files)
    candidates = _candidates(workflows, wanted.github, notes)

    pool = _named(workflows, candidates, job_name, notes) if job_name else []
    by_name = bool(pool)
    if len(pool) == 1:
        reader = _JobReader(pool[0], wanted.github)
        match = reader.find_failing(wanted.command, wanted.step_name)
        return _finish(reader, match, _chosen_name(pool[0], job_name), notes)
    if not pool:
        if wanted.command is None:
            return None
        command = _normalise(wanted.command)
        pool = [c for c in candidates if _job_could_match(c.job, command)]

    scored = _best_matches(pool, wanted)
    jobs = {(r.candidate.path, r.candidate.job_id) for r, _ in scored}
    if len(jobs) != 1:
        return None
    if len(scored) == 1:
        reader, match = scored[0]
        name = _chosen_name(reader.candidate, job_name if by_name else None)
        if job_name and not by_name:
            notes.add(f"no job is named {job_name!r}; {name!r} runs the failing command")
        return _finish(reader, match, name, notes)
    return _unknown_combination(scored, wanted, by_name, notes)


@dataclass(frozen=True)
class _Wanted:
    """What the caller knows of the failing job (see ``find_job``)."""

    job_name: str | None
    command: str | None
    step_name: str | None
    github: Context


def _named(
    workflows: list[tuple[str, JSONObject]],
    candidates: list[_Candidate],
    job_name: str,
    notes: _Notes,
) -> list[_Candidate]:
    """The candidates the job name fits."""
    pool = [c for c in candidates if c.matches(job_name)]
    if not pool and " / " in job_name:
        pool = _prefixed(workflows, candidates, job_name, notes)
    return pool


def _best_matches(
    pool: list[_Candidate], wanted: _Wanted
) -> list[tuple[_JobReader, _FailingMatch]]:
    """The candidates whose failing step is found, keeping those found the best way."""
    scored: list[tuple[_JobReader, _FailingMatch]] = []
    for candidate in pool:
        reader = _JobReader(candidate, wanted.github)
        match = reader.find_failing(wanted.command, wanted.step_name)
        if match is not None:
            scored.append((reader, match))
    if not scored:
        return []
    best = min(match.rank for _, match in scored)
    return [(r, m) for r, m in scored if m.rank == best]


def _unknown_combination(
    scored: list[tuple[_JobReader, _FailingMatch]], wanted: _Wanted, by_name: bool, notes: _Notes
) -> WorkflowJob:
    """Several combinations of one job run this command: the combination is not known."""
    first = scored[0][0].candidate
    unknown = replace(
        first,
        matrix=None,
        index=0,
        total=1,
        matrix_note=f"the matrix combination is not known: {len(scored)} combinations of job "
        f"{first.job_id!r} run the failing command",
    )
    reader = _JobReader(unknown, wanted.github)
    name = wanted.job_name if by_name and wanted.job_name else first.template_name
    match = reader.find_failing(wanted.command, wanted.step_name)
    return _finish(reader, match, name, notes)


def _prefixed(
    workflows: list[tuple[str, JSONObject]],
    candidates: list[_Candidate],
    job_name: str,
    notes: _Notes,
) -> list[_Candidate]:
    """``<workflow name> / <job>`` (how some pages show a check), or ``<caller> / <job>``: a job
    of the local workflow that the job named ``<caller>`` calls with ``uses: ./…``."""
    prefix, inner = job_name.split(" / ", 1)
    in_workflow = [c for c in candidates if c.document.get("name") == prefix and c.matches(inner)]
    if in_workflow:
        return in_workflow
    called: set[str] = set()
    for _, document in workflows:
        for job_id, job in list(_mapping(document.get("jobs")).items())[:MAX_JOBS_PER_WORKFLOW]:
            uses = job.get("uses") if isinstance(job, dict) else None
            name = job.get("name", job_id) if isinstance(job, dict) else None
            if isinstance(uses, str) and uses.startswith("./") and name == prefix:
                called.add(uses[2:].split("@", 1)[0])
    found = [c for c in candidates if c.path in called and c.matches(inner)]
    if found:
        notes.add(f"job {job_name!r} is {inner!r} of the workflow its caller {prefix!r} calls")
    return found


def _chosen_name(candidate: _Candidate, job_name: str | None) -> str:
    if candidate.names:
        if job_name:
            for name in candidate.names:
                if _name_matches(name, job_name):
                    return name
        return candidate.names[0]
    return job_name or candidate.template_name


def _finish(
    reader: _JobReader, match: _FailingMatch | None, name: str, notes: _Notes
) -> WorkflowJob:
    job = reader.build(match, name)
    if not notes.items:
        return job
    merged = _Notes(list(notes.items), set(notes.secrets))
    for item in job.notes:
        merged.add(item)
    merged.secret(job.secrets)
    return replace(job, notes=tuple(merged.items), secrets=tuple(sorted(merged.secrets)))
