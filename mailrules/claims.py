"""Shared mailboxes (`shared: true`): several daemons, each message acted on exactly once.

The IMAP server is the only coordinator; a message carries its claim state in a small, fixed
set of keywords per mailbox (no keyword per instance, run or message: Cyrus allows 100
keywords per mailbox and never frees a slot):

* ``$MRClaimed.<scope>``: claimed; ``$MRDone.<scope>``: its rules are done here. ``<scope>``
  is 8 hex digits of the mailbox's name and UIDVALIDITY, so marks a message brings from
  another mailbox or account (a copy, a move, a client that keeps keywords) mean nothing
  here: such a message is processed like any arrival.
* ``$MRGen1 $MRGen2 $MRGen4``: the claim's *generation* (0-7), in binary. A first claim takes
  a random one, a takeover the next. The holder keeps the generation it holds in its own
  journal (the state store's meta table), so it knows its claims after a restart and sees
  that a message was taken over (the generation changed) without a keyword of its own.
* ``$MRStep1 ... $MRStep128``: the step in flight (1 + the index of the action among the
  mailbox's arrival rules, in file order; 0 before the first action), in binary.

Every change is one conditional STORE per message, ``UID STORE <uid> (UNCHANGEDSINCE <its own
MODSEQ>) FLAGS.SILENT (<its flags, changed>)`` (a whole-set replacement, so one command
changes several keywords atomically; a message changed since its FETCH is left alone and
named in ``[MODIFIED]``):

1. Claim: a message without our scope's claim gets the claim and a random generation (any
   other mailrules keywords dropped). Exactly one instance wins each message.
2. Before each action batch the holder re-checks (`Claims.guard`): the message still carries
   the claim, not done, with the generation it holds; then it stores the step about to run.
   Messages it lost are dropped from the pass (the taker finishes them).
3. A claim held unfinished (same generation and step) for ``claim_timeout`` on the observer's
   own monotonic clock is taken over: the generation + 1, the step kept. The taker resumes
   at that step, which may or may not have happened: a copy or move looks for the message at
   its destination by content first (as crash resume does); other actions are done again.
4. After the pass: ``$MRDone.<scope>`` (generation and step dropped) on the messages still
   ours, before the journal closes the run.

The window that remains (IMAP has no fencing for COPY): a holder frozen between its re-check
and its action, for longer than ``claim_timeout``, acts once more after a taker verified and
did the step. See the README's "Shared mailboxes".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .criteria import SearchQuery
from .imap.condstore import store_unchangedsince_many
from .imap.session import ImapSession, ServerRefused
from .uidset import UidSet

log = logging.getLogger("mailrules.claims")

CLAIMED = "$MRClaimed"  # prefixes: the keywords are scoped, see claimed_keyword / done_keyword
DONE = "$MRDone"
GEN_BITS = ("$MRGen1", "$MRGen2", "$MRGen4")
STEP_BITS = tuple(f"$MRStep{1 << i}" for i in range(8))
NONCE_BITS = ("$MRSweptN1", "$MRSweptN2", "$MRSweptN4")  # shared sweeps: see Claims.claim_sweep
MAX_STEP = (1 << len(STEP_BITS)) - 1
GENERATIONS = 1 << len(GEN_BITS)
# the claim keywords a first claim, a takeover or the done mark drop (never a sweep's marks, which
# must outlive arrival claims: a message swept before its arrival pass keeps its copy's mark)
OURS = ("$mrclaim", "$mrdone", "$mrgen", "$mrstep")
RETRY = -1  # held "generation" of a message done here whose failed action this instance retries
STORE_BATCH = 500  # conditional STOREs sent before their answers are read
TRIES = 3  # conditional STOREs per message when others change it meanwhile (a user's \Seen)


class SharedUnsupported(Exception):
    """The server cannot carry the claim protocol (no CONDSTORE, or no keywords)."""


class KeywordTableFull(SharedUnsupported):
    """The mailbox cannot take the claim keywords (Cyrus: 100 keywords per mailbox)."""


class Journal(Protocol):
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...


def boottime() -> float:
    """A monotonic clock that also counts a suspend (CLOCK_BOOTTIME on Linux): a laptop that slept
    past claim_timeout must know it did."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return time.monotonic()


def instance_id(state_dir: str | os.PathLike[str] | None) -> str:
    """A name for this instance in logs: its host and state directory (12 hex digits)."""
    where = os.path.abspath(os.fspath(state_dir)) if state_dir is not None else "<none>"
    return hashlib.sha256(f"{socket.gethostname()}\0{where}".encode()).hexdigest()[:12]


