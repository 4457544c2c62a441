"""The `tests:` section of a rules file (and of included files): parsing and validation.

A case gives a message (inline `message: {headers, body}` or `file:` an .eml path relative to
the file that names it) and what must happen to it when the whole rule set runs over it as an
arriving message (`expect:`). See "Rules as code" in the spec. `mailrules.config` hands the
node of each file's `tests:` to `parse_tests`, with the file's document (for file:line in
errors, as every other configuration error); the cases of all files go, in load order, to
`Config.tests`. Running them is `mailrules.testcmd`'s job.

The document object is the loader's (duck-typed here, so that this module does not depend on
the loader's internals): `loc(node)`, `error(node, message)`, `value(node)`,
`describe(node)`, `display` (the file's name as shown) and `path` (its `pathlib.Path`).
"""

from __future__ import annotations

import datetime as dt
import re
import stat
from collections.abc import Iterable
from email.header import Header as EmailHeader
from email.utils import getaddresses
from pathlib import Path
from typing import Any, Protocol

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .criteria import FLAG_KEYS
from .model import Expectation, Location, RuleTest

TEST_KEYS = ("name", "message", "file", "account", "mailbox", "flags", "size", "arrived", "expect")
MESSAGE_KEYS = ("headers", "body")
EXPECT_KEYS = ("rules", "mailbox", "copies", "flags", "keywords", "deleted")
MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # a test message file; bounded like every outside input
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII but ':'
_KEYWORD = re.compile(r"[^\s(){%*\"\\\]\x00-\x1f\x7f]+")  # an IMAP atom


class Document(Protocol):
    """What `parse_tests` asks of the loader's document (see the module docstring)."""

    display: str
    path: Path

    def loc(self, node: Node) -> Location: ...
    def error(self, node: Node, message: str) -> Exception: ...
    def value(self, node: Node) -> Any: ...
    def describe(self, node: Node) -> str: ...


def parse_tests(doc: Document, node: Node, into: list[RuleTest], accounts: Iterable[str]) -> None:
    """Validate the `tests:` list `node` of `doc` and append its cases to `into`.

    Names must be unique across every file of the load (`into` holds the earlier files'
    cases). Raises the loader's ConfigError (file:line:column) on the first problem.
    """
    if isinstance(node, ScalarNode) and doc.value(node) is None:
        return
    known = {case.name: case.location for case in into}
    accounts = tuple(accounts)
    for index, item in enumerate(_items(doc, node, "tests", "a list of test cases"), 1):
        case = _case(doc, item, f"tests #{index}", accounts)
        if case.name in known:
            raise doc.error(item, f"test {case.name!r}: the name is already used by the test at {known[case.name]} "
                                  "(test names are unique across the rules file and its includes)")
        known[case.name] = case.location
        into.append(case)


# --------------------------------------------------------------------------- node helpers


def _pairs(doc: Document, node: Node, what: str, allowed: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
    if not isinstance(node, MappingNode):
        raise doc.error(node, f"{what}: expected a mapping, found {doc.describe(node)}")
    out: dict[str, tuple[Node, Node]] = {}
    for key, value in node.value:
        name = key.value if isinstance(key, ScalarNode) else None
        if not name:
            raise doc.error(key, f"{what}: expected a name as key, found {doc.describe(key)}")
        if name not in allowed:
            raise doc.error(key, f"{what}: unknown key {name!r} (expected one of: {', '.join(allowed)})")
        out[name] = (key, value)
    return out


def _items(doc: Document, node: Node, what: str, expected: str) -> list[Node]:
    if not isinstance(node, SequenceNode):
        raise doc.error(node, f"{what}: expected {expected}, found {doc.describe(node)}")
    return list(node.value)


def _str(doc: Document, node: Node, what: str, *, empty_ok: bool = False) -> str:
    value = doc.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, str) and (empty_ok or value.strip()):
        return value
    raise doc.error(node, f"{what}: expected a string, found {doc.describe(node)}")


def _str_list(doc: Document, node: Node, what: str) -> list[tuple[str, Node]]:
    """A list of strings (or one string) -> [(string, node)]."""
    if isinstance(node, SequenceNode):
        return [(_str(doc, item, what), item) for item in node.value]
    return [(_str(doc, node, what), node)]


# --------------------------------------------------------------------------- one case


