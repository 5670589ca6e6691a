"""The deterministic fixers, in the order they run. A new fixer is one module and one line here.

When a job's failed steps call for several, they run in this order: lint fixes first (``ruff
check --fix`` may remove the imports isort would sort), then import sorting, then the formatters,
which have the last word on layout (isort after black can undo black's wrapping).
"""

from __future__ import annotations

from fixers.base import Fixer
from fixers.black import BLACK
from fixers.eslint import ESLINT
from fixers.gofmt import GOFMT
from fixers.isort import ISORT
from fixers.lockfile import LOCKFILE
from fixers.precommit import PRE_COMMIT
from fixers.prettier import PRETTIER
from fixers.ruff_check import RUFF_CHECK
from fixers.ruff_format import RUFF_FORMAT
from fixers.rustfmt import RUSTFMT
from fixers.whitespace import WHITESPACE

FIXERS: tuple[Fixer, ...] = (
    RUFF_CHECK,
    ISORT,
    RUFF_FORMAT,
    BLACK,
    WHITESPACE,
    ESLINT,
    PRETTIER,
    GOFMT,
    RUSTFMT,
    PRE_COMMIT,
    LOCKFILE,
)

__all__ = ["FIXERS"]
