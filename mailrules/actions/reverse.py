"""Reversing what an action did, from the record its done step journaled (``"undo"``).

`mailrules.undo` walks a run's done steps backwards and asks each step's action object to
reverse it (`Action.reverse`); the bodies live here, one per family:

* flags and keywords (`reverse_flags`): the record names, per flag, the messages the action
  actually changed; only those that still are as the action left them are changed back
  (with CONDSTORE, ``UID STORE (UNCHANGEDSINCE m)`` where m is the highest MODSEQ read just
  before, so that a change by another client in between is never overwritten); the others
  are left alone and listed;
* copies (`reverse_copy`): the copies the run made that are still as it made them (the flags
  and keywords journaled with the copy) are removed: marked \\Deleted by us (with CONDSTORE
  ``UNCHANGEDSINCE``), then UID EXPUNGE of exactly those UIDs (with UIDPLUS only; never a bare
  EXPUNGE); the others are left alone and listed;
* moves and trash (`reverse_move`): the messages still where the run put them, with the flags
  and keywords they were moved with (journaled with the move), go back to the mailbox they
  came from (MOVE, or COPY then delete, same account; APPEND, verified by its APPENDUID, then
  delete, across accounts); the others are left alone and listed, and so are the run's earlier
  flag steps on them (`UndoRun.held`).

Each reversal returns the record of its own reversal, journaled with the undo's done step,
so that an undo is undoable like any run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..criteria import SearchQuery
from ..imap.condstore import store_unchangedsince
from ..imap.session import ImapSession
from ..uidset import UidSet


@dataclass
class UndoRun:
    """What a reversal runs with: connections, the undone run's mailbox, what changed since.

    renumber: a UID of `mailbox` in the undone run -> its UID now (messages that an earlier
    reversal of this undo brought back into `mailbox` got new UIDs). left: messages left
    alone, with why (reported).
    """

    connect: Callable[[str], ImapSession]
    account: str
    mailbox: str  # server name
    renumber: dict[int, int] = field(default_factory=dict)
    left: list[str] = field(default_factory=list)
    # Rewrites the journaled intent of the reversal in progress (what a resume must know).
    note: Callable[[dict], None] | None = None
    # That intent read back, when this reversal was interrupted by a crash and is resumed.
    resumed: Mapping[str, Any] | None = None
    uids: UidSet = field(default_factory=UidSet)  # the UIDs the step being reversed acted on
    # UIDs of `mailbox` in the undone run whose move a later step's reversal left alone (changed
    # since by someone else, listed then): the earlier steps' reversals leave them alone too.
    held: set[int] = field(default_factory=set)

    def select(self, mailbox: str, account: str | None = None) -> ImapSession:
        """The session of `account` (default: the run's) with `mailbox` selected read-write."""
        session = self.connect(account or self.account)
        sel = session.selected
        if sel is None or sel.name != mailbox or sel.readonly:
            session.select(mailbox)
        return session

    def now(self, mailbox: str, uids: Iterable[int]) -> dict[int, int]:
        """UID at the time of the run -> UID now, for messages of `mailbox`."""
        if mailbox != self.mailbox:
            return {u: u for u in uids}
        return {u: self.renumber.get(u, u) for u in uids}


@dataclass(frozen=True)
class Reversed:
    """What one reversal did: as the journal records it (an action name and text, the UIDs of
    the run's mailbox it acted on, the record of its own reversal)."""

    name: str
    text: str
    uids: UidSet
    undo: dict | None
    count: int


def fetch_flags(session: ImapSession, uids: UidSet) -> dict[int, set[str]]:
    """UID -> its flags and keywords (one UID FETCH FLAGS)."""
    if not uids:
        return {}
    return {uid: {_text(f) for f in data.get(b"FLAGS", ())} for uid, data in session.fetch(uids, ["FLAGS"])}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _flags_and_modseq(session: ImapSession, uids: UidSet) -> tuple[dict[int, set[str]], int | None]:
    if not session.has("CONDSTORE"):
        return {u: {f.lower() for f in fl} for u, fl in fetch_flags(session, uids).items()}, None
    flags: dict[int, set[str]] = {}
    top = 0
    for uid, data in session.fetch(uids, ["FLAGS", "MODSEQ"]):
        flags[uid] = {_text(f).lower() for f in data.get(b"FLAGS", ())}
        modseq = data.get(b"MODSEQ")
        if isinstance(modseq, tuple | list):
            modseq = modseq[0]
        top = max(top, int(modseq or 0))
    return flags, top


def reverse_flags(undo: UndoRun, record: Mapping[str, Any], *, keywords: bool) -> Reversed:
    """Change back each flag where the action changed it and nobody changed it since."""
    mailbox = record.get("mailbox") or undo.mailbox
    added = bool(record["added"])
    session = undo.select(mailbox)
    changed = {flag: undo.now(mailbox, UidSet.parse(text)) for flag, text in (record.get("changed") or {}).items()}
    every = UidSet(u for mapping in changed.values() for u in mapping.values())
    current, modseq = _flags_and_modseq(session, every)
    done: dict[str, UidSet] = {}
    for flag, mapping in changed.items():
        ready = UidSet(u for u in mapping.values() if u in current and (flag.lower() in current[u]) == added)
        for old, uid in mapping.items():
            if mailbox == undo.mailbox and old in undo.held:
                continue  # its move was left alone, and listed: so is it
            if uid not in ready and not (undo.resumed and uid in current):  # resumed: maybe changed back by us
                why = "gone (moved or deleted since)" if uid not in current else "changed since by someone else"
                undo.left.append(f"{mailbox} UID {old}: {flag} {why}")
        if ready and modseq is not None:
            op = "-FLAGS" if added else "+FLAGS"
            refused = UidSet()
            for chunk in ready.chunks(900):
                refused |= store_unchangedsince(session, str(chunk), modseq, op, [flag])
            undo.left.extend(f"{mailbox} UID {u}: {flag} changed since by someone else" for u in refused)
            ready -= refused
        elif ready:
            session.store(ready, [flag], add=not added)
        if ready:
            done[flag] = ready
    word = ("keyword" if keywords else "flag")
    name = f"{'remove' if added else 'add'}_{word}"
    uids = UidSet(u for s in done.values() for u in s)
    back = {"flags": list(record["flags"]), "added": not added, "changed": {f: str(s) for f, s in done.items()},
            "mailbox": mailbox}
    text = f"{name} {' '.join(record['flags'])}"
    return Reversed(name, text, uids, {"undo": back} if uids else None, len(uids))


def copy_flags(mapping: Mapping[int, int], flags: Mapping[int, Iterable[str]]) -> dict[str, str]:
    """What a copy journals of the flags and keywords its copies were made with: flags (joined by
    spaces, \\Recent left out) -> the destination UIDs made with exactly those. Compact: a
    backlog's copies mostly share a handful of flag sets. Copies of unknown flags are left out."""
    out: dict[str, list[int]] = {}
    for source, copy in mapping.items():
        if source in flags:
            text = " ".join(sorted(f for f in flags[source] if f.lower() != "\\recent"))
            out.setdefault(text, []).append(copy)
    return {text: str(UidSet(uids)) for text, uids in sorted(out.items())}


def _made_with(journaled: Mapping[str, str]) -> dict[int, frozenset[str]]:
    """`copy_flags` read back: each copy's (or moved message's) UID -> the flags and keywords,
    lower-case, it was made with."""
    return {uid: frozenset(f.lower() for f in text.split()) for text, uids in journaled.items()
            for uid in UidSet.parse(uids)}


def reverse_copy(undo: UndoRun, record: Mapping[str, Any]) -> Reversed:
    """Remove the copies a copy made that are still there as it made them: \\Deleted, then UID
    EXPUNGE of exactly them (`_remove_unchanged`)."""
    account, dest = record.get("account") or undo.account, record["dest"]
    if "recopy" in record:
        return _recopy(undo, record)
    mapping = {int(k): int(v) for k, v in (record.get("mapping") or {}).items()}
    if not mapping:
        undo.left.append(f"copies in {account}:{dest}: the server gave no COPYUID, so they cannot be told apart")
        return Reversed("copy", f"delete copies in {dest}", UidSet(), None, 0)
    _unmapped(undo, mapping, f"{account}:{dest}", record["source"])
    session = undo.select(dest, account)
    removed = _remove_unchanged(undo, session, UidSet(mapping.values()), record.get("flags"), f"{account}:{dest}")
    sources = UidSet(undo.now(record["source"], [s for s, d in mapping.items() if d in removed]).values())
    again = {"source": record["source"], "account": account, "dest": dest, "recopy": str(sources)}
    return Reversed("copy", f"delete copies in {dest}", sources,
                    {"undo": again} if sources and account == undo.account else None, len(removed))


def _remove_unchanged(undo: UndoRun, session: ImapSession, copies: UidSet, made: Mapping[str, str] | None,
                      where: str) -> UidSet:
    """Of `copies` (the selected mailbox), remove those nobody changed since; returns them.

    `made`: the flags each copy was made with (`copy_flags`). A copy whose flags and keywords
    are no longer those was changed by another client: left alone and listed, as a copy moved
    or deleted since. The others are marked \\Deleted (with CONDSTORE `UNCHANGEDSINCE` the
    highest MODSEQ read with their flags, so that a change in between is not lost either) and
    UID EXPUNGE removes exactly those marked. A record without `made` (journaled before it was
    kept) removes every copy still there, as before.
    """
    current, modseq = _flags_and_modseq(session, copies)
    undo.left.extend(f"{where} UID {d}: the copy is gone already" for d in copies if d not in current)
    then = _made_with(made or {})
    ours = UidSet.parse(str(undo.resumed["marking"])) if undo.resumed and "marking" in undo.resumed else UidSet()
    unchanged: list[int] = []
    for uid, flags in current.items():
        flags = flags - {"\\recent"} - ({"\\deleted"} if uid in ours else set())
        if made is not None and uid in then and flags != then[uid]:
            undo.left.append(f"{where} UID {uid}: the copy was changed since by someone else")
        else:
            unchanged.append(uid)
    ready = UidSet(unchanged)
    if ready and undo.note is not None:  # a resume must know which \\Deleted marks are ours
        undo.note({"marking": str(ready)})
    refused = UidSet()
    if ready and modseq is not None and made is not None:
        for chunk in ready.chunks(900):
            refused |= store_unchangedsince(session, str(chunk), modseq, "+FLAGS", ["\\Deleted"])
        undo.left.extend(f"{where} UID {u}: the copy was changed since by someone else" for u in refused)
    elif ready:
        session.store(ready, ["\\Deleted"], add=True)
    marked = ready - refused
    if marked and session.has("UIDPLUS"):
        session.uid_expunge(marked)
    return marked


def _recopy(undo: UndoRun, record: Mapping[str, Any]) -> Reversed:
    """Undoing an undone copy: copy the sources (still in the mailbox) to the destination again."""
    mailbox, dest = record["source"], record["dest"]
    session = undo.select(mailbox)
    wanted = UidSet(undo.now(mailbox, UidSet.parse(record["recopy"])).values())
    there = session.existing(wanted)
    undo.left.extend(f"{mailbox} UID {u}: moved or deleted since" for u in wanted if u not in there)
    transfer = session.copy(there, dest) if there else None
    mapping = dict(transfer.mapping) if transfer else {}
    back = {"source": mailbox, "account": undo.account, "dest": dest,
            "mapping": {str(k): v for k, v in sorted(mapping.items())},
            "flags": copy_flags(mapping, transfer.flags if transfer else {})}  # as a copy journals them
    return Reversed("copy", f"copy {dest}", there, {"undo": back} if there else None, len(there))


def reverse_move(undo: UndoRun, record: Mapping[str, Any]) -> Reversed:
    """Move the messages still where a move put them, as it put them, back to where they came from.

    The record's `flags` (`copy_flags`: the flags and keywords each message was moved with) tell
    the messages another client changed since in their new folder: those are left alone and
    listed, and their UIDs held (`UndoRun.held`), so that the run's earlier flag steps are not
    reversed on them either. A record without `flags` (journaled before they were kept) moves
    back every message still there.
    """
    account, dest, source = record.get("account") or undo.account, record["dest"], record["source"]
    mapping = {int(k): int(v) for k, v in (record.get("mapping") or {}).items()}
    if not mapping:
        undo.left.append(f"messages moved to {account}:{dest}: the server gave no COPYUID, so they cannot be found")
        return Reversed("move", f"move {source}", UidSet(), None, 0)
    _unmapped(undo, mapping, f"{account}:{dest}", record["source"])
    session = undo.select(dest, account)
    there = session.existing(UidSet(mapping.values()))
    back: dict[int, int] = {}
    if account == undo.account and undo.resumed and "uidnext" in undo.resumed:
        back = _recover(undo, session, there, source, dest)
    undo.left.extend(f"{account}:{dest} UID {d}: moved or deleted since" for d in mapping.values()
                     if d not in there and d not in back)
    origin = {d: s for s, d in mapping.items()}
    there, flags = _unchanged_since(undo, session, there, record.get("flags"), f"{account}:{dest}")
    if source == undo.mailbox:
        undo.held.update(origin[d] for d in flags if d not in there)
    if account == undo.account:
        if undo.note is not None and there:  # before the MOVE: how to find them after a crash
            sizes = {uid: data.get(b"RFC822.SIZE") for uid, data in session.fetch(there, ["RFC822.SIZE"])}
            undo.note({"uidnext": session.status_uidnext(source), "sizes": {str(u): n for u, n in sizes.items()}})
        back.update(_move_same_account(session, there, source))
    else:
        back = _move_across(undo, session, there, source)
    if source == undo.mailbox:
        undo.renumber.update({origin[d]: n for d, n in back.items()})
    reverse = {"source": dest if account == undo.account else source, "account": account,
               "dest": source, "mapping": {str(d): n for d, n in sorted(back.items())}}
    if flags:  # as a move journals them: what the undo of this undo compares with
        reverse["flags"] = copy_flags(back, flags)
    if account != undo.account:  # the reversal of an undone cross-account move: the forward move again
        reverse = {"source": source, "account": account, "dest": dest, "mapping": {}}
    in_run_mailbox = UidSet(back.values()) if source == undo.mailbox else UidSet(back)
    return Reversed("move", f"move {source} (back from {dest})", in_run_mailbox,
                    {"undo": reverse} if back and account == undo.account else None, len(there))


def _unchanged_since(undo: UndoRun, session: ImapSession, there: UidSet, moved: Mapping[str, str] | None,
                     where: str) -> tuple[UidSet, dict[int, frozenset[str]]]:
    """Of `there` (moved messages still in the selected mailbox), those whose flags and keywords
    are still those they were moved with (`moved`, as `copy_flags` journals them), and every
    one's flags now (one UID FETCH FLAGS). The others are listed as changed since. Without
    `moved` (an old record) every message is taken as unchanged, and no flags are read."""
    if moved is None or not there:
        return there, {}
    then = _made_with(moved)
    now = {uid: frozenset(f for f in flags if f.lower() != "\\recent")
           for uid, flags in fetch_flags(session, there).items()}
    changed = UidSet(u for u, f in now.items() if u in then and frozenset(x.lower() for x in f) != then[u])
    undo.left.extend(f"{where} UID {u}: changed since by someone else" for u in changed)
    return UidSet(u for u in there if u not in changed), now


def _unmapped(undo: UndoRun, mapping: Mapping[int, int], where: str, record_source: str) -> None:
    """List the messages of the step that its record cannot locate: a copy or move that a
    crash interrupted and the resume completed (those done before the crash have no UID there)."""
    missing = UidSet(u for u in undo.uids if u not in mapping)
    if missing and mapping and record_source == undo.mailbox:
        undo.left.append(f"{where}: {len(missing)} messages (UIDs {missing}) were copied before an interrupted "
                         "pass resumed: their copies cannot be located by UID")


def _recover(undo: UndoRun, session: ImapSession, there: UidSet, source: str, dest: str) -> dict[int, int]:
    """After a crash in the middle of moving back: where the messages already moved landed.

    The intent recorded the source's UIDNEXT and each message's size before the MOVE; the
    server gives moved messages new UIDs in the order of the old ones, so the arrivals since
    that UIDNEXT are paired, in order, with the messages gone, each with one of its size.
    """
    assert undo.resumed is not None
    sizes = {int(k): int(v) for k, v in (undo.resumed.get("sizes") or {}).items()}
    gone = sorted(d for d in sizes if d not in there)
    if not gone:
        return {}
    since = int(undo.resumed["uidnext"])
    session.select(source)
    arrived = UidSet(u for u in session.search(SearchQuery((b"UID", f"{since}:*".encode()))) if u >= since)
    found = {uid: data.get(b"RFC822.SIZE") for uid, data in session.fetch(arrived, ["RFC822.SIZE"])}
    session.select(dest)
    out: dict[int, int] = {}
    queue = sorted(found)
    for d in gone:
        while queue and found[queue[0]] != sizes[d]:
            queue.pop(0)
        if queue:
            out[d] = queue.pop(0)
    return out


def _move_same_account(session: ImapSession, uids: UidSet, source: str) -> dict[int, int]:
    if not uids:
        return {}
    if session.has("MOVE"):
        return dict(session.move(uids, source).mapping)
    mapping = dict(session.copy(uids, source).mapping)
    _expunge(session, UidSet(mapping))  # only those whose copy is proven by COPYUID
    return mapping


def _move_across(undo: UndoRun, session: ImapSession, uids: UidSet, source: str) -> dict[int, int]:
    """APPEND back to the run's account (flags and date kept); delete those confirmed by APPENDUID."""
    home = undo.connect(undo.account)
    mapping: dict[int, int] = {}
    for uid, data in session.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"], batch=50):
        body = data.get(b"BODY[]")
        if not body:
            continue
        flags = [f for f in (_text(x) for x in data.get(b"FLAGS", ())) if f.lower() not in ("\\deleted", "\\recent")]
        result = home.append(source, body, flags, data.get(b"INTERNALDATE"))
        if result:
            mapping[uid] = result[1]
        else:
            undo.left.append(f"UID {uid}: copied back without APPENDUID, so left in place as well")
    _expunge(session, UidSet(mapping))
    return mapping


def _expunge(session: ImapSession, uids: UidSet) -> None:
    """Mark exactly these UIDs \\Deleted and UID EXPUNGE them (never a bare EXPUNGE)."""
    if not uids:
        return
    session.store(uids, ["\\Deleted"], add=True)
    if session.has("UIDPLUS"):
        session.uid_expunge(uids)
