"""What to FETCH for the message parts predicates and actions need, and the views built from it.

`Predicate.needs` (and `ActionContext.messages`) name parts ("header:Name", "headers",
"message", "size", "flags", "arrival"); `fetch_items` turns them into one UID FETCH's items
(and its batch size: whole messages are fetched in smaller batches, bounding memory), and
`view_of` builds the `MessageView` of one FETCH answer.
"""

from __future__ import annotations

from .imap.session import BODY_FETCH_BATCH, FETCH_BATCH
from .message import MessageView


def fetch_items(needs: set[str] | frozenset[str]) -> tuple[list[str], int]:
    """The FETCH items for these (normalised) needs, and the batch size to fetch them in."""
    items: list[str] = []
    batch = FETCH_BATCH
    if "message" in needs:
        items.append("BODY.PEEK[]")
        batch = BODY_FETCH_BATCH
    elif "headers" in needs:
        items.append("BODY.PEEK[HEADER]")
    else:
        fields = sorted({n.split(":", 1)[1].upper() for n in needs if n.startswith("header:")} | {"MESSAGE-ID"})
        items.append(f"BODY.PEEK[HEADER.FIELDS ({' '.join(fields)})]")
    if "size" in needs:
        items.append("RFC822.SIZE")
    if "flags" in needs:
        items.append("FLAGS")
    if "arrival" in needs:
        items.append("INTERNALDATE")
    return items, batch


def view_of(uid: int, data: dict) -> MessageView:
    """The `MessageView` of one UID FETCH answer (`data`: item name -> value, as imapclient gives)."""
    raw = data.get(b"BODY[]")
    header = None
    if raw is None:
        header = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), None)
    flags = tuple(f.decode() if isinstance(f, bytes) else f for f in data.get(b"FLAGS", ()))
    arrived = data.get(b"INTERNALDATE")
    if arrived is not None and arrived.tzinfo is None:
        arrived = arrived.astimezone()  # imapclient gives local naive times by default
    return MessageView(uid, raw=raw, raw_header=header, size=data.get(b"RFC822.SIZE"), flags=flags,
                       arrived=arrived)
