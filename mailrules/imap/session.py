"""`ImapSession`: the IMAP commands the engine needs, over one logged-in IMAPClient.

Everything here is UID-based (never sequence numbers), batched into UID sets of
bounded length, and decides from the *advertised* capabilities (MOVE, UIDPLUS,
ESEARCH, WITHIN, LITERAL+, SPECIAL-USE). Folder names are given as mailrules writes
them ('Lists/dev', plain Unicode) and translated to the server's namespace prefix and
separator; IMAPClient encodes modified UTF-7.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterable, Iterator

import imapclient
from imapclient.exceptions import IMAPClientError

from ..criteria import SearchQuery
from ..uidset import UidSet
from . import internals
from .answers import Selected, ServerRefused, Transfer
from .copyflags import copy_reading_flags, read_reading_flags, send_reading_flags
from .identify import name_of
from .later import InFlight, LaterTransfer, Ready
from .pipeline import PendingFolders, Pipeline
from .setsize import MAX_SET_CHARS, SetSize
from .wire import parse_copyuid, parse_message_id, render

log = logging.getLogger("mailrules.imap")

FETCH_BATCH = 2000  # messages per UID FETCH of headers/flags
BODY_FETCH_BATCH = 100  # messages per UID FETCH of whole messages (bounded memory)


class ImapSession:
    """One logged-in connection of one account."""

    def __init__(self, client: imapclient.IMAPClient, account: str = "") -> None:
        self.client = client
        self.account = account
        self.capabilities = frozenset(
            (c.decode() if isinstance(c, bytes) else c).upper() for c in client.capabilities()
        )
        self.selected: Selected | None = None
        self._prefix: str | None = None
        self._separator: str | None = None
        self._trash: str | None = None
        self._known_folders: set[str] = set()
        self._missing_folders: set[str] = set()  # from the last folder listing (LIST-STATUS)
        self._uidnext_floor: dict[str, int] = {}  # a UIDNEXT each folder had at least, this pass
        self._server_software: str | None = None
        self._set_size = SetSize(account)
        # the MOVEs and searches whose answers are read later (`mailrules.imap.later`)
        self.later = InFlight(self, make=Transfer, refused=ServerRefused)

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    @property
    def substring_search_reliable(self) -> bool:
        """Whether SEARCH BODY/TEXT is a true substring search, as RFC 3501 says: on Dovecot.

        Others (Gmail, Exchange) search words, which would make a prefilter miss messages; Cyrus
        missed a Latin-1 "café" searched in UTF-8 (tests/test_cyrus.py). Asked once with ID.
        """
        return self.server_software.startswith("dovecot")

    @property
    def server_software(self) -> str:
        """The server's name from ID, lower case ("" without ID): asked once per session."""
        if self._server_software is None:
            try:
                self._server_software = name_of(self.client.id_()) if self.has("ID") else ""
            except Exception:  # noqa: BLE001 - ID is optional; without it, no prefilter
                self._server_software = ""
        return self._server_software

    @property
    def max_set_chars(self) -> int:
        """Characters of UID set in one command (`mailrules.imap.setsize`)."""
        return self._set_size.chars(self._server_software)

    def _send_chunked(self, uids: UidSet, send: Callable[[UidSet], None], batch: int | None = None) -> None:
        """`send(chunk)` for each chunk of `uids`; one refused as too long is sent again shorter."""
        self._set_size.send_chunked(uids, send, batch, self._server_software)

    # ------------------------------------------------------------------ folders

    def _namespace(self) -> tuple[str, str]:
        if self._separator is None:
            prefix, sep = "", "/"
            try:
                if self.has("NAMESPACE"):
                    personal = self.client.namespace().personal
                    if personal:
                        prefix, sep = personal[0][0] or "", personal[0][1] or sep
                else:
                    folders = self.client.list_folders("", "")
                    if folders and folders[0][1]:
                        sep = folders[0][1].decode() if isinstance(folders[0][1], bytes) else folders[0][1]
            except IMAPClientError as exc:
                log.debug("namespace lookup failed, assuming '/': %s", exc)
            if isinstance(prefix, bytes):
                prefix = prefix.decode()
            if isinstance(sep, bytes):
                sep = sep.decode()
            self._prefix, self._separator = prefix, sep
        return self._prefix or "", self._separator or "/"

    def namespace(self) -> tuple[str, str]:
        """The personal namespace's prefix and hierarchy separator (asked once per session)."""
        return self._namespace()

    def adopt_identity(self, namespace: tuple[str, str] | None, software: str | None) -> None:
        """What `mailrules.imap.identify` learnt (None: not learnt, asked when needed)."""
        self._prefix, self._separator = namespace or (self._prefix, self._separator)
        self._server_software = self._server_software if software is None else software

    def server_name(self, path: str) -> str:
        """The server's name for a folder written 'A/B' (namespace prefix and separator)."""
        prefix, sep = self._namespace()
        if path.upper() == "INBOX":
            return "INBOX"
        parts = path.split("/")
        if sep != "/" and any(sep in p for p in parts):
            if "/" not in path:  # the server's own form: say how rules write it
                raise ValueError(f"folder {path!r} is written as the server names it (separator {sep!r}"
                                 f"{f', prefix {prefix!r}' if prefix else ''}); rules write folders with '/': "
                                 f"{self.rules_name(path)!r}")
            raise ValueError(f"folder {path!r}: a level contains the server's separator {sep!r}")
        name = sep.join(parts)
        if prefix and not name.upper().startswith(prefix.upper()) and not name.upper().startswith("INBOX" + sep):
            name = prefix + name
        return name

    def rules_name(self, server_name: str) -> str:
        """A folder as rules write it ('Lists/dev') from the server's name ('INBOX.Lists.dev')."""
        prefix, sep = self._namespace()
        name = server_name
        if prefix and name.upper().startswith(prefix.upper()) and name.upper() != "INBOX":
            name = name[len(prefix):]
        return "/".join(name.split(sep)) if sep != "/" else name

    def folder_exists(self, server_name: str) -> bool:
        if server_name in self._known_folders:
            return True
        found = bool(self.client.list_folders("", server_name))
        if found:
            self._known_folders.add(server_name)
        return found

    def create_folder(self, server_name: str) -> None:
        """Create a folder (and report success if another client just created it)."""
        # CREATE and SUBSCRIBE (so that mail clients show the folder) are pipelined: one
        # round trip. A refused SUBSCRIBE does not matter.
        with self.later.burst():
            create, subscribe = self.send_create(server_name)
        self._finish_create(server_name, create, subscribe)

    def send_create(self, server_name: str) -> tuple[bytes, bytes]:
        """Send CREATE and SUBSCRIBE without waiting; their answers: `_finish_create`, `later`."""
        imap = internals.imaplib_of(self.client)
        name = internals.normalise_folder(self.client, server_name)
        return internals.command(imap, "CREATE", name), internals.command(imap, "SUBSCRIBE", name)

    def _finish_create(self, server_name: str, create: bytes, subscribe: bytes) -> None:
        imap = internals.imaplib_of(self.client)
        typ, data = internals.answer(imap, "CREATE", create)
        internals.answer(imap, "SUBSCRIBE", subscribe)  # a refused SUBSCRIBE does not matter
        self.note_created(server_name, typ, data)

    def note_created(self, server_name: str, typ: str, data: list) -> None:
        """Account for the answer to a CREATE (another client may have created it first)."""
        self._missing_folders.discard(server_name)
        if typ == "OK":
            log.info("account %s: created folder %s", self.account, server_name)
        elif not self.folder_exists(server_name):
            raise ServerRefused("CREATE", text_of(data))
        self._known_folders.add(server_name)

    def find_trash(self) -> str | None:
        """The \\Trash special-use mailbox, else Trash / Deleted Items / Deleted Messages."""
        if self._trash is None:
            found = None
            try:
                # Only the \Trash attribute here: IMAPClient's find_special_folder() would also
                # guess names (such as 'Deleted'), which the spec does not allow.
                found = next(
                    (name for flags, _sep, name in self.client.list_folders()
                     if any(f.lower() == b"\\trash" for f in flags)),
                    None,
                )
            except IMAPClientError:
                found = None
            if found is None:
                for name in ("Trash", "Deleted Items", "Deleted Messages"):
                    candidate = self.server_name(name)
                    if self.folder_exists(candidate):
                        found = candidate
                        break
            self._trash = found
        return self._trash

    def pipeline(self) -> Pipeline:
        """A batch of read-only commands sent together (see `mailrules.imap.pipeline`)."""
        return Pipeline(self)

    def note_folders(self, listing: PendingFolders | None) -> None:
        """Remember a pipelined folder listing for this pass (replacing the previous one)."""
        self._missing_folders = set(listing.missing) if listing else set()
        self._uidnext_floor = dict(listing.uidnext) if listing else {}
        if listing:
            self._known_folders.update(listing.uidnext)
            self._known_folders.difference_update(listing.missing)

    def known_missing(self, server_name: str) -> bool:
        """Whether this pass's folder listing found no such folder (and none was created since)."""
        return server_name in self._missing_folders

    def uidnext_floor(self, server_name: str) -> int | None:
        """A value the folder's UIDNEXT is known to be at or above (this pass's listing), or None."""
        if self.later.sent_to(server_name):
            self.later.settle()  # a MOVE there in flight raises it: its COPYUID first
        return self._uidnext_floor.get(server_name)

    # ------------------------------------------------------------------ select

    def select(self, server_name: str, *, readonly: bool = False) -> Selected:
        self.before_select()
        return self.adopt_selection(server_name, self.client.select_folder(server_name, readonly=readonly),
                                    readonly=readonly)

    def before_select(self) -> None:
        """Before a SELECT: no answer of ours unread (imaplib clears what it collected then), no search
        sent `ahead` kept (it was for the mailbox left)."""
        self.later.settle()
        self.clear_untagged()
        self.later.forget()

    def adopt_selection(self, server_name: str, resp: dict, *, readonly: bool) -> Selected:
        """Take `resp` (IMAPClient's SELECT answer) as the selection now in force."""
        flags = tuple(
            f.decode() if isinstance(f, bytes) else f for f in resp.get(b"PERMANENTFLAGS", resp.get(b"FLAGS", ()))
        )
        self.selected = Selected(
            name=server_name,
            uidvalidity=int(resp[b"UIDVALIDITY"]),
            uidnext=int(resp.get(b"UIDNEXT") or 0) or self._uidnext_fallback(),
            exists=int(resp.get(b"EXISTS", 0)),
            permanent_flags=flags if b"PERMANENTFLAGS" in resp else (),
            readonly=readonly,
        )
        self._known_folders.add(server_name)
        return self.selected

    def unselect(self) -> None:
        """Leave the selected mailbox without expunging anything (UNSELECT, never CLOSE; without
        UNSELECT nothing is sent: selecting another mailbox or LOGOUT leaves it unexpunged too)."""
        if self.selected is not None and self.has("UNSELECT"):
            self.client.unselect_folder()
        self.selected = None

    def _uidnext_fallback(self) -> int:
        uids = self.client.search(["ALL"])
        return (max(uids) + 1) if uids else 1

    def status_uidnext(self, server_name: str) -> int:
        return int(self.client.folder_status(server_name, ["UIDNEXT"])[b"UIDNEXT"])

    # ------------------------------------------------------------------ search

    def search(self, query: SearchQuery, within: UidSet | None = None) -> UidSet:
        """UID SEARCH for `query`, restricted to the UIDs `within` (chunked if long).

        Non-ASCII strings go as literals with CHARSET UTF-8; on BADCHARSET the
        charsets the server lists are tried in turn.
        """
        if within is None:
            return UidSet(self._search_one(query, None))
        if not within:
            return UidSet()
        ahead = self.later.answered(query.tokens, within) if query.charset is None else None
        if ahead is not None:  # sent ahead of its turn (`ahead`), in an earlier round trip
            return ahead
        # One command: a set that covers `within` (bridging small gaps), then intersect.
        text = within.cover_text(self.max_set_chars)
        try:
            return UidSet(self._search_one(query, text)) & within
        except ServerRefused as exc:
            if not self._set_size.refused_long(exc, len(text)):
                raise
            return UidSet(self._search_one(query, within.cover_text(MAX_SET_CHARS))) & within

    def _search_one(self, query: SearchQuery, chunk: str | None) -> list[int]:
        try:
            return self._send_search(query, chunk)
        except ServerRefused as exc:
            if "BADCHARSET" not in exc.message.upper() or query.charset is None:
                raise
            listed = re.search(r"BADCHARSET\s*\(([^)]*)\)", exc.message, re.I)
            for charset in (listed.group(1).split() if listed else ["US-ASCII"]):
                try:
                    alt = query.encode_for(charset.strip('"'))
                except (LookupError, UnicodeEncodeError):
                    continue
                return self._send_search(alt, chunk)
            raise ServerRefused(
                "SEARCH",
                f"the server cannot search this text (it supports only: "
                f"{listed.group(1) if listed else 'US-ASCII'}): {exc.message}",
            ) from None

    def _send_search(self, query: SearchQuery, chunk: str | None, esearch: bool | None = None) -> list[int]:
        tokens: list[bytes] = []
        esearch = self.has("ESEARCH") if esearch is None else esearch
        if esearch:
            tokens += [b"RETURN", b"(ALL)"]
        if query.charset:
            tokens += [b"CHARSET", query.charset.encode("ascii")]
        if chunk is not None:
            tokens += [b"UID", chunk.encode("ascii")]
        tokens += list(query.tokens)
        typ, data = self._command(b"SEARCH", tokens)
        if typ != "OK":
            raise ServerRefused("SEARCH", text_of(data))
        lines = self._untagged().pop("ESEARCH" if esearch else "SEARCH", None)
        if esearch and lines:
            others = self.later.pending_answers({"ESEARCH": lines}).get("ESEARCH", [])
            if others:  # a search sent ahead (`ahead`), answered with this one: its answer stays for it
                self._untagged()["ESEARCH"] = others
                lines = [line for line in lines if line not in others] or None
        if lines is None:  # RFC 4731 (3.1), RFC 3501 (7.2.5): answered even when nothing matched
            if not esearch:
                raise ServerRefused("SEARCH", "the server's OK came without the SEARCH response")
            log.warning("account %s: a UID SEARCH was answered without its ESEARCH response; asked again "
                        "without RETURN", self.account)
            return self._send_search(query, chunk, esearch=False)
        if esearch:
            out: list[int] = []
            for line in lines:
                m = re.search(rb"\bALL\s+([0-9:,]+)", line if isinstance(line, bytes) else line.encode())
                if m:
                    out.extend(UidSet.parse(m.group(1).decode()))
            return out
        return [int(x) for line in lines for x in (line or b"").split()]

    def _command(self, name: bytes, tokens: list[bytes]) -> tuple[str, list]:
        """Send `UID name tokens...` with literals and parentheses placed correctly."""
        imap = internals.imaplib_of(self.client)
        self.clear_untagged()
        tag = internals.new_tag(imap)
        pieces = render(tag, [b"UID", name, *tokens], self.has("LITERAL+"))
        log.debug("> %s", pieces[0][:512])
        imap.send(pieces[0])
        for piece in pieces[1:]:
            while internals.next_response(imap):  # until the server's continuation request ('+')
                answer = internals.tagged_answer(imap, tag)
                if answer:  # the server ended the command instead
                    internals.release_tag(imap, tag)
                    raise ServerRefused(name.decode(), text_of(answer[1]))
            imap.send(piece)
        try:
            typ, data = internals.complete(imap, name.decode(), tag)
        except imap.abort:
            raise
        except imap.error as exc:  # BAD
            raise ServerRefused(name.decode(), str(exc)) from None
        return typ, data

    def _untagged(self) -> dict[str, list]:
        """imaplib's collected untagged responses (see `internals.untagged`)."""
        return internals.untagged(internals.imaplib_of(self.client))

    def clear_untagged(self) -> None:
        responses = self._untagged()
        kept = self.later.pending_answers(responses)  # read early: for commands sent, not read yet
        for key in ("ESEARCH", "SEARCH", "COPYUID", "OK", "NO", "TRYCREATE", "EXPUNGE", "FETCH", "EXISTS",
                    "RECENT", "VANISHED"):
            responses.pop(key, None)
        responses.update(kept)

    # ------------------------------------------------------------------ fetch

    def fetch(self, uids: UidSet, items: list[str], batch: int = FETCH_BATCH) -> Iterator[tuple[int, dict]]:
        """UID FETCH in batches; yields (uid, data) for messages that still exist."""
        for batch_uids in uids.chunks(self.max_set_chars, batch):
            answers: list[tuple[UidSet, dict[int, dict]]] = []
            self._send_chunked(batch_uids, functools.partial(self._fetch_into, answers, items), batch)
            for chunk, resp in answers:
                for uid in sorted(resp):
                    if uid in chunk:
                        yield uid, resp[uid]

    def _fetch_into(self, answers: list[tuple[UidSet, dict[int, dict]]], items: list[str], chunk: UidSet) -> None:
        answers.append((chunk, self._fetch_set(str(chunk), items)))

    def _fetch_set(self, uid_set: str, items: list[str]) -> dict[int, dict]:
        """One UID FETCH with a compact UID set (IMAPClient.fetch would expand it to a list)."""
        data = self._uid_fetch(uid_set, "(" + " ".join(i.upper() for i in items) + ")")
        return internals.parse_fetch_response(data, self.client.normalise_times)

    def _uid_fetch(self, uid_set: str, items: str) -> list:
        """Send one UID FETCH; the raw untagged FETCH data as imaplib collected it."""
        self.uid_command("FETCH", uid_set, items)
        return self._untagged().pop("FETCH", [])

    def uid_command(self, verb: str, *args: str) -> list:
        """`UID verb args...` (no literals) after clearing the collected answers; its tagged
        answer's data, ServerRefused on NO or BAD. Its untagged answers stay collected."""
        imap = internals.imaplib_of(self.client)
        self.clear_untagged()
        try:
            typ, data = internals.complete(imap, verb, internals.command(imap, "UID", verb, *args))
        except imap.abort:
            raise
        except imap.error as exc:  # BAD, or a command imaplib would not send in this state
            raise ServerRefused(verb, str(exc)) from None
        if typ != "OK":
            raise ServerRefused(verb, text_of(data))
        return data

    def message_ids(self, uids: UidSet) -> dict[int, str]:
        """Message-ID of each message (empty string when it has none)."""
        out: dict[int, str] = {}
        self._send_chunked(uids, lambda chunk: out.update(self._message_ids(str(chunk), chunk)), FETCH_BATCH)
        return out

    def _message_ids(self, uid_set: str, wanted: UidSet) -> dict[int, str]:
        out: dict[int, str] = {}
        # A fixed response shape: "N (UID u BODY[HEADER.FIELDS (MESSAGE-ID)] {n}" + literal.
        # Parsed directly: IMAPClient's general parser costs ~50 us a message.
        for item in self._uid_fetch(uid_set, "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"):
            if not isinstance(item, tuple):
                continue
            m = _UID_IN_FETCH.search(item[0])
            if m and int(m.group(1)) in wanted:
                out[int(m.group(1))] = parse_message_id(item[1] or b"")
        return out

    def existing(self, uids: UidSet) -> UidSet:
        """Which of these UIDs still exist in the selected mailbox."""
        if not uids:
            return UidSet()  # never an answer sent ahead: messages moved since would be in it
        return UidSet(self._search_one(SearchQuery((b"ALL",)), uids.cover_text(MAX_SET_CHARS))) & uids

    # ------------------------------------------------------------------ changes

    def store(self, uids: UidSet, flags: Iterable[str], *, add: bool) -> None:
        """UID STORE +FLAGS.SILENT / -FLAGS.SILENT."""
        flag_list = list(flags)
        self.later.stored(flag_list, uids)  # the searches sent ahead that read them are stale there

        def send(chunk: UidSet) -> None:
            try:
                if add:
                    self.client.add_flags(str(chunk), flag_list, silent=True)
                else:
                    self.client.remove_flags(str(chunk), flag_list, silent=True)
            except IMAPClientError as exc:
                raise ServerRefused("STORE", str(exc)) from None

        self._send_chunked(uids, send)

    def copy(self, uids: UidSet, server_name: str, *, create: bool = False) -> Transfer:
        """UID COPY; the result maps source to destination UIDs when the server says (UIDPLUS).

        create: the folder is missing; CREATE and SUBSCRIBE it in the same round trip.
        """
        return self._transfer("COPY", uids, server_name, create)

    def move(self, uids: UidSet, server_name: str, *, create: bool = False) -> Transfer:
        """UID MOVE (the caller checks the MOVE capability first); create: as for `copy`. The
        moved messages' flags are read in the same round trip, as for `copy`."""
        return self._transfer("MOVE", uids, server_name, create)

    def _transfer(self, verb: str, uids: UidSet, server_name: str, create: bool = False) -> Transfer:
        """UID COPY or UID MOVE (`verb`), each chunk with its messages' flags read in the same
        round trip (`copyflags`)."""
        result = Transfer()
        creating = [create]  # CREATE (and SUBSCRIBE) go with the first command only

        def send(chunk: UidSet) -> None:
            self._transfer_chunk(verb, chunk, server_name, creating.pop() if creating else False, result)

        self._send_chunked(uids, send)
        self.note_transfer(server_name, result)
        return result

    def _transfer_chunk(self, verb: str, chunk: UidSet, server_name: str, create: bool, result: Transfer) -> None:
        """One UID COPY or MOVE (with CREATE first when `create`), in one round trip with what is in
        flight; its flags and COPYUID into `result`."""
        self.clear_untagged()
        with self.later.burst():
            creating = self.send_create(server_name) if create else None
            tags = send_reading_flags(self.client, str(chunk), server_name, verb)
        try:
            try:
                result.flags.update(read_reading_flags(self.client, *tags, verb, chunk))
            finally:
                if creating is not None:
                    self._finish_create(server_name, *creating)
        except IMAPClientError as exc:
            if "EXPUNGEISSUED" not in str(exc).upper():
                raise ServerRefused(verb, str(exc)) from None
            # Another client expunged some of these since we last heard (RFC 5530); the
            # server did nothing. The UID SEARCH tells us which remain: act on those only.
            chunk = self.existing(chunk)
            if not chunk:
                return
            self.clear_untagged()
            try:
                result.flags.update(copy_reading_flags(self.client, str(chunk), server_name, verb))
            except IMAPClientError as exc2:
                raise ServerRefused(verb, str(exc2)) from None
        # imaplib files response codes such as [COPYUID v src dst] under their name
        for data in self._untagged().pop("COPYUID", []):
            parsed = parse_copyuid(data)
            if parsed:
                result.uidvalidity = parsed[0]
                result.mapping.update(parsed[1])

    def note_transfer(self, server_name: str, result: Transfer) -> None:
        """Keep this pass's floor of the destination's UIDNEXT a lower bound after a COPY or MOVE."""
        if server_name in self._uidnext_floor:
            if result.mapping:
                floor = max(self._uidnext_floor[server_name], max(result.mapping.values()) + 1)
                self._uidnext_floor[server_name] = floor
            else:
                del self._uidnext_floor[server_name]

    def move_later(self, uids: UidSet, server_name: str, *, create: bool = False) -> LaterTransfer | Ready:
        """`move`, sent now and read when the next command goes out (`mailrules.imap.later`): what
        the MOVE did, or its refusal, comes from `.result()`. A set longer than the RFC advises: `move`."""
        chunks = list(uids.chunks(self.max_set_chars))
        if len(chunks) != 1 or len(str(chunks[0])) > MAX_SET_CHARS:  # `move` sends a refused long set again
            return Ready(lambda: self.move(uids, server_name, create=create))
        return self.later.send(uids, str(chunks[0]), server_name, create)

    def uid_expunge(self, uids: UidSet) -> None:
        """UID EXPUNGE of exactly these UIDs (requires UIDPLUS). Never a bare EXPUNGE."""
        if not self.has("UIDPLUS"):
            raise ServerRefused("UID EXPUNGE", "the server lacks UIDPLUS")

        def send(chunk: UidSet) -> None:
            try:
                self.client.uid_expunge(str(chunk))
            except IMAPClientError as exc:
                raise ServerRefused("UID EXPUNGE", str(exc)) from None

        self._send_chunked(uids, send)

    def append(self, server_name: str, message: bytes, flags: Iterable[str], internaldate) -> tuple[int, int] | None:
        """APPEND; returns (UIDVALIDITY, new UID) when the server says (APPENDUID)."""
        try:
            resp = self.client.append(server_name, message, flags=list(flags), msg_time=internaldate)
        except IMAPClientError as exc:
            raise ServerRefused("APPEND", str(exc)) from None
        m = re.search(rb"APPENDUID\s+(\d+)\s+(\d+)", resp if isinstance(resp, bytes) else str(resp).encode())
        return (int(m.group(1)), int(m.group(2))) if m else None

    def noop(self) -> None:
        self.client.noop()

    def exists_announced(self) -> bool:
        """Whether an EXISTS came with the answers since the last command of ours cleared them."""
        return bool(self._untagged().get("EXISTS"))

    def logout(self, wait: bool = True) -> None:
        """LOGOUT, then close. wait=False: without waiting for the server's BYE (a round trip),
        for a connection whose commands have all been answered (nothing is left to lose)."""
        try:
            if wait:
                self.client.logout()
                return
            internals.command(internals.imaplib_of(self.client), "LOGOUT")
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass
        with contextlib.suppress(Exception):
            self.client.shutdown()


def text_of(data: list) -> str:
    parts = [d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data or []]
    return " ".join(parts)


_UID_IN_FETCH = re.compile(rb"\bUID (\d+)")
