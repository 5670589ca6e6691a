"""``eslint``: ``eslint --fix`` with the repository's own eslint and config.

The failing step ran eslint directly (``npx eslint .``) or through a package script (``npm run
lint``, ``pnpm lint``, ``yarn lint``); either way the arguments it gave eslint are reused. Which
eslint runs: the repository's own (``node_modules/.bin/eslint`` of the sub-project or a directory
above it, as the job environment installed it), else the version the repository pins
(``package-lock.json``, an exact ``devDependencies`` entry) installed into the tool cache, else
the bundled one. The summary names it.

eslint's summary says how many problems ``--fix`` can repair; the fixer claims a failure only
when that covers every error (else the check would still fail, and the failure is a code
problem). Before fixing, eslint reports which rules it will fix (``json-with-metadata``): a fix
by a rule outside the layout and stylistic set (``no-implicit-coercion`` turns ``!!x`` into
``Boolean(x)``) may change what the code does, so it is marked for review
(``FixResult.changes_behaviour``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

from bot.diagnosis.logs import DistilledLog
from bot.kernel.errors import FixerError
from fixers.base import FixContext, FixResult, RepoFiles, WorktreeFiles
from fixers.prettier import package_script
from fixers.tools import (
    ToolChoice,
    ToolRun,
    bundled_executable,
    bundled_version,
    fix_dir,
    local_bin,
    prepare_tool,
    probe,
    resolve_tool,
    run_fixer,
    runner_tool_cache,
    tool_args_from_command,
)

_SUMMARY = re.compile(r"✖ (\d+) problems? \((\d+) errors?, (\d+) warnings?\)")
_FIXABLE = re.compile(r"(\d+) errors? and (\d+) warnings? potentially fixable with the `--fix`")
_SCRIPT = re.compile(r"\b(?:npm run(?:-script)?|yarn(?: run)?|pnpm(?: run)?)\s+([\w:.-]+)")
_ECHOED = re.compile(r"^> eslint\b", re.M)
_TOOL = re.compile(r"(?<![\w-])eslint(?![\w-])")
#: Options of a check run that the fixing run must not repeat (they set the output, not what is
#: linted), with whether they take a value.
_OUTPUT_OPTIONS = {
    "-f": True,
    "--format": True,
    "-o": True,
    "--output-file": True,
    "--fix-dry-run": False,
    "--fix": False,
    "--color": False,
    "--no-color": False,
}

#: Rules whose fixes only restyle code (besides every rule eslint itself types ``layout``).
#: ``no-var`` is here because its fixer declines every case where ``let`` would behave
#: differently (redeclaration, use before declaration, closures in loops).
STYLISTIC_RULES = frozenset(
    {
        "arrow-body-style",
        "capitalized-comments",
        "curly",
        "dot-notation",
        "no-else-return",
        "no-extra-boolean-cast",
        "no-lonely-if",
        "no-useless-computed-key",
        "no-useless-rename",
        "no-useless-return",
        "no-var",
        "object-shorthand",
        "operator-assignment",
        "prefer-const",
        "prefer-template",
        "quote-props",
        "sort-imports",
        "spaced-comment",
        "yoda",
        "prettier/prettier",
        "import/order",
        "simple-import-sort/imports",
        "simple-import-sort/exports",
    }
)
_STYLISTIC_PLUGINS = ("@stylistic/",)


def fixable_counts(excerpt: str) -> tuple[int, int, int, int] | None:
    """(errors, warnings, fixable errors, fixable warnings) from eslint's summary, or None."""
    summary = _SUMMARY.search(excerpt)
    fixable = _FIXABLE.search(excerpt)
    if summary is None or fixable is None:
        return None
    return (int(summary[2]), int(summary[3]), int(fixable[1]), int(fixable[2]))


def _script_bodies(log: DistilledLog, repo: RepoFiles) -> list[str]:
    subdir = log.working_directory or ""
    bodies = []
    for match in _SCRIPT.finditer(log.command or ""):
        script = package_script(repo, subdir, match.group(1))
        if script is not None:
            bodies.append(script)
    return bodies


def eslint_args(log: DistilledLog, repo: RepoFiles) -> list[str]:
    """The arguments the step gave eslint, without its output options; ``.`` when none."""
    for text in (log.commands, *_script_bodies(log, repo)):
        args = tool_args_from_command(text, "eslint")
        if args is None:
            continue
        kept: list[str] = []
        skip = False
        for arg in args:
            if skip:
                skip = False
                continue
            name = arg.split("=", 1)[0]
            if name in _OUTPUT_OPTIONS:
                skip = _OUTPUT_OPTIONS[name] and "=" not in arg
                continue
            kept.append(arg)
        has_target = any(not a.startswith("-") for a in kept)
        return kept if has_target else [*kept, "."]
    return ["."]


