"""Carry out a rule's actions on a batch of UIDs, as UID-set commands.

Every action is applied to the whole batch at once (one command per UID-set chunk).
An action that a crash may have left half-done is *resumed* (`resuming=True`) with the
`detail` recorded in the journal before it started, so that built-in actions are
applied exactly once on servers with UIDPLUS:

* flag/keyword changes are idempotent: simply applied again;
* `move` (MOVE, or COPY + STORE \\Deleted + UID EXPUNGE): the UIDs still in the source
  were not moved yet; only those are moved;
* `copy` and cross-account copies: the destination's UIDNEXT was recorded before;
  what arrived there since is compared with the source messages *by content* (see
  `ActionRunner._proven_copies`), and only messages not proven there are copied again;
* `delete`: idempotent;
* plugin actions: run again if they declare 'at-least-once', skipped if 'at-most-once'.

A copy that *failed* may still have happened (the link to another account died before
it confirmed an APPEND). The engine keeps its intent detail with the retry, and the retry
first looks for those messages at the destination, by content, as after a crash.

Verification is exact per message: a digest of the whole message (APPEND and COPY store
the bytes as given), matched as multisets, so that messages sharing a Message-ID or
lacking one, and byte-identical duplicates, are each proven by their own copy. Before a
cross-account action removes any source (or gives up), it journals what it knows
(`verified`: the sources proven copied, and the destination UID from which an unconfirmed
APPEND may have landed, narrowed by each APPENDUID), so that a resume or retry never
counts one arrival for two messages.

Never a bare EXPUNGE: only UID EXPUNGE of the UIDs this action marked \\Deleted, and
without UIDPLUS nothing is expunged at all (the messages stay marked, with a warning).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from .imap.session import ImapSession, Selected, ServerRefused
from .message import MessageView
from .model import ActionCall, FolderRef, Rule
from .plugins import Action, Registry
from .state import StateStore
from .uidset import UidSet

log = logging.getLogger("mailrules.actions")

FLAG_ACTIONS = {
    "flag": True,
    "unflag": False,
    "seen": True,
    "unseen": False,
    "add_flag": True,
    "remove_flag": False,
    "add_keyword": True,
    "remove_keyword": False,
}


class ActionFailed(Exception):
    """The action could not be applied to the batch (the messages are retried later).

    done: the UIDs of the batch for which the action did complete before it failed (they
    are not retried, so that a copy is never repeated).
    verified: for a copy that may have partly happened, what its retry must check first
    (see `ActionRunner._cross_account`): {"uidnext", "done", "claimed"?}.
    """

    def __init__(self, message: str, *, done: UidSet | None = None, verified: dict | None = None) -> None:
        super().__init__(message)
        self.done = done or UidSet()
        self.verified = verified


@dataclass
class ActionContext:
    """What an action needs to know; plugin actions receive it as their first argument."""

    session: ImapSession
    account: str
    mailbox: str  # server name of the mailbox being processed
    selected: Selected
    rule: Rule
    message_ids: dict[int, str]
    registry: Registry
    connect: Callable[[str], ImapSession] | None = None  # session of another account
    watched: Callable[[str, str], bool] = lambda account, server_name: False
    store: StateStore | None = None
    dry_run: bool = False
    warned: set[str] = field(default_factory=set)
    # Rewrites the journal's intent detail of the action in progress (None: no journal).
    journal: Callable[[dict], None] | None = None

    def fetch(self, uids: UidSet, items: list[str]):
        """UID FETCH helper for plugin actions: yields (uid, data)."""
        return self.session.fetch(uids, items)

    def messages(self, uids: UidSet, needs: Iterable[str] = ("message",)) -> Iterator[MessageView]:
        """The messages as `MessageView`s holding the parts named by `needs`, fetched in batches.

        `needs` takes the same values as `Predicate.needs` ("header:Name", "headers", "body",
        "message", "size", "flags"). Messages that no longer exist are left out.
        """
        from .engine import _fetch_items, _view
        from .plugins import _check_needs

        items, batch = _fetch_items(set(_check_needs(needs, "messages()")))
        for uid, data in self.session.fetch(uids, items, batch=batch):
            yield _view(uid, data)


@dataclass
class ActionResult:
    done: UidSet
    removed: bool = False  # the messages left the mailbox
    detail: dict = field(default_factory=dict)


class ActionRunner:
    """Applies one ActionCall to a UID set in the selected mailbox."""

    def __init__(self, ctx: ActionContext) -> None:
        self.ctx = ctx

    # -------------------------------------------------------------- journal detail

    def intent_detail(self, call: ActionCall, uids: UidSet) -> dict:
        """What to record before the action so that a crash mid-action can be verified."""
        if call.name == "copy" or (call.name == "move" and isinstance(call.arg, FolderRef) and call.arg.account):
            session, dest = self._destination(call.arg)
            account = call.arg.account or self.ctx.account
            return {"account": account, "dest": dest, "uidnext": self._uidnext_creating(session, dest)}
        if call.name == "move" and not self.ctx.session.has("MOVE"):
            dest = self.ctx.session.server_name(call.arg.path)
            return {"account": self.ctx.account, "dest": dest, "uidnext": self._uidnext_creating(self.ctx.session, dest)}
        return {}

    # -------------------------------------------------------------- dispatch

    def run(self, call: ActionCall, uids: UidSet, *, detail: dict | None = None, resuming: bool = False) -> ActionResult:
        detail = detail or {}
        name = call.name
        if name in FLAG_ACTIONS:
            return self._flags(call, uids)
        if name == "copy":
            return self._copy(call.arg, uids, detail, resuming)
        if name == "move":
            return self._move(call.arg, uids, detail, resuming)
        if name == "trash":
            trash = self.ctx.session.find_trash()
            if trash is None:
                raise ActionFailed(
                    "no Trash mailbox: the server has no \\Trash special-use mailbox and no folder named "
                    "Trash, Deleted Items or Deleted Messages"
                )
            if trash == self.ctx.mailbox:
                return ActionResult(uids, removed=True)  # already in the Trash: nothing to do
            return self._move_server_name(trash, uids, detail, resuming)
        if name == "delete":
            self._mark_deleted_and_expunge(uids)
            return ActionResult(uids, removed=True)
        return self._plugin(call, uids, resuming)

    # -------------------------------------------------------------- flags

    def _flags(self, call: ActionCall, uids: UidSet) -> ActionResult:
        add = FLAG_ACTIONS[call.name]
        flags = tuple(call.arg)
        if call.name in ("add_keyword", "remove_keyword"):
            cannot = [k for k in flags if not self.ctx.selected.can_store_keyword(k)]
            if cannot and add:
                raise ActionFailed(
                    f"mailbox {self.ctx.mailbox} cannot store keywords (PERMANENTFLAGS lacks \\* and "
                    f"{', '.join(cannot)})"
                )
        self.ctx.session.store(uids, flags, add=add)
        return ActionResult(uids)

    # -------------------------------------------------------------- copy / move

    def _destination(self, ref: FolderRef) -> tuple[ImapSession, str]:
        session = self.ctx.session
        if ref.account and ref.account != self.ctx.account:
            if self.ctx.connect is None:
                raise ActionFailed(f"cannot reach account {ref.account}")
            try:
                session = self.ctx.connect(ref.account)
            except Exception as exc:  # noqa: BLE001 - any connection failure: retried later
                raise ActionFailed(f"destination account {ref.account} unreachable: {exc}") from exc
        return session, session.server_name(ref.path)

    def _uidnext_creating(self, session: ImapSession, dest: str) -> int:
        floor = session.uidnext_floor(dest)
        if floor is not None:
            return floor  # from this pass's folder listing: a lower bound is all the journal needs
        if session.known_missing(dest):
            return 1  # the copy creates it
        try:
            return session.status_uidnext(dest)
        except Exception:  # noqa: BLE001 - most likely a missing folder
            session.create_folder(dest)
            return session.status_uidnext(dest)

    def _copy(self, ref: FolderRef, uids: UidSet, detail: dict, resuming: bool) -> ActionResult:
        if ref.account and ref.account != self.ctx.account:
            return self._cross_account(ref, uids, detail, resuming, move=False)
        dest = self.ctx.session.server_name(ref.path)
        todo = uids - self._proven_copies(self.ctx.session, dest, uids, detail, resuming)[0]
        if todo:
            transfer = self._with_trycreate(
                self.ctx.session, dest, lambda create: self.ctx.session.copy(todo, dest, create=create)
            )
            self._record_placed(self.ctx.account, dest, transfer.uidvalidity, transfer.mapping.values())
        return ActionResult(uids)

    def _move(self, ref: FolderRef, uids: UidSet, detail: dict, resuming: bool) -> ActionResult:
        if ref.account and ref.account != self.ctx.account:
            return self._cross_account(ref, uids, detail, resuming, move=True)
        return self._move_server_name(self.ctx.session.server_name(ref.path), uids, detail, resuming)

    def _move_server_name(self, dest: str, uids: UidSet, detail: dict, resuming: bool) -> ActionResult:
        session = self.ctx.session
        todo = session.existing(uids) if resuming else uids
        if not todo:
            return ActionResult(uids, removed=True)
        if dest == self.ctx.mailbox:
            return ActionResult(uids, removed=True)  # moving into itself: nothing to do
        if session.has("MOVE"):
            transfer = self._with_trycreate(session, dest, lambda create: session.move(todo, dest, create=create))
            self._record_placed(self.ctx.account, dest, transfer.uidvalidity, transfer.mapping.values())
            return ActionResult(uids, removed=True)
        # COPY, then mark the originals \Deleted and UID EXPUNGE exactly those.
        if resuming and detail.get("copied"):
            to_copy = UidSet()
        else:
            to_copy = todo - self._proven_copies(session, dest, todo, detail, resuming)[0]
        if to_copy:
            transfer = self._with_trycreate(
                session, dest, lambda create: session.copy(to_copy, dest, create=create)
            )
            self._record_placed(self.ctx.account, dest, transfer.uidvalidity, transfer.mapping.values())
        self._mark_deleted_and_expunge(todo)
        return ActionResult(uids, removed=True, detail={"copied": True})

    def _with_trycreate(self, session: ImapSession, dest: str, command: Callable[[bool], Any]) -> Any:
        """Run command(create); create=True when the folder is known to be missing (the command
        then creates it in the same round trip). A TRYCREATE refusal creates it and retries once."""
        try:
            return command(session.known_missing(dest))
        except ServerRefused as exc:
            if not exc.trycreate and session.folder_exists(dest):
                raise ActionFailed(str(exc)) from None
            session.create_folder(dest)
            try:
                return command(False)
            except ServerRefused as exc2:
                raise ActionFailed(str(exc2)) from None

    def _mark_deleted_and_expunge(self, uids: UidSet) -> None:
        session = self.ctx.session
        session.store(uids, ["\\Deleted"], add=True)
        if session.has("UIDPLUS"):
            session.uid_expunge(uids)
        elif "no-uidplus" not in self.ctx.warned:
            self.ctx.warned.add("no-uidplus")
            log.warning(
                "account %s mailbox %s: the server lacks UIDPLUS, so mailrules never expunges: "
                "moved/deleted messages stay marked \\Deleted until your mail client expunges them",
                self.ctx.account,
                self.ctx.mailbox,
            )

    def _record_placed(self, account: str, dest: str, uidvalidity: int | None, dest_uids) -> None:
        if self.ctx.store is None or uidvalidity is None or not self.ctx.watched(account, dest):
            return
        self.ctx.store.add_placed(account, dest, uidvalidity, list(dest_uids))

    def _proven_copies(
        self, dest_session: ImapSession, dest: str, uids: UidSet, detail: dict, resuming: bool
    ) -> tuple[UidSet, int | None]:
        """Of `uids` (selected mailbox), those an earlier attempt is proven to have copied to `dest`.

        Each message is looked for among what reached `dest` since its attempt began (the
        UIDNEXT then): for the whole batch when resuming after a crash, and for the messages
        of detail["uncertain"] (a failed attempt that may have been carried out, as when the
        link died before the destination confirmed an APPEND) on any pass. The comparison is
        by a digest of the whole message, as multisets: each arrival proves at most one source
        message, and arrivals `claimed` as copies of messages already finished prove none.
        Returns the proven UIDs and the destination's UIDNEXT when it was checked (None: not
        checked).
        """
        since, claims, proven = _windows(uids, detail, resuming)
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
        source = self.ctx.session
        sizes = {uid: data.get(b"RFC822.SIZE") for uid, data in source.fetch(UidSet(since), ["RFC822.SIZE"])}
        arrived = _arrivals_since(dest_session, dest, floor, set(sizes.values()))
        if dest_session is source:
            source.select(self.ctx.mailbox)  # back to the source mailbox
        arrived_sizes = {size for size, _digest in arrived.values()}
        candidates: dict[str, list[int]] = {}
        near = UidSet(uid for uid, size in sizes.items() if size in arrived_sizes)
        for uid, data in source.fetch(near, ["BODY.PEEK[]"], batch=BODY_BATCH):
            body = data.get(b"BODY[]")
            if body:
                candidates.setdefault(content_digest(body), []).append(uid)
        by_digest: dict[str, list[int]] = {}
        for uid, (_size, digest) in arrived.items():
            by_digest.setdefault(digest, []).append(uid)
        found = _match(candidates, by_digest, since, claims)
        log.info(
            "account %s: checked an earlier, unconfirmed copy to %s: %d of %d messages were already there",
            self.ctx.account, dest, len(found), len(since),
        )
        return proven | found, now

    # -------------------------------------------------------------- cross-account

    def _cross_account(self, ref: FolderRef, uids: UidSet, detail: dict, resuming: bool, *, move: bool) -> ActionResult:
        """APPEND each message to the other account (flags and date kept), then remove the source.

        Which messages landed is known exactly: an APPEND the destination confirmed (with its
        APPENDUID where the server has UIDPLUS), or a copy proven by content afterwards. Before
        any source is removed, and before giving up on the rest, the journal records it (see
        `_verified`), so that neither a crash nor a retry can take one arrival for two messages.
        """
        dest_session, dest = self._destination(ref)
        session = self.ctx.session
        todo = session.existing(uids) if (resuming and move) else uids
        proven, checked = self._proven_copies(dest_session, dest, todo, detail, resuming)
        todo -= proven
        # From which destination UID an APPEND of this attempt that is not confirmed may land;
        # `claimed`: digests of confirmed APPENDs at or above it (the server gave no APPENDUID).
        start = max(int(detail.get("uidnext") or 1), checked or 1)
        claimed: list[str] = []
        created: list[int] = []
        sent: list[int] = []  # source UIDs whose APPEND the destination confirmed
        uidvalidity = None
        refused: list[str] = []  # one message refused (too big, over quota) does not hold up the others

        def verified() -> dict:
            record: dict = {"uidnext": start, "done": str(proven | sent)}
            if claimed:
                record["claimed"] = list(claimed)
            return record

        def finish(uids_done: UidSet) -> None:
            """Journal what is proven, then (a move) remove exactly those sources."""
            if self.ctx.journal is not None:
                self.ctx.journal({**detail, "verified": verified()})
            if move and uids_done:
                self._mark_deleted_and_expunge(uids_done)

        try:
            for uid, data in session.fetch(todo, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"], batch=BODY_BATCH):
                flags = [
                    f.decode() if isinstance(f, bytes) else f
                    for f in data.get(b"FLAGS", ())
                    if (f.decode() if isinstance(f, bytes) else f).lower() not in ("\\deleted", "\\recent")
                ]
                body = data.get(b"BODY[]")
                if not body:
                    # Expunged by another client since our last command: the server may still
                    # answer the FETCH, with no body. Nothing to copy.
                    log.info("account %s: UID %d vanished before it could be copied to %s", self.ctx.account,
                             uid, ref)
                    continue
                try:
                    result = self._with_trycreate(
                        dest_session, dest, lambda _create, b=body, f=flags, d=data: dest_session.append(
                            dest, b, f, d.get(b"INTERNALDATE")
                        )
                    )
                except ActionFailed as exc:
                    refused.append(f"UID {uid}: {exc}")
                    continue
                sent.append(uid)
                if result:
                    uidvalidity = result[0]
                    created.append(result[1])
                    # UIDs ascend: every earlier APPEND landed below this one
                    start = max(start, result[1] + 1)
                    claimed.clear()
                else:
                    claimed.append(content_digest(body))
        except Exception as exc:  # noqa: BLE001 - destination dropped: retried later, source untouched
            self._record_placed(ref.account or self.ctx.account, dest, uidvalidity, created)
            done = proven | sent
            finish(done)  # these arrived: finish their move, so that a retry cannot duplicate them
            message = str(exc) if isinstance(exc, ActionFailed) else f"copy to {ref} failed: {exc}"
            raise ActionFailed(message, done=done, verified=verified()) from exc
        self._record_placed(ref.account or self.ctx.account, dest, uidvalidity, created)
        done = proven | sent
        finish(done)
        if refused:
            raise ActionFailed(f"copy to {ref} refused for {len(refused)} messages: {'; '.join(refused)}",
                               done=done, verified=verified())
        return ActionResult(uids, removed=move)

    # -------------------------------------------------------------- plugins

    def _plugin(self, call: ActionCall, uids: UidSet, resuming: bool) -> ActionResult:
        spec: Action | None = self.ctx.registry.actions.get(call.name)
        if spec is None or spec.run is None:
            raise ActionFailed(f"action {call.name!r} is not available (is its plugin installed?)")
        if resuming and spec.delivery == "at-most-once":
            log.warning(
                "rule %r: action %s was interrupted by a crash and is at-most-once: not repeated for UIDs %s",
                self.ctx.rule.name, call.name, uids,
            )
            return ActionResult(uids)
        try:
            spec.run(self.ctx, uids, call.arg)
        except Exception as exc:  # noqa: BLE001 - a plugin must never crash the daemon
            log.exception("plugin action %s (plugin %s) failed in rule %r", call.name, spec.plugin, self.ctx.rule.name)
            raise ActionFailed(f"plugin action {call.name} failed: {exc}") from exc
        return ActionResult(uids, removed=spec.terminal)


BODY_BATCH = 50  # whole messages per UID FETCH while verifying


def content_digest(raw: bytes) -> str:
    """What identifies a message's content for copy verification: SHA-256 of all its bytes (hex, 128 bits)."""
    return hashlib.sha256(raw).hexdigest()[:32]


