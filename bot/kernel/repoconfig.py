"""The repository's ``.github/shepherd.yml``: model, defaults and a loader that points at lines.

The file is read at the pull request's **base** SHA by the caller, so a PR cannot change the rules
it is judged by. This module is pure: it gets the file's text (or None when the file is missing)
and returns a :class:`ConfigResult`. An invalid file does not raise: the result carries the
defaults plus the problems, each with the line and column in the YAML it refers to, so the caller
can post one neutral ``shepherd`` check run with an annotation on that line and do nothing else.

Every section forbids unknown keys, so a typo (``enabeld: false``) is reported instead of being
silently ignored.
"""

from __future__ import annotations

import difflib
import itertools
import string
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.kernel import JSONObject

#: Where the file lives in the repository.
CONFIG_PATH = ".github/shepherd.yml"

#: Files bigger than this are refused unread: a configuration file is a few KB at most.
MAX_CONFIG_BYTES = 64 * 1024
#: Limits on the composed YAML graph. Aliases are followed when counting, so an alias bomb
#: ("billion laughs") is stopped after this many nodes instead of expanding exponentially.
MAX_YAML_NODES = 10_000
MAX_YAML_DEPTH = 32

#: Fields the ``autofix.commit_message`` template may use.
COMMIT_MESSAGE_FIELDS: dict[str, str] = {
    "fixers": "comma-separated names of the fixers that changed files, e.g. 'ruff-check, black'",
    "short_sha": "the first 7 characters of the head SHA the fix was made on",
    "pr": "the pull request number",
}

#: Paths the bot never modifies whatever the configuration says: its own rules (a fix must not
#: rewrite the policy it is judged by) and workflow files (pushing them needs a permission the
#: App does not ask for, and CI definitions are a human decision).
ALWAYS_PROTECTED: tuple[str, ...] = (CONFIG_PATH, ".github/workflows/**")

Glob = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00\n\r]+$")]
# GitHub limits label names to 50 characters.
LabelName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50, pattern=r"^[^\n\r]+$"),
]
Login = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\s]+$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Command = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=1000, pattern=r"^[^\x00]+$"),
]


class FixCommand(_Section):
    """A fix the repository declares: when a failing step's command is ``check``, Shepherd runs
    ``fix`` in the sandbox, then verifies with ``check``."""

    check: Command
    fix: Command


class AutofixConfig(_Section):
    """Deterministic fixers (``ruff-check``, ``black``, ...)."""

    #: Master switch for all deterministic fixers.
    enabled: bool = True
    #: Per-fixer switch by name; a fixer not listed is enabled. Unknown names are an error.
    fixers: dict[str, bool] = Field(default_factory=dict)
    #: Whether to autofix PRs written by humans too (agent-authored PRs are always eligible).
    on_human_prs: bool = True
    #: Path globs (repository-relative, ``**`` allowed) the bot must never modify.
    never_touch: list[Glob] = Field(default_factory=list)
    #: Commit message template; fields are those of ``COMMIT_MESSAGE_FIELDS``.
    commit_message: str = Field(default="shepherd: {fixers}", min_length=1, max_length=2000)
    #: Add a DCO ``Signed-off-by`` trailer to the bot's commits.
    signoff: bool = False
    #: ``changed``: fix only the files the pull request changed, and widen to every file only
    #: when the check still fails; ``all``: fix every file the tool touches.
    scope: Literal["changed", "all"] = "changed"
    #: Fix commands of the repository's own (``[{check: "make lint", fix: "make fmt"}]``),
    #: the ``command`` fixer.
    commands: list[FixCommand] = Field(default_factory=list, max_length=50)
    #: Fixes a fixer says may change behaviour (eslint rules outside the layout/stylistic set):
    #: ``review`` posts them as suggestions, ``push`` pushes them like any other fix.
    behaviour_changes: Literal["review", "push"] = "review"

    @field_validator("commit_message")
    @classmethod
    def _known_fields_only(cls, value: str) -> str:
        try:
            parsed = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(f"invalid template: {exc}") from exc
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if name not in COMMIT_MESSAGE_FIELDS:
                known = ", ".join("{" + f + "}" for f in COMMIT_MESSAGE_FIELDS)
                raise ValueError(f"unknown field {{{name}}}; use {known} (or {{{{ }}}} for braces)")
            if spec or conversion:
                raise ValueError(f"field {{{name}}} takes no format spec or conversion")
        return value

    def fixer_enabled(self, name: str) -> bool:
        return self.enabled and self.fixers.get(name, True)

    @property
    def protected_paths(self) -> tuple[str, ...]:
        """``never_touch`` plus the paths that are protected whatever the config says."""
        return (*ALWAYS_PROTECTED, *self.never_touch)

    def render_commit_message(self, *, fixers: Sequence[str], head_sha: str, pr: int) -> str:
        return self.commit_message.format(fixers=", ".join(fixers), short_sha=head_sha[:7], pr=pr)


