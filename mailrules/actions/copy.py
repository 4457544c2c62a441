"""The copy and move actions: same account (COPY / MOVE) and cross-account (APPEND), verified.

Applied to the whole batch at once (one command per UID-set chunk). Resuming after a crash
(`resuming=True`, with the `CopyIntent` journaled before the action started):

* `move` (MOVE, or COPY + STORE \\Deleted + UID EXPUNGE): the UIDs still in the source were
  not moved yet; only those are moved;
* `copy` and cross-account copies: the destination's UIDNEXT was recorded before; what
  arrived there since is compared with the source messages *by content*
  (`proven_copies`), and only messages not proven there are copied again.

A copy that *failed* may still have happened (the link to another account died before it
confirmed an APPEND). The engine keeps its intent with the retry, and the retry first looks
for those messages at the destination, by content, as after a crash.

Verification is exact per message: a digest of the whole message (APPEND and COPY store the
bytes as given; Cyrus stores 8-bit header bytes as X, so into Cyrus the source is hashed in that
form: imap/rewrite.py), matched as multisets, so that messages sharing a Message-ID or lacking one,
and byte-identical duplicates, are each proven by their own copy. Before a cross-account
action removes any source (or gives up), it journals what it knows (`Verified`: the sources
proven copied, and the destination UID from which an unconfirmed APPEND may have landed,
narrowed by each APPENDUID), so that a resume or retry never counts one arrival for two
messages.

Never a bare EXPUNGE: only UID EXPUNGE of the UIDs this action marked \\Deleted, and without
UIDPLUS nothing is expunged at all (the messages stay marked, with a warning).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from ..api import Action
from ..criteria import SearchQuery, unsendable
from ..imap.rewrite import stored_form
from ..imap.session import ServerRefused
from ..mailstore import MailStore
from ..model import FolderRef
from ..uidset import UidSet
from .base import ActionFailed, ActionResult, ActionRun, BuiltinAction
from .intent import CopyIntent, Verified
from .reverse import Reversed, UndoRun, copy_flags, reverse_copy, reverse_move

log = logging.getLogger("mailrules.actions")

BODY_BATCH = 50  # whole messages per UID FETCH while verifying


def parse_folder(value: Any) -> FolderRef:
    """A folder written 'A/B' or 'account:A/B'; the loader resolves the account part."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a folder name such as Lists/dev (or account:Folder)")
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValueError(f"expected a folder name with '/' between levels, got {value!r}")
    problem = unsendable(value)  # a CR LF inside the pipelined LIST aborted the session on every run
    if problem:
        raise ValueError(f"{problem}, got {value!r}")
    return FolderRef(path=value)


def content_digest(raw: bytes) -> str:
    """What identifies a message's content for copy verification: SHA-256 of all its bytes (hex, 128 bits)."""
    return hashlib.sha256(raw).hexdigest()[:32]


