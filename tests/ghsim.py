"""A GitHub REST API simulator for tests (aiohttp), checked against ``../shared/github``.

Every request is matched to an operation of ``openapi-subset.json`` by method and path template;
an unknown route answers 404 and a JSON body that does not satisfy the operation's request schema
answers 422. Both are recorded in ``sim.violations`` so a test can ``sim.assert_no_violations()``.

State is an in-memory model of what the bot touches (repos, pulls, check runs, comments, labels,
reactions, permissions, workflow runs/jobs/logs). The Git Data API is backed by a real bare git
repository on disk that the test provides.

Usage::

    sim, base_url = await start_simulator()
    repo = sim.add_repo("octo", "demo", git_dir=bare_repo_path)
    ...
    await sim.close()

or the ``github_sim`` fixture (``from tests.ghsim import github_sim``).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import fnmatch
import functools
import hashlib
import itertools
import json
import os
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlencode

import jwt
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SHARED_GITHUB = Path(__file__).resolve().parents[1].parent / "shared" / "github"
SPEC_PATH = SHARED_GITHUB / "openapi-subset.json"
EXAMPLES_DIR = SHARED_GITHUB / "openapi-examples"

JSON = dict[str, Any]
Handler = Callable[["SimContext"], Awaitable[web.StreamResponse]]

# Path parameters whose values may contain "/" (file paths, git refs such as heads/feat/x).
_SLASHY_PARAMS = frozenset({"path", "ref"})
_ZERO_SHA = "0" * 40


# --- OpenAPI routing and validation ----------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    operation_id: str
    pattern: re.Pattern[str]
    literal_chars: int
    body_schema: JSON | None
    body_required: bool


_SPEC_URI = "urn:ghsim:openapi-subset"


def _prepare_schema(node: Any) -> Any:
    """Make a request-body schema validatable on its own.

    Local ``#/components/...`` references are pointed at the registered document. And
    ``discriminator`` keywords are dropped: GitHub's ``checks/create`` declares
    ``discriminator: {propertyName: status}`` without a mapping, so a strict OpenAPI validator
    looks for ``#/components/schemas/completed`` and fails; the ``oneOf`` beside it already says
    everything the discriminator means.
    """
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "discriminator":
                continue
            if key == "$ref" and isinstance(value, str) and value.startswith("#"):
                value = _SPEC_URI + value
            out[key] = _prepare_schema(value)
        return out
    if isinstance(node, list):
        return [_prepare_schema(v) for v in node]
    return node


def _template_regex(path: str, method: str) -> re.Pattern[str]:
    out = []
    for piece in re.split(r"(\{[^}]+\})", path):
        if piece.startswith("{"):
            name = piece[1:-1]
            # GET /repos/{o}/{r}/commits/{ref}/check-runs keeps ref to one segment (a SHA).
            greedy = name in _SLASHY_PARAMS and path.endswith(piece)
            out.append(f"(?P<{name}>{'.+' if greedy else '[^/]+'})")
        else:
            out.append(re.escape(piece))
    return re.compile("^" + "".join(out) + "$")


class OpenAPIIndex:
    """The operations of the subset, with their request-body validators."""

    def __init__(self, spec: JSON) -> None:
        self.spec = spec
        self.registry: Registry[Any] = Registry().with_resource(
            _SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT4)
        )
        self.operations: list[Operation] = []
        for path, item in spec["paths"].items():
            for method, op in item.items():
                if method not in {"get", "post", "put", "patch", "delete"}:
                    continue
                schema: JSON | None = None
                required = False
                body = op.get("requestBody")
                if body is not None:
                    if "$ref" in body:
                        body = self._resolve(body["$ref"])
                    content = body.get("content", {}).get("application/json")
                    if content is not None:
                        schema = _prepare_schema(content.get("schema", {}))
                    required = bool(body.get("required", False))
                self.operations.append(
                    Operation(
                        method=method.upper(),
                        template=path,
                        operation_id=op["operationId"],
                        pattern=_template_regex(path, method),
                        literal_chars=len(re.sub(r"\{[^}]+\}", "", path)),
                        body_schema=schema,
                        body_required=required,
                    )
                )
        self.by_id = {op.operation_id: op for op in self.operations}

    def _resolve(self, ref: str) -> JSON:
        node: Any = self.spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return cast(JSON, node)

    def match(self, method: str, raw_path: str) -> tuple[Operation, dict[str, str]] | None:
        best: tuple[Operation, dict[str, str]] | None = None
        for op in self.operations:
            if op.method != method:
                continue
            m = op.pattern.match(raw_path)
            if m is None:
                continue
            # Prefer the most literal template: /commits/{ref}/check-runs over /commits/{ref}.
            if best is None or op.literal_chars > best[0].literal_chars:
                best = (op, {k: unquote(v) for k, v in m.groupdict().items()})
        return best

    def validate_body(self, op: Operation, body: Any, *, present: bool) -> list[str]:
        if op.body_schema is None:
            return []
        if not present:
            return [f"{op.operation_id}: request body is required"] if op.body_required else []
        validator = OAS30Validator(op.body_schema, registry=self.registry)
        out = []
        for error in validator.iter_errors(body):
            where = "/".join(map(str, error.absolute_path)) or "<body>"
            # For oneOf/anyOf the useful part is why each alternative failed.
            because = "; ".join(sorted({sub.message[:200] for sub in error.context or []}))
            out.append(
                f"{op.operation_id}: {where}: [{error.validator}] {error.message[:300]}"
                + (f" (because: {because})" if because else "")
            )
        return out


#: Operations issue 7 needs that ../shared/github/openapi-subset.json lacks: the App's webhook
#: delivery log and redelivery, GitHub's documented recovery after downtime
#: (https://docs.github.com/en/rest/apps/webhooks). Kept apart so the subset stays GitHub's
#: text; only these two are added, and they take no request body.
EXTRA_PATHS: JSON = {
    "/app/hook/deliveries": {
        "get": {"operationId": "apps/list-webhook-deliveries"},
    },
    "/app/hook/deliveries/{delivery_id}/attempts": {
        "post": {"operationId": "apps/redeliver-webhook-delivery"},
    },
}


@functools.cache
def load_openapi_index() -> OpenAPIIndex:
    """Parse the subset once per test session (read-only after construction)."""
    spec = json.loads(SPEC_PATH.read_text())
    spec["paths"].update(EXTRA_PATHS)
    return OpenAPIIndex(spec)


def example_bodies(kind: str) -> Iterable[tuple[str, str, Any]]:
    """(operation_id, file name, body) for every shared example of ``kind`` (request/response.N)."""
    for folder in sorted(EXAMPLES_DIR.iterdir()):
        for file in sorted(folder.glob(f"{kind}.json.*.json")):
            yield folder.name.replace("__", "/"), file.name, json.loads(file.read_text())


# --- keys -----------------------------------------------------------------------------------


def generate_rsa_key() -> tuple[str, str]:
    """A fresh 2048-bit RSA key pair as (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@functools.cache
def shared_test_key() -> tuple[str, str]:
    """One key pair per test session: RSA generation dominates fixture set-up time otherwise."""
    return generate_rsa_key()


# --- state model ----------------------------------------------------------------------------


@dataclass
class SimRequest:
    method: str
    path: str
    query: dict[str, str]
    operation_id: str | None
    headers: dict[str, str]
    json: Any
    status: int = 0


@dataclass
class Fault:
    target: str
    status: int | None
    headers: dict[str, str]
    body: Any
    times: int | None
    delay: float

    def matches(self, operation_id: str | None, path: str) -> bool:
        return self.target == operation_id or fnmatch.fnmatchcase(path, self.target)


@dataclass
class SimToken:
    token: str
    installation_id: int
    expires_at: datetime
    repositories: list[str] | None


@dataclass
class SimRepo:
    owner: str
    name: str
    id: int
    git_dir: Path | None
    default_branch: str = "main"
    private: bool = False
    protected_refs: set[str] = field(default_factory=set)
    permissions: dict[str, str] = field(default_factory=dict)
    labels: dict[str, JSON] = field(default_factory=dict)
    installation_id: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def clone_url(self) -> str:
        return self.git_dir.resolve().as_uri() if self.git_dir is not None else ""


@dataclass
class SimPull:
    repo: SimRepo
    number: int
    title: str
    body: str | None
    user: str
    head_ref: str
    head_sha: str
    base_ref: str
    base_sha: str
    head_repo_full_name: str
    maintainer_can_modify: bool = True
    labels: list[str] = field(default_factory=list)
    requested_reviewers: list[str] = field(default_factory=list)
    requested_teams: list[str] = field(default_factory=list)
    state: str = "open"
    draft: bool = False
    #: Explicit file list / diff; computed from the git repo when None.
    files: list[JSON] | None = None
    diff: str | None = None

    @property
    def fork(self) -> bool:
        return self.head_repo_full_name != self.repo.full_name


@dataclass
class SimJob:
    id: int
    run_id: int
    name: str
    status: str = "completed"
    conclusion: str | None = "failure"
    log: str = ""
    head_sha: str = ""
    steps: list[JSON] = field(default_factory=list)


@dataclass
class SimRun:
    id: int
    repo: SimRepo
    head_sha: str
    name: str = "CI"
    jobs: list[SimJob] = field(default_factory=list)
    rerun_failed_jobs: int = 0


def _user(login: str, *, bot: bool = False) -> JSON:
    return {
        "login": login,
        "id": int(hashlib.sha1(login.encode()).hexdigest()[:6], 16),  # noqa: S324 - an id
        "node_id": f"U_{login}",
        "type": "Bot" if bot else "User",
        "site_admin": False,
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GitError(Exception):
    """A git command in the simulator's backing repository failed."""


@dataclass
class SimContext:
    request: web.Request
    op: Operation
    params: dict[str, str]
    body: Any
    token: SimToken | None

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query

    def accept(self, media: str) -> bool:
        return media in self.request.headers.get("Accept", "")


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers)


def _error(status: int, message: str) -> web.Response:
    return _json({"message": message, "documentation_url": "https://docs.github.com/rest"}, status)


class GitHubSim:
    """The simulator's state and its aiohttp application."""

    def __init__(
        self,
        *,
        app_id: int = 4242,
        app_slug: str = "shepherd",
        public_key_pem: str | None = None,
        private_key_pem: str | None = None,
        token_ttl: timedelta = timedelta(hours=1),
    ) -> None:
        if public_key_pem is None:
            private_key_pem, public_key_pem = generate_rsa_key()
        self.app_id = app_id
        self.app_slug = app_slug
        self.private_key_pem = private_key_pem
        self.public_key_pem = public_key_pem
        self.token_ttl = token_ttl
        self.index = load_openapi_index()
        self.base_url = ""
        self.requests: list[SimRequest] = []
        self.violations: list[str] = []
        self.faults: list[Fault] = []
        self.tokens: dict[str, SimToken] = {}
        self.repos: dict[str, SimRepo] = {}
        self.pulls: dict[tuple[str, int], SimPull] = {}
        self.check_runs: dict[int, JSON] = {}
        self.check_run_history: list[tuple[str, int, JSON]] = []
        self.comments: dict[int, JSON] = {}
        self.reactions: list[JSON] = []
        self.runs: dict[int, SimRun] = {}
        self.jobs: dict[int, SimJob] = {}
        self.log_urls: dict[str, int] = {}
        self.reviews: list[JSON] = []
        #: The App's webhook delivery log (``GET /app/hook/deliveries``) and redelivery requests.
        self.hook_deliveries: list[JSON] = []
        self.redelivered: list[int] = []
        self.rate_limit_remaining = 5000
        self._ids = itertools.count(1000)
        self._server: TestServer | None = None
        self._handlers: dict[str, Handler] = self._build_handlers()

    # --- setup helpers ---------------------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    def add_repo(
        self,
        owner: str,
        name: str,
        *,
        git_dir: Path | None = None,
        default_branch: str = "main",
        private: bool = False,
        installation_id: int = 1,
    ) -> SimRepo:
        repo = SimRepo(
            owner=owner,
            name=name,
            id=self.next_id(),
            git_dir=git_dir,
            default_branch=default_branch,
            private=private,
            installation_id=installation_id,
        )
        self.repos[repo.full_name] = repo
        return repo

    def add_pull(
        self,
        repo: SimRepo,
        *,
        head_ref: str,
        head_sha: str,
        base_ref: str = "main",
        base_sha: str,
        number: int | None = None,
        user: str = "contributor",
        title: str = "A change",
        body: str | None = "",
        head_repo_full_name: str | None = None,
        **extra: Any,
    ) -> SimPull:
        pull = SimPull(
            repo=repo,
            number=number if number is not None else self.next_id() % 1000 + 1,
            title=title,
            body=body,
            user=user,
            head_ref=head_ref,
            head_sha=head_sha,
            base_ref=base_ref,
            base_sha=base_sha,
            head_repo_full_name=head_repo_full_name or repo.full_name,
            **extra,
        )
        self.pulls[(repo.full_name, pull.number)] = pull
        return pull

    def add_run(self, repo: SimRepo, *, head_sha: str, jobs: Iterable[tuple[str, str]]) -> SimRun:
        """A workflow run with jobs given as (name, log text); every job concluded failure."""
        run = SimRun(id=self.next_id(), repo=repo, head_sha=head_sha)
        for name, log_text in jobs:
            job = SimJob(
                id=self.next_id(), run_id=run.id, name=name, log=log_text, head_sha=head_sha
            )
            run.jobs.append(job)
            self.jobs[job.id] = job
        self.runs[run.id] = run
        return run

    def inject(
        self,
        target: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        times: int | None = 1,
        delay: float = 0.0,
    ) -> Fault:
        """Make requests to an operation id (or a path glob) fail or stall.

        ``status=None`` with ``delay`` only slows the real answer down; ``times=None`` is forever.
        """
        fault = Fault(target, status, dict(headers or {}), body, times, delay)
        self.faults.append(fault)
        return fault

    def mint_token(
        self, installation_id: int = 1, repositories: list[str] | None = None
    ) -> SimToken:
        # Deliberately not 40 characters: GitHub is moving to longer stateless tokens.
        token = SimToken(
            token=f"ghs_{self.app_id}_{secrets.token_urlsafe(48)}",
            installation_id=installation_id,
            expires_at=datetime.now(UTC) + self.token_ttl,
            repositories=repositories,
        )
        self.tokens[token.token] = token
        return token

    # --- inspection helpers ----------------------------------------------------------------

    def calls(self, operation_id: str) -> list[SimRequest]:
        return [r for r in self.requests if r.operation_id == operation_id]

    def assert_no_violations(self) -> None:
        assert not self.violations, "GitHub simulator violations:\n" + "\n".join(self.violations)

    def annotations(self, check_run_id: int) -> list[JSON]:
        return cast(list[JSON], self.check_runs[check_run_id].get("_annotations", []))

    # --- server ----------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def start(self, host: str = "127.0.0.1") -> str:
        self._server = TestServer(self.make_app(), host=host)
        await self._server.start_server()
        self.base_url = str(self._server.make_url("")).rstrip("/")
        return self.base_url

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    # --- dispatch --------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        if raw_path.startswith("/_logs/"):
            return await self._serve_log(request, raw_path.removeprefix("/_logs/"))
        raw = await request.read()
        body: Any = None
        present = bool(raw)
        if present:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", errors="replace")
        record = SimRequest(
            method=request.method,
            path=unquote(raw_path),
            query=dict(request.query),
            operation_id=None,
            headers={k.lower(): v for k, v in request.headers.items()},
            json=body,
        )
        self.requests.append(record)
        response = await self._answer(request, record, raw_path, body, present=present)
        record.status = response.status
        return response

    async def _answer(
        self, request: web.Request, record: SimRequest, raw_path: str, body: Any, *, present: bool
    ) -> web.StreamResponse:
        matched = self.index.match(request.method, raw_path)
        if matched is None:
            self.violations.append(f"unknown operation: {request.method} {record.path}")
            return _error(404, "Not Found")
        op, params = matched
        record.operation_id = op.operation_id
        errors = self.index.validate_body(op, body, present=present)
        if errors:
            self.violations.extend(errors)
            return _json({"message": "Invalid request.", "errors": errors}, 422)

        for fault in self.faults:
            if fault.times == 0 or not fault.matches(op.operation_id, record.path):
                continue
            if fault.times is not None:
                fault.times -= 1
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                return self._fault_response(fault)
            break

        auth_error, token = self._authenticate(request, op, params)
        if auth_error is not None:
            return auth_error

        handler = self._handlers.get(op.operation_id, self._example_answer)
        ctx = SimContext(request=request, op=op, params=params, body=body, token=token)
        try:
            response = await handler(ctx)
        except GitError as exc:
            return _error(422, f"git: {exc}")
        self.rate_limit_remaining = max(0, self.rate_limit_remaining - 1)
        response.headers.update(self._rate_headers())
        if (
            request.method == "GET"
            and response.status == 200
            and isinstance(response, web.Response)
        ):
            etag = '"' + hashlib.sha256(response.body or b"").hexdigest()[:32] + '"'  # type: ignore[arg-type]
            response.headers["ETag"] = etag
            if request.headers.get("If-None-Match") == etag:
                not_modified = web.Response(status=304, headers={"ETag": etag})
                not_modified.headers.update(self._rate_headers())
                return not_modified
        return response

    def _rate_headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": str(self.rate_limit_remaining),
            "x-ratelimit-reset": str(int(time.time()) + 3600),
            "x-ratelimit-resource": "core",
        }

    def _fault_response(self, fault: Fault) -> web.Response:
        status = fault.status or 500
        headers = dict(fault.headers)
        if isinstance(fault.body, (bytes, str)):
            text = fault.body if isinstance(fault.body, str) else fault.body.decode()
            return web.Response(status=status, text=text, headers=headers)
        data = fault.body if fault.body is not None else {"message": f"injected {status}"}
        return _json(data, status, headers)

    def _authenticate(
        self, request: web.Request, op: Operation, params: Mapping[str, str]
    ) -> tuple[web.Response | None, SimToken | None]:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if op.template.startswith("/app"):
            if scheme.lower() != "bearer" or not self._valid_jwt(credential):
                self.violations.append(f"{op.operation_id}: missing or invalid App JWT")
                return _error(401, "A JSON web token could not be decoded"), None
            return None, None
        token = self.tokens.get(credential) if scheme.lower() in {"token", "bearer"} else None
        if token is None or token.expires_at <= datetime.now(UTC):
            self.violations.append(f"{op.operation_id}: missing, unknown or expired token")
            return _error(401, "Bad credentials"), None
        scoped_out = token.repositories is not None and params.get("repo") not in token.repositories
        if "repo" in params and scoped_out:
            return _error(403, "Resource not accessible by integration"), token
        target = self.repos.get(f"{params.get('owner')}/{params.get('repo')}")
        if (
            target is not None
            and target.installation_id != token.installation_id
            and request.method != "GET"
        ):
            # Another account's repository (a contributor's fork): readable when public, not
            # writable with this installation's token.
            return _error(403, "Resource not accessible by integration"), token
        return None, token

    def _valid_jwt(self, credential: str) -> bool:
        try:
            claims = jwt.decode(
                credential,
                self.public_key_pem,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
            )
        except jwt.PyJWTError:
            return False
        # GitHub rejects App JWTs valid for more than 10 minutes.
        return str(claims["iss"]) == str(self.app_id) and claims["exp"] - claims["iat"] <= 600

    async def _serve_log(self, request: web.Request, key: str) -> web.Response:
        self.requests.append(
            SimRequest(
                method=request.method,
                path=f"/_logs/{key}",
                query={},
                operation_id=None,
                headers={k.lower(): v for k, v in request.headers.items()},
                json=None,
            )
        )
        if "Authorization" in request.headers:
            # Signed blob URLs must not receive the installation token.
            self.violations.append("Authorization header forwarded to the log download URL")
            self.requests[-1].status = 401
            return web.Response(status=401, text="Authorization header not allowed")
        job_id = self.log_urls.get(key)
        if job_id is None:
            self.requests[-1].status = 404
            return web.Response(status=404, text="expired")
        self.requests[-1].status = 200
        return web.Response(text=self.jobs[job_id].log, content_type="text/plain")

    # --- lookups ---------------------------------------------------------------------------

    def _repo(self, ctx: SimContext) -> SimRepo | None:
        return self.repos.get(f"{ctx.params['owner']}/{ctx.params['repo']}")

    def _repo_json(self, repo: SimRepo) -> JSON:
        return {
            "id": repo.id,
            "node_id": f"R_{repo.id}",
            "name": repo.name,
            "full_name": repo.full_name,
            "owner": _user(repo.owner),
            "private": repo.private,
            "fork": False,
            "default_branch": repo.default_branch,
            "clone_url": repo.clone_url,
            "url": f"{self.base_url}/repos/{repo.full_name}",
            "html_url": f"https://github.example/{repo.full_name}",
        }

    def _pull(self, ctx: SimContext) -> SimPull | None:
        repo = self._repo(ctx)
        number = ctx.params.get("pull_number") or ctx.params.get("issue_number") or "0"
        if repo is None or not number.isdigit():
            return None
        return self.pulls.get((repo.full_name, int(number)))

    def _pull_json(self, pull: SimPull) -> JSON:
        base_repo = self._repo_json(pull.repo)
        head_owner = pull.head_repo_full_name.split("/")[0]
        head_repo = dict(base_repo)
        if pull.fork:
            head_repo.update(
                {
                    "full_name": pull.head_repo_full_name,
                    "name": pull.head_repo_full_name.split("/")[1],
                    "owner": _user(head_owner),
                    "fork": True,
                    "id": pull.repo.id + 100000,
                }
            )
            fork = self.repos.get(pull.head_repo_full_name)
            if fork is not None:
                # The fork is a repository of its own here: its clone URL and id are its own.
                head_repo.update({**self._repo_json(fork), "fork": True})
        return {
            "id": pull.repo.id * 10000 + pull.number,
            "number": pull.number,
            "state": pull.state,
            "title": pull.title,
            "body": pull.body,
            "draft": pull.draft,
            "user": _user(pull.user, bot=pull.user.endswith("[bot]")),
            "labels": [self._label_json(pull.repo, name) for name in pull.labels],
            "requested_reviewers": [_user(login) for login in pull.requested_reviewers],
            "requested_teams": [{"slug": slug, "name": slug} for slug in pull.requested_teams],
            "maintainer_can_modify": pull.maintainer_can_modify,
            "head": {
                "label": f"{head_owner}:{pull.head_ref}",
                "ref": pull.head_ref,
                "sha": pull.head_sha,
                "user": _user(head_owner),
                "repo": head_repo,
            },
            "base": {
                "label": f"{pull.repo.owner}:{pull.base_ref}",
                "ref": pull.base_ref,
                "sha": pull.base_sha,
                "user": _user(pull.repo.owner),
                "repo": base_repo,
            },
            "html_url": f"https://github.example/{pull.repo.full_name}/pull/{pull.number}",
            "url": f"{self.base_url}/repos/{pull.repo.full_name}/pulls/{pull.number}",
        }

    def _label_json(self, repo: SimRepo, name: str) -> JSON:
        label = repo.labels.get(name)
        if label is None:
            label = {
                "id": self.next_id(),
                "node_id": f"L_{name}",
                "name": name,
                "color": "ededed",
                "description": None,
                "default": False,
            }
            repo.labels[name] = label
        return label

    def _paginate(
        self, ctx: SimContext, items: list[Any], *, key: str | None = None
    ) -> web.Response:
        per_page = min(100, int(ctx.query.get("per_page", "30")))
        page = max(1, int(ctx.query.get("page", "1")))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers: dict[str, str] = {}
        last = max(1, -(-len(items) // per_page))
        if page < last:
            query = dict(ctx.query)
            links = []
            for rel, number in (("next", page + 1), ("last", last)):
                query["page"] = str(number)
                links.append(f'<{self.base_url}{ctx.request.path}?{urlencode(query)}>; rel="{rel}"')
            headers["Link"] = ", ".join(links)
        data: Any = {"total_count": len(items), key: chunk} if key is not None else chunk
        return _json(data, headers=headers)

    # --- git -------------------------------------------------------------------------------

    async def _git(
        self,
        repo: SimRepo,
        *args: str,
        input_bytes: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        if repo.git_dir is None:
            raise GitError(f"{repo.full_name} has no backing git repository")
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "HOME": str(repo.git_dir),
            **(env or {}),
        }
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=repo.git_dir,
            env=full_env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(input_bytes)
        if proc.returncode != 0:
            raise GitError(f"git {args[0]}: {err.decode(errors='replace').strip()}")
        return out.decode("utf-8", errors="replace")

    async def _rev(self, repo: SimRepo, rev: str) -> str | None:
        try:
            return (
                await self._git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{}}")
            ).strip()
        except GitError:
            return None

    async def _commit_json(self, repo: SimRepo, sha: str) -> JSON:
        fmt = "%H%x00%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
        out = await self._git(repo, "show", "-s", f"--format={fmt}", sha)
        h, tree, parents, an, ae, ad, cn, ce, cd, message = out.split("\x00", 9)
        return {
            "sha": h,
            "node_id": f"C_{h}",
            "commit": {
                "message": message.rstrip("\n"),
                "tree": {"sha": tree},
                "author": {"name": an, "email": ae, "date": ad},
                "committer": {"name": cn, "email": ce, "date": cd},
            },
            "author": None,
            "committer": None,
            "parents": [{"sha": p} for p in parents.split()],
            "url": f"{self.base_url}/repos/{repo.full_name}/commits/{h}",
        }

    async def _diff(self, repo: SimRepo, base: str, head: str) -> str:
        return await self._git(repo, "diff", f"{base}...{head}")

    async def _files(self, repo: SimRepo, base: str, head: str) -> list[JSON]:
        numstat = await self._git(
            repo, "diff", "--numstat", "-z", "--no-renames", f"{base}...{head}"
        )
        status = await self._git(
            repo, "diff", "--name-status", "-z", "--no-renames", f"{base}...{head}"
        )
        states = dict(zip(status.split("\x00")[1::2], status.split("\x00")[0::2], strict=False))
        files = []
        for entry in filter(None, numstat.split("\x00")):
            added, deleted, path = entry.split("\t", 2)
            letter = states.get(path, "M")
            patch = await self._git(repo, "diff", f"{base}...{head}", "--", path)
            adds = int(added) if added != "-" else 0
            dels = int(deleted) if deleted != "-" else 0
            files.append(
                {
                    "sha": hashlib.sha1(path.encode()).hexdigest(),  # noqa: S324 - an id
                    "filename": path,
                    "status": {"A": "added", "D": "removed"}.get(letter, "modified"),
                    "additions": adds,
                    "deletions": dels,
                    "changes": adds + dels,
                    "patch": "@@" + patch.split("\n@@", 1)[1] if "\n@@" in patch else "",
                }
            )
        return files

    # --- handlers --------------------------------------------------------------------------

    def _build_handlers(self) -> dict[str, Handler]:
        return {
            "apps/get-authenticated": self._h_get_app,
            "apps/create-installation-access-token": self._h_create_token,
            "repos/get": self._h_get_repo,
            "repos/get-content": self._h_get_content,
            "repos/get-collaborator-permission-level": self._h_permission,
            "repos/compare-commits": self._h_compare,
            "pulls/get": self._h_get_pull,
            "pulls/list-files": self._h_pull_files,
            "repos/list-pull-requests-associated-with-commit": self._h_pulls_for_commit,
            "pulls/request-reviewers": self._h_request_reviewers,
            "pulls/create-review": self._h_create_review,
            "actions/list-jobs-for-workflow-run": self._h_list_jobs,
            "actions/get-job-for-workflow-run": self._h_get_job,
            "actions/download-job-logs-for-workflow-run": self._h_job_logs,
            "actions/re-run-workflow-failed-jobs": self._h_rerun_failed,
            "checks/create": self._h_create_check,
            "checks/update": self._h_update_check,
            "checks/get": self._h_get_check,
            "checks/list-for-ref": self._h_list_checks,
            "issues/list-comments": self._h_list_comments,
            "issues/create-comment": self._h_create_comment,
            "issues/update-comment": self._h_update_comment,
            "reactions/create-for-issue-comment": self._h_create_reaction,
            "issues/add-labels": self._h_add_labels,
            "issues/set-labels": self._h_set_labels,
            "issues/remove-label": self._h_remove_label,
            "issues/create-label": self._h_create_label,
            "git/get-ref": self._h_get_ref,
            "git/create-blob": self._h_create_blob,
            "git/create-tree": self._h_create_tree,
            "git/create-commit": self._h_create_commit,
            "git/get-commit": self._h_get_git_commit,
            "git/update-ref": self._h_update_ref,
            "git/create-ref": self._h_create_ref,
            "apps/list-webhook-deliveries": self._h_list_hook_deliveries,
            "apps/redeliver-webhook-delivery": self._h_redeliver,
        }

    async def _h_list_hook_deliveries(self, ctx: SimContext) -> web.Response:
        # Newest first, as GitHub lists them.
        found = sorted(self.hook_deliveries, key=lambda d: d["delivered_at"], reverse=True)
        return self._paginate(ctx, found)

    async def _h_redeliver(self, ctx: SimContext) -> web.Response:
        delivery_id = int(ctx.params["delivery_id"])
        if not any(d["id"] == delivery_id for d in self.hook_deliveries):
            return _error(404, "Not Found")
        self.redelivered.append(delivery_id)
        return _json({}, 202)

    async def _example_answer(self, ctx: SimContext) -> web.Response:
        """Operations without a model answer with their first shared response example."""
        folder = EXAMPLES_DIR / ctx.op.operation_id.replace("/", "__")
        for file in sorted(folder.glob("response.2*.json.*.json")):
            status = int(file.name.split(".")[1])
            return _json(json.loads(file.read_text()), status)
        return web.Response(status=204)

    async def _h_get_app(self, ctx: SimContext) -> web.Response:
        return _json(
            {
                "id": self.app_id,
                "slug": self.app_slug,
                "name": self.app_slug.capitalize(),
                "owner": _user("shepherd-org"),
                "permissions": {"checks": "write", "contents": "write", "pull_requests": "write"},
                "events": ["check_run", "pull_request", "issue_comment"],
            }
        )

    async def _h_create_token(self, ctx: SimContext) -> web.Response:
        repositories = ctx.body.get("repositories") if isinstance(ctx.body, dict) else None
        token = self.mint_token(int(ctx.params["installation_id"]), repositories)
        return _json(
            {
                "token": token.token,
                "expires_at": token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": {"checks": "write", "contents": "write"},
                "repository_selection": "selected" if repositories else "all",
            },
            201,
        )

    async def _h_get_repo(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        return _json(self._repo_json(repo)) if repo else _error(404, "Not Found")

    async def _h_get_content(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        ref = ctx.query.get("ref", repo.default_branch)
        path = ctx.params["path"]
        try:
            blob = await self._git(repo, "rev-parse", "--verify", "--quiet", f"{ref}:{path}")
            kind = (await self._git(repo, "cat-file", "-t", blob.strip())).strip()
        except GitError:
            return _error(404, "Not Found")
        if kind != "blob":
            return _json([])  # a directory listing; the bot never asks for one
        proc_out = await self._git_bytes(repo, "cat-file", "blob", blob.strip())
        if ctx.accept("application/vnd.github.raw"):
            return web.Response(
                body=proc_out, headers={"Content-Type": "application/vnd.github.raw; charset=utf-8"}
            )
        return _json(
            {
                "type": "file",
                "encoding": "base64",
                "size": len(proc_out),
                "name": path.rsplit("/", 1)[-1],
                "path": path,
                "sha": blob.strip(),
                "content": base64.b64encode(proc_out).decode(),
            }
        )

    async def _git_bytes(self, repo: SimRepo, *args: str) -> bytes:
        assert repo.git_dir is not None
        proc = await asyncio.create_subprocess_exec(
            "git", *args, cwd=repo.git_dir, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise GitError(f"git {args[0]} failed")
        return out

    async def _h_permission(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        username = ctx.params["username"]
        permission = repo.permissions.get(username)
        if permission is None:
            return _error(404, "Not Found")
        return _json({"permission": permission, "role_name": permission, "user": _user(username)})

    async def _h_compare(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None or "..." not in ctx.params["basehead"]:
            return _error(404, "Not Found")
        base, head = ctx.params["basehead"].split("...", 1)
        base_sha, head_sha = await self._rev(repo, base), await self._rev(repo, head)
        if base_sha is None or head_sha is None:
            return _error(404, "Not Found")
        if ctx.accept("diff"):
            return web.Response(
                text=await self._diff(repo, base_sha, head_sha),
                content_type="application/vnd.github.diff",
            )
        shas = (await self._git(repo, "rev-list", "--reverse", f"{base_sha}..{head_sha}")).split()
        behind = (await self._git(repo, "rev-list", "--count", f"{head_sha}..{base_sha}")).strip()
        commits = [await self._commit_json(repo, sha) for sha in shas]
        status = "identical" if not shas and behind == "0" else "ahead"
        if shas and behind != "0":
            status = "diverged"
        elif not shas and behind != "0":
            status = "behind"
        return _json(
            {
                "status": status,
                "ahead_by": len(shas),
                "behind_by": int(behind),
                "total_commits": len(shas),
                "commits": commits,
                "files": await self._files(repo, base_sha, head_sha),
                "base_commit": await self._commit_json(repo, base_sha),
            }
        )

    async def _h_get_pull(self, ctx: SimContext) -> web.Response:
        pull = self._pull(ctx)
        if pull is None:
            return _error(404, "Not Found")
        if ctx.accept("application/vnd.github.diff"):
            diff = pull.diff
            if diff is None:
                diff = await self._diff(pull.repo, pull.base_sha, pull.head_sha)
            return web.Response(text=diff, content_type="application/vnd.github.diff")
        return _json(self._pull_json(pull))

    async def _h_pull_files(self, ctx: SimContext) -> web.Response:
        pull = self._pull(ctx)
        if pull is None:
            return _error(404, "Not Found")
        files = pull.files
        if files is None:
            files = await self._files(pull.repo, pull.base_sha, pull.head_sha)
        return self._paginate(ctx, files)

    async def _h_pulls_for_commit(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        sha = ctx.params["commit_sha"]
        found = [
            self._pull_json(p)
            for p in self.pulls.values()
            if p.repo is repo and p.head_sha == sha and p.state == "open"
        ]
        return self._paginate(ctx, found)

    async def _h_request_reviewers(self, ctx: SimContext) -> web.Response:
        pull = self._pull(ctx)
        if pull is None:
            return _error(404, "Not Found")
        for login in ctx.body.get("reviewers", []):
            if login == pull.user:
                return _error(422, "Review cannot be requested from pull request author.")
            if login not in pull.requested_reviewers:
                pull.requested_reviewers.append(login)
        for slug in ctx.body.get("team_reviewers", []):
            if slug not in pull.requested_teams:
                pull.requested_teams.append(slug)
        return _json(self._pull_json(pull), 201)

    async def _h_create_review(self, ctx: SimContext) -> web.Response:
        pull = self._pull(ctx)
        if pull is None:
            return _error(404, "Not Found")
        review = {
            "id": self.next_id(),
            "pull_number": pull.number,
            "user": _user(f"{self.app_slug}[bot]", bot=True),
            "body": ctx.body.get("body", ""),
            "state": "COMMENTED" if ctx.body.get("event", "COMMENT") == "COMMENT" else "PENDING",
            "commit_id": ctx.body.get("commit_id", pull.head_sha),
            "comments": ctx.body.get("comments", []),
        }
        self.reviews.append(review)
        return _json({k: v for k, v in review.items() if k != "comments"})

    def _job_json(self, job: SimJob) -> JSON:
        return {
            "id": job.id,
            "run_id": job.run_id,
            "name": job.name,
            "status": job.status,
            "conclusion": job.conclusion,
            "head_sha": job.head_sha,
            "steps": job.steps,
            "run_attempt": 1,
            "labels": ["ubuntu-latest"],
        }

    async def _h_list_jobs(self, ctx: SimContext) -> web.Response:
        run = self.runs.get(int(ctx.params["run_id"]))
        if run is None:
            return _error(404, "Not Found")
        return self._paginate(ctx, [self._job_json(j) for j in run.jobs], key="jobs")

    async def _h_get_job(self, ctx: SimContext) -> web.Response:
        job = self.jobs.get(int(ctx.params["job_id"]))
        return _json(self._job_json(job)) if job else _error(404, "Not Found")

    async def _h_job_logs(self, ctx: SimContext) -> web.Response:
        job_id = int(ctx.params["job_id"])
        if job_id not in self.jobs:
            return _error(404, "Not Found")
        key = secrets.token_urlsafe(16)
        self.log_urls[key] = job_id
        return web.Response(status=302, headers={"Location": f"{self.base_url}/_logs/{key}"})

    async def _h_rerun_failed(self, ctx: SimContext) -> web.Response:
        run = self.runs.get(int(ctx.params["run_id"]))
        if run is None:
            return _error(404, "Not Found")
        run.rerun_failed_jobs += 1
        return _json({}, 201)

    def _apply_check_body(self, run: JSON, body: JSON, operation: str) -> None:
        self.check_run_history.append((operation, int(run["id"]), copy.deepcopy(body)))
        for key in ("name", "status", "conclusion", "details_url", "external_id", "actions"):
            if key in body:
                run[key] = body[key]
        if "conclusion" in body:
            run["status"] = "completed"
        if run.get("status") == "completed" and run.get("completed_at") is None:
            run["completed_at"] = body.get("completed_at", _now())
        output = body.get("output")
        if isinstance(output, dict):
            annotations = output.get("annotations", [])
            run.setdefault("_annotations", []).extend(annotations)
            run["output"] = {
                "title": output.get("title"),
                "summary": output.get("summary"),
                "text": output.get("text"),
                "annotations_count": len(run["_annotations"]),
            }

    def _check_json(self, run: JSON) -> JSON:
        return {k: v for k, v in run.items() if not k.startswith("_")}

    async def _h_create_check(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        run: JSON = {
            "id": self.next_id(),
            "head_sha": ctx.body["head_sha"],
            "name": ctx.body["name"],
            "status": "queued",
            "conclusion": None,
            "started_at": ctx.body.get("started_at", _now()),
            "completed_at": None,
            "output": {"title": None, "summary": None, "text": None, "annotations_count": 0},
            "app": {"id": self.app_id, "slug": self.app_slug},
            "_repo": repo.full_name,
        }
        self.check_runs[int(run["id"])] = run
        self._apply_check_body(run, ctx.body, "create")
        return _json(self._check_json(run), 201)

    async def _h_update_check(self, ctx: SimContext) -> web.Response:
        run = self.check_runs.get(int(ctx.params["check_run_id"]))
        if run is None:
            return _error(404, "Not Found")
        self._apply_check_body(run, ctx.body, "update")
        return _json(self._check_json(run))

    async def _h_get_check(self, ctx: SimContext) -> web.Response:
        run = self.check_runs.get(int(ctx.params["check_run_id"]))
        return _json(self._check_json(run)) if run else _error(404, "Not Found")

    async def _h_list_checks(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        ref = ctx.params["ref"]
        sha = await self._rev(repo, ref) if repo.git_dir is not None else None
        runs = [
            self._check_json(r)
            for r in self.check_runs.values()
            if r["_repo"] == repo.full_name and r["head_sha"] in {ref, sha}
        ]
        return self._paginate(ctx, runs, key="check_runs")

    async def _h_list_comments(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        number = int(ctx.params["issue_number"])
        found = [
            {k: v for k, v in c.items() if not k.startswith("_")}
            for c in self.comments.values()
            if repo is not None and c["_repo"] == repo.full_name and c["_issue"] == number
        ]
        return self._paginate(ctx, found)

    def add_comment(self, repo: SimRepo, number: int, body: str, *, user: str) -> JSON:
        comment_id = self.next_id()
        comment = {
            "id": comment_id,
            "node_id": f"IC_{comment_id}",
            "body": body,
            "user": _user(user, bot=user.endswith("[bot]")),
            "created_at": _now(),
            "updated_at": _now(),
            "html_url": f"https://github.example/{repo.full_name}/pull/{number}#c{comment_id}",
            "_repo": repo.full_name,
            "_issue": number,
        }
        self.comments[comment_id] = comment
        return comment

    async def _h_create_comment(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        comment = self.add_comment(
            repo, int(ctx.params["issue_number"]), ctx.body["body"], user=f"{self.app_slug}[bot]"
        )
        return _json({k: v for k, v in comment.items() if not k.startswith("_")}, 201)

    async def _h_update_comment(self, ctx: SimContext) -> web.Response:
        comment = self.comments.get(int(ctx.params["comment_id"]))
        if comment is None:
            return _error(404, "Not Found")
        comment["body"] = ctx.body["body"]
        comment["updated_at"] = _now()
        return _json({k: v for k, v in comment.items() if not k.startswith("_")})

    async def _h_create_reaction(self, ctx: SimContext) -> web.Response:
        comment_id = int(ctx.params["comment_id"])
        if comment_id not in self.comments:
            return _error(404, "Not Found")
        for reaction in self.reactions:
            if reaction["comment_id"] == comment_id and reaction["content"] == ctx.body["content"]:
                return _json(reaction, 200)
        reaction = {
            "id": self.next_id(),
            "comment_id": comment_id,
            "content": ctx.body["content"],
            "user": _user(f"{self.app_slug}[bot]", bot=True),
        }
        self.reactions.append(reaction)
        return _json(reaction, 201)

    @staticmethod
    def _label_names(body: Any) -> list[str]:
        items = body.get("labels", []) if isinstance(body, dict) else body
        if isinstance(items, str):
            items = [items]
        return [i["name"] if isinstance(i, dict) else str(i) for i in items or []]

    async def _h_add_labels(self, ctx: SimContext) -> web.Response:
        pull = self._pull(ctx)
        if pull is None:
            return _error(404, "Not Found")
        for name in self._label_names(ctx.body):
            if name not in pull.labels:
                pull.labels.append(name)
        return _json([self._label_json(pull.repo, n) for n in pull.labels])

    async def _h_set_labels(self, ctx: SimContext) -> web.Response:
        pull = self._pull(ctx)
        if pull is None:
            return _error(404, "Not Found")
        pull.labels = list(dict.fromkeys(self._label_names(ctx.body)))
        return _json([self._label_json(pull.repo, n) for n in pull.labels])

    async def _h_remove_label(self, ctx: SimContext) -> web.Response:
        pull = self._pull(ctx)
        name = ctx.params["name"]
        if pull is None or name not in pull.labels:
            return _error(404, "Label does not exist")
        pull.labels.remove(name)
        return _json([self._label_json(pull.repo, n) for n in pull.labels])

    async def _h_create_label(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        name = ctx.body["name"]
        if name in repo.labels:
            return _json(
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "Label", "code": "already_exists", "field": "name"}],
                },
                422,
            )
        label = self._label_json(repo, name)
        label["color"] = ctx.body.get("color", "ededed")
        label["description"] = ctx.body.get("description")
        return _json(label, 201)

    async def _h_get_ref(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        ref = f"refs/{ctx.params['ref']}"
        sha = await self._rev(repo, ref)
        if sha is None:
            return _error(404, "Not Found")
        return _json({"ref": ref, "object": {"sha": sha, "type": "commit"}})

    async def _h_create_blob(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        content: str = ctx.body["content"]
        data = (
            base64.b64decode(content)
            if ctx.body.get("encoding") == "base64"
            else content.encode("utf-8")
        )
        sha = (await self._git(repo, "hash-object", "-w", "--stdin", input_bytes=data)).strip()
        return _json(
            {"sha": sha, "url": f"{self.base_url}/repos/{repo.full_name}/git/blobs/{sha}"}, 201
        )

    async def _h_create_tree(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        with tempfile.TemporaryDirectory(prefix="ghsim-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            base_tree = ctx.body.get("base_tree")
            if base_tree:
                await self._git(repo, "read-tree", base_tree, env=env)
            else:
                await self._git(repo, "read-tree", "--empty", env=env)
            for entry in ctx.body["tree"]:
                path = entry["path"]
                if "content" in entry:
                    sha = (
                        await self._git(
                            repo,
                            "hash-object",
                            "-w",
                            "--stdin",
                            input_bytes=entry["content"].encode("utf-8"),
                        )
                    ).strip()
                else:
                    sha = entry.get("sha")
                # Mode 0 removes the path; --index-info works without a work tree (bare repo).
                mode = "0" if sha is None else entry.get("mode", "100644")
                line = f"{mode} {sha or _ZERO_SHA}\t{path}\n"
                await self._git(
                    repo, "update-index", "--index-info", input_bytes=line.encode(), env=env
                )
            tree_sha = (await self._git(repo, "write-tree", env=env)).strip()
        listing = await self._git(repo, "ls-tree", "-r", tree_sha)
        tree = []
        for line in filter(None, listing.split("\n")):
            meta, path = line.split("\t", 1)
            mode, kind, sha = meta.split()
            tree.append({"path": path, "mode": mode, "type": kind, "sha": sha})
        return _json({"sha": tree_sha, "tree": tree, "truncated": False}, 201)

    async def _h_create_commit(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        bot = f"{self.app_slug}[bot]"
        author = ctx.body.get("author") or {
            "name": bot,
            "email": f"{self.app_id}+{bot}@users.noreply.github.com",
        }
        committer = ctx.body.get("committer") or {"name": "GitHub", "email": "noreply@github.com"}
        env = {
            "GIT_AUTHOR_NAME": author["name"],
            "GIT_AUTHOR_EMAIL": author["email"],
            "GIT_COMMITTER_NAME": committer.get("name", "GitHub"),
            "GIT_COMMITTER_EMAIL": committer.get("email", "noreply@github.com"),
        }
        args = ["commit-tree", ctx.body["tree"]]
        for parent in ctx.body.get("parents", []):
            args += ["-p", parent]
        sha = (
            await self._git(repo, *args, input_bytes=ctx.body["message"].encode(), env=env)
        ).strip()
        data = await self._commit_json(repo, sha)
        commit = data["commit"]
        return _json(
            {
                "sha": sha,
                "node_id": data["node_id"],
                "message": commit["message"],
                "tree": commit["tree"],
                "author": commit["author"],
                "committer": commit["committer"],
                "parents": data["parents"],
                # GitHub signs API-created commits that carry no custom author signature.
                "verification": {
                    "verified": "signature" not in ctx.body,
                    "reason": "valid",
                    "signature": None,
                    "payload": None,
                },
            },
            201,
        )

    async def _h_get_git_commit(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None or await self._rev(repo, ctx.params["commit_sha"]) is None:
            return _error(404, "Not Found")
        data = await self._commit_json(repo, ctx.params["commit_sha"])
        return _json({"sha": data["sha"], **data["commit"], "parents": data["parents"]})

    async def _h_update_ref(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        ref = f"refs/{ctx.params['ref']}"
        new = ctx.body["sha"]
        if ref in repo.protected_refs or ref.removeprefix("refs/heads/") in repo.protected_refs:
            return _error(422, "Protected branch update failed for " + ref)
        old = await self._rev(repo, ref)
        if old is None:
            return _error(422, "Reference does not exist")
        if await self._rev(repo, new) is None:
            return _error(422, "Object does not exist")
        if not ctx.body.get("force", False):
            try:
                await self._git(repo, "merge-base", "--is-ancestor", old, new)
            except GitError:
                return _error(422, "Update is not a fast forward")
        await self._git(repo, "update-ref", ref, new, old)
        for pull in self.pulls.values():
            if pull.repo is repo and not pull.fork and f"refs/heads/{pull.head_ref}" == ref:
                pull.head_sha = new
        return _json({"ref": ref, "object": {"sha": new, "type": "commit"}})

    async def _h_create_ref(self, ctx: SimContext) -> web.Response:
        repo = self._repo(ctx)
        if repo is None:
            return _error(404, "Not Found")
        ref, sha = ctx.body["ref"], ctx.body["sha"]
        if await self._rev(repo, ref) is not None:
            return _error(422, "Reference already exists")
        await self._git(repo, "update-ref", ref, sha, _ZERO_SHA)
        return _json({"ref": ref, "object": {"sha": sha, "type": "commit"}}, 201)


async def start_simulator(**kwargs: Any) -> tuple[GitHubSim, str]:
    """Start a simulator on 127.0.0.1; call ``await sim.close()`` when done."""
    sim = GitHubSim(**kwargs)
    base_url = await sim.start()
    return sim, base_url


@pytest_asyncio.fixture
async def github_sim() -> AsyncIterator[GitHubSim]:
    """A running simulator with a fresh App key pair (``sim.private_key_pem`` for the client)."""
    private_pem, public_pem = shared_test_key()
    sim, _ = await start_simulator(private_key_pem=private_pem, public_key_pem=public_pem)
    try:
        yield sim
    finally:
        await sim.close()


def _run_git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Author",
        "GIT_COMMITTER_EMAIL": "author@example.com",
        **(env or {}),
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=full_env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit_files(
    bare: Path,
    branch: str,
    files: Mapping[str, str | None],
    message: str,
    *,
    start: str = "main",
) -> str:
    """Commit ``files`` (None deletes) on ``branch`` of a bare repo; returns the new SHA.

    A missing branch starts at ``start``. Builds the commit with plumbing in a temporary
    index, so no worktree is needed.
    """
    with tempfile.TemporaryDirectory(prefix="ghsim-commit-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        parent = ""
        for candidate in (f"refs/heads/{branch}", start):
            parent = subprocess.run(
                ["git", "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"],
                cwd=bare,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if parent:
                break
        if parent:
            _run_git(bare, "read-tree", parent, env=env)
        for path, content in files.items():
            if content is None:
                subprocess.run(
                    ["git", "update-index", "--index-info"],
                    cwd=bare,
                    input=f"0 {_ZERO_SHA}\t{path}\n",
                    env={**os.environ, **env},
                    text=True,
                    check=True,
                )
                continue
            blob = subprocess.run(
                ["git", "hash-object", "-w", "--stdin"],
                cwd=bare,
                input=content,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            _run_git(bare, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = _run_git(bare, "write-tree", env=env)
        args = ["commit-tree", tree, "-m", message]
        if parent:
            args += ["-p", parent]
        sha = _run_git(bare, *args)
        _run_git(bare, "update-ref", f"refs/heads/{branch}", sha)
        return sha


def init_bare_repo(path: Path, files: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """A bare repository at ``path`` with one commit on ``main``; returns (path, commit SHA)."""
    path.mkdir(parents=True, exist_ok=True)
    _run_git(path, "init", "--bare", "--initial-branch=main")
    sha = commit_files(path, "main", files or {"README.md": "hello\n"}, "Initial commit")
    return path, sha
