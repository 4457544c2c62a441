"""Deterministic generator of a realistic benchmark mailbox.

`generate(n, seed, now)` returns `n` messages (`GeneratedMessage`: raw RFC 5322 bytes, arrival
time, initial \\Seen state). The same `(n, seed, now)` always gives the same bytes; `now` only
shifts the arrival times (they are relative to it, so age rules see the same ages on every run).

The mix (by weight):
  - five mailing lists with List-Id headers: dev, users, announce, ci (build reports), security;
  - GitHub-style notifications, a vendor domain, colleagues, strangers, some spam (X-Spam-Flag);
  - sizes from a few hundred bytes to ~470 KB: ~3% of messages are larger than 100 KB
    (base64 attachments), ~8% carry a small attachment;
  - multipart/alternative HTML, quoted-printable UTF-8 bodies and RFC 2047 subjects;
  - arrival dates (INTERNALDATE, delivered as the Maildir file's mtime) spread over 90 days,
    in one-day slots (each message arrives in the middle of its day, see SLOT; the Date:
    header keeps the exact time), with NO message between 57 and 63 days old: the 60-day age rule is expressed exactly by
    mailrules (OLDER, seconds) and day-granularly by imapfilter (BEFORE date); the gap makes
    both select the same messages whatever the time of day;
  - ~2.5% of bodies contain `build #NNNN failed` (the body-regex benchmark), always in a
    7bit text/plain part, so a raw-body matcher (imapfilter) and a decoded-text matcher
    (mailrules) agree; near misses (`Build #12 failed`, `build #abc failed`, the pattern only
    in the Subject) are included on purpose.

Run as a script to write the messages as .eml files (mtime = arrival time) and print a summary:

    python bench/generate.py --messages 10000 --out /tmp/bench-mail
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime
from pathlib import Path

DEFAULT_SEED = 20260121
DEFAULT_MESSAGES = 10_000
DAY = 86_400
SPREAD_DAYS = 90
# No arrival times in this band (days); see the module docstring.
AGE_GAP = (57.0, 63.0)
# Arrival times are delivered in slots of this length (the middle of the slot): the test kit
# sets one mtime per deliver_files() call, so the mailbox is filled with one call per
# (slot, flags) group: 90 days x {seen, unseen} = ~180 calls, a few seconds for 10,000 messages.
SLOT = DAY

BODY_PATTERN_PY = r"build #\d+ failed"
BODY_PATTERN_PCRE = "build #[0-9]+ failed"

LISTS = {
    "dev": ("dev.lists.example.org", "dev@lists.example.org"),
    "users": ("users.lists.example.net", "users@lists.example.net"),
    "announce": ("announce.example.com", "announce@example.com"),
    "ci": ("ci.example.org", "ci-reports@ci.example.org"),
    "security": ("security.lists.example.org", "security@lists.example.org"),
}

# category -> weight
CATEGORIES = [
    ("dev", 14),
    ("users", 10),
    ("announce", 4),
    ("ci", 9),
    ("security", 3),
    ("github", 9),
    ("vendor", 5),
    ("colleague", 20),
    ("stranger", 22),
    ("spam", 4),
]

FIRST = [
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
    "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoë", "Jörg", "Ana",
    "Łukasz", "Søren", "Hiro", "Priya", "Chen", "Fatima", "Omar", "Ines",
]
LAST = [
    "Smith", "Jones", "Müller", "García", "Rossi", "Dubois", "Nowak", "Kim", "Tanaka", "Silva",
    "Novák", "Olsen", "Patel", "Cohen", "Ivanova", "Brown", "Martin", "Lee", "Costa", "Weber",
]
DOMAINS_STRANGER = [
    "gmail.example", "yahoo.example", "mail.example.net", "fastmail.example", "uni-example.edu",
    "isp.example.co.uk", "posteo.example", "web.example.de", "orange.example.fr", "proton.example",
]
WORDS = ["the", "a", "to", "of", "and", "in", "that", "is", "for", "it", "on", "with", "as", "was", "this", "be", "at", "by", "from", "or", "have", "not", "are", "we", "can", "will", "but", "you", "all", "they", "patch", "release", "build", "test", "server", "client", "mailbox", "folder", "message", "filter", "rule", "index", "cache", "kernel", "driver", "memory", "thread", "lock", "queue", "commit", "branch", "merge", "review", "change", "version", "update", "issue", "bug", "fix", "crash", "error", "warning", "config", "option", "default", "value", "user", "account", "network", "timeout", "latency", "request", "response", "header", "body", "search", "sort", "thread", "performance", "benchmark", "regression", "upstream", "downstream", "maintainer", "tree", "stable", "backport", "please", "thanks", "think", "should", "would", "could", "maybe", "because", "however", "although", "meeting", "tomorrow", "today", "week", "report", "status", "plan", "deadline", "customer", "invoice", "order", "shipment", "schedule", "agenda", "notes", "summary", "draft"]
SUBJECT_TOPICS = [
    "Re: proposal for the new index format", "question about IMAP IDLE timeouts",
    "[PATCH v3 2/7] mailbox: avoid double lock", "Weekly sync notes", "Q3 planning",
    "Re: Re: crash on startup with empty config", "Lunch on Friday?", "Your invoice",
    "Fwd: conference travel", "RFC: drop support for old servers", "minutes of the call",
    "Re: [PATCH] fix memory leak in parser", "help with search performance",
    "Release candidate 2 is out", "review request: sorting by date", "Holiday schedule",
    "Réunion de lundi", "Frage zur Konfiguration", "Äpfel und Birnen", "Résumé of the discussion",
]


@dataclass(frozen=True)
class GeneratedMessage:
    """One generated message: raw bytes (LF line endings), arrival time, initial flags."""

    message_id: str
    data: bytes
    internaldate: float
    seen: bool
    category: str

    @property
    def flags(self) -> tuple[str, ...]:
        return ("\\Seen",) if self.seen else ()


def _sentence(rng: random.Random, lo: int = 6, hi: int = 18) -> list[str]:
    words = rng.choices(WORDS, k=rng.randint(lo, hi))
    words[0] = words[0].capitalize()
    words[-1] += rng.choice(".....?!")
    return words


def _wrap(words: list[str], width: int = 72) -> str:
    lines: list[str] = []
    line: list[str] = []
    n = 0
    for w in words:
        if line and n + 1 + len(w) > width:
            lines.append(" ".join(line))
            line, n = [], 0
        line.append(w)
        n += len(w) + (1 if n else 0)
    if line:
        lines.append(" ".join(line))
    return "\n".join(lines)


def _paragraphs(rng: random.Random, target_bytes: int) -> str:
    out: list[str] = []
    size = 0
    while size < target_bytes:
        words: list[str] = []
        for _ in range(rng.randint(2, 6)):
            words += _sentence(rng)
        wrapped = _wrap(words)
        out.append(wrapped)
        size += len(wrapped) + 2
    return "\n\n".join(out)


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _addr_header(name: str, addr: str) -> str:
    try:
        name.encode("ascii")
        return f'"{name}" <{addr}>'
    except UnicodeEncodeError:
        return f"{Header(name, 'utf-8').encode()} <{addr}>"


def _subject_header(subject: str) -> str:
    try:
        subject.encode("ascii")
        return subject
    except UnicodeEncodeError:
        return Header(subject, "utf-8").encode()


def _qp_utf8(text: str) -> str:
    import quopri

    return quopri.encodestring(text.encode("utf-8")).decode("ascii")


def _arrival(rng: random.Random, now: float) -> tuple[float, float]:
    """(real arrival time, delivered arrival time): the latter is the middle of its day slot."""
    lo, hi = AGE_GAP
    while True:
        # More recent mail is more common: a skew towards young ages.
        age_days = SPREAD_DAYS * (rng.random() ** 1.4)
        if lo <= age_days <= hi or age_days * DAY < 600:
            continue
        arrival = float(int(now - age_days * DAY))
        slot = int(age_days * DAY // SLOT)
        return arrival, float(int(now - (slot + 0.5) * SLOT))


def _one(i: int, rng: random.Random, now: float, common_literal: bool = False) -> GeneratedMessage:
    category = rng.choices([c for c, _ in CATEGORIES], weights=[w for _, w in CATEGORIES])[0]
    arrival, delivered = _arrival(rng, now)
    sent = arrival - rng.randint(2, 900)
    age_days = (now - arrival) / DAY
    # Older mail is more likely to have been read already.
    seen = rng.random() < (0.25 + 0.6 * min(age_days / SPREAD_DAYS, 1.0))
    msgid = f"<{i:06d}.{rng.getrandbits(40):010x}@bench.mailrules.example>"
    to_name, to_addr = "Bench User", "user@corp.example.com"
    headers: list[tuple[str, str]] = []
    subject = rng.choice(SUBJECT_TOPICS)
    body_text = ""
    pattern_in_body = False
    extra_lines: list[str] = []

    if category in LISTS:
        list_id, list_addr = LISTS[category]
        name = _name(rng)
        from_addr = f"{name.split()[0].lower().encode('ascii', 'ignore').decode() or 'x'}{i % 97}@" + rng.choice(
            DOMAINS_STRANGER
        )
        from_h = _addr_header(name, from_addr)
        to_h = f"<{list_addr}>"
        headers += [
            ("List-Id", f"{category.capitalize()} list <{list_id}>"),
            ("List-Unsubscribe", f"<mailto:{list_addr.replace('@', '-unsubscribe@')}>"),
            ("List-Post", f"<mailto:{list_addr}>"),
            ("Precedence", "list"),
        ]
        if category == "ci":
            build = rng.randint(1000, 99999)
            failed = rng.random() < 0.3
            status = "failed" if failed else "passed"
            project = rng.choice(["mailrules", "indexer", "webmail", "sync"])
            subject = f"[ci] {project}: Build #{build} {status}"
            from_h = '"CI Bot" <ci-bot@ci.example.org>'
            log = "\n".join(
                f"[{j:04d}] step {rng.choice(WORDS)} {rng.choice(['ok', 'ok', 'ok', 'skipped'])}"
                for j in range(rng.randint(10, 120))
            )
            if failed:
                body_text = f"Hello,\n\nbuild #{build} failed on runner-{rng.randint(1, 9)}.\n\n{log}\n"
                pattern_in_body = True
            else:
                body_text = f"Hello,\n\nbuild #{build} passed on runner-{rng.randint(1, 9)}.\n\n{log}\n"
        else:
            subject = f"[{category}] {subject}"
    elif category == "github":
        repo = rng.choice(["mailrules/mailrules", "imapfilter/imapfilter", "dovecot/core"])
        num = rng.randint(10, 5000)
        subject = f"Re: [{repo}] {rng.choice(SUBJECT_TOPICS)} (#{num})"
        from_h = f'"{_name(rng)}" <notifications@github.com>'
        to_h = f'"{repo}" <{repo.split("/")[1]}@noreply.github.com>'
        headers += [
            ("X-GitHub-Reason", rng.choice(["subscribed", "mention", "review_requested"])),
            ("List-Unsubscribe", "<https://github.com/notifications/unsubscribe>"),
        ]
    elif category == "vendor":
        name = _name(rng)
        local = rng.choice(["sales", "billing", "support", "noreply"])
        from_h = _addr_header(f"{name} (Vendor Inc.)", f"{local}@vendor.example.com")
        to_h = _addr_header(to_name, to_addr)
        subject = rng.choice(["Your invoice", "Renewal notice", "Ticket update", "Product news"])
        subject += f" {rng.randint(10000, 99999)}"
    elif category == "colleague":
        name = _name(rng)
        first = name.split()[0].lower().encode("ascii", "ignore").decode() or "c"
        from_h = _addr_header(name, f"{first}.{i % 50}@corp.example.com")
        to_h = _addr_header(to_name, to_addr)
        if rng.random() < 0.2:
            headers.append(("Cc", _addr_header(_name(rng), f"team{i % 7}@corp.example.com")))
    elif category == "spam":
        from_h = f'"Winner Notification" <promo{i}@spam{i % 13}.example.biz>'
        to_h = _addr_header(to_name, to_addr)
        subject = rng.choice(["You have WON", "Cheap meds", "Urgent business proposal", "Re: your account"])
        headers += [("X-Spam-Flag", "YES"), ("X-Spam-Score", f"{rng.uniform(6, 25):.1f}")]
    else:  # stranger
        name = _name(rng)
        first = name.split()[0].lower().encode("ascii", "ignore").decode() or "s"
        from_h = _addr_header(name, f"{first}{i % 311}@{rng.choice(DOMAINS_STRANGER)}")
        to_h = _addr_header(to_name, to_addr)

    if not body_text:
        body_text = "Hi,\n\n" + _paragraphs(rng, rng.choice([300, 800, 1500, 3000, 6000, 12000])) + "\n"
        roll = rng.random()
        if roll < 0.012:
            # Someone quoting a failed build in a discussion: a real match.
            body_text += f"\nFWIW build #{rng.randint(100, 9999)} failed for me too.\n"
            pattern_in_body = True
        elif roll < 0.02:
            body_text += f"\nBuild #{rng.randint(100, 9999)} failed (capital B: no match).\n"
        elif roll < 0.028:
            body_text += "\nbuild #abc failed? build # failed? (no digits: no match)\n"
        elif roll < 0.034:
            subject = f"build #{rng.randint(100, 9999)} failed (subject only)"
    if common_literal and i % 10:
        # the worst case for the server prefilter (BODY "build #"): the literal in 90% of bodies
        body_text += f"\nPrevious: build #{1000 + i} passed.\n"
    body_text += f"\n-- \n{rng.choice(FIRST)}\n"

    # Encoding: non-ASCII bodies are quoted-printable, never those with the pattern.
    non_ascii = any(ord(c) > 127 for c in body_text)
    if rng.random() < 0.08 and not pattern_in_body:
        body_text = body_text.replace("the ", "thé ", 3)
        non_ascii = True

    size_roll = rng.random()
    attachment: tuple[str, bytes] | None = None
    if size_roll < 0.03:
        attachment = ("report.pdf", rng.randbytes(rng.randint(105_000, 350_000)))
    elif size_roll < 0.11:
        attachment = ("image.png", rng.randbytes(rng.randint(3_000, 60_000)))

    lines = [
        f"Return-Path: <bounce-{i}@bench.example>",
        f"Received: from mx{i % 4}.corp.example.com (mx{i % 4}.corp.example.com [192.0.2.{i % 250 + 1}])\n"
        f"\tby imap.corp.example.com with ESMTPS id {rng.getrandbits(48):012x}\n"
        f"\tfor <{to_addr}>; {format_datetime(datetime.fromtimestamp(arrival, UTC))}",
        f"From: {from_h}",
        f"To: {to_h}",
    ]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += [
        f"Subject: {_subject_header(subject)}",
        f"Date: {format_datetime(datetime.fromtimestamp(sent, UTC))}",
        f"Message-ID: {msgid}",
        "MIME-Version: 1.0",
    ]
    lines += extra_lines

    if non_ascii:
        text_part_headers = ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"]
        text_part_body = _qp_utf8(body_text)
    else:
        text_part_headers = ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"]
        text_part_body = body_text

    html_alt = category in ("vendor", "spam", "github") and not pattern_in_body
    boundary = f"=_bench_{i:06d}_{rng.getrandbits(32):08x}"
    if attachment is None and not html_alt:
        lines += text_part_headers
        msg = "\n".join(lines) + "\n\n" + text_part_body
    else:
        parts: list[str] = []
        text_block = "\n".join(text_part_headers) + "\n\n" + text_part_body
        if html_alt:
            inner = f"=_alt_{i:06d}"
            html = "<html><body>" + "".join(
                f"<p>{p}</p>" for p in body_text.replace("&", "&amp;").replace("<", "&lt;").split("\n\n")
            ) + "</body></html>\n"
            html_block = "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" + _qp_utf8(html)
            text_block = (
                f'Content-Type: multipart/alternative; boundary="{inner}"\n\n'
                f"--{inner}\n{text_block}\n--{inner}\n{html_block}\n--{inner}--\n"
            )
        parts.append(text_block)
        if attachment is not None:
            fname, blob = attachment
            ctype = "application/pdf" if fname.endswith(".pdf") else "image/png"
            b64 = base64.encodebytes(blob).decode("ascii")
            parts.append(
                f'Content-Type: {ctype}; name="{fname}"\nContent-Transfer-Encoding: base64\n'
                f'Content-Disposition: attachment; filename="{fname}"\n\n{b64}'
            )
        if attachment is None:
            # multipart/alternative only
            lines += [text_block.split("\n\n", 1)[0]]
            msg = "\n".join(lines) + "\n\n" + text_block.split("\n\n", 1)[1]
        else:
            lines += [f'Content-Type: multipart/mixed; boundary="{boundary}"']
            body = "This is a multi-part message in MIME format.\n"
            for p in parts:
                body += f"\n--{boundary}\n{p}"
            body += f"\n--{boundary}--\n"
            msg = "\n".join(lines) + "\n\n" + body

    return GeneratedMessage(
        message_id=msgid,
        data=msg.encode("utf-8"),
        internaldate=delivered,
        seen=seen,
        category=category,
    )


def generate(n: int = DEFAULT_MESSAGES, seed: int = DEFAULT_SEED, now: float | None = None,
             common_literal: bool = False) -> list[GeneratedMessage]:
    """`n` messages, deterministic for a given seed; arrival times relative to `now`.

    `common_literal`: 90% of bodies also say `build #N passed` (no match, but the body-regex
    prefilter's literal `build #` is in them: the server's BODY search cannot narrow).
    """
    if now is None:
        now = time.time()
    rng = random.Random(seed)
    return [_one(i, rng, now, common_literal) for i in range(n)]


def summary(messages: list[GeneratedMessage]) -> str:
    cats = Counter(m.category for m in messages)
    sizes = [len(m.data) for m in messages]
    big = sum(1 for s in sizes if s > 100 * 1024)
    pattern = sum(1 for m in messages if b"build #" in m.data and _has_pattern(m.data))
    seen = sum(m.seen for m in messages)
    return (
        f"{len(messages)} messages, {sum(sizes) / 1e6:.1f} MB, {big} > 100 KB, "
        f"{seen} seen, {pattern} with the body pattern; "
        + ", ".join(f"{c}={n}" for c, n in sorted(cats.items()))
    )


def _has_pattern(data: bytes) -> bool:
    import re

    head, _, body = data.partition(b"\n\n")
    return re.search(BODY_PATTERN_PY.encode(), body) is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=DEFAULT_MESSAGES)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, help="write NNNNNN.eml files here (mtime = arrival time)")
    args = ap.parse_args(argv)
    msgs = generate(args.messages, args.seed)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(msgs):
            p = args.out / f"{i:06d}.eml"
            p.write_bytes(m.data)
            os.utime(p, (m.internaldate, m.internaldate))
    print(summary(msgs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