class LLMConfig(_Section):
    """The single LLM repair attempt.

    ``mode``: ``auto`` = automatic on agent-authored PRs and on ``/shepherd fix`` on human PRs;
    ``command`` = only when someone with write access asks with ``/shepherd fix`` (the default:
    nothing spends model tokens or pushes model-written code unless a person asked for it);
    ``off`` = never.
    """

    mode: Literal["auto", "command", "off"] = "command"
    #: Model name; None means the deployment's default (settings), so it is named in one place.
    model: str | None = Field(default=None, min_length=1, max_length=200)
    max_turns: int = Field(default=20, ge=1, le=100)
    #: Total input tokens over the whole attempt (all turns).
    max_input_tokens: int = Field(default=200_000, ge=1_000, le=5_000_000)
    #: Total output tokens over the whole attempt.
    max_output_tokens: int = Field(default=16_000, ge=100, le=500_000)
    #: Wall-clock limit for the attempt, including running the check.
    timeout_seconds: int = Field(default=600, ge=10, le=3600)
    #: A repair whose diff is bigger than this (added + removed lines) is handed off instead.
    max_diff_lines: int = Field(default=200, ge=1, le=10_000)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off_is_false(cls, value: object) -> object:
        # YAML 1.1 (PyYAML) reads a bare `off` as the boolean False; people mean the mode.
        return "off" if value is False else value


class TriageConfig(_Section):
    #: Changed-line boundaries for size/XS|S|M|L|XL|XXL (Prow's defaults).
    size_thresholds: list[int] = Field(default_factory=lambda: [10, 30, 100, 500, 1000])
    #: Area label -> path globs; a PR touching a matching path gets the label.
    areas: dict[LabelName, list[Glob]] = Field(default_factory=dict)
    #: Extra generated-file globs excluded from size (besides .gitattributes and lockfiles).
    generated_files: list[Glob] = Field(default_factory=list)
    #: Globs of security-sensitive paths (a risk flag when touched).
    security_paths: list[Glob] = Field(default_factory=list)
    #: Show risk flags as labels (they are always in the summary).
    risk_labels: bool = True
    #: Request review from the CODEOWNERS owners (else only suggest them in the summary).
    request_reviewers: bool = True
    #: Logins whose PRs count as agent-authored, besides the known agents.
    agent_logins: list[Login] = Field(default_factory=list)

    @field_validator("size_thresholds")
    @classmethod
    def _five_increasing(cls, value: list[int]) -> list[int]:
        if len(value) != 5:
            raise ValueError(f"needs exactly 5 values (XS/S/M/L/XL upper bounds), got {len(value)}")
        if value[0] < 1 or any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("values must be positive and strictly increasing")
        return value


class AgentLaneConfig(_Section):
    """Stricter handling of agent-authored PRs."""

    #: Hold human review requests until checks are green; assign a human on hand-off.
    enabled: bool = True
    #: Fail the agent policy when source files change and no test file does.
    require_tests: bool = False
    #: Fail the agent policy above this many changed lines (None: no limit).
    max_changed_lines: int | None = Field(default=None, ge=1)
    #: Fail the agent policy when the PR changes anything under ``.github/``.
    forbid_github_changes: bool = False
    #: Who to assign on hand-off when the PR names no human (assignee, human co-author).
    fallback_assignee: Login | None = None


class LabelsConfig(_Section):
    needs_human: LabelName = "shepherd/needs-human"
    paused: LabelName = "shepherd/paused"
    agent: LabelName = "agent-authored"


