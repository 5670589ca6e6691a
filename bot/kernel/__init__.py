"""The small kernel every layer may use: errors, problem documents, settings, the repository config and job targets."""

from typing import Any

__all__ = ["JSONObject"]

JSONObject = dict[str, Any]
"""A decoded JSON object (or a YAML mapping read the same way): GitHub's payloads, stored records."""