def scope(mailbox: str, uidvalidity: int) -> str:
    return hashlib.sha256(f"{mailbox}\0{uidvalidity}".encode()).hexdigest()[:8]


def claimed_keyword(mailbox: str, uidvalidity: int) -> str:
    return f"{CLAIMED}.{scope(mailbox, uidvalidity)}"


def done_keyword(mailbox: str, uidvalidity: int) -> str:
    return f"{DONE}.{scope(mailbox, uidvalidity)}"


def swept_keyword(mailbox: str, uidvalidity: int, rule: str, action_index: int) -> str:
    """A shared mailbox's mark of a sweep's once-per-message action done (one per such action of the
    rules file: fixed, like the claim keywords)."""
    digest = hashlib.sha256(f"{scope(mailbox, uidvalidity)}\0{rule}\0{action_index}".encode()).hexdigest()[:8]
    return f"$MRSwept.{digest}"


def keywords_needed(mailbox: str, uidvalidity: int) -> tuple[str, ...]:
    """Every keyword the protocol may set in this mailbox (13: what `check --connect` verifies)."""
    return (claimed_keyword(mailbox, uidvalidity), done_keyword(mailbox, uidvalidity), *GEN_BITS, *STEP_BITS)


def is_ours(flag: str) -> bool:
    return flag.lower().startswith(OURS)


def _bits(value: int, names: Sequence[str]) -> set[str]:
    return {name for i, name in enumerate(names) if value >> i & 1}


def _value(flags: set[str], names: Sequence[str]) -> int:
    return sum(1 << i for i, name in enumerate(names) if name in flags)


def generation(flags: set[str]) -> int:
    return _value(flags, GEN_BITS)


def step(flags: set[str]) -> int:
    return _value(flags, STEP_BITS)


def step_of(action_counts: Sequence[int], rule_index: int, action_index: int) -> int:
    """The step number of (rule, action): 1 + its index among all the rules' actions."""
    return 1 + sum(action_counts[:rule_index]) + action_index


def position_of(action_counts: Sequence[int], number: int) -> tuple[int, int] | None:
    """The (rule, action) of step `number` (None: 0, or beyond these rules)."""
    left = number - 1
    if left < 0:
        return None
    for i, n in enumerate(action_counts):
        if left < n:
            return i, left
        left -= n
    return None


def require_support(session: ImapSession, account: str) -> None:
    """Refuse a shared account whose server cannot make claims exclusive."""
    if not session.has("CONDSTORE"):
        raise SharedUnsupported(
            f"account {account}: 'shared: true' needs the server's CONDSTORE extension (RFC 7162), which it "
            "does not advertise: without a conditional STORE two instances could both claim a message and act "
            "on it twice. Run a single instance with 'shared: false' on this server.")
    sel = session.selected
    if sel is None or sel.readonly:
        return
    missing = [k for k in keywords_needed(sel.name, sel.uidvalidity) if not sel.can_store_keyword(k)]
    if missing:
        raise KeywordTableFull(
            f"account {account} mailbox {sel.name}: 'shared: true' needs {len(missing)} more keywords "
            f"({' '.join(missing[:3])}...), but the server's PERMANENTFLAGS "
            f"({' '.join(sel.permanent_flags) or 'none'}) allow no new ones (Cyrus: at most 100 per mailbox, "
            "never freed): nothing in this mailbox is claimed or acted on")


@dataclass
class Claimed:
    """What `Claims.claim` gave this pass: the UIDs ours, and where taken-over ones resume."""

    ours: UidSet
    resume: dict[int, int] = field(default_factory=dict)  # uid -> step the old holder had in flight


def takeover_plan(got: Claimed, rules: Sequence, actions: Mapping[str, object], session: ImapSession,
                  account: str) -> tuple[dict[int, tuple[int, int]], set[int], dict[int, dict]]:
    """Where the claims taken over resume: uid -> (rule, action) of the step in flight, the UIDs
    whose rule already matched (`kernel.run_pass`'s `entered`), and for a copy or move in flight
    what its verification needs (a retry's resume detail: the whole destination, by content)."""
    counts = [len(r.actions) for r in rules]
    positions: dict[int, tuple[int, int]] = {}
    details: dict[int, dict] = {}
    for uid, number in got.resume.items():
        where = position_of(counts, number)
        if where is None:
            continue
        positions[uid] = where
        call = rules[where[0]].actions[where[1]]
        for ref in getattr(actions[call.name], "destinations", lambda _arg: ())(call.arg):
            try:
                dest = session.server_name(ref.path)
            except ValueError:
                continue
            details[uid] = {"account": ref.account or account, "dest": dest, "uidnext": 1}
    return positions, set(positions), details