def _windows(uids: UidSet, detail: dict, resuming: bool) -> tuple[dict[int, int], list[tuple[str, int]], UidSet]:
    """What to verify of an earlier attempt, from its journal `detail`.

    Returns (uid -> the destination UID from which its copy may have landed; claims: (digest,
    from-UID) of arrivals that are copies of messages already finished; the UIDs the journal
    already records as proven copied).
    """
    verified = detail.get("verified") if resuming else None
    if verified:  # the attempt journaled what it had proven before removing or giving up anything
        proven = UidSet.parse(verified.get("done") or "") & uids
        start = int(verified["uidnext"])
        claims = [(d, start) for d in verified.get("claimed") or ()]
        return {uid: start for uid in uids if uid not in proven}, claims, proven
    since: dict[int, int] = {}
    claims = []
    if resuming and detail.get("uidnext") is not None:
        since = dict.fromkeys(uids, int(detail["uidnext"]))
    for group in uncertain_groups(detail):
        start = int(group["uidnext"])
        for uid in UidSet.parse(group["uids"]) & uids:
            since[uid] = min(start, since.get(uid, start))
        claims += [(d, start) for d in group.get("claimed") or ()]
    return since, claims, UidSet()


def uncertain_groups(detail: dict) -> list[dict]:
    """The earlier, possibly carried out attempts a copy's intent `detail` names (a dict in
    state files of older versions, a list of {"uids", "uidnext", "claimed"?} now)."""
    uncertain = detail.get("uncertain")
    if not uncertain:
        return []
    return [uncertain] if isinstance(uncertain, dict) else list(uncertain)


def _match(
    candidates: dict[str, list[int]], arrivals: dict[str, list[int]], since: dict[int, int],
    claims: list[tuple[str, int]],
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
                left.pop()
                found.add(uid)
    return found


def _arrivals_since(session: ImapSession, dest: str, uidnext: int, sizes: set[int]) -> dict[int, tuple[int, str]]:
    """UID -> (size, content digest) of the messages that arrived in `dest` at or after UID `uidnext`.

    Only messages of one of these `sizes` are read whole (the others cannot be a copy).
    """
    session.select(dest, readonly=True)
    from .criteria import SearchQuery

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
