"""The issue's "done when" at full size: on a 5,000-message mailbox with the 12 benchmark rules
(moves, copies, flags, keywords) plus a copy to another account, where some messages already
carry the flags and keywords the rules set, `apply --yes` then `undo --last --yes` leaves every
mailbox of both accounts exactly as before, counted by content (folder, SHA-256 of the whole
message, flags and keywords); about 15 s. The rounds with SIGKILL are bench/undo_roundtrip.py's (at
this size) and tests/test_undo_roundtrip.py's (at 400 messages).
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
N = 5000


def test_apply_then_undo_last_on_5000_messages_leaves_both_accounts_as_before(dovecot, tmp_path):
    sys.path.insert(0, str(BENCH))
    import undo_roundtrip

    result = undo_roundtrip.roundtrip(dovecot, undo_roundtrip.generate.generate(N), tmp_path, "plain")
    print(result.line())
    assert result.changed > 0
    assert result.left_alone == 0
    assert result.exact