@dataclass(frozen=True)
class CopyAction(BuiltinAction):
    """Copy to a folder (move=False) or move there (move=True, terminal)."""

    move: bool = False

    def destinations(self, arg: Any) -> tuple[Any, ...]:
        return (arg,) if isinstance(arg, FolderRef) else ()

    def outcome(self) -> str:
        return "moved" if self.move else "copied"

    def intent(self, run: ActionRun, arg: FolderRef, uids: UidSet) -> CopyIntent | None:
        if not self.move or arg.account:
            session, dest = run.destination(arg)
            account = arg.account or run.account
            return CopyIntent(account, dest, run.uidnext_creating(session, dest))
        dest = run.session.server_name(arg.path)
        if not run.session.has("MOVE"):
            return CopyIntent(run.account, dest, run.uidnext_creating(run.session, dest))
        # MOVE: where a resume finds what an interrupted MOVE moved (`moved_before`), from this
        # pass's folder listing only: no round trip of its own (none: not locatable, and said so)
        floor = run.session.uidnext_floor(dest)
        if floor is None and run.session.known_missing(dest):
            floor = 1
        return CopyIntent(run.account, dest, floor) if floor is not None else None

    def read_intent(self, detail: Any) -> CopyIntent | None:
        return CopyIntent.from_json(detail)

    def execute(self, run: ActionRun, arg: FolderRef, uids: UidSet, intent: CopyIntent | None,
                resuming: bool) -> ActionResult:
        if arg.account and arg.account != run.account:
            return cross_account(run, arg, uids, intent, resuming, move=self.move)
        dest = run.session.server_name(arg.path)
        if self.move:
            return move_to(run, dest, uids, intent, resuming)
        mapping: dict[int, int] = {}  # proven copies of an earlier attempt too: an undo removes them
        todo = uids - proven_copies(run, run.session, dest, uids, intent, resuming, mapping)[0]
        flags: dict[int, frozenset[str]] = {}  # as copied (proven earlier copies: unknown)
        if todo:
            transfer = run.with_trycreate(run.session, dest, lambda create: run.session.copy(todo, dest, create=create))
            run.record_placed(run.account, dest, transfer.uidvalidity, transfer.mapping.values())
            mapping.update(transfer.mapping)
            flags = transfer.flags
        return ActionResult(uids, detail=_copies(run, run.account, dest, mapping, flags))

    def start(self, run: ActionRun, arg: FolderRef, uids: UidSet, intent: CopyIntent | None,
              resuming: bool) -> Callable[[], ActionResult]:
        if self.move and not (arg.account and arg.account != run.account):
            return start_move(run, run.session.server_name(arg.path), uids, intent, resuming)
        return super().start(run, arg, uids, intent, resuming)

    def reverse(self, undo: UndoRun, record: dict) -> Reversed:
        return (reverse_move if self.move else reverse_copy)(undo, record)


def _reversal(run: ActionRun, account: str, dest: str, mapping: dict[int, int]) -> dict:
    """What undoing a copy or move needs, journaled with its done step: where the messages
    came from and the source -> destination UIDs (COPYUID/APPENDUID, where the server gave them)."""
    return {"undo": {"source": run.mailbox, "account": account, "dest": dest,
                     "mapping": {str(k): v for k, v in sorted(mapping.items())}}}


def _copies(run: ActionRun, account: str, dest: str, mapping: dict[int, int],
            flags: Mapping[int, Iterable[str]]) -> dict:
    """`_reversal` of a copy or move, plus the flags and keywords each copy was made with, or
    each message was moved with (`copy_flags`): what undo compares them with, to leave alone
    the copies, and the moved messages, another client changed since.

    A same-account COPY or MOVE keeps each message's flags, read by a UID FETCH (FLAGS) sent
    with it, in its round trip (`Transfer.flags`). Across accounts they are those the APPEND
    carried.
    """
    detail = _reversal(run, account, dest, mapping)
    if mapping:
        detail["undo"]["flags"] = copy_flags(mapping, flags)
    return detail


def move_to(run: ActionRun, dest: str, uids: UidSet, intent: CopyIntent | None, resuming: bool) -> ActionResult:
    """Move `uids` to `dest` (a server name) in the same account: MOVE, or COPY + delete."""
    return start_move(run, dest, uids, intent, resuming)()


def start_move(run: ActionRun, dest: str, uids: UidSet, intent: CopyIntent | None,
               resuming: bool) -> Callable[[], ActionResult]:
    """`move_to`, the MOVE's answer read when the returned function is called: the pass sends
    its next command first (`mailrules.imap.later`), the moved messages having left play."""
    session = run.session
    if dest == run.mailbox:
        return lambda: ActionResult(uids, removed=True)  # moving into itself: nothing to do
    todo = session.existing(uids) if resuming else uids
    if not session.has("MOVE"):
        result = _copy_and_delete(run, dest, uids, todo, intent, resuming)
        return lambda: result
    mapping = moved_before(run, dest, uids - todo, intent) if resuming else {}
    later = session.move_later(todo, dest, create=session.known_missing(dest)) if todo else None

    def finish() -> ActionResult:
        flags: dict[int, frozenset[str]] = {}  # as moved (moved before a crash: unknown)
        if later is not None:
            try:
                transfer = later.result()
            except ServerRefused as exc:
                transfer = run.after_refusal(session, dest, exc, lambda create: session.move(todo, dest, create=create))
            run.record_placed(run.account, dest, transfer.uidvalidity, transfer.mapping.values())
            mapping.update(transfer.mapping)
            flags = transfer.flags
        return ActionResult(uids, removed=True, detail=_copies(run, run.account, dest, mapping, flags))

    return finish


