"""Job requests: what a handler enqueues and a job runs on, stored as the job's payload.

Each request is a pydantic model naming its job kind in ``KIND``. Handlers build one and enqueue
it (``payload()`` is what is stored); the worker decodes the stored payload once (``decode``) and
hands the model to the kind's runner (``bot.app.jobs``). Payload keys the model does not name
(``delivery_id``, keys written by older versions) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field

from bot.kernel import JSONObject

#: The commit trailer naming the job that made a commit (``Shepherd-Job: owner/repo#pr/job``):
#: the loop guard and agent detection read it.
JOB_TRAILER = "Shepherd-Job"


class JobRequest(BaseModel):
    """Base of every job request."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    #: The job kind the worker dispatches on; each concrete request sets it.
    KIND: ClassVar[str]

    #: The job's id in the store: set when decoded from a leased job, never stored.
    job_id: int | None = Field(default=None, exclude=True)

    @classmethod
    def decode(cls, payload: Mapping[str, Any], *, job_id: int | None = None) -> Self:
        """The request stored as ``payload`` (by ``payload()``, or by an older version)."""
        return cls.model_validate({**payload, "job_id": job_id})

    def payload(self) -> JSONObject:
        """The JSON object stored as the job's payload."""
        return self.model_dump(mode="json")


class RepoTarget(JobRequest):
    """A request acting on one repository: the installation whose token to use, and the
    repository, stored as ``repo: owner/name`` (the form every payload has used)."""

    installation: int
    owner: str
    repo: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @classmethod
    def decode(cls, payload: Mapping[str, Any], *, job_id: int | None = None) -> Self:
        owner, _, name = str(payload["repo"]).partition("/")
        return cls.model_validate({**payload, "owner": owner, "repo": name, "job_id": job_id})

    def payload(self) -> JSONObject:
        data = self.model_dump(mode="json", exclude={"owner"})
        data["repo"] = self.full_name
        return data


# Housekeeping requests: their runners live in ``bot.app.jobs``; handlers and the worker pool
# enqueue them, so they sit here, below both.


class PrewarmRequest(RepoTarget):
    """A pull request opened: build its base commit's job environments into the warm pool."""

    KIND: ClassVar[str] = "prewarm"

    sha: str
    clone_url: str


class ForgetReposRequest(JobRequest):
    """The App lost these repositories (``owner/name``): drop their mirror clones."""

    KIND: ClassVar[str] = "forget_repos"

    repos: tuple[str, ...]


class PruneRequest(JobRequest):
    """Retention: drop finished deliveries older than this many days."""

    KIND: ClassVar[str] = "prune"

    retention_days: int
