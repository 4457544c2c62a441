"""Progress of a long catch-up: periodic counts in the log, and a bar on a terminal.

The daemon catches up on a large backlog in slices (the checkpoint advances after each);
`CatchUp` is told how many messages each slice dealt with and reports at most every
`interval` seconds, so a log shows steady progress and an interactive terminal a bar.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("mailrules.progress")

LOG_INTERVAL = 5.0  # seconds between progress lines in the log
BAR_WIDTH = 30


class CatchUp:
    """Progress of one mailbox's catch-up over `total` messages."""

    def __init__(self, account: str, mailbox: str, total: int, *, stream: TextIO | None = None,
                 interval: float = LOG_INTERVAL) -> None:
        self.account = account
        self.mailbox = mailbox
        self.total = max(total, 0)
        self.done = 0
        self.started = time.monotonic()
        self.interval = interval
        self._last_log = self.started
        self.stream = stream if stream is not None else sys.stderr
        self.bar = _is_terminal(self.stream)
        log.info("account %s mailbox %s: catching up on %d messages", account, mailbox, self.total)

    def advance(self, n: int, *, total: int | None = None) -> None:
        self.done += n
        if total is not None:
            self.total = max(total, self.done)
        now = time.monotonic()
        if self.bar:
            self._draw()
        if now - self._last_log >= self.interval:
            self._last_log = now
            rate = self.done / max(now - self.started, 1e-6)
            log.info("account %s mailbox %s: catching up: %d of %d messages (%.0f/s)",
                     self.account, self.mailbox, self.done, self.total, rate)

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        if self.bar:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
        log.info("account %s mailbox %s: caught up on %d messages in %.1fs",
                 self.account, self.mailbox, self.done, elapsed)

    def _draw(self) -> None:
        frac = self.done / self.total if self.total else 1.0
        filled = int(BAR_WIDTH * min(frac, 1.0))
        self.stream.write(f"\r{self.account} {self.mailbox} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                          f"{self.done}/{self.total}")
        self.stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
