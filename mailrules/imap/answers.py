"""What the server answered: a refusal (`ServerRefused`), a COPY/MOVE (`Transfer`), a SELECT (`Selected`)."""

from __future__ import annotations

from dataclasses import dataclass, field


class ServerRefused(Exception):
    """The server answered NO (or BAD) to a command."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"{command}: {message}")
        self.command = command
        self.message = message

    @property
    def trycreate(self) -> bool:
        return "TRYCREATE" in self.message.upper()


@dataclass
class Transfer:
    """What a COPY or MOVE reported: destination UIDVALIDITY and source->destination UIDs."""

    uidvalidity: int | None = None
    mapping: dict[int, int] = field(default_factory=dict)
    # COPY, MOVE: source UID -> its flags and keywords as copied or moved (`copyflags`), for undo
    flags: dict[int, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Selected:
    """What SELECT/EXAMINE told us about a mailbox."""

    name: str
    uidvalidity: int
    uidnext: int
    exists: int
    permanent_flags: tuple[str, ...]
    readonly: bool

    def can_store_keyword(self, keyword: str) -> bool:
        flags = {f.lower() for f in self.permanent_flags}
        return "\\*" in flags or keyword.lower() in flags
