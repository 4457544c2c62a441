"""What one load shares across the files it reads (the main file and its includes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..model import Account, Location, RuleTest
from ..plugins import Registry
from .reading import Budget

__all__ = ["LoadState"]

@dataclass
class LoadState:
    """What the whole load shares across files."""

    registry: Registry
    accounts: dict[str, Account] = field(default_factory=dict)
    timezone: str | None = None
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    chain: list[tuple[Path, str]] = field(default_factory=list)  # files being loaded, for cycles
    included: dict[Path, Location] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)  # the limits, for all files together
    tests: list[RuleTest] = field(default_factory=list)  # every file's `tests:` cases, in load order

    def warn(self, message: str) -> None:
        """Collect a warning: `load` issues them all once the whole file is known to be valid."""
        self.warnings.append(message)
