"""`run --shard I/N`: which accounts this process serves when N processes share the rules file.

N processes (on N machines, placed by an orchestrator such as a Kubernetes StatefulSet)
run the same rules file, each with its own state directory; process I serves the accounts
whose *stable* hash falls in shard I of N. The hash is the first 8 bytes of SHA-256 of the
account's name, the same in every process, Python version and machine (Python's `hash()`
is salted per process, so two processes would disagree). No coordinator: the partition
is a pure function of (name, N), so every account is served by exactly one of the N
processes, and a restarted process serves the same accounts again with its own journal.

The value comes from ``--shard`` or, failing that, the environment variable
``MAILRULES_SHARD``: ``I/N`` with 0 <= I < N, or ``NAME-I/N`` where ``NAME-I`` is a pod
name (``mailrules-2/3`` is shard 2 of 3), so that a StatefulSet can pass
``$(POD_NAME)/3``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from ..model import Account, Config

SHARD_ENV = "MAILRULES_SHARD"
SHARD_META = "daemon:shard"  # state meta: 'shard I/N: accounts ...' as of the daemon's last start (for status)
_SHARD = re.compile(r"(?:.+-)?(\d+)/(\d+)")


class ShardError(ValueError):
    """A --shard or MAILRULES_SHARD value that cannot be used (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based)."""

    index: int
    count: int

    def owns(self, account: str) -> bool:
        return shard_of(account, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(account: str, count: int) -> int:
    """The shard (0-based, of `count`) an account belongs to: stable across processes and machines."""
    digest = hashlib.sha256(account.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str, origin: str = "--shard") -> Shard:
    """``I/N`` or ``POD-NAME-I/N`` -> Shard; ShardError (naming `origin`) for anything else."""
    value = text.strip()
    match = _SHARD.fullmatch(value)
    if match is None:
        raise ShardError(f"{origin} {text!r}: expected I/N (shard I of N, counted from 0, e.g. 0/3), "
                         "or a pod name ending in -I followed by /N (e.g. mailrules-2/3)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ShardError(f"{origin} {text!r}: the number of shards N must be at least 1")
    if index >= count:
        raise ShardError(f"{origin} {text!r}: shard I must be between 0 and {count - 1} (shards count from 0)")
    return Shard(index, count)


def shard_option(argument: str | None, environ: dict[str, str]) -> Shard | None:
    """The shard asked for: --shard, else $MAILRULES_SHARD (empty: none), else None (every account)."""
    if argument is not None:
        return parse_shard(argument, "--shard")
    value = environ.get(SHARD_ENV, "")
    if value.strip():
        return parse_shard(value, SHARD_ENV)
    return None


def served_accounts(config: Config, shard: Shard | None) -> list[Account]:
    """The accounts this process serves (all of them for None), in file order."""
    return [a for a in config.accounts.values() if shard is None or shard.owns(a.name)]


def shard_view(config: Config, shard: Shard | None) -> Config:
    """`config` as the served accounts see it: for what is *reported* (health, status), never for the engine.

    The engine keeps the whole account list: a rule's cross-account copy or move reaches its
    destination account (a connection of its own) whichever shard that account is served by.
    """
    if shard is None:
        return config
    return dataclasses.replace(config, accounts={a.name: a for a in served_accounts(config, shard)})


def describe_shard(shard: Shard, config: Config) -> str:
    """'shard 1/3: accounts a, b (2 of 5)' for the log and `mailrules status`."""
    served = served_accounts(config, shard)
    names = ", ".join(a.name for a in served) or "none"
    return f"shard {shard}: accounts {names} ({len(served)} of {len(config.accounts)})"
