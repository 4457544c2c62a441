"""mailrules plugin: ask SpamAssassin's spamd whether a message is spam, and teach it.

Predicate (in ``where:``)::

    - spam                                 # spamd's own verdict (its required score)
    - spam: {min_score: 5}                 # score >= 5
    - spam: {min_score: 5, spamd: "127.0.0.1:783", timeout: 10, user: alice, max_size: 512000}

Actions::

    - learn_spam                           # TELL spamd: this is spam (needs spamd --allow-tell)
    - learn_ham: {spamd: "/run/spamd.sock"}

`spamd` is ``host:port``, ``[IPv6]:port`` or the path of a Unix socket; default: the
environment variable MAILRULES_SPAMD, else ``localhost:783``. `timeout` (seconds, default
10) bounds each request. Messages larger than `max_size` bytes (default 500 KiB, as spamc)
are not sent to spamd and are not spam. `user` is the spamd user whose preferences and
Bayes database apply (spamc -u).

If spamd cannot be reached or times out, the predicate raises: the rule does not act on
the message, and mailrules retries it on a later pass. It never guesses "not spam".
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from typing import Any

from mailrules import hookimpl
from mailrules.plugins import Action, ArgumentError, Predicate

from .spamc import DEFAULT_ADDRESS, CheckResult, SpamdClient, SpamdError, parse_address

__all__ = ["SpamdClient", "SpamdError", "mailrules_actions", "mailrules_predicates"]
__version__ = "0.1.0"

log = logging.getLogger("mailrules.spamassassin")

MAX_SIZE = 500 * 1024
ADDRESS_ENV = "MAILRULES_SPAMD"

_CONNECTION = {
    "spamd": {"type": "string", "minLength": 1, "description": "host:port, [IPv6]:port or a socket path"},
    "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 50},
    "user": {"type": "string", "minLength": 1},
}

SPAM_SCHEMA = {
    "type": ["object", "null"],
    "description": "nothing (spamd's verdict) or {min_score: NUMBER, spamd: ADDRESS, timeout: SECONDS, ...}",
    "properties": {
        "min_score": {"type": "number"},
        "max_size": {"type": "integer", "minimum": 1},
        **_CONNECTION,
    },
    "additionalProperties": False,
}

LEARN_SCHEMA = {
    "type": ["object", "null"],
    "description": "nothing or {spamd: ADDRESS, timeout: SECONDS, user: NAME}",
    "properties": dict(_CONNECTION),
    "additionalProperties": False,
}


def _client(args: dict) -> SpamdClient:
    address = args.get("spamd") or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    return SpamdClient(address, timeout=float(args.get("timeout", 10)), user=args.get("user"))


def parse_connection(raw: dict | None) -> dict:
    args = dict(raw or {})
    if "spamd" in args:
        try:
            parse_address(args["spamd"])
        except ValueError as exc:
            raise ArgumentError(str(exc), ("spamd",)) from None
    return args


# --------------------------------------------------------------------------- the predicate


class _Cache:
    """Recent verdicts by (spamd, user, message digest): two rules asking about one message ask once."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._data: OrderedDict[tuple, CheckResult] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> CheckResult | None:
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
            return found

    def put(self, key: tuple, value: CheckResult) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_verdicts = _Cache()


def check(message: Any, args: dict) -> CheckResult | None:
    """spamd's verdict on a MessageView, or None if it is too large to scan."""
    raw = message.raw or b""
    if len(raw) > args.get("max_size", MAX_SIZE):
        log.debug("UID %s: %d bytes, larger than max_size: not scanned", message.uid, len(raw))
        return None
    client = _client(args)
    key = (client.address, client.user, hashlib.sha256(raw).digest())
    result = _verdicts.get(key)
    if result is None:
        result = client.symbols(raw)
        _verdicts.put(key, result)
    return result


def is_spam(message: Any, args: dict) -> bool:
    result = check(message, args)
    if result is None:
        return False
    verdict = result.score >= args["min_score"] if "min_score" in args else result.is_spam
    log.debug("UID %s: score %.1f (spamd requires %.1f): %s [%s]", message.uid, result.score,
              result.threshold, "spam" if verdict else "not spam", ",".join(result.symbols))
    return verdict


# --------------------------------------------------------------------------- the actions


def _learner(message_class: str):
    def learn(context: Any, uids: Any, arg: dict) -> None:
        client = _client(arg)
        learned = 0
        for message in context.messages(uids, ["message"]):
            if client.tell(message.raw or b"", message_class):
                learned += 1
        _verdicts.clear()  # scores may change now
        log.info("rule %r: spamd learned %d of %d messages as %s", context.rule.name, learned, len(uids),
                 message_class)

    return learn


# --------------------------------------------------------------------------- the hooks


@hookimpl
def mailrules_predicates():
    return [
        Predicate(
            "spam",
            is_spam,
            description="SpamAssassin (spamd) says the message is spam, or scores at least min_score",
            schema=SPAM_SCHEMA,
            parse=parse_connection,
            needs=["message"],
            timeout=60.0,  # above the largest client timeout (50): the client reports its own timeout
        )
    ]


@hookimpl
def mailrules_actions():
    return [
        # Teaching spamd changes its Bayes database, outside the mailbox: never run offline.
        Action("learn_spam", "teach spamd's Bayes filter that the messages are spam (spamd --allow-tell)",
               schema=LEARN_SCHEMA, parse=parse_connection, run=_learner("spam"), effects="outside"),
        Action("learn_ham", "teach spamd's Bayes filter that the messages are not spam (spamd --allow-tell)",
               schema=LEARN_SCHEMA, parse=parse_connection, run=_learner("ham"), effects="outside"),
    ]

