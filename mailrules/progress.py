"""Progress of a long catch-up: periodic counts in the log, and a bar on a terminal.

The daemon (and `run --once`) catch up on a large backlog in slices (the checkpoint
advances after each); `CatchUp` is told how many messages each slice dealt with and logs at
most every `interval` seconds, so a log shows steady progress.

On a terminal (stderr is a tty) a bar is drawn with `rich`, and log lines are written
through the same `rich` console (`TerminalHandler`), which clears the bar, writes the line
and draws the bar again below it: a log line never lands in the middle of the bar. Without
a terminal no bar is drawn at all. `cli.setup_logging` decides, through `attach_terminal`.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # rich is imported only when there is a terminal to draw on (start-up cost)
    from rich.console import Console
    from rich.progress import Progress, TaskID

log = logging.getLogger("mailrules.progress")

LOG_INTERVAL = 5.0  # seconds between progress lines in the log
CATCHING_UP = ("catching up", "caught up", "messages")  # CatchUp's wording: doing, done, unit

_lock = threading.Lock()
_console: Console | None = None  # the terminal's console, shared by the bars and the log handler
_progress: Progress | None = None  # the bars on screen (one per mailbox catching up)
_bars = 0


def attach_terminal(stream: TextIO) -> Console | None:
    """A console on `stream` for the bars and the log lines, if `stream` is a terminal (else None).

    Replaces any earlier one (and ends its bars). Call `detach_terminal` to go back to no bars.
    """
    detach_terminal()
    if not _is_terminal(stream):
        return None
    from rich.console import Console

    console = Console(file=stream, highlight=False, emoji=False, markup=False, soft_wrap=True)
    global _console
    with _lock:
        _console = console
    return console


def detach_terminal() -> None:
    """No more bars: the ones on screen are removed."""
    global _console, _progress, _bars
    with _lock:
        progress, _progress, _console, _bars = _progress, None, None, 0
    if progress is not None:
        progress.stop()


atexit.register(detach_terminal)  # never leave the terminal with its cursor hidden


class TerminalHandler(logging.Handler):
    """Writes log lines through the terminal's console, so that they go above the bars."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            self.console.out(text, highlight=False)
        except Exception:  # noqa: BLE001 - logging must never raise (logging's own rule)
            self.handleError(record)


def _start_bar(description: str, total: int) -> tuple[Progress, TaskID] | None:
    global _progress, _bars
    with _lock:
        if _console is None:
            return None
        if _progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            _progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=_console, transient=True, redirect_stdout=False, redirect_stderr=False,
            )
            _progress.start()
        _bars += 1
        return _progress, _progress.add_task(description, total=total)


def _end_bar(progress: Progress, task: TaskID) -> None:
    global _progress, _bars
    with _lock:
        if progress is not _progress:
            return  # detached meanwhile
        progress.remove_task(task)
        _bars -= 1
        if _bars > 0:
            return
        _progress = None
    progress.stop()


class CatchUp:
    """Progress of one mailbox's catch-up over `total` messages.

    stream: where a bar would go; a stream that is not a terminal gets none (default:
    the terminal given to `attach_terminal`, if any).
    """

    def __init__(self, account: str, mailbox: str, total: int, *, stream: TextIO | None = None,
                 interval: float = LOG_INTERVAL, words: tuple[str, str, str] = CATCHING_UP) -> None:
        self.words = words  # (doing, done, unit): the log lines' wording
        self.account = account
        self.mailbox = mailbox
        self.total = max(total, 0)
        self.done = 0
        self.started = time.monotonic()
        self.interval = interval
        self._last_log = self.started
        fields = {"event": "progress", "account": account, "mailbox": mailbox}
        self._extra = fields
        log.info("account %s mailbox %s: %s on %d %s", account, mailbox, words[0], self.total, words[2],
                 extra={**fields, "count": self.total})
        wanted = stream is None or _is_terminal(stream)
        self._bar = _start_bar(f"{account} {mailbox}", self.total) if wanted else None

    @property
    def bar(self) -> bool:
        """Whether a bar is drawn (a terminal is attached)."""
        return self._bar is not None

    def advance(self, n: int, *, total: int | None = None) -> None:
        self.done += n
        if total is not None:
            self.total = max(total, self.done)
        now = time.monotonic()
        if self._bar is not None:
            progress, task = self._bar
            progress.update(task, completed=self.done, total=self.total)
        if now - self._last_log >= self.interval:
            self._last_log = now
            rate = self.done / max(now - self.started, 1e-6)
            log.info("account %s mailbox %s: %s: %d of %d %s (%.0f/s)",
                     self.account, self.mailbox, self.words[0], self.done, self.total, self.words[2], rate,
                     extra={**self._extra, "count": self.done})

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        if self._bar is not None:
            _end_bar(*self._bar)
            self._bar = None
        log.info("account %s mailbox %s: %s on %d %s in %.1fs",
                 self.account, self.mailbox, self.words[1], self.done, self.words[2], elapsed, extra={**self._extra, "count": self.done})


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