def _copy_and_delete(run: ActionRun, dest: str, uids: UidSet, todo: UidSet, intent: CopyIntent | None,
                     resuming: bool) -> ActionResult:
    """A move without MOVE: COPY, then mark the originals \\Deleted and UID EXPUNGE exactly those."""
    session = run.session
    if not todo:
        return ActionResult(uids, removed=True)
    mapping: dict[int, int] = {}
    flags: dict[int, frozenset[str]] = {}
    if resuming and intent is not None and intent.copied:
        to_copy = UidSet()
    else:
        to_copy = todo - proven_copies(run, session, dest, todo, intent, resuming)[0]
    if to_copy:
        transfer = run.with_trycreate(session, dest, lambda create: session.copy(to_copy, dest, create=create))
        run.record_placed(run.account, dest, transfer.uidvalidity, transfer.mapping.values())
        mapping, flags = transfer.mapping, transfer.flags
    run.mark_deleted_and_expunge(todo)
    return ActionResult(uids, removed=True, detail={"copied": True, **_copies(run, run.account, dest, mapping, flags)})


def moved_before(run: ActionRun, dest: str, gone: UidSet, intent: CopyIntent | None) -> dict[int, int]:
    """A MOVE interrupted by a crash: source -> destination UID of the messages it had moved.

    A server gives moved messages new UIDs in the order of the old ones (RFC 4315), from the
    destination's UIDNEXT journaled before: when exactly as many messages arrived there since as
    are gone from the source, they are these, in order. Otherwise (another client delivered
    there too, or deleted some here) nothing is claimed: an undo lists them as not locatable.
    """
    if intent is None or not gone or intent.account not in (None, run.account):
        return {}
    session = run.session
    session.select(dest, readonly=True)
    arrived = sorted(u for u in session.search(SearchQuery((b"UID", f"{intent.uidnext}:*".encode())))
                     if u >= intent.uidnext)
    session.select(run.mailbox)
    if len(arrived) != len(gone):
        return {}
    return dict(zip(sorted(gone), arrived, strict=True))


