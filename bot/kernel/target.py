"""The repository a job acts on, as every job payload names it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.kernel import JSONObject


@dataclass(frozen=True)
class RepoTarget:
    """Base of every job request: the installation whose token to use, and the repository."""

    installation: int
    owner: str
    repo: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @staticmethod
    def target_fields(payload: Mapping[str, Any]) -> JSONObject:
        """``installation``, ``owner`` and ``repo`` from a job payload (``repo`` is owner/name)."""
        owner, _, name = str(payload["repo"]).partition("/")
        return {"installation": int(payload["installation"]), "owner": owner, "repo": name}
