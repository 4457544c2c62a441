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