def behaviour_rules(report: object) -> tuple[set[str], set[str]] | None:
    """(rules whose fixes will apply, those of them outside the layout/stylistic set) from an
    ``eslint -f json-with-metadata`` report, or None when it is not one."""
    if not isinstance(report, dict):
        return None
    results = report.get("results")
    meta = (report.get("metadata") or {}).get("rulesMeta") or {}
    if not isinstance(results, list) or not isinstance(meta, dict):
        return None
    fixed: set[str] = set()
    for result in results:
        for message in (result or {}).get("messages") or []:
            if isinstance(message, dict) and message.get("fix") and message.get("ruleId"):
                fixed.add(str(message["ruleId"]))
    risky = {
        rule
        for rule in fixed
        if rule not in STYLISTIC_RULES
        and not rule.startswith(_STYLISTIC_PLUGINS)
        and (meta.get(rule) or {}).get("type") != "layout"
    }
    return fixed, risky


def _json_object(output: str) -> object:
    start, end = output.find('{"results"'), output.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        return json.loads(output[start : end + 1])
    except json.JSONDecodeError:
        return None


class EslintFixer:
    name = "eslint"

    def matches(self, log: DistilledLog, repo: RepoFiles) -> bool:
        counts = fixable_counts(log.excerpt)
        if counts is None:
            return False
        errors, warnings, fixable_errors, fixable_warnings = counts
        if errors:
            if fixable_errors < errors:
                return False  # what --fix leaves is a code problem
        elif not (warnings and fixable_warnings == warnings):
            return False
        if _TOOL.search(log.commands) or _ECHOED.search(log.excerpt):
            return True
        return any(_TOOL.search(body) for body in _script_bodies(log, repo))

    async def _choose(self, ctx: FixContext, cwd: Path) -> ToolChoice:
        for candidate in local_bin(ctx, "eslint"):
            version = await probe(ctx, [candidate, "--version"], cwd=cwd)
            if version:
                where = "the repository's node_modules" + (
                    "" if candidate.startswith("node_modules") else f" ({candidate})"
                )
                return ToolChoice("eslint", version.removeprefix("v"), where, (candidate,))
        repo = WorktreeFiles(ctx.worktree)
        choice = resolve_tool("eslint", repo, ctx.subdir)
        if choice.source != "bundled" or choice.needs_install:
            choice = await prepare_tool(choice, cache_dir=runner_tool_cache(ctx.runner))
            if choice.source.startswith("pinned"):
                choice = dataclasses.replace(
                    choice,
                    source=choice.source + "; not installed by the job, so the "
                    "repository's eslint plugins are not available to it",
                )
            return choice
        return ToolChoice(
            "eslint",
            bundled_version("eslint"),
            "bundled; the job environment has no eslint installed",
            (str(bundled_executable("eslint")),),
        )

    async def apply(self, ctx: FixContext) -> FixResult:
        cwd = await asyncio.to_thread(fix_dir, ctx)
        choice = await self._choose(ctx, cwd)
        if not choice.argv_prefix:
            raise FixerError("eslint: no executable")
        args = eslint_args(ctx.log, WorktreeFiles(ctx.worktree))
        exe = list(choice.argv_prefix)
        report = await ctx.runner.run(
            [*exe, "--format", "json-with-metadata", *args],
            cwd=cwd,
            writable=ctx.worktree,
            timeout=600.0,
        )
        rules = behaviour_rules(_json_object(report.output))
        run = ToolRun(fix=[*exe, "--fix", *args], check=[*exe, *args], ok_codes=frozenset({0, 1}))
        result = await run_fixer(ctx, self.name, choice, [run])
        return _with_behaviour(result, rules)


def _with_behaviour(result: FixResult, rules: tuple[set[str], set[str]] | None) -> FixResult:
    if not result.changed:
        return result
    if rules is None:
        return dataclasses.replace(
            result,
            changes_behaviour=True,
            behaviour_note="eslint did not say which rules its fix applies",
        )
    fixed, risky = rules
    detail = f"{result.detail}\nrules fixed: {', '.join(sorted(fixed)) or 'none reported'}"
    if not risky:
        return dataclasses.replace(result, detail=detail)
    return dataclasses.replace(
        result,
        detail=detail,
        changes_behaviour=True,
        behaviour_note=(
            "eslint rules outside the layout/stylistic set were applied: "
            + ", ".join(sorted(risky))
        ),
    )


ESLINT = EslintFixer()
