"""A dry run on IMAP: the flags and keywords the earlier rules would have set, seen by later rules.

A dry run carries no action out, yet its plan must list exactly what the real run does, and
in a real run rule 2's criteria see the flags rule 1 set (`mailrules.kernel`). So the dry
run's pass keeps a `FlagOverlay`: per UID, the flags and keywords its simulated actions
added and removed (`mailrules.api.Action.flag_changes`). When a rule whose criteria read
flags (`mailrules.criteria.reads_of(...).mutable`) is searched, `search_overlaid` decides
the messages with an overlay entry apart: grouped by their entry, the criteria tree is
partially evaluated for each group (a `flagged` leaf is true where the overlay added
\\Flagged, false where it removed it, left to the server otherwise), simplified, and
searched on the server restricted to the group's UIDs, or not searched at all when it
simplified to a constant. The other messages (and those whose entry touches no flag the
criteria read) are searched as usual. The server still does the work: at most one extra UID
SEARCH per distinct simplified criteria tree, none when the criteria read no flag or no
message has an entry.

What the overlay does not reach: `raw:` search keys (sent verbatim, answered from the
server's flags) and `where:` predicates (a plugin predicate reading a message's flags sees
the server's flags in a dry run).

Flags and keywords are compared without regard to case, as IMAP (and
`mailrules.local_search`) compare them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .criteria import reads_of
from .model import All, AnyOf, Criterion, Flag, Keyword, Not
from .uidset import UidSet

Entry = tuple[frozenset[str], frozenset[str]]  # (added, removed), lower-case names


class FlagOverlay:
    """Per UID, the flags and keywords a dry run's simulated actions added and removed."""

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    def record(self, uids: Iterable[int], added: Iterable[str], removed: Iterable[str]) -> None:
        """The messages `uids` got `added` set and `removed` cleared (later changes win)."""
        plus = frozenset(name.lower() for name in added)
        minus = frozenset(name.lower() for name in removed)
        if not plus and not minus:
            return
        for uid in uids:
            was_added, was_removed = self.entries.get(uid, (frozenset(), frozenset()))
            self.entries[uid] = ((was_added - minus) | plus, (was_removed - plus) | minus)

    def groups(self, uids: Iterable[int]) -> dict[Entry, UidSet]:
        """The UIDs of `uids` that have an entry, grouped by it."""
        out: dict[Entry, list[int]] = {}
        for uid in uids:
            entry = self.entries.get(uid)
            if entry is not None:
                out.setdefault(entry, []).append(uid)
        return {entry: UidSet(members) for entry, members in out.items()}


def partial(node: Criterion, entry: Entry) -> Criterion | bool:
    """`node` with its flag and keyword leaves decided where `entry` says (True/False), then
    simplified: a constant when the whole tree is decided, else the criteria left for the server."""
    added, removed = entry
    if isinstance(node, (Flag, Keyword)):
        name = (node.flag if isinstance(node, Flag) else node.name).lower()
        if name in added:
            return node.present
        if name in removed:
            return not node.present
        return node
    if isinstance(node, Not):
        inner = partial(node.child, entry)
        if isinstance(inner, bool):
            return not inner
        return node if inner is node.child else Not(inner)
    if isinstance(node, (All, AnyOf)):
        deciding = isinstance(node, AnyOf)  # a True child decides an AnyOf, a False one an All
        left = []
        for child in node.children:
            value = partial(child, entry)
            if value is deciding:
                return deciding
            if not isinstance(value, bool):
                left.append(value)
        if not left:
            return not deciding  # every child was the neutral constant: All() is true, AnyOf() false
        if len(left) == len(node.children) and all(a is b for a, b in zip(left, node.children, strict=True)):
            return node  # untouched: the caller can tell (`is`) that the overlay changes nothing here
        return type(node)(tuple(left))
    return node


def search_overlaid(overlay: FlagOverlay, criteria: Criterion, searchable: UidSet,
                    search: Callable[[Criterion, UidSet], UidSet]) -> UidSet:
    """The UIDs of `searchable` that `criteria` matches once the overlay's changes are made.

    search(criteria, within): the server's answer (one UID SEARCH, or what the caller does).
    """
    if not overlay or not reads_of(criteria).mutable:
        return search(criteria, searchable)
    # the messages whose entry changes nothing the criteria read are searched with the others;
    # the rest, by what their criteria become (one search per distinct simplified tree)
    plain: list[int] = [u for u in searchable if u not in overlay.entries]
    decided: dict[Criterion | bool, list[int]] = {}
    for entry, members in overlay.groups(searchable).items():
        value = partial(criteria, entry)
        if value is criteria:
            plain.extend(members)
        else:
            decided.setdefault(value, []).extend(members)
    found: set[int] = set(search(criteria, UidSet(plain))) if plain else set()
    for value, members in decided.items():
        if value is True:
            found.update(members)
        elif value is not False:
            found |= set(search(value, UidSet(members)))  # type: ignore[arg-type]
    return UidSet(found)
