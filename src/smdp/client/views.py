"""The mailbox as ``smdp client`` prints it: labelled columns, every entry by
its id (the one the other commands take), and the command that acts on it."""

from __future__ import annotations

from collections.abc import Sequence

from smdp.protocol import user as wire

ENVELOPE_COLUMNS = ("ID", "STATE", "FROM", "SIZE", "ATTACHMENTS", "SUBJECT")
MESSAGE_COLUMNS = ("ID", "SIZE", "SUBJECT")


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last one is not padded."""
    widths = [max(len(str(r[i])) for r in (columns, *rows)) for i in range(len(columns) - 1)]
    return ["  ".join([*(f"{c:<{w}}" for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
            for r in (columns, *rows)]


def _fields(line: str, count: int) -> list[str]:
    """``count`` space-separated fields; the last (a subject) is the rest, maybe empty."""
    parts = line.split(" ", count - 1)
    return parts + [""] * (count - len(parts))


def envelopes(reply: wire.UserReply) -> str:
    """ENVS / ENVS ALL: ``<id> <state> <sender> <size> <attachments> <subject>``."""
    rows = [_fields(line, len(ENVELOPE_COLUMNS)) for line in reply.lines or []]
    if not rows:
        return reply.text
    return "\n".join([reply.text, *table(ENVELOPE_COLUMNS, rows)])


def inbox(reply: wire.UserReply) -> str:
    """PWD's answer: the envelopes awaiting a decision, then the messages."""
    pending, messages = [], []
    for line in reply.lines or []:
        kind, _, rest = line.partition(" ")
        if kind == "envelope":
            pending.append(_fields(rest, len(ENVELOPE_COLUMNS)))
        elif kind == "message":
            messages.append(_fields(rest, len(MESSAGE_COLUMNS)))
    out = [reply.text]
    if pending:
        columns = [c for c in ENVELOPE_COLUMNS if c != "STATE"]
        out += ["", "Envelopes awaiting your decision "
                    "(smdp client show|accept|accept-auth|reject|reject-spam|reject-spammer ID):",
                *table(columns, [[r[0], *r[2:]] for r in pending])]
    if messages:
        out += ["", "Messages (smdp client read|delete ID):", *table(MESSAGE_COLUMNS, messages)]
    return "\n".join(out)
