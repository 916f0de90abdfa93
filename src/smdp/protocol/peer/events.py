"""The peer port's events (wire contract section 2, paper Table 4, Table 2).

Small immutable classes, one per command: the server connection emits them,
and the client connection sends the same classes as commands. The client
reads :class:`Reply` and :class:`PulledBody` back.
"""

from __future__ import annotations

from typing import Final, TypeAlias

from smdp import terms
from smdp.protocol._events import BlockComplete, BlockFailed, event
from smdp.protocol.framing import LINE_TOO_LONG_REASON, TOO_BIG_REASON, BlockChunk

__all__ = [
    "LINE_TOO_LONG_REASON",
    "SIZE_MISMATCH_REASON",
    "TOO_BIG_REASON",
    "BlockChunk",
    "Data",
    "DataComplete",
    "DataEnd",
    "DataFailed",
    "DataPart",
    "DataStart",
    "Decision",
    "EnvelopeStart",
    "Helo",
    "MailStart",
    "Noop",
    "PeerCommand",
    "PeerEvent",
    "PulledBody",
    "Quit",
    "Rcpt",
    "Received",
    "Reply",
    "Rset",
    "SizeDecl",
    "StartTls",
]

#: ``DataFailed.reason`` of a MAIL block that is not exactly its SIZE (2.4).
SIZE_MISMATCH_REASON: Final = "size mismatch"


@event
class Helo:
    """HELO / EHLO sending-hostname (Table 4): starts the session."""

    hostname: str
    extended: bool = False


@event
class _Start:
    """What ENVELOPE and MAIL both carry (Table 4): the sender, the id, the size."""

    sender: str
    envid: str
    size: int | None = None


@event
class EnvelopeStart(_Start):
    """ENVELOPE From:<addr> ID=<envid> [SIZE=<n>] (Table 4): starts an envelope."""


@event
class MailStart(_Start):
    """MAIL From:<addr> ID=<envid> [SIZE=<n>] (Table 4): starts a full message."""


@event
class Rcpt:
    """RCPT To:<addr> (Table 4): one recipient."""

    recipient: str


@event
class SizeDecl:
    """SIZE=<n> (Table 4): the message's size in octets."""

    size: int


@event
class DataStart:
    """DATA (Table 4): the block follows once the application answered 354."""


@event
class Data:
    """Client only: the block after a 354, sent dot-stuffed (one reply expected).

    The same as ``DataPart(body)`` followed by ``DataEnd()``.
    """

    body: bytes


@event
class DataPart:
    """Client only: the next piece of a block sent in pieces after a 354.

    Any cut is fine (inside a line, between CR and LF). No reply is expected;
    :class:`DataEnd` ends the block.
    """

    body: bytes


@event
class DataEnd:
    """Client only: the end of a block sent with :class:`DataPart` (a final CRLF
    if the body lacks one, then "."). One reply is expected."""


@event
class DataComplete(BlockComplete):
    """The block after DATA (of MAIL or ENVELOPE) arrived whole (see the base class)."""


@event
class DataFailed(BlockFailed):
    """The block after DATA was refused, and already answered (see the base class).

    ``reason`` is one of :data:`LINE_TOO_LONG_REASON`, :data:`TOO_BIG_REASON`,
    :data:`SIZE_MISMATCH_REASON`.
    """


@event
class Decision:
    """ACCEPT|AUTHORIZE|REJECT|SPAM|SPAMMER <envid> To:<addr> [BODY=HELD] (Table 2).

    ``kind`` is the recipient's decision; ``grammar.DECISION_VERBS`` spells it.
    """

    kind: terms.Decision
    envid: str
    recipient: str
    body_held: bool = False

    @property
    def wants_body(self) -> bool:
        """True when the answer is the pull: 150 and the dot-stuffed message."""
        return self.kind.accepts and not self.body_held


@event
class Received:
    """RECEIVED <envid> (section 2.5): the pulled body is stored durably."""

    envid: str


@event
class Rset:
    """RSET: abandon the transaction."""


@event
class Noop:
    """NOOP."""


@event
class Quit:
    """QUIT (Table 4): ends the connection once answered 221."""


@event
class StartTls:
    """STARTTLS (RFC 3207): answered 220, then both sides start TLS at once.

    The connection forgets everything it knew of the session, including any
    bytes that arrived after the command (they were sent in plaintext and may
    have been injected), and waits for a new EHLO.
    """



# The commands that are one line on the wire: what both sides share.
_LineCommand: TypeAlias = (
    Helo
    | EnvelopeStart
    | MailStart
    | Rcpt
    | SizeDecl
    | DataStart
    | Decision
    | Received
    | Rset
    | Noop
    | Quit
    | StartTls
)
PeerEvent: TypeAlias = _LineCommand | BlockChunk | DataComplete | DataFailed
PeerCommand: TypeAlias = _LineCommand | Data | DataPart | DataEnd


# Client side: what the server answers.


@event
class Reply:
    """One (possibly multi-line) reply; ``lines`` are the texts without codes."""

    code: int
    lines: list[str]

    @property
    def ok(self) -> bool:
        """Positive completion or intermediate (2xx, 3xx)."""
        return 200 <= self.code <= 399

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@event
class PulledBody:
    """The answer to a pulling decision: ``150 <text>`` and the message.

    With ``stream_threshold`` set, :class:`BlockChunk` events came first and
    ``body`` is only the rest: the message is their ``data`` joined, then this.
    A block that fails after some chunks raises :class:`RemoteProtocolError` as
    without streaming; the chunks must then be thrown away.
    """

    code: int
    text: str
    body: bytes
