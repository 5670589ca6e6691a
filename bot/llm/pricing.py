"""Token usage of an LLM call and its estimated cost: the one price table of Shepherd.

Pure. Prices are USD per million tokens from Anthropic's public price list; cache writes
(5-minute TTL) cost 1.25x the input price and cache reads 0.1x. The estimate is for the summary
("about $0.04"), not for billing: an unknown model has no estimate rather than a wrong one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

_CACHE_WRITE_FACTOR = 1.25
_CACHE_READ_FACTOR = 0.10


class ApiUsage(Protocol):
    """The token counts of a Messages API answer (the SDK's ``Usage``)."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_creation_input_tokens(self) -> int | None: ...
    @property
    def cache_read_input_tokens(self) -> int | None: ...


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float

    @property
    def cache_write(self) -> float:
        return self.input * _CACHE_WRITE_FACTOR

    @property
    def cache_read(self) -> float:
        return self.input * _CACHE_READ_FACTOR


#: Model name prefixes (longest match wins) to prices. Dated snapshots such as
#: ``claude-sonnet-4-5-20250929`` match their family's prefix.
PRICES: Mapping[str, Price] = MappingProxyType(
    {
        # Opus 4 and 4.1 (``claude-opus-4-0``, ``claude-opus-4-20250514``) cost more than the
        # later 4.x models.
        "claude-opus-4-0": Price(input=15.0, output=75.0),
        "claude-opus-4-2025": Price(input=15.0, output=75.0),
        "claude-opus-4-1": Price(input=15.0, output=75.0),
        "claude-opus-4": Price(input=5.0, output=25.0),
        "claude-sonnet-4": Price(input=3.0, output=15.0),
        "claude-3-7-sonnet": Price(input=3.0, output=15.0),
        "claude-haiku-4-5": Price(input=1.0, output=5.0),
        "claude-3-5-haiku": Price(input=0.8, output=4.0),
    }
)


@dataclass(frozen=True)
class TokenUsage:
    """Tokens of one or more Messages API calls, as the API's ``usage`` reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=(
                self.cache_creation_input_tokens + other.cache_creation_input_tokens
            ),
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
        )

    @property
    def total_input_tokens(self) -> int:
        """Every input token the model read, cached or not (what the input budget counts)."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    @classmethod
    def from_api(cls, usage: ApiUsage) -> TokenUsage:
        """From the SDK's ``Usage`` object (cache fields are None when caching did not apply)."""
        return cls(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
            cache_read_input_tokens=usage.cache_read_input_tokens or 0,
        )

    def to_json(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        }


def price_for(model: str) -> Price | None:
    matches = [prefix for prefix in PRICES if model.startswith(prefix)]
    if not matches:
        return None
    return PRICES[max(matches, key=len)]


def estimate_cost(model: str, usage: TokenUsage) -> float | None:
    """Estimated USD for ``usage`` on ``model``; None when the model is not in the table."""
    price = price_for(model)
    if price is None:
        return None
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_creation_input_tokens * price.cache_write
        + usage.cache_read_input_tokens * price.cache_read
    ) / 1_000_000
    return round(total, 6)
