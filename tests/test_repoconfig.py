"""``.github/shepherd.yml``: defaults, valid files, and every kind of invalid file with the line
its annotation must point at."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import pytest

from bot.kernel.repoconfig import (
    ALWAYS_PROTECTED,
    MAX_CONFIG_BYTES,
    ConfigResult,
    RepoConfig,
    load_config,
)

KNOWN = ("ruff-check", "ruff-format", "black", "isort", "whitespace", "prettier", "lockfile")


def load(text: str | None) -> ConfigResult:
    return load_config(textwrap.dedent(text) if text else text, known_fixers=KNOWN)


@pytest.mark.parametrize("text", [None, "", "   \n", "# only a comment\n", "---\n"])
def test_missing_or_empty_file_gives_defaults(text: str | None) -> None:
    result = load(text)
    assert result.ok
    assert result.error is None
    assert result.config == RepoConfig()


def test_defaults_are_conservative() -> None:
    config = RepoConfig()
    assert config.autofix.enabled
    assert config.autofix.fixer_enabled("black")
    assert config.autofix.on_human_prs
    assert not config.autofix.signoff
    assert config.autofix.commit_message == "shepherd: {fixers}"
    assert config.llm.mode == "command"
    assert config.llm.model is None
    assert config.llm.max_turns == 20
    assert config.llm.max_diff_lines == 200
    assert config.triage.size_thresholds == [10, 30, 100, 500, 1000]
    assert config.agent_lane.enabled
    assert config.agent_lane.max_changed_lines is None
    assert config.labels.needs_human == "shepherd/needs-human"
    assert config.labels.paused == "shepherd/paused"
    assert config.labels.agent == "agent-authored"
    assert config.autofix.protected_paths == ALWAYS_PROTECTED


FULL = """
autofix:
  enabled: true
  fixers:
    black: false
    ruff-check: true
  on_human_prs: false
  never_touch: ["vendor/**", "*.min.js"]
  commit_message: "chore(ci): {fixers} on {short_sha} (#{pr})"
  signoff: true
llm:
  mode: auto
  model: claude-test
  max_turns: 8
  max_input_tokens: 50000
  max_output_tokens: 4000
  timeout_seconds: 120
  max_diff_lines: 50
triage:
  size_thresholds: [5, 20, 50, 200, 800]
  areas:
    area/docs: ["docs/**", "*.md"]
    area/api: ["api/**"]
  generated_files: ["gen/**"]
  security_paths: ["auth/**"]
  risk_labels: false
  request_reviewers: false
  agent_logins: [my-agent]
agent_lane:
  enabled: true
  require_tests: true
  max_changed_lines: 400
  forbid_github_changes: true
  fallback_assignee: octocat
labels:
  needs_human: "help/needed"
  paused: "bot/paused"
  agent: "ai"
