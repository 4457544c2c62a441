"""The IMAP wire format, written once (mailrules.imap.wire): quoting, literals, rendering, reading."""

from __future__ import annotations

import imaplib

import pytest

from mailrules.imap.wire import (
    CLOSE,
    OPEN,
    TAGS,
    Literal,
    ResponseReader,
    astring,
    parse_message_id,
    quote_mailbox,
    render,
    response_end,
)


def test_ascii_text_is_a_quoted_string_with_quotes_and_backslashes_escaped():
    assert astring('say "hi" \\ there') == b'"say \\"hi\\" \\\\ there"'


@pytest.mark.parametrize("text", ["café", "two\r\nlines", "nul\0"])
def test_8bit_text_and_line_breaks_become_a_literal(text):
    quoted = astring(text)
    assert isinstance(quoted, Literal)
    assert bytes(quoted) == text.encode("utf-8")


def test_a_mailbox_name_is_quoted_in_modified_utf7():
    assert quote_mailbox("Entwürfe") == b'"Entw&APw-rfe"'
    assert not isinstance(quote_mailbox("Entwürfe"), Literal)


def test_with_literal_plus_a_command_is_one_piece():
    pieces = render(b"A1", [b"UID", b"SEARCH", OPEN, b"SUBJECT", Literal(b"caf\xc3\xa9"), CLOSE])
    assert pieces == [b"A1 UID SEARCH (SUBJECT {5+}\r\ncaf\xc3\xa9)\r\n"]


def test_without_literal_plus_each_literal_waits_for_a_continuation():
    pieces = render(b"A1", [b"SEARCH", b"SUBJECT", Literal(b"x\r\ny")], literal_plus=False)
    assert pieces == [b"A1 SEARCH SUBJECT {4}\r\n", b"x\r\ny\r\n"]


def test_a_response_with_a_literal_ends_after_the_literal():
    buf = b'* 1 FETCH (BODY[] {7}\r\nab\r\ncd\r\n UID 4)\r\n* 2 EXISTS\r\n'
    end = response_end(buf)
    assert buf[:end] == b'* 1 FETCH (BODY[] {7}\r\nab\r\ncd\r\n UID 4)'
    assert response_end(buf, end + 2) == len(buf) - 2
    assert response_end(b"* 1 FETCH (BODY[] {7}\r\nab") is None  # the literal is not all here yet


def test_the_reader_splits_a_response_into_lines_and_literals():
    data = [b"* 1 FETCH (BODY[] {4+}\r\n", b" UID 4)\r\n"]
    literal = b"ab\r\n"
    reader = ResponseReader(lambda: data.pop(0), lambda n: literal[:n], imaplib.IMAP4.abort)
    assert reader.response() == [b"* 1 FETCH (BODY[] {4+}", literal, b" UID 4)"]


def test_the_reader_reports_an_eof_inside_a_literal():
    reader = ResponseReader(lambda: b"* 1 FETCH (BODY[] {9}\r\n", lambda n: b"ab", imaplib.IMAP4.abort)
    with pytest.raises(imaplib.IMAP4.abort, match="EOF in a literal"):
        reader.response()


def test_tags_are_unique_and_never_look_like_imaplibs():
    tags = {TAGS.next(b"p") for _ in range(100)}
    assert len(tags) == 100
    assert all(t[:1].islower() for t in tags)  # imaplib's start with upper-case letters


def test_a_message_id_is_read_from_a_header_block():
    assert parse_message_id(b"Subject: x\r\nMessage-Id: <a@b>\r\n\r\n") == "<a@b>"
