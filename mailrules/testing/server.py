"""What the test kit's private IMAP servers (`mailrules.testing.dovecot.DovecotServer`,
`mailrules.testing.cyrus.CyrusServer`) do alike, written once: the context-manager life cycle
on top of each server's own ``start``/``stop``, how they print, and the book of the users
they created.

Only what is the same whatever the server lives here; configuration, processes and mail are
each server's own (they differ in every line).
"""

from __future__ import annotations

import itertools
import re
import secrets
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self


@dataclass(frozen=True)
class User:
    """An IMAP account of a test server."""

    name: str
    password: str


class UserBook:
    """The users a server created (name -> user), unique default names, and the lock that
    makes ``add_user`` safe from several threads."""

    def __init__(self) -> None:
        self.by_name: dict[str, User] = {}
        self.seq = itertools.count(1)
        self.lock = threading.Lock()

    def fresh_name(self) -> str:
        """A new ``userN-xxxx`` name (unique per server, unlikely to clash across servers)."""
        return f"user{next(self.seq)}-{secrets.token_hex(2)}"

    def add(self, name: str | None, password: str | None, valid: re.Pattern[str],
            register: Callable[[User], None], rule: str = "") -> User:
        """A new user (`name` default ``userN-xxxx``, `password` default a random token), made
        known to the server by `register` before it is booked; `rule` says what `valid` wants."""
        with self.lock:
            if name is None:
                name = self.fresh_name()
            if not valid.match(name):
                raise ValueError(f"invalid test user name {name!r}{rule}")
            if name in self.by_name:
                raise ValueError(f"user {name!r} already exists")
            user = User(name, password if password is not None else secrets.token_hex(8))
            register(user)
            self.by_name[name] = user
            return user


class LocalServer:
    """A private server on 127.0.0.1 under a directory ``root``: a context manager that starts it
    and stops it (every process it started), restartable with the same users and mail."""

    host = "127.0.0.1"

    def __init__(self, root: Path, port: int) -> None:
        self.root = Path(root).resolve()
        self.port: int = port
        self.book = UserBook()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        """True while the server's master process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def users(self) -> list[User]:
        """Users created with ``add_user`` (not an admin)."""
        return list(self.book.by_name.values())

    def restart(self) -> None:
        """Stop and start again on the same port(s), with the same users and mail."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} root={self.root}>"
