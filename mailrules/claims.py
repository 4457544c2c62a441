"""Shared mailboxes (`shared: true`): several daemons, each message acted on exactly once.

The IMAP server is the only coordinator. Three kinds of keywords mark a message:

* ``$MRClaimed`` plus ``$MRClaim-<instance>``: an instance (one state directory on one host,
  `instance_id`) claimed the message before its first action; the fixed keyword is what the
  others SEARCH for, the second names the holder.
* ``$MRDone``: the message's rules are done (the other instances, whose own state never saw
  it, skip it). The claim keywords stay beside it: they say who processed the message, and
  the holder's own retries (a failed action resumes from its journal) still know it is theirs.

The protocol, per pass over new (and resumed, and retried) candidates, before any action:

1. ``UID FETCH <candidates> (FLAGS MODSEQ)``.
2. Ours (our holder keyword): kept; the journal says where it resumes. Done: skipped.
   Claimed by another instance: skipped, and its holder noted with the time *we* first saw
   it (our monotonic clock). Unclaimed: claimed with one CONDSTORE command,
   ``UID STORE <set> (UNCHANGEDSINCE m) +FLAGS.SILENT ($MRClaimed $MRClaim-<us>)`` where m
   is the highest MODSEQ fetched: a message another instance claimed since our FETCH has a
   higher mod-sequence, so the server leaves it alone and names it in ``[MODIFIED ...]``.
   Exactly one instance wins each message.
3. A claim that we have seen held by the same instance, without being done, for
   ``claim_timeout`` is taken over: ``UID STORE <uid> (UNCHANGEDSINCE <its MODSEQ>) FLAGS
   (<its flags, with our holder keyword instead of the old one>)``; again only one wins.
4. After the pass: ``UID STORE <ours> +FLAGS.SILENT ($MRDone)`` before the journal closes the
   run (a crash in between resumes the run, which sees the messages are its own).

Every pass also searches ``KEYWORD $MRClaimed UNKEYWORD $MRDone`` (claims not finished) so
that claims of a dead instance come back as candidates, and the daemon schedules a pass when
the oldest such claim is due (`Claims.next_due`).

Clocks: expiry is judged on the observer's own monotonic clock from the moment it first
saw the claim, so no two machines' clocks are ever compared (no skew assumption). The
price: an observer that restarts starts its timers again, and the holder's pass over a
message must finish within ``claim_timeout`` (a pass takes seconds; the default is 10m).

Needs CONDSTORE (the conditional STORE is what makes the claim exclusive) and keywords
(PERMANENTFLAGS ``\\*``): without them a shared account is refused (`SharedUnsupported`)
rather than run in a mode that could act twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable

from .criteria import SearchQuery
from .imap.session import MAX_SET_CHARS, ImapSession
from .uidset import UidSet

log = logging.getLogger("mailrules.claims")

CLAIMED = "$MRClaimed"
DONE = "$MRDone"
HOLDER_PREFIX = "$MRClaim-"
KEYWORDS = (CLAIMED, DONE)


class SharedUnsupported(Exception):
    """The server cannot carry the claim protocol (no CONDSTORE, or no keywords)."""


def instance_id(state_dir: str | os.PathLike[str] | None) -> str:
    """A stable name for this instance: its host and state directory (12 hex digits).

    Stable across restarts, so a restarted daemon recognises its own claims (its journal
    resumes them); distinct for separate state directories, on one machine or several.
    """
    where = os.path.abspath(os.fspath(state_dir)) if state_dir is not None else "<none>"
    return hashlib.sha256(f"{socket.gethostname()}\0{where}".encode()).hexdigest()[:12]


def holder_keyword(instance: str) -> str:
    return HOLDER_PREFIX + instance


def holders(flags: Iterable[str]) -> list[str]:
    return [f for f in flags if f.lower().startswith(HOLDER_PREFIX.lower())]


def require_support(session: ImapSession, account: str) -> None:
    """Refuse a shared account whose server cannot make claims exclusive."""
    if not session.has("CONDSTORE"):
        raise SharedUnsupported(
            f"account {account}: 'shared: true' needs the server's CONDSTORE extension (RFC 7162), which it "
            "does not advertise: without a conditional STORE two instances could both claim a message and act "
            "on it twice. Run a single instance with 'shared: false' on this server.")
    sel = session.selected
    if sel is not None and not sel.readonly and not sel.can_store_keyword(CLAIMED):
        raise SharedUnsupported(
            f"account {account} mailbox {sel.name}: 'shared: true' needs keywords ($MRClaimed, $MRDone), but "
            f"the server's PERMANENTFLAGS ({' '.join(sel.permanent_flags) or 'none'}) do not allow new ones")


class Claims:
    """The claim protocol of one instance (one per engine)."""

    def __init__(self, instance: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.instance = instance
        self.mine = holder_keyword(instance)
        self.clock = clock
        # (account, mailbox, uidvalidity, uid) -> (holder keyword, when we first saw it held)
        self.seen: dict[tuple[str, str, int, int], tuple[str, float]] = {}
        self.timeouts: dict[tuple[str, str], float] = {}

    def _flags(self, session: ImapSession, uids: UidSet) -> dict[int, tuple[set[str], int]]:
        out: dict[int, tuple[set[str], int]] = {}
        for uid, data in session.fetch(uids, ["FLAGS", "MODSEQ"]):
            flags = {f.decode() if isinstance(f, bytes) else str(f) for f in data.get(b"FLAGS", ())}
            modseq = data.get(b"MODSEQ")
            if isinstance(modseq, tuple | list):
                modseq = modseq[0]
            out[uid] = (flags, int(modseq or 0))
        return out

    def unfinished(self, session: ImapSession, account: str, mailbox: str) -> UidSet:
        """Messages claimed by other instances and not done: candidates again (their claim may expire).

        Our own unfinished claims outside an open run (the done mark was lost) are marked done.
        """
        require_support(session, account)
        found = session.search(SearchQuery((b"KEYWORD", CLAIMED.encode(), b"UNKEYWORD", DONE.encode())))
        for key in [k for k in self.seen if k[0] == account and k[1] == mailbox and k[3] not in found]:
            del self.seen[key]  # finished, moved or deleted since
        if not found:
            return UidSet()
        flags = self._flags(session, found)
        mine = UidSet(u for u, (f, _) in flags.items() if holders(f) == [self.mine])
        if mine:
            self.done(session, mine)
        return UidSet(u for u in flags if u not in mine)

    def claim(self, session: ImapSession, account: str, mailbox: str, candidates: UidSet,
              timeout: float) -> UidSet:
        """The candidates this instance may act on: its own claims, and those it wins now."""
        require_support(session, account)
        sel = session.selected
        assert sel is not None
        self.timeouts[(account, mailbox)] = timeout
        now = self.clock()
        ours: list[int] = []
        fresh: dict[int, int] = {}
        takeover: dict[int, tuple[set[str], int, str]] = {}
        for uid, (flags, modseq) in self._flags(session, candidates).items():
            key = (account, mailbox, sel.uidvalidity, uid)
            if self.mine in flags and holders(flags) == [self.mine]:
                ours.append(uid)
                self.seen.pop(key, None)
            elif DONE in flags:
                self.seen.pop(key, None)
            elif CLAIMED in flags or holders(flags):
                holder = " ".join(sorted(holders(flags))) or "?"
                first = self.seen.get(key)
                if first is None or first[0] != holder:
                    self.seen[key] = (holder, now)
                elif now - first[1] >= timeout:
                    takeover[uid] = (flags, modseq, holder)
            else:
                fresh[uid] = modseq
        if fresh:
            top = max(fresh.values())
            for chunk in UidSet(fresh).chunks(MAX_SET_CHARS):
                lost = session.store_unchangedsince(str(chunk), top, "+FLAGS", [CLAIMED, self.mine])
                ours.extend(u for u in chunk if u not in lost)
            # Verify: should two conditional STOREs both have passed (seen under load, cause not yet
            # known), the later one sees two holder keywords and backs off; a message left with
            # two holders is nobody's until one takes it over after claim_timeout.
            won = UidSet(u for u in ours if u in fresh)
            for uid, (flags, _) in self._flags(session, won).items():
                if holders(flags) != [self.mine]:
                    log.warning("account %s mailbox %s UID %d: claimed by several instances (%s): backing off",
                                account, mailbox, uid, " ".join(holders(flags)))
                    ours.remove(uid)
                    self.seen[(account, mailbox, sel.uidvalidity, uid)] = (" ".join(sorted(holders(flags))), now)
        for uid, (flags, modseq, holder) in takeover.items():
            keep = sorted(f for f in flags if f.lower() != "\\recent" and f not in holders(flags))
            lost = session.store_unchangedsince(str(uid), modseq, "FLAGS", [*keep, CLAIMED, self.mine])
            if uid not in lost:
                log.warning("account %s mailbox %s UID %d: took over the claim of %s, unfinished for %gs",
                            account, mailbox, uid, holder, timeout)
                ours.append(uid)
                self.seen.pop((account, mailbox, sel.uidvalidity, uid), None)
        if len(ours) < len(candidates):
            log.debug("account %s mailbox %s: %d of %d candidates claimed by other instances or done",
                      account, mailbox, len(candidates) - len(ours), len(candidates))
        return UidSet(ours)

    def done(self, session: ImapSession, uids: UidSet) -> None:
        """Mark our messages done on the server (UIDs no longer there are ignored by the server)."""
        if uids:
            session.store(uids, [DONE], add=True)

    def next_due(self, account: str, mailbox: str) -> float | None:
        """Seconds until the oldest claim of another instance we are watching expires, or None."""
        timeout = self.timeouts.get((account, mailbox))
        firsts = [t for (a, m, _, _), (_, t) in self.seen.items() if a == account and m == mailbox]
        if timeout is None or not firsts:
            return None
        return max(0.0, min(firsts) + timeout - self.clock())


__all__ = ["CLAIMED", "DONE", "HOLDER_PREFIX", "Claims", "SharedUnsupported", "holder_keyword", "instance_id",
           "require_support"]
