"""Crash a pass in the middle of an action, for real, to test what resuming does.

`crash_during(runner, "record")` runs one pass of a `mailrules.testing.rules.RulesRunner` in a
forked child process that dies with ``os._exit`` (no cleanup, no flush, as a SIGKILL or a
power cut would leave it) when the action named "record" is carried out: by default right
after its ``run`` returned (the action did its work; mailrules had not yet recorded it as
done), or with ``before=True`` right before ``run`` is called (the journal says it started).
The parent waits for the child; the next ``runner.run()`` is then the restart, which resumes
as ``mailrules run`` would: an ``at-least-once`` action is run again for the batch, an
``at-most-once`` one is not. So an idempotent action's test reads::

    crash_during(runner, "record")      # run() did its work, then the process died
    runner.run()                        # the restart: run() is called again for the batch
    assert lines_written == 1           # idempotent: the second call changed nothing

The action must be a plugin's (an `Action` with ``run``). POSIX only (fork).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Any, Protocol

__all__ = ["CRASH_STATUS", "crash_during"]

CRASH_STATUS = 86  # the child's exit status when it died as asked (any other: it did not get there)


class RulesRunner(Protocol):
    """What is asked of the runner (`mailrules.testing.rules.RulesRunner`, which imports this module)."""

    registry: Any

    def run(self) -> Any: ...


def crash_during(runner: RulesRunner, action: str, *, before: bool = False, batch: int = 1,
                 timeout: float = 120.0) -> None:
    """One pass of `runner` that dies in the `batch`-th call of `action` (see the module doc).

    Raises AssertionError if the pass ended without reaching it, or took longer than `timeout`.
    """
    original = runner.registry.actions.get(action)
    if original is None or not callable(original.run):
        raise ValueError(f"crash_during: {action!r} is not a plugin action with run() (known: "
                         f"{', '.join(sorted(runner.registry.actions))})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork() may deadlock"
        pid = os.fork()
    if pid == 0:  # the child: never returns
        _child(runner, original, before, batch)
    status = _wait(pid, timeout)
    if status != CRASH_STATUS:
        raise AssertionError(f"crash_during: the pass ended (status {status}) without reaching "
                             f"call {batch} of action {action!r}")


def _child(runner: RulesRunner, original: Any, before: bool, batch: int) -> None:
    calls = 0

    def run(context: Any, uids: Any, arg: Any) -> None:
        nonlocal calls
        calls += 1
        if before and calls == batch:
            os._exit(CRASH_STATUS)
        original.run(context, uids, arg)
        if calls == batch:
            os._exit(CRASH_STATUS)

    status = 1
    try:
        runner.registry.actions[original.name] = dataclasses.replace(original, run=run)
        runner.run()
        status = 0
    finally:
        os._exit(status)


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"crash_during: the pass did not reach the crash within {timeout:g}s")
        time.sleep(0.02)