def proven_copies(
    run: ActionRun, dest_session: MailStore, dest: str, uids: UidSet, intent: CopyIntent | None, resuming: bool,
    pairs: dict[int, int] | None = None,
) -> tuple[UidSet, int | None]:
    """Of `uids` (selected mailbox), those an earlier attempt is proven to have copied to `dest`.

    Each message is looked for among what reached `dest` since its attempt began (the
    UIDNEXT then): for the whole batch when resuming after a crash, and for the messages
    of intent.uncertain (a failed attempt that may have been carried out, as when the
    link died before the destination confirmed an APPEND) on any pass. The comparison is
    by a digest of the whole message, as multisets: each arrival proves at most one source
    message, and arrivals `claimed` as copies of messages already finished prove none.
    Returns the proven UIDs and the destination's UIDNEXT when it was checked (None: not
    checked).
    """
    if intent is None:
        return UidSet(), None
    since, claims, proven = intent.windows(uids, resuming)
    if not since:
        return proven, None
    floor = min(since.values())
    try:
        now = dest_session.status_uidnext(dest)
    except IMAPClientAbortError:
        raise  # the connection is gone: not an answer
    except IMAPClientError:
        now = None  # no such folder (the copy would have created it): nothing arrived
    if now is None or now <= floor:
        return proven, now  # nothing arrived there: the copy did not happen
    # Sizes first (cheap): only messages whose size occurs on both sides are read whole.
    source = run.session
    sizes = {uid: data.get(b"RFC822.SIZE") for uid, data in source.fetch(UidSet(since), ["RFC822.SIZE"])}
    arrived = _arrivals_since(dest_session, dest, floor, set(sizes.values()))
    if dest_session is source:
        source.select(run.mailbox)  # back to the source mailbox
    arrived_sizes = {size for size, _digest in arrived.values()}
    candidates: dict[str, list[int]] = {}
    near = UidSet(uid for uid, size in sizes.items() if size in arrived_sizes)
    for uid, data in source.fetch(near, ["BODY.PEEK[]"], batch=BODY_BATCH):
        body = data.get(b"BODY[]")
        if body:
            # as the destination stores it (Cyrus: 8-bit header bytes as X): else never found
            candidates.setdefault(content_digest(stored_form(dest_session, body)), []).append(uid)
    by_digest: dict[str, list[int]] = {}
    for uid, (_size, digest) in arrived.items():
        by_digest.setdefault(digest, []).append(uid)
    found = _match(candidates, by_digest, since, claims, pairs)  # pairs: source -> its copy's UID
    log.info(
        "account %s: checked an earlier, unconfirmed copy to %s: %d of %d messages were already there",
        run.account, dest, len(found), len(since),
    )
    return proven | found, now


def _appended_flags(data: dict) -> list[str]:
    """The source's flags an APPEND carries over: all but \\Deleted and \\Recent (the server's own)."""
    flags = (f.decode() if isinstance(f, bytes) else f for f in data.get(b"FLAGS", ()))
    return [f for f in flags if f.lower() not in ("\\deleted", "\\recent")]


