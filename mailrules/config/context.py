"""What one load shares across the files it reads (the main file and its includes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..model import Account, Location, RuleTest
from .reading import Budget

if TYPE_CHECKING:  # not imported: the accounts alone are read without the plugins (`top.load_accounts`)
    from ..plugins import Registry

__all__ = ["LoadState"]

@dataclass
class LoadState:
    """What the whole load shares across files."""

    registry: Registry | None  # None: the accounts alone are read (`top.load_accounts`)
    accounts: dict[str, Account] = field(default_factory=dict)
    timezone: str | None = None
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    chain: list[tuple[Path, str]] = field(default_factory=list)  # files being loaded, for cycles
    included: dict[Path, Location] = field(default_factory=dict)
    budget: Budget = field(default_factory=Budget)  # the limits, for all files together
    tests: list[RuleTest] = field(default_factory=list)  # every file's `tests:` cases, in load order

    def plugins(self) -> Registry:
        """The registry the rules' predicates and actions are looked up in."""
        if self.registry is None:
            raise AssertionError("a rule read while reading the accounts alone")
        return self.registry

    def warn(self, message: str) -> None:
        """Collect a warning: `load` issues them all once the whole file is known to be valid."""
        self.warnings.append(message)
