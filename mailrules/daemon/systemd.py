"""systemd's notification protocol (``Type=notify``): READY=1, RELOADING=1, STOPPING=1, STATUS=."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("mailrules.watcher")


def sd_notify(message: str) -> bool:
    """Send a systemd notification (``READY=1`` ...) if started with ``Type=notify``."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", address, exc)
        return False