def cross_account(
    run: ActionRun, ref: FolderRef, uids: UidSet, intent: CopyIntent | None, resuming: bool, *, move: bool
) -> ActionResult:
    """APPEND each message to the other account (flags and date kept), then remove the source.

    Which messages landed is known exactly: an APPEND the destination confirmed (with its
    APPENDUID where the server has UIDPLUS), or a copy proven by content afterwards. Before
    any source is removed, and before giving up on the rest, the journal records it
    (`Verified`), so that neither a crash nor a retry can take one arrival for two messages.
    """
    dest_session, dest = run.destination(ref)
    session = run.session
    todo = session.existing(uids) if (resuming and move) else uids
    mapping: dict[int, int] = {}  # source -> destination UID (proven earlier copies, then APPENDUIDs)
    proven, checked = proven_copies(run, dest_session, dest, todo, intent, resuming, mapping)
    todo -= proven
    # From which destination UID an APPEND of this attempt that is not confirmed may land;
    # `claimed`: digests of confirmed APPENDs at or above it (the server gave no APPENDUID).
    start = max((intent.uidnext if intent is not None else 1) or 1, checked or 1)
    claimed: list[str] = []
    created: list[int] = []
    sent: dict[int, list[str]] = {}  # source UIDs whose APPEND the destination confirmed -> flags carried
    uidvalidity = None
    refused: list[str] = []  # one message refused (too big, over quota) does not hold up the others
    account = ref.account or run.account

    def verified() -> Verified:
        return Verified(start, proven | sent, tuple(claimed))

    def finish(uids_done: UidSet) -> None:
        """Journal what is proven, then (a move) remove exactly those sources."""
        if run.journal is not None and intent is not None:
            run.journal(intent.with_verified(verified()).to_json())
        if move and uids_done:
            run.mark_deleted_and_expunge(uids_done)

    try:
        for uid, data in session.fetch(todo, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"], batch=BODY_BATCH):
            flags = _appended_flags(data)
            body = data.get(b"BODY[]")
            if not body:
                # Expunged by another client since our last command: the server may still
                # answer the FETCH, with no body. Nothing to copy.
                log.info("account %s: UID %d vanished before it could be copied to %s", run.account, uid, ref)
                continue
            try:
                result = run.with_trycreate(
                    dest_session, dest, lambda _create, b=body, f=flags, d=data: dest_session.append(
                        dest, b, f, d.get(b"INTERNALDATE")
                    )
                )
            except ActionFailed as exc:
                refused.append(f"UID {uid}: {exc}")
                continue
            sent[uid] = flags
            if result:
                uidvalidity = result[0]
                created.append(result[1])
                mapping[uid] = result[1]
                # UIDs ascend: every earlier APPEND landed below this one
                start = max(start, result[1] + 1)
                claimed.clear()
            else:
                claimed.append(content_digest(stored_form(dest_session, body)))
    except Exception as exc:  # noqa: BLE001 - destination dropped: retried later, source untouched
        run.record_placed(account, dest, uidvalidity, created)
        done = proven | sent
        finish(done)  # these arrived: finish their move, so that a retry cannot duplicate them
        message = str(exc) if isinstance(exc, ActionFailed) else f"copy to {ref} failed: {exc}"
        raise ActionFailed(message, done=done, verified=verified()) from exc
    run.record_placed(account, dest, uidvalidity, created)
    done = proven | sent
    finish(done)
    if refused:
        raise ActionFailed(f"copy to {ref} refused for {len(refused)} messages: {'; '.join(refused)}",
                           done=done, verified=verified())
    return ActionResult(uids, removed=move, detail=_copies(run, account, dest, mapping, sent))


def _match(
    candidates: dict[str, list[int]], arrivals: dict[str, list[int]], since: dict[int, int],
    claims: list[tuple[str, int]], pairs: dict[int, int] | None = None,
) -> set[int]:
    """Source UIDs proven copied: digest -> source UIDs, digest -> arrived destination UIDs.

    A multiset matching: each arrival proves at most one source message, and only one whose
    window (`since`) it lies in. Claimed arrivals (copies of messages already finished) are
    taken out first, the earliest possible one each. Matching the most constrained source
    first with the latest arrival proves as many as can be proven.
    """
    pool = {d: sorted(uids) for d, uids in arrivals.items()}
    for digest, start in claims:
        uids = pool.get(digest, [])
        first = next((k for k, uid in enumerate(uids) if uid >= start), None)
        if first is not None:
            del uids[first]
    found: set[int] = set()
    for digest, sources in candidates.items():
        left = pool.get(digest, [])
        for uid in sorted(sources, key=lambda u: since[u], reverse=True):
            if left and left[-1] >= since[uid]:
                arrival = left.pop()
                found.add(uid)
                if pairs is not None:
                    pairs[uid] = arrival  # the copy's UID: what an undo removes
    return found


def _arrivals_since(session: MailStore, dest: str, uidnext: int, sizes: set[int]) -> dict[int, tuple[int, str]]:
    """UID -> (size, content digest) of the messages that arrived in `dest` at or after UID `uidnext`.

    Only messages of one of these `sizes` are read whole (the others cannot be a copy).
    """
    session.select(dest, readonly=True)
    found = session.search(SearchQuery((b"UID", f"{uidnext}:*".encode())))
    found = UidSet(u for u in found if u >= uidnext)
    same_size = {uid: data.get(b"RFC822.SIZE") for uid, data in session.fetch(found, ["RFC822.SIZE"])}
    near = UidSet(uid for uid, size in same_size.items() if size in sizes)
    out: dict[int, tuple[int, str]] = {}
    for uid, data in session.fetch(near, ["BODY.PEEK[]"], batch=BODY_BATCH):
        body = data.get(b"BODY[]")
        if body is not None:
            out[uid] = (same_size[uid], content_digest(body))
    return out


def actions() -> list[Action]:
    return [
        CopyAction("copy", "copy to a folder (created if missing)", parse=parse_folder),
        CopyAction("move", "move to a folder (created if missing)", parse=parse_folder, terminal=True, move=True,
                   once_per_rule=False),  # moved messages leave: a sweep cannot meet them twice
    ]
