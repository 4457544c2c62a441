"""Retry delays: the fast reconnection backoff, and the slow one for problems that will not cure themselves."""

from __future__ import annotations

import random

from ..model import Account

HEALTHY_AFTER = 30.0  # a connection that lived this long resets the reconnection backoff
# A permanent problem (login refused, TLS failure, watched mailbox missing) will not go away by
# itself within seconds: it is retried from this delay, doubling up to PERMANENT_RETRY_MAX (or
# the account's reconnect_max if larger), not with the fast reconnection backoff.
PERMANENT_RETRY_BASE = 30.0
PERMANENT_RETRY_MAX = 900.0


class Backoff:
    """Exponential backoff with jitter and a cap: 1 s, 2 s, 4 s ... up to `cap`, each x [0.5, 1)."""

    def __init__(self, cap: float, base: float = 1.0) -> None:
        self.cap = max(cap, 0.05)
        self.base = base
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


def slow_backoff(account: Account) -> Backoff:
    """The backoff for permanent problems (see PERMANENT_RETRY_BASE)."""
    return Backoff(max(PERMANENT_RETRY_MAX, account.reconnect_max), base=PERMANENT_RETRY_BASE)