def placed_marks(session: ImapSession, account: str, call, actions: Mapping[str, object],
                 watched: Callable[[str, str], bool], cache: dict[str, str | None]) -> list[str]:
    """The done marks of the watched mailboxes of this account that action `call` puts copies in.

    Set on the source just before a copy or move, they travel with the copy: every instance
    skips it there, as the placing instance does (placed messages are never processed), and it
    brings no claim of its source (whose keywords mean nothing there). `done` drops them from
    the source afterwards.
    """
    out = []
    for ref in getattr(actions[call.name], "destinations", lambda _arg: ())(call.arg):
        if ref.account not in (None, "", account):
            continue
        try:
            dest = session.server_name(ref.path)
        except ValueError:
            continue
        if dest not in cache:
            cache[dest] = None
            if watched(account, dest):
                try:
                    status = session.client.folder_status(dest, ["UIDVALIDITY"])
                    cache[dest] = done_keyword(dest, int(status[b"UIDVALIDITY"]))
                except Exception:  # noqa: BLE001 - no such folder yet: nothing there to mark
                    cache[dest] = None
        if cache[dest]:
            out.append(cache[dest])
    return out


class Claims:
    """The claim protocol of one instance (one per engine)."""

    def __init__(self, instance: str, store: Journal | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.instance = instance
        self.store = store
        self.clock = clock or boottime
        # (account, mailbox, uidvalidity, uid) -> ((generation, step) seen, when we first saw it)
        self.seen: dict[tuple[str, str, int, int], tuple[tuple[int, int], float]] = {}
        self.timeouts: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], tuple[int, dict[int, int]]] = {}  # -> (uidvalidity, uid -> gen)
        self.written: dict[int, int] = {}  # uid -> the MODSEQ the server gave our last change (this call)
        # (account, mailbox, uidvalidity, uid) -> the MODSEQ of our claim, until the first re-check
        self.fresh: dict[tuple[str, str, int, int], int] = {}

    # ------------------------------------------------------------------ what we hold (journaled)

    def held(self, account: str, mailbox: str, uidvalidity: int) -> dict[int, int]:
        key = (account, mailbox)
        if key not in self._held:
            raw = self.store.get_meta(f"claims:{account}:{mailbox}") if self.store else None
            data = json.loads(raw) if raw else {}
            self._held[key] = (int(data.get("uidvalidity", 0)),
                               {int(u): int(g) for u, g in data.get("held", {}).items()})
        validity, table = self._held[key]
        if validity != uidvalidity:
            table = {}
            self._held[key] = (uidvalidity, table)
        return table

    def _save(self, account: str, mailbox: str) -> None:
        validity, table = self._held[(account, mailbox)]
        if self.store is not None:
            self.store.set_meta(f"claims:{account}:{mailbox}",
                                json.dumps({"uidvalidity": validity, "held": {str(u): g for u, g in table.items()}}))

    # ------------------------------------------------------------------ server reads and writes

    @staticmethod
    def _flags(session: ImapSession, uids: Iterable[int]) -> dict[int, tuple[set[str], int]]:
        out: dict[int, tuple[set[str], int]] = {}
        wanted = UidSet(uids)
        if not wanted:
            return out
        for uid, data in session.fetch(wanted, ["FLAGS", "MODSEQ"]):
            flags = {f.decode() if isinstance(f, bytes) else str(f) for f in data.get(b"FLAGS", ())}
            modseq = data.get(b"MODSEQ")
            if isinstance(modseq, tuple | list):
                modseq = modseq[0]
            out[uid] = ({f for f in flags if f.lower() != "\\recent"}, int(modseq or 0))
        return out

    def _replace(self, session: ImapSession, account: str, stores: list[tuple[int, int, list[str]]]) -> set[int]:
        """Conditional whole-set STOREs (each keyword once), pipelined; the UIDs changed since."""
        try:
            return store_unchangedsince_many(session, stores, self.written)
        except ServerRefused as exc:
            if "flag" in exc.message.lower():  # Cyrus: "Too many user flags in mailbox"
                sel = session.selected
                raise KeywordTableFull(
                    f"account {account} mailbox {sel.name if sel else '?'}: the server refused the claim "
                    f"keywords ({exc.message}): its keyword table is full (Cyrus: at most 100 per mailbox, never "
                    "freed); nothing in this mailbox is claimed or acted on") from None
            raise

    def _change(self, session: ImapSession, account: str, uids: Iterable[int],
                decide: Callable[[int, set[str]], set[str] | None]) -> dict[int, set[str]]:
        """Apply `decide` (uid, flags -> new flags, or None: not ours any more) to each message with a
        conditional STORE (all pipelined), fetching again those changed meanwhile; returns the UIDs
        changed, with their new flags."""
        todo = set(uids)
        out: dict[int, set[str]] = {}
        for _ in range(TRIES):
            if not todo:
                break
            stores: list[tuple[int, int, list[str]]] = []
            wanted: dict[int, set[str]] = {}
            for uid, (flags, modseq) in self._flags(session, todo).items():
                new = decide(uid, flags)
                if new is None:
                    continue
                if new == flags:
                    out[uid] = new
                else:
                    wanted[uid] = new
                    stores.append((uid, modseq, sorted(new)))
            for chunk in range(0, len(stores), STORE_BATCH):
                part = stores[chunk:chunk + STORE_BATCH]
                lost = self._replace(session, account, part)
                out.update((uid, wanted[uid]) for uid, _, _ in part if uid not in lost)
            todo = {uid for uid in wanted if uid not in out}
        return out

    # ------------------------------------------------------------------ the protocol

    def unfinished(self, session: ImapSession, account: str, mailbox: str) -> UidSet:
        """Messages claimed here and not done: candidates again (their claim may expire)."""
        require_support(session, account)
        sel = session.selected
        assert sel is not None
        claimed, done = claimed_keyword(sel.name, sel.uidvalidity), done_keyword(sel.name, sel.uidvalidity)
        found = session.search(SearchQuery((b"KEYWORD", claimed.encode(), b"UNKEYWORD", done.encode())))
        for key in [k for k in self.seen if k[0] == account and k[1] == mailbox and k[3] not in found]:
            del self.seen[key]  # finished, moved or deleted since
        held = self.held(account, mailbox, sel.uidvalidity)
        mine = UidSet(u for u in found if held.get(u, RETRY) != RETRY)
        if mine:  # ours outside an open run (the done mark was lost): done
            self.done(session, account, mailbox, mine)
        return found - mine

    def visible(self, session: ImapSession, account: str, candidates: UidSet) -> UidSet:
        """--dry-run: the candidates a real run would act on now (not done here, not another's claim)."""
        sel = session.selected
        assert sel is not None
        claimed, done = claimed_keyword(sel.name, sel.uidvalidity), done_keyword(sel.name, sel.uidvalidity)
        held = self.held(account, sel.name, sel.uidvalidity)
        out = []
        for uid, (flags, _) in self._flags(session, candidates).items():
            mine = held.get(uid) == (RETRY if done in flags else generation(flags))
            if (done in flags or claimed in flags) and not mine:
                continue
            out.append(uid)
        return UidSet(out)

    def claim(self, session: ImapSession, account: str, mailbox: str, candidates: UidSet,
              timeout: float) -> Claimed:
        """The candidates this instance may act on: its own claims, and those it wins now."""
        require_support(session, account)
        sel = session.selected
        assert sel is not None
        claimed, done = claimed_keyword(sel.name, sel.uidvalidity), done_keyword(sel.name, sel.uidvalidity)
        held = self.held(account, mailbox, sel.uidvalidity)
        self.timeouts[(account, mailbox)] = timeout
        now = self.clock()
        result = Claimed(UidSet())
        ours: list[int] = []
        fresh: set[int] = set()
        expired: dict[int, tuple[int, int]] = {}
        for uid, (flags, _) in self._flags(session, candidates).items():
            key = (account, mailbox, sel.uidvalidity, uid)
            gen = generation(flags)
            if held.get(uid) == (RETRY if done in flags else gen) and (claimed in flags or done in flags):
                ours.append(uid)  # our claim (resumed from the journal) or our failure's retry
                self.seen.pop(key, None)
            elif done in flags:
                self.seen.pop(key, None)
            elif claimed in flags:
                state = (gen, step(flags))
                first = self.seen.get(key)
                if first is None or first[0] != state:  # new to us, or the holder moved on: timer again
                    self.seen[key] = (state, now)
                elif now - first[1] >= timeout:
                    expired[uid] = state
            else:
                fresh.add(uid)
        wanted: dict[int, int] = {}

        def first_claim(uid: int, flags: set[str]) -> set[str] | None:
            if claimed in flags or done in flags:
                return None  # another instance was faster
            wanted[uid] = random.randrange(GENERATIONS)
            return {f for f in flags if not is_ours(f)} | {claimed} | _bits(wanted[uid], GEN_BITS)

        def take_over(uid: int, flags: set[str]) -> set[str] | None:
            if claimed not in flags or done in flags or (generation(flags), step(flags)) != expired[uid]:
                return None  # the holder moved on, or another took it
            wanted[uid] = (expired[uid][0] + 1) % GENERATIONS
            kept = {f for f in flags if not is_ours(f)} | _bits(expired[uid][1], STEP_BITS)
            return kept | {claimed} | _bits(wanted[uid], GEN_BITS)

        self.written = {}
        won = set(self._change(session, account, fresh, first_claim))
        taken = set(self._change(session, account, expired, take_over))
        # Verified like first claims: read back; a message whose MODSEQ is not the one the server
        # gave our STORE, or whose generation is not ours, was claimed again: back off. (Dovecot
        # 2.3 answers OK, with the same MODSEQ, to a concurrent conditional STORE that writes
        # exactly what another just wrote: the random generation makes two first claims differ
        # 7 times in 8; see the README's "What remains".)
        for uid, (flags, modseq) in self._flags(session, won | taken).items():
            key = (account, mailbox, sel.uidvalidity, uid)
            ours_last = self.written.get(uid, modseq) == modseq
            if claimed in flags and generation(flags) == wanted[uid] and done not in flags and ours_last:
                ours.append(uid)
                held[uid] = wanted[uid]
                self.fresh[key] = modseq
                self.seen.pop(key, None)
                if uid in taken:
                    result.resume[uid] = expired[uid][1]
                    log.warning("account %s mailbox %s UID %d: took over a claim unfinished for %gs (generation "
                                "%d, step %d in flight)", account, mailbox, uid, timeout, *expired[uid])
            else:
                log.warning("account %s mailbox %s UID %d: claimed by another instance meanwhile: backing off",
                            account, mailbox, uid)
        self._save(account, mailbox)
        if len(ours) < len(candidates):
            log.debug("account %s mailbox %s: %d of %d candidates claimed by other instances or done",
                      account, mailbox, len(candidates) - len(ours), len(candidates))
        result.ours = UidSet(ours)
        return result

    def guard(self, session: ImapSession, account: str, mailbox: str, uids: UidSet, number: int,
              extra: Iterable[str] = ()) -> UidSet:
        """Before an action batch: the UIDs still ours (same generation, not done here), with step
        `number` stored as in flight; the others were taken over and leave this pass.

        Every call changes each message's claim state (the step, or else the generation), so no
        other instance can take it over before `claim_timeout` has passed since; and if this
        re-check itself took longer than half of that (a pause, a suspend), it is done again,
        so that the action that follows is sent well within the time no takeover can happen.
        """
        sel = session.selected
        assert sel is not None
        if number > MAX_STEP:
            raise SharedUnsupported(f"account {account} mailbox {mailbox}: a shared mailbox's arrival rules may "
                                    f"have at most {MAX_STEP} actions in all")
        timeout = self.timeouts.get((account, mailbox), 600.0)
        kept = uids
        for _ in range(TRIES):
            began = self.clock()
            kept = self._recheck(session, account, mailbox, kept, number, set(extra))
            if self.clock() - began < timeout / 2:
                break
        else:
            held = self.held(account, mailbox, sel.uidvalidity)
            for uid in kept:  # paused again and again: left to a takeover (never marked done by us)
                held.pop(uid, None)
            self._save(account, mailbox)
            kept = UidSet()
        lost = uids - kept
        if lost:
            log.warning("account %s mailbox %s: %d messages were taken over by another instance (UIDs %s): "
                        "left to it", account, mailbox, len(lost), lost)
        return kept

    def _recheck(self, session: ImapSession, account: str, mailbox: str, uids: UidSet, number: int,
                 extra: set[str]) -> UidSet:
        sel = session.selected
        assert sel is not None
        claimed, done = claimed_keyword(sel.name, sel.uidvalidity), done_keyword(sel.name, sel.uidvalidity)
        held = self.held(account, mailbox, sel.uidvalidity)
        # First re-check after our claim: the message must be exactly as our claim left it (a
        # second "winner" of a race the server let through wrote after us; a client's flag
        # change meanwhile costs a takeover's delay, never a double action).
        first = {u: self.fresh.pop((account, mailbox, sel.uidvalidity, u)) for u in uids
                 if (account, mailbox, sel.uidvalidity, u) in self.fresh}
        if first:
            for uid, (_flags, modseq) in self._flags(session, first).items():
                if modseq != first[uid]:
                    held.pop(uid, None)
            uids = UidSet(u for u in uids if u not in first or u in held)

        def mark(uid: int, flags: set[str]) -> set[str] | None:
            if done in flags:  # our failure's retry (nobody else takes a message done here), or not ours
                return flags if held.get(uid) == RETRY else None
            if held.get(uid) != generation(flags) or claimed not in flags:
                return None
            gen = generation(flags)
            if step(flags) == number:  # the state must change: a refresh of the generation
                gen = (gen + 1) % GENERATIONS
            plain = {f for f in flags if f not in STEP_BITS and f not in GEN_BITS}
            return plain | _bits(number, STEP_BITS) | _bits(gen, GEN_BITS) | extra

        changed = self._change(session, account, uids, mark)
        for uid, flags in changed.items():
            if held.get(uid) != RETRY:
                held[uid] = generation(flags)
        for uid in uids:
            if uid not in changed:
                held.pop(uid, None)
        self._save(account, mailbox)
        return UidSet(changed)

    def done(self, session: ImapSession, account: str, mailbox: str, uids: UidSet, keep: Iterable[int] = ()) -> None:
        """Mark our messages done here; `keep`: those whose retry stays ours (a failed action)."""
        sel = session.selected
        assert sel is not None
        claimed, done = claimed_keyword(sel.name, sel.uidvalidity), done_keyword(sel.name, sel.uidvalidity)
        held = self.held(account, mailbox, sel.uidvalidity)
        keep = set(keep)

        def finish(uid: int, flags: set[str]) -> set[str] | None:
            if held.get(uid) != (RETRY if done in flags else generation(flags)) or claimed not in flags:
                return None  # taken over meanwhile: the taker finishes it
            return {f for f in flags if not is_ours(f) or f == claimed} | {done}  # placed marks dropped too

        for uid in uids:
            self.fresh.pop((account, mailbox, sel.uidvalidity, uid), None)
        finished = self._change(session, account, UidSet(u for u in uids if u in held), finish)
        for uid in list(uids):
            if uid in keep and uid in finished:
                held[uid] = RETRY
            else:
                held.pop(uid, None)
        self._save(account, mailbox)

    def claim_sweep(self, session: ImapSession, account: str, rule: str, action_index: int, uids: UidSet) -> UidSet:
        """A sweep's action that runs once per message (a copy): the UIDs no instance did it on yet,
        marked so with one conditional STORE each (`swept_keyword`), before the action."""
        sel = session.selected
        assert sel is not None
        mark = swept_keyword(sel.name, sel.uidvalidity, rule, action_index)

        def take(_uid: int, flags: set[str]) -> set[str] | None:
            # a random nonce, so that two instances' writes differ (7 in 8): Dovecot tells both OK
            # when a concurrent conditional STORE writes exactly what the other just wrote
            nonce = _bits(random.randrange(1, 1 << len(NONCE_BITS)), NONCE_BITS)
            return None if mark in flags else {f for f in flags if f not in NONCE_BITS} | {mark} | nonce

        won = UidSet(self._change(session, account, uids, take))
        if len(won) < len(uids):
            log.info("account %s mailbox %s: rule %r: %d messages swept by another instance", account, sel.name,
                     rule, len(uids) - len(won))
        return won

    def next_due(self, account: str, mailbox: str) -> float | None:
        """Seconds until the oldest claim of another instance we are watching expires, or None."""
        timeout = self.timeouts.get((account, mailbox))
        firsts = [t for (a, m, _, _), (_, t) in self.seen.items() if a == account and m == mailbox]
        if timeout is None or not firsts:
            return None
        return max(0.0, min(firsts) + timeout - self.clock())


__all__ = ["CLAIMED", "DONE", "Claimed", "Claims", "KeywordTableFull", "SharedUnsupported", "claimed_keyword",
           "done_keyword", "instance_id", "keywords_needed", "position_of", "placed_marks", "require_support", "step_of", "takeover_plan"]
