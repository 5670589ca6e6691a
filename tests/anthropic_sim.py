"""A local Anthropic Messages API (``POST /v1/messages``) that plays scripted sessions.

It speaks the real wire format: the request headers the SDK sends (``x-api-key``,
``anthropic-version``), message and content-block shapes (``text``, ``tool_use``,
``tool_result``), ``stop_reason``, ``usage`` with cache fields, and error bodies
(``{"type": "error", "error": {"type": ..., "message": ...}}``) with ``retry-after``. The real
``anthropic.AsyncAnthropic(base_url=...)`` is pointed at it.

Token counts are estimated (4 characters per token). Prompt caching is modelled as the API does
it for a breakpoint on the last tool and on the system prompt: the prefix (tools, then system)
is written to the cache by the first request that carries it and read by every later request
whose prefix is byte-identical; prefixes shorter than ``min_cacheable_tokens`` are not cached.
Tests assert on ``requests`` (every body and header as received).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from unidiff.patch import PatchSet

API_VERSION = "2023-06-01"


@dataclass(frozen=True)
class Reply:
    """A canned assistant message."""

    content: tuple[dict[str, Any], ...]
    stop_reason: str | None = None

    @property
    def effective_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(b["type"] == "tool_use" for b in self.content) else "end_turn"


@dataclass(frozen=True)
class ErrorReply:
    """An API error: status, error type, and headers such as ``retry-after``."""

    status: int
    error_type: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RecordedRequest:
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]

    @property
    def prefix_bytes(self) -> bytes:
        """The cacheable prefix as the API orders it: tools, then system."""
        return prefix_bytes(self.body)

    def tool_results(self) -> list[dict[str, Any]]:
        """The ``tool_result`` blocks of the last user message."""
        last = self.body["messages"][-1]
        content = last["content"]
        if isinstance(content, str):
            return []
        return [block for block in content if block.get("type") == "tool_result"]


Step = Reply | ErrorReply | Callable[[RecordedRequest], "Reply | ErrorReply"]


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(name: str, tool_input: dict[str, Any], *, id: str | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id or "", "name": name, "input": tool_input}


def reply(*blocks: dict[str, Any], stop_reason: str | None = None) -> Reply:
    return Reply(content=tuple(blocks), stop_reason=stop_reason)


def rate_limited(retry_after: float = 7, retry_after_ms: float | None = 5) -> ErrorReply:
    headers = [("retry-after", _num(retry_after))]
    if retry_after_ms is not None:
        # The SDK prefers this header over retry-after; keeps the SDK's waits short in tests.
        headers.append(("retry-after-ms", _num(retry_after_ms)))
    return ErrorReply(
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your per-minute rate limit",
        tuple(headers),
    )


def overloaded(retry_after_ms: float | None = 5) -> ErrorReply:
    headers = () if retry_after_ms is None else (("retry-after-ms", _num(retry_after_ms)),)
    return ErrorReply(529, "overloaded_error", "Overloaded", headers)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def prefix_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(
        {"tools": body.get("tools", []), "system": body.get("system", [])},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def estimate_tokens(data: bytes | str) -> int:
    size = len(data.encode() if isinstance(data, str) else data)
    return max(1, (size + 3) // 4)


def _has_breakpoint(body: dict[str, Any]) -> bool:
    blocks = [*body.get("tools", []), *(body.get("system") or [])]
    return any(isinstance(b, dict) and "cache_control" in b for b in blocks)


@dataclass
class MessagesSimulator:
    """The scripted API. ``script`` is consumed one step per request, errors included."""

    script: Sequence[Step]
    api_key: str = "sk-ant-test-sim-key"
    model_echo: str | None = None
    min_cacheable_tokens: int = 1024
    #: The system prompt the API adds when tools are given (346 tokens for Claude 4 models with
    #: ``tool_choice`` auto, per the tool-use docs); it is part of the cached prefix.
    tool_overhead_tokens: int = 346
    requests: list[RecordedRequest] = field(default_factory=list)
    #: Hashes of the prefixes in the cache (shared across sessions that reuse this simulator).
    cache: set[str] = field(default_factory=set)
    _position: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def extend(self, steps: Sequence[Step]) -> None:
        self.script = [*self.script, *steps]

    @property
    def remaining(self) -> int:
        return len(self.script) - self._position

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        return app

    async def _messages(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return _error(400, "invalid_request_error", "request body is not valid JSON")
        recorded = RecordedRequest(headers=headers, raw=raw, body=body)
        self.requests.append(recorded)

        if self._presented_key(headers) != self.api_key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        problem = _validate(body)
        if problem is not None:
            return _error(400, "invalid_request_error", problem)
        if self._position >= len(self.script):
            return _error(500, "api_error", "simulator script exhausted")
        step = self.script[self._position]
        self._position += 1
        outcome = step(recorded) if callable(step) else step
        if isinstance(outcome, ErrorReply):
            return _error(outcome.status, outcome.error_type, outcome.message, outcome.headers)
        return web.json_response(
            self._message(body, outcome), headers={"request-id": self._id("req")}
        )

    @staticmethod
    def _presented_key(headers: dict[str, str]) -> str | None:
        # The API takes the key as ``x-api-key``; recent SDKs send it as a bearer token.
        if "x-api-key" in headers:
            return headers["x-api-key"]
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" else None

    def _id(self, prefix: str) -> str:
        return f"{prefix}_sim{next(self._ids):06d}"

    def _message(self, body: dict[str, Any], outcome: Reply) -> dict[str, Any]:
        content = [
            {**block, "id": block["id"] or self._id("toolu")}
            if block["type"] == "tool_use"
            else dict(block)
            for block in outcome.content
        ]
        prefix = prefix_bytes(body)
        prefix_tokens = estimate_tokens(prefix)
        if body.get("tools"):
            prefix_tokens += self.tool_overhead_tokens
        rest_tokens = estimate_tokens(json.dumps(body.get("messages", []), separators=(",", ":")))
        cache_write = cache_read = 0
        if _has_breakpoint(body) and prefix_tokens >= self.min_cacheable_tokens:
            key = hashlib.sha256(body.get("model", "").encode() + b"\0" + prefix).hexdigest()
            if key in self.cache:
                cache_read = prefix_tokens
            else:
                self.cache.add(key)
                cache_write = prefix_tokens
        else:
            rest_tokens += prefix_tokens
        output_tokens = estimate_tokens(json.dumps(content, separators=(",", ":")))
        return {
            "id": self._id("msg"),
            "type": "message",
            "role": "assistant",
            "model": self.model_echo or body["model"],
            "content": content,
            "stop_reason": outcome.effective_stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": rest_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": cache_write,
                "cache_read_input_tokens": cache_read,
            },
        }


def _error(
    status: int, error_type: str, message: str, headers: Sequence[tuple[str, str]] = ()
) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": error_type, "message": message}},
        status=status,
        headers={"request-id": "req_sim_error", **dict(headers)},
    )


def _validate(body: dict[str, Any]) -> str | None:
    """The checks the real API makes that a client bug would trip."""
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return "max_tokens: must be a positive integer"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if messages[0].get("role") != "user":
        return "messages: first message must use the user role"
    for index, (current, following) in enumerate(itertools.pairwise([*messages, None])):
        if following is not None and following.get("role") == current.get("role"):
            return f"messages.{index + 1}: roles must alternate between user and assistant"
        content = current.get("content")
        if current.get("role") != "assistant" or isinstance(content, str):
            continue
        ids = {b["id"] for b in content if b.get("type") == "tool_use"}
        if not ids:
            continue
        if following is None:
            return f"messages.{index}: the last message must not be an assistant tool_use"
        answered = {
            b.get("tool_use_id")
            for b in following.get("content", [])
            if isinstance(b, dict) and b.get("type") == "tool_result"
        }
        if ids - answered:
            return (
                f"messages.{index + 1}: tool_use ids were found without tool_result blocks "
                f"immediately after: {', '.join(sorted(ids - answered))}"
            )
    return None


# --- scripts derived from a reference patch ------------------------------------------------------


def patch_edits(patch_text: str) -> list[dict[str, Any]]:
    """The tool_use blocks that apply ``patch_text`` with the agent's tools.

    One ``replace_in_file`` per hunk (old: context and removed lines; new: context and added
    lines), ``create_file`` for new files.
    """
    blocks: list[dict[str, Any]] = []
    for patched in PatchSet(patch_text):
        path = str(patched.path)
        if patched.is_added_file:
            content = "".join(line.value for hunk in patched for line in hunk if line.is_added)
            blocks.append(tool_use("create_file", {"path": path, "content": content}))
            continue
        for hunk in patched:
            old = "".join(line.value for line in hunk if not line.is_added)
            new = "".join(line.value for line in hunk if not line.is_removed)
            blocks.append(tool_use("replace_in_file", {"path": path, "old": old, "new": new}))
    return blocks


def reference_session(patch_text: str, *, explanation: str = "Applied the fix.") -> list[Step]:
    """A realistic session: read each file the patch touches, edit, run the check, finish.

    The final step is a function of the request: it finishes only when the check passed,
    otherwise it says so (the test then sees ``check_failed``).
    """
    paths = sorted({str(p.path) for p in PatchSet(patch_text) if not p.is_added_file})
    steps: list[Step] = []
    if paths:
        steps.append(reply(*(tool_use("read_file", {"path": p}) for p in paths)))
    steps.append(reply(text("Editing."), *patch_edits(patch_text)))
    steps.append(reply(tool_use("run_check", {})))

    def finish(request: RecordedRequest) -> Reply:
        results = request.tool_results()
        passed = bool(results) and str(results[-1].get("content", "")).startswith("passed")
        note = explanation if passed else "The check still fails."
        return reply(tool_use("finish", {"explanation": note}))

    steps.append(finish)
    return steps
