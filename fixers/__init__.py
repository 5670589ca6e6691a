"""The deterministic fixers, in the order they run. A new fixer is one module and one line here."""

from __future__ import annotations

from fixers.base import Fixer
from fixers.black import BLACK
from fixers.isort import ISORT
from fixers.lockfile import LOCKFILE
from fixers.prettier import PRETTIER
from fixers.ruff_check import RUFF_CHECK
from fixers.ruff_format import RUFF_FORMAT
from fixers.whitespace import WHITESPACE

FIXERS: tuple[Fixer, ...] = (
    RUFF_CHECK,
    RUFF_FORMAT,
    BLACK,
    ISORT,
    WHITESPACE,
    PRETTIER,
    LOCKFILE,
)

__all__ = ["FIXERS"]