class RepoConfig(_Section):
    autofix: AutofixConfig = Field(default_factory=AutofixConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    triage: TriageConfig = Field(default_factory=TriageConfig)
    agent_lane: AgentLaneConfig = Field(default_factory=AgentLaneConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_are_defaults(cls, data: Any) -> Any:
        # `autofix:` with nothing under it is YAML null; people mean "the defaults".
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (v is None and k in cls.model_fields)}
        return data


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the file. ``line``/``column`` are 1-based; None when not tied to one."""

    message: str
    line: int | None = None
    column: int | None = None
    #: Dotted key path, e.g. ``autofix.fixers.blak`` ('' for the whole file).
    path: str = ""


@dataclass(frozen=True)
class ConfigResult:
    """The configuration to use, and what was wrong with the file (empty when it is valid).

    With problems, ``config`` holds the defaults; the caller reports the problems and acts on
    nothing else.
    """

    config: RepoConfig
    problems: tuple[ConfigProblem, ...] = ()
    #: False when the file is missing or empty.
    from_file: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def error(self) -> ConfigProblem | None:
        return self.problems[0] if self.problems else None


class _YAMLRejected(Exception):
    def __init__(self, message: str, node: yaml.Node | None = None) -> None:
        super().__init__(message)
        self.node = node


def load_config(text: str | None, *, known_fixers: Collection[str]) -> ConfigResult:
    """Parse and validate ``.github/shepherd.yml``; never raises on bad content."""
    if text is None or not text.strip():
        return ConfigResult(RepoConfig())
    if len(text.encode("utf-8", errors="replace")) > MAX_CONFIG_BYTES:
        return _failed(ConfigProblem(f"file is larger than {MAX_CONFIG_BYTES // 1024} KB"))
    try:
        root, data = _parse(text)
    except _YAMLRejected as exc:
        line, column = _mark(exc.node)
        return _failed(ConfigProblem(str(exc), line, column))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        return _failed(
            ConfigProblem(
                f"invalid YAML: {problem}",
                mark.line + 1 if mark else None,
                mark.column + 1 if mark else None,
            )
        )
    except yaml.YAMLError as exc:
        return _failed(ConfigProblem(f"invalid YAML: {exc}"))
    if data is None:
        return ConfigResult(RepoConfig(), from_file=True)
    if not isinstance(data, dict):
        line, column = _mark(root)
        return _failed(ConfigProblem("the file must be a mapping of sections", line, column))

    problems: list[ConfigProblem] = []
    try:
        config = RepoConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problem_from_error(root, err) for err in exc.errors())
        config = None
    problems.extend(_unknown_fixers(root, data, known_fixers))
    if problems or config is None:
        problems.sort(key=lambda p: (p.line or 0, p.column or 0))
        return _failed(*problems)
    return ConfigResult(config, from_file=True)


def _failed(*problems: ConfigProblem) -> ConfigResult:
    return ConfigResult(RepoConfig(), tuple(problems), from_file=True)


def _parse(text: str) -> tuple[yaml.Node | None, Any]:
    """Compose with the safe loader, check the graph's size, then construct from the same nodes."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_graph(root)
        return root, loader.construct_document(root)
    finally:
        loader.dispose()


def _check_graph(root: yaml.Node) -> None:
    count = 0
    # Depth-first over the graph with aliases followed, i.e. the size the data would have.
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise _YAMLRejected(f"document too large (over {MAX_YAML_NODES} nodes)", node)
        if depth > MAX_YAML_DEPTH:
            raise _YAMLRejected(f"document nested deeper than {MAX_YAML_DEPTH} levels", node)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise _YAMLRejected(f"duplicate key {key.value!r}", key)
                    seen.add(key.value)
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in node.value)


def _mark(node: yaml.Node | None) -> tuple[int | None, int | None]:
    if node is None:
        return None, None
    return node.start_mark.line + 1, node.start_mark.column + 1


def _locate(root: yaml.Node | None, path: Sequence[str | int]) -> yaml.Node | None:
    """The YAML node a validation error path points at: the key node for a mapping entry (so the
    annotation lands on ``key:`` even when the value is a block below it), the item node for a
    list index; the deepest node found when the path leaves the document (e.g. a missing key)."""
    node = root
    found = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            entry = next(
                (
                    (k, v)
                    for k, v in node.value
                    if isinstance(k, yaml.ScalarNode) and k.value == str(part)
                ),
                None,
            )
            if entry is None:
                return found
            found, node = entry
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return found
            node = node.value[part]
            found = node
        else:
            return found
    return found


def _fields_of(path: Sequence[str | int]) -> list[str]:
    """Allowed keys at ``path`` (for 'did you mean' hints)."""
    model: type[BaseModel] = RepoConfig
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _problem_from_error(root: yaml.Node | None, err: Any) -> ConfigProblem:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc)
    line, column = _mark(_locate(root, loc))
    if err["type"] == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        where = ".".join(str(p) for p in parent) or "the top level"
        allowed = _fields_of(parent)
        hint = difflib.get_close_matches(key, allowed, n=1)
        message = f"unknown key {key!r} in {where}"
        if hint:
            message += f" (did you mean {hint[0]!r}?)"
        elif allowed:
            message += f"; allowed: {', '.join(allowed)}"
        return ConfigProblem(message, line, column, dotted)
    message = str(err["msg"]).removeprefix("Value error, ")
    return ConfigProblem(f"{dotted}: {message}", line, column, dotted)


def _unknown_fixers(
    root: yaml.Node | None, data: JSONObject, known_fixers: Collection[str]
) -> Iterator[ConfigProblem]:
    autofix = data.get("autofix")
    fixers = autofix.get("fixers") if isinstance(autofix, dict) else None
    if not isinstance(fixers, dict):
        return
    known = sorted(known_fixers)
    for name in fixers:
        if name in known:
            continue
        path = ("autofix", "fixers", str(name))
        line, column = _mark(_locate(root, path))
        hint = difflib.get_close_matches(str(name), known, n=1)
        message = f"unknown fixer {name!r}" + (
            f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(known)}"
        )
        yield ConfigProblem(message, line, column, ".".join(path))
