"""Rules the server refused: the messages that went by while they were refused, kept for them.

A rule whose search the server refuses (a `raw:` key it does not know) matches nothing on that
pass and its messages go on to the other rules (`mailrules.imap_mailbox`). So that the rule
still gets them once it works (the rules file fixed and reloaded, or the next `run --once`),
the messages that were in play at that rule are kept here, per rule, in the state store's
meta table (``refused:<account>:<mailbox>``: UIDVALIDITY, and per rule name its UIDs and the
server's words). Each arrival pass first runs every such rule over the messages kept for it
that still exist, once: the record is cleared in the same step that journals that pass, so a
crash resumes the journaled pass instead of starting it again. `status` shows each kept rule
with the count waiting for it.
"""

from __future__ import annotations

import json
from typing import Protocol

from .uidset import UidSet


class Meta(Protocol):
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...


def _key(account: str, mailbox: str) -> str:
    return f"refused:{account}:{mailbox}"


def load(store: Meta, account: str, mailbox: str, uidvalidity: int | None = None) -> dict[str, tuple[UidSet, str]]:
    """Rule name -> (the UIDs kept for it, why the server refused it); {} for another UIDVALIDITY."""
    raw = store.get_meta(_key(account, mailbox))
    if not raw:
        return {}
    data = json.loads(raw)
    if uidvalidity is not None and data.get("uidvalidity") != uidvalidity:
        return {}
    return {name: (UidSet.parse(entry.get("uids") or ""), entry.get("why", "")) for name, entry in
            data.get("rules", {}).items()}


def save(store: Meta, account: str, mailbox: str, uidvalidity: int, kept: dict[str, tuple[UidSet, str]]) -> None:
    rules = {name: {"uids": str(uids), "why": why} for name, (uids, why) in kept.items() if uids}
    store.set_meta(_key(account, mailbox), json.dumps({"uidvalidity": uidvalidity, "rules": rules}) if rules else "")


def record(store: Meta, account: str, mailbox: str, uidvalidity: int, owed: dict[str, tuple[UidSet, str]]) -> None:
    """Add the messages a pass could not give to the refused rules (`owed`)."""
    if not owed:
        return
    kept = load(store, account, mailbox, uidvalidity)
    for name, (uids, why) in owed.items():
        before = kept.get(name, (UidSet(), ""))[0]
        kept[name] = (before | uids, why)
    save(store, account, mailbox, uidvalidity, kept)


def waiting_lines(store: Meta, account: str, mailbox: str) -> list[str]:
    """For `status`: one line per refused rule with messages kept for it."""
    return [f"  rule {name!r}: refused by the server ({why}); {len(uids)} messages wait for it"
            for name, (uids, why) in load(store, account, mailbox).items()]


__all__ = ["load", "record", "save", "waiting_lines"]