def _case(doc: Document, node: Node, label: str, accounts: tuple[str, ...]) -> RuleTest:
    pairs = _pairs(doc, node, label, TEST_KEYS)
    if "name" not in pairs:
        raise doc.error(node, f"{label}: missing key 'name'")
    name = _str(doc, pairs["name"][1], f"{label}: name")
    what = f"test {name!r}"
    if ("message" in pairs) == ("file" in pairs):
        raise doc.error(node, f"{what}: give exactly one of 'message:' (inline) and 'file:' (an .eml file)")
    if "message" in pairs:
        raw = _inline_message(doc, pairs["message"][1], f"{what}: message")
    else:
        raw = _message_file(doc, pairs["file"][1], f"{what}: file")
    account = None
    if "account" in pairs:
        account = _str(doc, pairs["account"][1], f"{what}: account")
        if account not in accounts:
            raise doc.error(pairs["account"][1], f"{what}: account: no account named {account!r} "
                                                 f"(accounts: {', '.join(accounts) or 'none'})")
    mailbox = _str(doc, pairs["mailbox"][1], f"{what}: mailbox") if "mailbox" in pairs else "INBOX"
    flags: tuple[str, ...] = ()
    if "flags" in pairs:
        flags = tuple(_flag(doc, text, item, f"{what}: flags")
                      for text, item in _str_list(doc, pairs["flags"][1], f"{what}: flags"))
    size = None
    if "size" in pairs:
        value = doc.value(pairs["size"][1]) if isinstance(pairs["size"][1], ScalarNode) else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise doc.error(pairs["size"][1], f"{what}: size: expected a number of bytes, found "
                                              f"{doc.describe(pairs['size'][1])}")
        size = value
    arrived = _arrived(doc, pairs["arrived"][1], f"{what}: arrived") if "arrived" in pairs else None
    expect = _expect(doc, pairs["expect"][1], f"{what}: expect") if "expect" in pairs else Expectation()
    return RuleTest(name=name, raw=raw, expect=expect, mailbox=mailbox, account=account, flags=flags,
                    size=size, arrived=arrived, location=doc.loc(node))


def _flag(doc: Document, text: str, node: Node, what: str) -> str:
    if text.startswith("\\"):
        for flag in FLAG_KEYS:
            if flag.lower() == text.lower():
                return flag
        raise doc.error(node, f"{what}: unknown system flag {text!r} (expected one of: {', '.join(FLAG_KEYS)}, "
                              "or a keyword)")
    if not _KEYWORD.fullmatch(text):
        raise doc.error(node, f"{what}: {text!r} is not a valid keyword (no spaces, parentheses, quotes "
                              "or control characters)")
    return text


def _inline_message(doc: Document, node: Node, what: str) -> bytes:
    """headers (a mapping; a list value repeats the field) and body -> the message's bytes."""
    pairs = _pairs(doc, node, what, MESSAGE_KEYS)
    lines: list[str] = []
    names: set[str] = set()
    if "headers" in pairs:
        headers = pairs["headers"][1]
        if not isinstance(headers, MappingNode):
            raise doc.error(headers, f"{what}: headers: expected a mapping of header names to values, "
                                     f"found {doc.describe(headers)}")
        for key, value in headers.value:
            field = key.value if isinstance(key, ScalarNode) else ""
            if not _FIELD_NAME.fullmatch(field or ""):
                raise doc.error(key, f"{what}: headers: {field!r} is not a header name (printable ASCII, "
                                     "no space or ':')")
            for text, item in _str_list(doc, value, f"{what}: headers: {field}"):
                if "\r" in text or "\n" in text or "\0" in text:
                    raise doc.error(item, f"{what}: headers: {field}: a header value cannot contain line "
                                          "breaks (write it on one line)")
                lines.append(f"{field}: {encoded_header(field, text)}")
            names.add(field.lower())
    body = _str(doc, pairs["body"][1], f"{what}: body", empty_ok=True) if "body" in pairs else ""
    if not body.isascii() and "content-type" not in names:
        lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                  "Content-Transfer-Encoding: 8bit"]
    body = body.replace("\r\n", "\n").replace("\n", "\r\n")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender", "resent-from", "resent-to"})