"""


def test_full_valid_file() -> None:
    result = load(FULL)
    assert result.ok, result.problems
    assert result.from_file
    config = result.config
    assert not config.autofix.fixer_enabled("black")
    assert config.autofix.fixer_enabled("ruff-check")
    assert config.autofix.fixer_enabled("isort")
    assert config.autofix.protected_paths == (*ALWAYS_PROTECTED, "vendor/**", "*.min.js")
    assert config.autofix.signoff
    assert (
        config.autofix.render_commit_message(
            fixers=["ruff-check", "isort"], head_sha="abcdef123", pr=7
        )
        == "chore(ci): ruff-check, isort on abcdef1 (#7)"
    )
    assert config.llm.mode == "auto"
    assert config.llm.model == "claude-test"
    assert config.triage.areas == {"area/docs": ["docs/**", "*.md"], "area/api": ["api/**"]}
    assert config.triage.size_thresholds == [5, 20, 50, 200, 800]
    assert config.agent_lane.max_changed_lines == 400
    assert config.agent_lane.fallback_assignee == "octocat"
    assert config.labels.agent == "ai"


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("autofix:\n  enabled: false\n", lambda c: not c.autofix.fixer_enabled("black")),
        ("llm:\n  mode: off\n", lambda c: c.llm.mode == "off"),  # YAML reads `off` as False
        ("llm:\n  mode: 'off'\n", lambda c: c.llm.mode == "off"),
        ("autofix:\n", lambda c: c.autofix.enabled),  # an empty section means defaults
        (
            "labels: {paused: stop}\n",
            lambda c: c.labels.paused == "stop" and c.labels.agent == "agent-authored",
        ),
        ("triage: {areas: {}}\n", lambda c: c.triage.areas == {}),
    ],
)
def test_partial_files(text: str, check: Callable[[RepoConfig], bool]) -> None:
    result = load(text)
    assert result.ok, result.problems
    assert check(result.config)


def test_aliases_within_limits_are_fine() -> None:
    text = """
    triage:
      generated_files: &gen ["gen/**", "build/**"]
      security_paths: *gen
    """
    result = load(text)
    assert result.ok, result.problems
    assert result.config.triage.security_paths == ["gen/**", "build/**"]


# Each invalid file, the line (1-based) the problem must point at, and a fragment of the message.
INVALID = [
    pytest.param("autofix:\n  enabled: [\n", 3, "invalid YAML", id="yaml-syntax-unclosed"),
    pytest.param("autofix:\n\tenabled: true\n", 2, "invalid YAML", id="yaml-tab"),
    pytest.param("a: 1\n b: 2\n", 2, "invalid YAML", id="yaml-bad-indent"),
    pytest.param("- just\n- a list\n", 1, "mapping", id="not-a-mapping"),
    pytest.param(
        "autofix:\n  enabeld: false\n", 2, "did you mean 'enabled'", id="unknown-key-typo"
    ),
    pytest.param(
        "\n\nautofx:\n  enabled: true\n", 3, "did you mean 'autofix'", id="unknown-section"
    ),
    pytest.param("llm:\n  modle: auto\n", 2, "unknown key 'modle' in llm", id="unknown-llm-key"),
    pytest.param("autofix:\n  enabled: maybe\n", 2, "autofix.enabled", id="wrong-type-bool"),
    pytest.param("llm:\n  max_turns: many\n", 2, "llm.max_turns", id="wrong-type-int"),
    pytest.param("llm:\n  max_turns: 0\n", 2, "greater than or equal", id="out-of-range"),
    pytest.param("llm:\n  mode: always\n", 2, "llm.mode", id="bad-literal"),
    pytest.param("autofix: true\n", 1, "autofix", id="section-not-mapping"),
    pytest.param(
        "autofix:\n  fixers:\n    black: true\n    blak: false\n",
        4,
        "unknown fixer 'blak'",
        id="unknown-fixer",
    ),
    pytest.param(
        "autofix:\n  fixers:\n    black: sometimes\n",
        3,
        "autofix.fixers.black",
        id="fixer-not-bool",
    ),
    pytest.param(
        "triage:\n  size_thresholds: [10, 30, 30, 500, 1000]\n",
        2,
        "strictly increasing",
        id="thresholds-not-increasing",
    ),
    pytest.param("triage:\n  size_thresholds: [1, 2, 3]\n", 2, "exactly 5", id="thresholds-count"),
    pytest.param(
        "triage:\n  size_thresholds:\n    - 10\n    - 30\n    - x\n    - 500\n    - 1000\n",
        5,
        "triage.size_thresholds.2",
        id="threshold-item-type",
    ),
    pytest.param(
        "triage:\n  size_thresholds: [0, 30, 100, 500, 1000]\n", 2, "positive", id="threshold-zero"
    ),
    pytest.param(
        "triage:\n  areas:\n    area/docs: docs/**\n",
        3,
        "triage.areas.area/docs",
        id="area-not-list",
    ),
    pytest.param(
        "autofix:\n  commit_message: 'fix {files}'\n",
        2,
        "unknown field {files}",
        id="template-field",
    ),
    pytest.param(
        "autofix:\n  commit_message: 'fix {'\n", 2, "invalid template", id="template-syntax"
    ),
    pytest.param("labels:\n  paused: ''\n", 2, "labels.paused", id="empty-label"),
    pytest.param("labels:\n  agent: " + "x" * 51 + "\n", 2, "labels.agent", id="label-too-long"),
    pytest.param(
        "agent_lane:\n  max_changed_lines: -5\n", 2, "agent_lane.max_changed_lines", id="negative"
    ),
    pytest.param(
        "autofix:\n  enabled: true\n  enabled: false\n", 3, "duplicate key", id="duplicate-key"
    ),
    pytest.param("x: !!python/object/apply:os.system ['id']\n", 1, "invalid YAML", id="python-tag"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), INVALID)
def test_invalid_files_point_at_the_line(text: str, line: int, fragment: str) -> None:
    result = load_config(text, known_fixers=KNOWN)
    assert not result.ok
    assert result.config == RepoConfig()  # the caller acts on nothing else
    error = result.error
    assert error is not None
    assert fragment in error.message
    assert error.line == line, error
    assert error.column is not None


def test_unknown_fixer_suggestion_and_path() -> None:
    result = load("autofix:\n  fixers:\n    rufcheck: true\n")
    assert result.error is not None
    assert result.error.path == "autofix.fixers.rufcheck"
    assert "did you mean 'ruff-check'" in result.error.message
    assert (result.error.line, result.error.column) == (3, 5)


def test_known_fixers_is_a_parameter() -> None:
    text = "autofix:\n  fixers:\n    custom: true\n"
    assert not load_config(text, known_fixers=KNOWN).ok
    assert load_config(text, known_fixers=[*KNOWN, "custom"]).ok


def test_all_problems_are_reported_in_line_order() -> None:
    text = "llm:\n  mode: sometimes\nautofix:\n  fixers:\n    nope: true\n  enabeld: 1\n"
    result = load(text)
    assert [p.line for p in result.problems] == [2, 5, 6]
    assert result.error is result.problems[0]


def test_oversized_file_is_refused_unparsed() -> None:
    text = "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1)
    result = load_config(text, known_fixers=KNOWN)
    assert result.error is not None
    assert "larger than 64 KB" in result.error.message
    assert result.error.line is None


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "\n".join(lines) + "\n"
    assert len(text) < 2000  # tiny on disk, 10**9 nodes when expanded
    result = load_config(text, known_fixers=KNOWN)
    assert result.error is not None
    assert "too large" in result.error.message


def test_deep_nesting_is_refused() -> None:
    text = "triage:\n  areas:\n    x: " + "[" * 40 + "]" * 40 + "\n"
    result = load_config(text, known_fixers=KNOWN)
    assert result.error is not None
    assert "deeper" in result.error.message
    assert result.error.line == 3


def test_empty_unknown_section_is_still_an_error() -> None:
    result = load("autofx:\n")
    assert result.error is not None
    assert "did you mean 'autofix'" in result.error.message


def test_scope_commands_and_behaviour_changes() -> None:
    result = load(
        """
        autofix:
          scope: all
          behaviour_changes: push
          commands:
            - check: make lint
              fix: make fmt
        """
    )
    assert result.ok, result.problems
    autofix = result.config.autofix
    assert autofix.scope == "all"
    assert autofix.behaviour_changes == "push"
    assert [(c.check, c.fix) for c in autofix.commands] == [("make lint", "make fmt")]


def test_scope_and_behaviour_defaults() -> None:
    autofix = load("autofix:\n  enabled: true\n").config.autofix
    assert autofix.scope == "changed"
    assert autofix.behaviour_changes == "review"
    assert autofix.commands == []


@pytest.mark.parametrize(
    "text",
    [
        "autofix:\n  scope: everything\n",
        "autofix:\n  commands:\n    - check: make lint\n",
        "autofix:\n  commands:\n    - check: make lint\n      fix: make fmt\n      shell: zsh\n",
        "autofix:\n  behaviour_changes: sometimes\n",
    ],
)
def test_invalid_scope_commands_and_behaviour(text: str) -> None:
    result = load(text)
    assert not result.ok
    assert result.error is not None
    assert result.error.line is not None
