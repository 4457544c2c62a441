"""`mailrules.dovecot_parse`: the fast paths equal the ported state machines, and the Date forms.

What each function answers on broken mail was verified on Dovecot by
tests/test_local_search_dovecot.py; these tests pin the fast paths to the byte-by-byte ports.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrules import dovecot_parse
from mailrules.dovecot_parse import _base64_prefix_slow, _qp_states, base64_prefix, qp_body, sent_date


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(b"AZaz09+/= \r\n$!")), max_size=40).map(bytes))
def test_the_fast_base64_decoder_equals_the_ported_loop(data):
    assert base64_prefix(data) == _base64_prefix_slow(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(b"ab=4Fz_0A \t\r\n")), max_size=40).map(bytes))
def test_the_fast_quoted_printable_decoder_equals_the_ported_state_machine(data):
    assert qp_body(data) == _qp_states(data)


@pytest.mark.parametrize(("value", "day"), [
    (b"Mon, 03 Jun 2024 10:00:00 +0000", dt.date(2024, 6, 3)),
    (b"Mon, 03 Jun 69 10:00:00 +0000", dt.date(2069, 6, 3)),
    (b"Mon, 03 Jun 70 10:00:00 +0000", dt.date(1970, 6, 3)),
    (b"3 June 2024 9.05 EDT", dt.date(2024, 6, 3)),
    (b"Mon, 03 Jun 2024 10:00:60 +0000", dt.date(2024, 6, 3)),
    (b"Mon, 03 Jun 2024 25:00:00 +0000", None),
    (b"Mon, 03 Jun 2024 10:61:00 +0000", None),
    (b"Mon, 03 Jun 2024 10:00:99 +0000", None),
    (b"Saturday, 01 Jun 2024 10:00:00 +0000", None),
    (b"Sat Jun  1 10:00:00 2024", None),
    (b"Mon, 30 Feb 2024 10:00:00 +0000", None),
    (b"Mon 03 Jun 2024 10:00:00 +0000", None),
])
def test_date_forms_read_as_dovecot_reads_them(value, day):
    assert sent_date(value) == day


def _decode_words_by_byte(value: bytes, normalize=str) -> str:
    """decode_words as it was written before (a byte-by-byte scan for `=?`): its specification."""
    out: list[str] = []
    start = pos = 0
    size = len(value)
    while pos + 1 < size:
        if value[pos] != 0x3D or value[pos + 1] != 0x3F:
            pos += 1
            continue
        if pos != start and value[start:pos].strip(b" \t\r\n"):
            out.append(normalize(value[start:pos].decode("utf-8", "replace")))
        word = dovecot_parse._encoded_word(value, pos + 2)
        if word is None:
            start = pos
            pos += 2
            continue
        pos, charset, decoded = word
        if decoded:
            if charset.lower() in dovecot_parse._UTF8_NAMES or dovecot_parse.known_charset(charset):
                out.append(normalize(dovecot_parse.to_text(decoded, charset)))
            else:
                out.append(decoded.decode("utf-8", "replace"))
        start = pos
    if start != size:
        out.append(normalize(value[start:].decode("utf-8", "replace")))
    return "".join(out)


_WORD_PIECES = [b"=?", b"?=", b"=", b"?", b"utf-8", b"iso-8859-1", b"x-unknown", b"?q?", b"?B?", b"aGk=", b"a_b=C3=A9",
                b" ", b"\t", b"\r\n ", b"text", b"\xc3\xa9", b"\xff", b"=?utf-8?q?hi?=", b"=?utf-8?b?aGk=?="]


@given(st.lists(st.sampled_from(_WORD_PIECES), max_size=10))
@settings(max_examples=3000, derandomize=True, deadline=None)
def test_decode_words_stops_where_the_byte_by_byte_scan_stops(pieces):
    value = b"".join(pieces)
    assert dovecot_parse.decode_words(value) == _decode_words_by_byte(value)