def encoded_header(field: str, text: str) -> str:
    """A header value as mail programs write it: non-ASCII text as RFC 2047 encoded words.

    Raw UTF-8 in headers (RFC 6532) is not stored alike by every server (Cyrus replaces each
    8-bit byte with an X), so an inline message written raw would be a different message there
    than real mail is. In address fields only display names are encoded; a non-ASCII address
    itself has no encoded form and stays UTF-8. A `file:` message keeps its bytes as they are.
    """
    if text.isascii():
        return text
    if field.lower() not in ADDRESS_FIELDS:
        return EmailHeader(text, "utf-8").encode(linesep="\r\n")
    out = []
    for name, address in getaddresses([text]):
        if not address:
            return EmailHeader(text, "utf-8").encode(linesep="\r\n")
        if not name:
            out.append(address)
        elif not name.isascii():
            out.append(f"{EmailHeader(name, 'utf-8').encode()} <{address}>")
        else:
            quoted = name.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'"{quoted}" <{address}>')
    return ", ".join(out)


def _message_file(doc: Document, node: Node, what: str) -> bytes:
    text = _str(doc, node, what)
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = doc.path.parent / path
    try:
        with path.open("rb") as handle:
            info = Path(handle.name).stat()
            if not stat.S_ISREG(info.st_mode):
                raise doc.error(node, f"{what}: {text!r} is not a regular file")
            data = handle.read(MAX_MESSAGE_BYTES + 1)
    except OSError as exc:
        raise doc.error(node, f"{what}: cannot read {text!r} ({path}): {exc.strerror or exc}") from None
    if len(data) > MAX_MESSAGE_BYTES:
        raise doc.error(node, f"{what}: {text!r} is larger than {MAX_MESSAGE_BYTES // (1024 * 1024)} MiB")
    return data


def _arrived(doc: Document, node: Node, what: str) -> dt.datetime:
    """A date and time (an offset or Z; without one, local time) or a date (local midnight)."""
    value = doc.value(node) if isinstance(node, ScalarNode) else None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            value = None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.astimezone()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day).astimezone()
    raise doc.error(node, f"{what}: expected a date and time such as 2026-01-31T10:00:00+01:00, "
                          f"found {doc.describe(node)}")


def _expect(doc: Document, node: Node, what: str) -> Expectation:
    pairs = _pairs(doc, node, what, EXPECT_KEYS)
    out: dict[str, Any] = {}
    if "rules" in pairs:
        value = pairs["rules"][1]
        if not isinstance(value, SequenceNode):
            raise doc.error(value, f"{what}: rules: expected a list of rule names, found {doc.describe(value)}")
        out["rules"] = tuple(_str(doc, item, f"{what}: rules") for item in value.value)
    if "mailbox" in pairs:
        out["mailbox"] = _str(doc, pairs["mailbox"][1], f"{what}: mailbox")
    if "copies" in pairs:
        value = pairs["copies"][1]
        if not isinstance(value, SequenceNode):
            raise doc.error(value, f"{what}: copies: expected a list of folders, found {doc.describe(value)}")
        out["copies"] = tuple(_str(doc, item, f"{what}: copies") for item in value.value)
    for key in ("flags", "keywords"):
        if key in pairs:
            value = pairs[key][1]
            if not isinstance(value, SequenceNode):
                raise doc.error(value, f"{what}: {key}: expected a list, found {doc.describe(value)}")
            items = [_flag(doc, _str(doc, item, f"{what}: {key}"), item, f"{what}: {key}") for item in value.value]
            wrong = [(t, i) for t, i in zip(items, value.value, strict=True) if t.startswith("\\") != (key == "flags")]
            if wrong:
                hint = "system flags (\\Seen...) go in 'flags:'" if key == "keywords" else "keywords go in 'keywords:'"
                raise doc.error(wrong[0][1], f"{what}: {key}: {wrong[0][0]!r} does not belong here ({hint})")
            out[key] = frozenset(items)
    if "deleted" in pairs:
        value = doc.value(pairs["deleted"][1]) if isinstance(pairs["deleted"][1], ScalarNode) else None
        if not isinstance(value, bool):
            raise doc.error(pairs["deleted"][1], f"{what}: deleted: expected true or false, "
                                                 f"found {doc.describe(pairs['deleted'][1])}")
        out["deleted"] = value
    return Expectation(**out)
