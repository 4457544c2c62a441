"""`Beside`: a second, read-only connection for the searches no action of the pass can change.

Why: a server works one connection's commands one after the other, in one process (Dovecot,
Cyrus). The searches of header fields, sizes and dates give the same answer for a message
whatever the rules before it do (`mailrules.criteria.reads_of`: not `mutable`), so they need
not wait in line behind the pass's FETCHes, MOVEs and STOREs: on a connection of their own
they take another server process (another core) while the pass's connection works. On the
backlog benchmark (10,000 messages, 12 rules, loopback) the size search and the `from:`
searches are ~190 ms of the ~860 ms the server spends on the pass's connection
(`bench/floor.py --parts`).

How: a thread logs in, EXAMINEs the pass's mailbox (read-only: nothing of the mailbox
changes), checks that its UIDVALIDITY is the pass's, then does what it is handed, in order.
First, if the pass fetches header fields as it opens, a share of that fetch (`fetch_headers`):
the server reads those messages in another process while the pass's connection reads the
rest; a message it did not return is one the pass asks the server about, as any its own fetch
misses. Then the searches, handed over at once (`search`), each restricted to the messages
that may still be in play at its rule's turn: sent in one write, their answers read, the thread
logs out. At the rule's turn the pass takes the answer (`answer`) if it covers every message
still in play for the rule; otherwise, or if the answer did not come (a refusal, a connection
that failed: logged, never an error of the pass), it searches on its own connection as it
would have. UIDs with UIDVALIDITY, never sequence numbers, cross between the two connections.

Only `run --once` opens one (`mailrules.imap.pool.SessionPool.beside`), for a pass over at
least `MIN_MESSAGES` messages (`worth_it`): a catch-up whose end is waited for. Its first pass's
is opened as soon as the early SELECT is answered, so that it is logged in when the pass opens.
The daemon keeps to the connections it counts on per account.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping

from ..criteria import SearchQuery
from ..uidset import UidSet
from .session import ImapSession

log = logging.getLogger("mailrules.imap")

MIN_MESSAGES = 1000  # a smaller pass is over before a second connection would have logged in


def worth_it(messages: int) -> bool:
    """Whether a pass over this many messages opens a second connection."""
    return messages >= MIN_MESSAGES


class Beside:
    """The searches of one pass (and a share of its header fetch) on a connection of their own
    (see the module's docstring). Its thread does what it is handed, in order: `fetch_headers`,
    then `search`, after which it logs out."""

    def __init__(self, connect: Callable[[], ImapSession], mailbox: str, uidvalidity: int,
                 account: str, timeout: float) -> None:
        self._jobs: queue.SimpleQueue[tuple[str, tuple]] = queue.SimpleQueue()
        self._fetched = threading.Event()
        self._searched = threading.Event()
        self._message_ids: dict[int, str] = {}
        self._sink_error: BaseException | None = None
        self._searches: dict[int, tuple[SearchQuery, UidSet]] = {}
        self._answers: dict[int, UidSet] = {}
        self._timeout = timeout
        self._where = f"account {account} mailbox {mailbox}"
        self.opened_for = (mailbox, uidvalidity)
        threading.Thread(target=self._work, args=(connect, mailbox, uidvalidity),
                         name=f"mailrules-beside-{account}", daemon=True).start()

    def fetch_headers(self, uids: UidSet, fields: Iterable[str], batch: int,
                      sink: Callable[[int, bytes], None] | None) -> None:
        """Hand over the header FETCH of `uids` (as `Pipeline.headers`: the Message-ID and
        `fields`; `sink(uid, block)` called in this object's thread, so it must lock what it
        shares). Read back with `message_ids`."""
        self._jobs.put(("fetch", (uids, tuple(fields), batch, sink)))

    def message_ids(self) -> dict[int, str]:
        """The Message-ID of every message the header FETCH returned (those missing, all of them if
        it failed: the pass decides them as messages the fetch did not return). Once: the dict is
        handed over. An error raised by the sink is raised here, as if the pass had read the
        answer itself."""
        if not self._fetched.wait(self._timeout):
            log.debug("%s: the header fetch beside the pass did not finish in %g s", self._where, self._timeout)
            return {}
        if self._sink_error is not None:
            raise self._sink_error
        ids, self._message_ids = self._message_ids, {}
        return ids

    def search(self, searches: Mapping[int, tuple[SearchQuery, UidSet]]) -> None:
        """Hand over the searches, by rule index: (query, the UIDs it is asked over). Once, last."""
        self._searches = {i: (query, within) for i, (query, within) in searches.items() if within}
        self._jobs.put(("search", ()))

    def has(self, index: int) -> bool:
        """Whether rule `index`'s search was handed over (answered or not)."""
        return index in self._searches

    def answer(self, index: int, searchable: UidSet) -> UidSet | None:
        """Rule `index`'s answer over `searchable`, or None: not handed over, not over all of
        `searchable`, or not answered (then the pass searches on its own connection)."""
        handed = self._searches.get(index)
        if handed is None or searchable - handed[1]:
            return None
        if not self._searched.wait(self._timeout):
            log.debug("%s: the searches beside the pass did not finish in %g s; searched on the pass's "
                      "connection", self._where, self._timeout)
            return None
        found = self._answers.get(index)
        return found & searchable if found is not None else None

    def close(self) -> None:
        """The pass is over: the thread logs out once done with what it was handed."""
        self._jobs.put(("close", ()))

    def _work(self, connect: Callable[[], ImapSession], mailbox: str, uidvalidity: int) -> None:
        session = None
        try:
            session = connect()
            selected = session.select(mailbox, readonly=True)
            if selected.uidvalidity != uidvalidity:
                log.debug("%s: UIDVALIDITY changed under the pass (%d, beside it %d): nothing done beside it",
                          self._where, uidvalidity, selected.uidvalidity)
                return
            while True:
                kind, args = self._jobs.get(timeout=self._timeout)
                if kind == "fetch":
                    self._fetch(session, *args)
                elif kind == "search":
                    self._answers = _search_exactly(session, self._searches)
                    return
                else:
                    return
        except Exception as exc:  # noqa: BLE001 - the pass does it on its own connection instead
            log.debug("%s: the connection beside the pass failed (%s); the pass does its work alone",
                      self._where, exc)
        finally:
            self._fetched.set()
            self._searched.set()
            if session is not None:
                session.logout(wait=False)

    def _fetch(self, session: ImapSession, uids: UidSet, fields: tuple[str, ...], batch: int,
               sink: Callable[[int, bytes], None] | None) -> None:
        def guarded(uid: int, block: bytes) -> None:
            try:
                sink(uid, block)  # type: ignore[misc]
            except BaseException as exc:
                self._sink_error = exc
                raise

        pipe = session.pipeline()
        pending = pipe.headers(uids, fields, batch, guarded if sink is not None else None)
        try:
            pipe.run()
        finally:
            self._message_ids = pending.message_ids  # those read before a failure, each given to the sink
            self._fetched.set()


def _search_exactly(session: ImapSession, searches: Mapping[int, tuple[SearchQuery, UidSet]]) -> dict[int, UidSet]:
    """The answers of `searches` (by rule index), sent in one write and each over exactly its UIDs,
    in pieces short enough for one command: a set bridged over the gaps between them would have
    the server read the messages the pass moves meanwhile (Dovecot then answers EXPUNGEISSUED
    and works far slower). A rule with a piece unanswered has no answer."""
    pipe = session.pipeline()
    pieces = {i: [pipe.search(query, piece) for piece in within.chunks(session.max_set_chars)]
              for i, (query, within) in searches.items()}
    pipe.run()
    answers = {}
    for i, pending in pieces.items():
        if pending and all(p is not None and p.result is not None for p in pending):
            answers[i] = UidSet(uid for p in pending for uid in p.result)  # type: ignore[union-attr]
    return answers


__all__ = ["MIN_MESSAGES", "Beside", "worth_it"]
