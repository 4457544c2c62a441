"""How the pipelined opening reads its answers (mailrules.imap.pipeline, wire.ChunkedReader):
in chunks, the usual header answer taken straight from the chunk, every other shape by the
general reader, with the same result however the bytes are cut; unit tests over a fake stream."""

from __future__ import annotations

import imaplib
import io
import re
from types import SimpleNamespace

import pytest

from mailrules.imap import internals
from mailrules.imap.pipeline import Pipeline
from mailrules.imap.wire import ChunkedReader, ResponseReader, parse_message_id
from mailrules.uidset import UidSet

FIELDS = b"(MESSAGE-ID LIST-ID)"
BLOCKS = {
    1: b"List-Id: <dev.example.org>\r\nMessage-ID: <one@example.org>\r\n\r\n",
    2: b"Message-ID:\r\n <two@example.org>\r\n\r\n",
    3: b"List-Id: x\r\n\r\n",
    4: b"Message-ID: <four@example.org>\r\n\r\n",
}


def answers(tag: bytes, usual: bool) -> bytes:
    """The server's answer to the header fetch: the usual shape, or other shapes a server may send."""
    out = []
    for seq, (uid, block) in enumerate(BLOCKS.items(), 1):
        literal = b"{%d}\r\n%s" % (len(block), block)
        if usual:
            out.append(b"* %d FETCH (UID %d BODY[HEADER.FIELDS %s] %s)\r\n" % (seq, uid, FIELDS, literal))
        elif uid % 2:
            out.append(b"* %d FETCH (BODY[HEADER.FIELDS %s] %s UID %d)\r\n" % (seq, FIELDS, literal, uid))
        else:
            out.append(b"* %d fetch (uid %d FLAGS (\\Seen) body[header.fields %s] %s)\r\n" % (seq, uid, FIELDS, literal))
    out.insert(2, b"* 7 EXISTS\r\n")
    return b"".join(out) + tag + b" OK Fetch completed.\r\n"


class Trickle(io.RawIOBase):
    """A socket that gives at most `step` bytes per read."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(self.step, len(buf), len(self.data))
        buf[:n], self.data = self.data[:n], self.data[n:]
        return n


class FakeImap:
    """imaplib's side: commands sent are answered by `reply(tag)`, read `step` bytes at a time."""

    abort = imaplib.IMAP4.abort

    def __init__(self, reply, step: int, after: bytes = b"") -> None:
        self.reply, self.step, self.after = reply, step, after
        self.file = io.BufferedReader(Trickle(b"", step))

    def send(self, data: bytes) -> None:
        tags = re.findall(rb"^(\S+) ", data, re.M)
        self.file = io.BufferedReader(Trickle(b"".join(self.reply(t) for t in tags) + self.after, self.step))

    def readline(self) -> bytes:
        return self.file.readline()


def opening(imap: FakeImap) -> tuple[dict[int, str], list[tuple[int, bytes]]]:
    session = SimpleNamespace(client=SimpleNamespace(_imap=imap), max_set_chars=1000)
    taken: list[tuple[int, bytes]] = []
    pipe = Pipeline(session)
    pending = pipe.headers(UidSet([1, 2, 3, 4]), ["List-Id"], 100, lambda uid, block: taken.append((uid, block)))
    pipe.run()
    return pending.message_ids, taken


EXPECTED_IDS = {1: "<one@example.org>", 2: "<two@example.org>", 3: "", 4: "<four@example.org>"}


@pytest.mark.parametrize("usual", [True, False], ids=["usual shape", "other shapes"])
@pytest.mark.parametrize("step", [1, 7, 64, 1 << 20])
def test_header_answers_read_the_same_however_the_bytes_arrive(usual, step):
    ids, taken = opening(FakeImap(lambda tag: answers(tag, usual), step))
    assert ids == EXPECTED_IDS
    assert sorted(taken) == sorted(BLOCKS.items())


def test_bytes_read_past_the_last_answer_are_left_for_imaplib():
    imap = FakeImap(lambda tag: answers(tag, True), 1 << 20, after=b"* 9 EXISTS\r\n")
    opening(imap)
    assert imap.readline() == b"* 9 EXISTS\r\n"


def test_a_link_lost_inside_an_answer_is_a_broken_connection():
    imap = FakeImap(lambda tag: answers(tag, True)[:150], 1 << 20)
    with pytest.raises(imaplib.IMAP4.abort, match="EOF"):
        opening(imap)


def test_the_chunked_reader_splits_responses_as_the_line_reader_does():
    data = b"* 1 FETCH (BODY[] {4}\r\nab\r\n UID 4)\r\n* 2 EXISTS\r\nA1 OK done\r\n"
    stream = io.BytesIO(data)
    lines = ResponseReader(stream.readline, stream.read, imaplib.IMAP4.abort)
    expected = [lines.response() for _ in range(3)]
    pieces = [data[i : i + 3] for i in range(0, len(data), 3)]
    chunked = ChunkedReader(lambda: pieces.pop(0) if pieces else b"", imaplib.IMAP4.abort)
    assert [chunked.response() for _ in range(3)] == expected
    assert chunked.rest() == b""


def test_the_chunked_reader_refuses_a_response_longer_than_its_limit():
    reader = ChunkedReader(lambda: b"* 1 FETCH (BODY[] {999999}\r\n" + b"x" * 100, imaplib.IMAP4.abort, limit=1000)
    with pytest.raises(imaplib.IMAP4.abort, match="longer than 1000 bytes"):
        reader.response()


def test_bytes_handed_back_are_read_again_first():
    imap = FakeImap(lambda tag: b"", 1 << 20)
    imap.file = io.BufferedReader(io.BytesIO(b"later\r\n"))
    internals.hand_back(imap, b"first ")
    assert internals.read_some(imap) == b"first "
    assert internals.read_some(imap) == b"later\r\n"


@pytest.mark.parametrize("raw", [
    b"Message-ID:\x1c<a@b>\r\n\r\n", b"message-id: <a@b>\r\n\tc\r\n\r\n", b"Message-ID:\r\n\r\nX: y\r\n\r\n",
    b"Message-ID: \xc2\xa0<a@b>\r\n\r\n", b"X: y\r\n\r\n",
])
def test_a_message_id_reads_the_same_in_ascii_and_in_utf8(raw):
    text = raw.decode("utf-8", "replace")
    m = re.search(r"^message-id:\s*(.*(?:\r?\n[ \t].*)*)", text, re.I | re.M)
    assert parse_message_id(raw) == (" ".join(m.group(1).split()) if m else "")
