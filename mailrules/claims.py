"""Shared mailboxes (`shared: true`): several daemons, each message acted on exactly once.

One module because the claim protocol's writes and their verification must be read together;
this docstring, its specification, is a tenth of its 600-odd lines.

The IMAP server is the only coordinator; a message carries its claim state in a small, fixed
set of keywords per mailbox (no keyword per instance, run or message: Cyrus allows 100
keywords per mailbox and never frees a slot):

* ``$MRClaimed.<scope>``: claimed; ``$MRDone.<scope>``: its rules are done here. ``<scope>``
  is 8 hex digits of the mailbox's name and UIDVALIDITY, so marks a message brings from
  another mailbox or account (a copy, a move, a client that keeps keywords) mean nothing
  here: such a message is processed like any arrival.
* ``$MRGen1 ... $MRGen128``: the claim's random *token* (0-255; the names are those of the
  0-7 generation it replaced, so claims in flight across an upgrade keep their meaning).
  Every first claim and takeover writes a new random one (a takeover never the old one).
  The holder keeps the token it holds in its own journal (the state store's meta table), so
  it knows its claims after a restart and sees that a message was taken over (the token
  changed) without a keyword of its own.
* ``$MRStep1 ... $MRStep128``: the step in flight (1 + the index of the action among the
  mailbox's arrival rules, in file order; 0 before the first action), in binary.
* Shared sweeps add ``$MRSweptN1 ... $MRSweptN128`` (a random nonce) and one
  ``$MRSwept.<id>`` per once-per-message sweep action (`Claims.claim_sweep`).

So a watched mailbox needs 18 keywords (`keywords_needed`), 26 + one per such sweep action
with shared sweeps: the same for every instance, run and message.

Why random tokens: Dovecot 2.3 checks UNCHANGEDSINCE when it reads the command, against what
that session has seen, not when it commits under the mailbox lock. Two conditional STOREs
that both began before either committed are both told OK: identical writes leave no trace of
the second (same flags, and in a race often the same MODSEQ), differing FLAGS replacements are
merged (each applied as a change from what its session saw). A merge shows in the read-back
(a token that is neither's); identical writes do not. So claims and takeovers are verified
twice: the read-back, then a conditional STORE of a new random token and a second read-back
(`Claims._confirmed`). Two instances both keep a message only if they tie twice with equal
random tokens both times (1 in 256, then 1 in 255); measured on Dovecot, 4 instances racing
on the same messages tied about 2 message-rounds in 1,000 with equal writes and never twice.
Not exact, and no fixed keyword set can make it so: flag STOREs are idempotent, so two
instances in the same state writing the same values are indistinguishable to the server, and
only randomness breaks the symmetry (a value derived from the instance would make some pairs
tie every time). Dovecot does show the tie in one place, which is not used: the loser's
untagged FETCH carries FLAGS (another session's change) where a change of its own under
.SILENT carries MODSEQ alone; no RFC promises that. Cyrus 3.6 checks under the mailbox lock.

Every change is one conditional STORE per message, ``UID STORE <uid> (UNCHANGEDSINCE <its own
MODSEQ>) FLAGS.SILENT (<its flags, changed>)`` (a whole-set replacement, so one command
changes several keywords; a message changed since its FETCH is left alone and named in
``[MODIFIED]``, except in the race above):

1. Claim: a message without our scope's claim gets the claim and a random token (any other
   mailrules keywords dropped), read back, confirmed with a new token and read back again.
2. Before each action batch the holder re-checks (`Claims.guard`): the message still carries
   the claim, not done, with the token it holds; then it stores the step about to run (or, if
   the step is unchanged, a new token).
   Messages it lost are dropped from the pass (the taker finishes them).
3. A claim held unfinished (same token and step) for ``claim_timeout`` on the observer's
   own monotonic clock is taken over: a new random token (never the old one), the step kept,
   verified and confirmed as a first claim. The taker resumes
   at that step, which may or may not have happened: a copy or move looks for the message at
   its destination by content first (as crash resume does); other actions are done again.
4. After the pass: ``$MRDone.<scope>`` (token and step dropped) on the messages still
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
GEN_BITS = tuple(f"$MRGen{1 << i}" for i in range(8))  # the claim's random token (named as when it was 0-7)
STEP_BITS = tuple(f"$MRStep{1 << i}" for i in range(8))
NONCE_BITS = tuple(f"$MRSweptN{1 << i}" for i in range(8))  # shared sweeps: see Claims.claim_sweep
MAX_STEP = (1 << len(STEP_BITS)) - 1
GENERATIONS = 1 << len(GEN_BITS)
# the claim keywords a first claim, a takeover or the done mark drop (never a sweep's marks, which
# must outlive arrival claims: a message swept before its arrival pass keeps its copy's mark)
OURS = ("$mrclaim", "$mrdone", "$mrgen", "$mrstep")
CYRUS_KEYWORDS = 100  # Cyrus 3.6: user flags per mailbox, a slot never freed
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
    """Every keyword the protocol may set in this mailbox (18: what `check --connect` verifies)."""
    return (claimed_keyword(mailbox, uidvalidity), done_keyword(mailbox, uidvalidity), *GEN_BITS, *STEP_BITS)


def is_ours(flag: str) -> bool:
    return flag.lower().startswith(OURS)


def _bits(value: int, names: Sequence[str]) -> set[str]:
    return {name for i, name in enumerate(names) if value >> i & 1}


def _value(flags: set[str], names: Sequence[str]) -> int:
    return sum(1 << i for i, name in enumerate(names) if name in flags)


def fresh_token(*exclude: int | None) -> int:
    """A random claim token (0-255) other than those in `exclude`: two instances' conditional
    STOREs differ unless their tokens do not (1 in 256 for first claims, 1 in 255 otherwise)."""
    choices = [t for t in range(GENERATIONS) if t not in exclude]
    return random.choice(choices)


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
    missing = missing_keywords(session)
    if missing:
        raise KeywordTableFull(
            f"account {account} mailbox {sel.name}: 'shared: true' needs {len(missing)} more keywords "
            f"({' '.join(missing[:3])}...), but the server allows no new ones here: its keyword table is full "
            f"({sum(1 for f in sel.permanent_flags if not f.startswith(chr(92)))} defined; Cyrus: at most "
            f"{CYRUS_KEYWORDS} per mailbox, never freed): nothing in this mailbox is claimed or acted on")


def keyword_cap(session: ImapSession) -> int | None:
    """How many keywords the server's mailboxes hold, where known: Cyrus (named in its greeting)
    holds 100 and still advertises `\\*` when they are all taken."""
    welcome = getattr(session.client, "welcome", b"") or b""
    text = welcome.decode(errors="replace") if isinstance(welcome, bytes) else str(welcome)
    return CYRUS_KEYWORDS if "cyrus" in text.lower() else None


def missing_keywords(session: ImapSession) -> list[str]:
    """The claim keywords the selected mailbox lacks and cannot define: not in its PERMANENTFLAGS
    and no `\\*`, or more than the room left under the server's known cap."""
    sel = session.selected
    assert sel is not None
    needed = keywords_needed(sel.name, sel.uidvalidity)
    defined = {f.lower() for f in sel.permanent_flags if not f.startswith("\\")}
    absent = [k for k in needed if k.lower() not in defined]
    if any(not sel.can_store_keyword(k) for k in absent):
        return [k for k in absent if not sel.can_store_keyword(k)]
    cap = keyword_cap(session)
    if cap is not None and len(defined) + len(absent) > cap:
        return absent
    return []


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
        # (account, mailbox, uidvalidity, uid) -> the token of the claim we took over (never written again)
        self.avoid: dict[tuple[str, str, int, int], int] = {}

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
        avoid = {uid: state[0] for uid, state in expired.items()}  # a taker never writes the old token

        def first_claim(uid: int, flags: set[str]) -> set[str] | None:
            if claimed in flags or done in flags:
                return None  # another instance was faster
            wanted[uid] = fresh_token()
            return {f for f in flags if not is_ours(f)} | {claimed} | _bits(wanted[uid], GEN_BITS)

        def take_over(uid: int, flags: set[str]) -> set[str] | None:
            if claimed not in flags or done in flags or (generation(flags), step(flags)) != expired[uid]:
                return None  # the holder moved on, or another took it
            wanted[uid] = fresh_token(expired[uid][0])
            kept = {f for f in flags if not is_ours(f)} | _bits(expired[uid][1], STEP_BITS)
            return kept | {claimed} | _bits(wanted[uid], GEN_BITS)

        self.written = {}
        won = set(self._change(session, account, fresh, first_claim))
        taken = set(self._change(session, account, expired, take_over))
        # Verified: read back; a message whose MODSEQ is not the one the server gave our STORE, or
        # whose token is not ours, was claimed again: back off. Then once more with a new random
        # token (`confirm`): Dovecot 2.3 answers OK to two conditional STOREs that both began
        # before either was committed (identical writes leave no trace of the second; differing
        # ones are merged), so two claimers tie only when both rounds' random tokens are equal.
        kept = self._confirmed(session, account, self._verified(session, won | taken, wanted, claimed, done),
                               wanted, avoid, claimed, done)
        for uid in sorted(won | taken):
            key = (account, mailbox, sel.uidvalidity, uid)
            if uid in kept:
                ours.append(uid)
                held[uid] = wanted[uid]
                self.fresh[key] = kept[uid]
                self.seen.pop(key, None)
                if uid in taken:
                    self.avoid[key] = expired[uid][0]
                    result.resume[uid] = expired[uid][1]
                    log.warning("account %s mailbox %s UID %d: took over a claim unfinished for %gs (token "
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

    def _confirmed(self, session: ImapSession, account: str, kept: Mapping[int, int], wanted: dict[int, int],
                   avoid: Mapping[int, int], claimed: str, done: str) -> dict[int, int]:
        """The verified claims `kept`, once more with a new random token, verified again: two
        claimers that tied (identical writes both told OK) stay tied only if these tokens are
        equal too (1 in 255), and a second write's merge or later MODSEQ shows in the read-back."""
        expect = {uid: wanted[uid] for uid in kept}

        def confirm(uid: int, flags: set[str]) -> set[str] | None:
            if claimed not in flags or done in flags or generation(flags) != expect[uid]:
                return None  # a tie's other winner wrote meanwhile: theirs
            wanted[uid] = fresh_token(expect[uid], avoid.get(uid))
            return {f for f in flags if f not in GEN_BITS} | _bits(wanted[uid], GEN_BITS)

        return self._verified(session, set(self._change(session, account, kept, confirm)), wanted, claimed, done)

    def _verified(self, session: ImapSession, uids: set[int], wanted: Mapping[int, int], claimed: str,
                  done: str) -> dict[int, int]:
        """The UIDs whose read-back shows our claim with token `wanted[uid]` and the MODSEQ the server
        gave our last STORE (no later write by anyone), with that MODSEQ."""
        out = {}
        for uid, (flags, modseq) in self._flags(session, uids).items():
            ours_last = self.written.get(uid, modseq) == modseq
            if claimed in flags and generation(flags) == wanted[uid] and done not in flags and ours_last:
                out[uid] = modseq
        return out

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
            if step(flags) == number:  # the state must change: a new token (never the one we took over)
                gen = fresh_token(gen, self.avoid.get((account, mailbox, sel.uidvalidity, uid)))
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
            self.avoid.pop((account, mailbox, sel.uidvalidity, uid), None)
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
            # a random nonce, so that two instances' writes differ (254 in 255): Dovecot tells both OK
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
           "done_keyword", "instance_id", "keyword_cap", "keywords_needed", "missing_keywords", "position_of", "placed_marks", "require_support", "step_of", "takeover_plan"]
