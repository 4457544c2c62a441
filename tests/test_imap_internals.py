"""The imaplib/IMAPClient internals mailrules relies on are still there (mailrules.imap.internals).

A new IMAPClient or Python may rename or reshape a private method; these tests name what
changed, so that an upgrade fails here and not in a user's daemon.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import imapclient

from mailrules.imap import internals


def test_the_private_methods_and_attributes_used_are_unchanged():
    problems = internals.problems()
    assert problems == [], "imaplib/IMAPClient internals changed:\n" + "\n".join(problems)


def test_a_live_connection_has_the_internals_used(imap):
    problems = internals.problems(imap)
    assert problems == [], "imaplib/IMAPClient internals changed:\n" + "\n".join(problems)


def test_imapclient_is_pinned_to_the_major_versions_tested():
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    spec = next(d for d in project["project"]["dependencies"] if d.lower().startswith("imapclient"))
    upper = re.search(r"<\s*(\d+)", spec)
    assert upper, f"imapclient has no upper bound in pyproject.toml: {spec!r}"
    installed = int(imapclient.__version__.split(".")[0])
    assert installed < int(upper.group(1)), f"imapclient {imapclient.__version__} is outside {spec!r}"


def test_a_removed_private_method_is_named(monkeypatch):
    import imaplib

    monkeypatch.delattr(imaplib.IMAP4, "_command_complete")
    assert internals.problems() == ["imaplib.IMAP4._command_complete is gone"]


# ---------------------------------------------------------------------- complete: plain lines in bulk


class ScriptedIMAP4:
    """An imaplib connection whose server says `script` (read in pieces of `chunk` bytes, so that
    lines are split across reads), with one command outstanding (`tag`, written "T1" in it)."""

    def __new__(cls, script: bytes, chunk: int = 7):
        import imaplib
        import io

        class Greeting:  # and the answer to imaplib's CAPABILITY, whose tag is known once connected
            def __init__(self, imap) -> None:
                self.imap, self.lines = imap, None

            def readline(self, limit=-1):
                if self.lines is None:
                    self.lines = io.BytesIO(b"* OK ready\r\n* CAPABILITY IMAP4rev1\r\n%s0 OK done\r\n"
                                            % self.imap.tagpre)
                return self.lines.readline(limit)

        class Scripted(imaplib.IMAP4):
            def open(self, host="", port=0, timeout=None):
                self.file = Greeting(self)

            def send(self, data):
                pass

        imap = Scripted()
        imap.tag = imap._new_tag()  # registered as outstanding; b"T1" in the script stands for it
        imap.file = io.BufferedReader(io.BytesIO(script.replace(b"T1 ", imap.tag + b" ")), buffer_size=chunk)
        imap.untagged_responses.clear()
        imap.debug = 0
        return imap


MOVE_ANSWER = (b"* OK [COPYUID 7 1:3 10:12] Moved\r\n"
               b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS () UID 2)\r\n"
               + b"* 1 EXPUNGE\r\n" * 3
               + b"* 2 FETCH (UID 9 BODY[HEADER] {5}\r\nabcde)\r\n* 3 EXISTS\r\n* 4 RECENT \r\n"
               b"T1 OK Move completed\r\n* 5 EXISTS\r\n")


def read_both_ways(script: bytes, chunk: int = 7):
    """(what `complete` returns and leaves, what imaplib's own reading does) for `script`."""
    import imaplib

    out = []
    for debug in (0, 1):  # 0: lines taken in bulk; imaplib logging (-vv): its reader alone
        imap = ScriptedIMAP4(script, chunk)
        imap.debug = debug
        try:
            answer = internals.complete(imap, "MOVE", imap.tag)
        except imaplib.IMAP4.error as exc:
            answer = (type(exc).__name__, str(exc))
        rest = imap.readline() if not isinstance(answer[1], str) else None
        out.append((answer, imap.untagged_responses, rest, imap.tagged_commands))
    return out


def test_a_move_s_untagged_lines_are_stored_as_imaplib_stores_them():
    bulk, imaplib_s = read_both_ways(MOVE_ANSWER)
    assert bulk == imaplib_s
    assert bulk[1]["EXPUNGE"] == [b"1", b"1", b"1"] and bulk[1]["RECENT"] == [b"4"]
    assert bulk[1]["FETCH"][:2] == [b"1 (UID 1 FLAGS (\\Seen))", b"2 (FLAGS () UID 2)"]
    assert bulk[2] == b"* 5 EXISTS\r\n"  # what came after the answer is left for the next reader
    assert bulk[3] == {}


def test_lines_split_across_reads_are_stored_whole():
    for chunk in (1, 2, 13, 1 << 16):
        bulk, imaplib_s = read_both_ways(MOVE_ANSWER, chunk)
        assert bulk == imaplib_s


def test_a_refused_command_is_answered_as_imaplib_answers_it():
    for last in (b"T1 NO [EXPUNGEISSUED] Some messages were expunged\r\n", b"T1 BAD Error in IMAP command\r\n"):
        bulk, imaplib_s = read_both_ways(b"* 1 EXPUNGE\r\n" + last)
        assert bulk == imaplib_s


def test_a_goodbye_before_the_answer_is_a_lost_connection():
    bulk, imaplib_s = read_both_ways(b"* 1 EXPUNGE\r\n* BYE shutting down\r\n")
    assert bulk[0] == imaplib_s[0] == ("abort", "command: MOVE => shutting down")


def test_a_connection_closed_mid_answer_is_a_lost_connection():
    bulk, imaplib_s = read_both_ways(b"* 1 EXPUNGE\r\n* 2 EXPUN")
    assert bulk[0][0] == imaplib_s[0][0] == "abort"
