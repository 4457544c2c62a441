"""The IMAP layer: everything that speaks to the server.

* `wire`: the wire format, once (rendering, quoting, literals, the response reader, tags,
  the Message-ID of a header block);
* `internals`: every reach into imaplib's and IMAPClient's private internals, each with why;
* `session`: `ImapSession`, the UID-based commands the engine needs;
* `pipeline`: the pass's opening, several read-only commands in one round trip;
* `later`: commands whose answers are read with the next command's (a terminal MOVE, searches
  sent ahead); `reselect`, `identify`: SELECT and its search, NAMESPACE and ID, each pair in
  one round trip;
* `idle`: IDLE/DONE/NOOP read by hand, so that a wait also watches a wake-up pipe;
* `pool`: `SessionPool`, one connection per account.

This package imports of the rest of mailrules only `criteria` (the compiled search), `uidset`,
`model` (the pool's accounts) and `connect` (the pool opens connections), so that the engine,
the daemon and the checks can all stand on it. Tags: commands whose answers imaplib reads
carry imaplib's tags (its reader knows only those); commands whose answers we read ourselves
(pipelined, IDLE, NOOP) carry `wire.TAGS`'s.
"""
