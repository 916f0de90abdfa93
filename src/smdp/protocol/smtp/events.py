"""The SMTP codec's events (RFC 5321, with the extensions docs/smtp.md lists).

Small immutable classes, one per command, as on the two SMDP ports: the server
connection emits them, and the client connection sends the same classes as
commands. The client reads :class:`Reply` back, and :class:`Capabilities`
from the answer to EHLO.

Addresses travel as the text between the angle brackets, exactly as sent
(a quoted local part keeps its quotes); :func:`~smdp.protocol.smtp.grammar.split_mailbox`
takes one apart. The empty string is the null reverse path ``<>``.
"""

from __future__ import annotations

import re
from dataclasses import field
from typing import Final, TypeAlias

from smdp.protocol._events import BlockComplete, BlockFailed, event
from smdp.protocol.framing import LINE_TOO_LONG_REASON, TOO_BIG_REASON, BlockChunk

__all__ = [
    "BARE_LINE_END_REASON",
    "LINE_TOO_LONG_REASON",
    "TOO_BIG_REASON",
    "Auth",
    "AuthCancel",
    "AuthResponse",
    "BlockChunk",
    "Capabilities",
    "Data",
    "DataComplete",
    "DataEnd",
    "DataFailed",
    "DataPart",
    "DataStart",
    "Helo",
    "Help",
    "Mail",
    "Noop",
    "Quit",
    "Rcpt",
    "Reply",
    "Rset",
    "SmtpCommand",
    "SmtpEvent",
    "StartTls",
    "Vrfy",
    "enhanced_status",
]

#: ``DataFailed.reason`` of a message holding a CR or LF that is not part of
#: a CRLF pair (the SMTP smuggling defence, docs/smtp.md).
BARE_LINE_END_REASON: Final = "bare CR or LF"


@event
class Helo:
    """EHLO / HELO client-name: starts (or restarts) the session.

    ``hostname`` is the argument as sent: the codec checks only that it is one
    printable token, since RFC 5321 4.1.4 forbids refusing mail because the
    name is wrong.
    """

    hostname: str
    extended: bool = True


@event
class Mail:
    """MAIL FROM:<reverse-path> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [AUTH=...].

    ``sender`` is ``""`` for the null path ``<>``. ``route`` holds the domains
    of a source route (``<@a,@b:user@c>`` gives ``("a", "b")``): RFC 5321
    4.1.1.3 makes it legal and obsolete, and the application decides.
    ``auth`` is the AUTH= parameter, xtext-decoded (``"<>"`` when so sent).
    """

    sender: str
    size: int | None = None
    body: str | None = None  # "7BIT" or "8BITMIME"
    smtputf8: bool = False
    auth: str | None = None
    route: tuple[str, ...] = ()


@event
class Rcpt:
    """RCPT TO:<forward-path>: one recipient (``route`` as for :class:`Mail`).

    ``recipient`` may be ``Postmaster`` with no domain (RFC 5321 4.1.1.3).
    """

    recipient: str
    route: tuple[str, ...] = ()


@event
class DataStart:
    """DATA: the message follows once the application answered 354."""


@event
class Data:
    """Client only: the whole message after a 354, dot-stuffed; one reply expected.

    The same as ``DataPart(body)`` then ``DataEnd()``.
    """

    body: bytes


@event
class DataPart:
    """Client only: the next piece of a message sent in pieces after a 354.

    Cut anywhere; no reply is expected until :class:`DataEnd`.
    """

    body: bytes


@event
class DataEnd:
    """Client only: the end of a message sent in pieces (CRLF if missing, then ".")."""


@event
class DataComplete(BlockComplete):
    """The message after DATA arrived whole, with nothing to refuse (see the base class)."""


@event
class DataFailed(BlockFailed):
    """The message after DATA was refused, and already answered (see the base class).

    ``reason`` is :data:`LINE_TOO_LONG_REASON`, :data:`TOO_BIG_REASON` or
    :data:`BARE_LINE_END_REASON`.
    """


@event
class Auth:
    """AUTH PLAIN / LOGIN, the exchange complete: the credentials to check.

    The server connection runs the exchange itself (the 334 prompts, base64,
    ``*`` cancels) and hands out this event once it holds a user name and a
    password; the application answers 235 or 535. The client sends it as
    ``AUTH PLAIN`` with the initial response (RFC 4954 section 4).
    """

    mechanism: str  # "PLAIN" or "LOGIN"
    username: str
    # Kept out of repr(): an event may well end up in a log line.
    password: str = field(repr=False)
    authzid: str = ""


@event
class AuthResponse:
    """Client only: a line answering a 334 challenge (sent base64-encoded)."""

    data: bytes = field(repr=False)  # may be a password (AUTH LOGIN)


@event
class AuthCancel:
    """Client only: ``*``, abandoning an AUTH exchange (RFC 4954 section 4)."""


@event
class Rset:
    """RSET: abandon the transaction."""


@event
class Noop:
    """NOOP (its argument, if any, is ignored: RFC 5321 4.1.1.9)."""


@event
class Quit:
    """QUIT: ends the session once answered 221."""


@event
class StartTls:
    """STARTTLS (RFC 3207): answered 220, then both sides start TLS at once.

    The server connection forgets the session (EHLO, authentication) and any
    bytes that came after the command: they were sent in plaintext and may
    have been injected (CVE-2011-0411).
    """


@event
class Vrfy:
    """Client only: VRFY string. The server connection answers it by itself (252)."""

    text: str


@event
class Help:
    """Client only: HELP [topic]. The server connection answers it by itself (214)."""

    topic: str = ""


_LineCommand: TypeAlias = (
    Helo | Mail | Rcpt | DataStart | Auth | Rset | Noop | Quit | StartTls
)
#: What the server connection hands out.
SmtpEvent: TypeAlias = _LineCommand | BlockChunk | DataComplete | DataFailed
#: What the client connection sends.
SmtpCommand: TypeAlias = (
    _LineCommand | Data | DataPart | DataEnd | AuthResponse | AuthCancel | Vrfy | Help
)


# Client side: what the server answers.

# RFC 3463 section 2: class "." subject "." detail, at the start of the text.
_STATUS_RE: Final = re.compile(r"([245])\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})(?= |$)")


def enhanced_status(code: int, text: str) -> str | None:
    """The enhanced status code that starts ``text``, if its class is ``code``'s."""
    m = _STATUS_RE.match(text)
    if m is None or int(m.group(1)) != code // 100:
        return None
    return m.group(0)


@event
class Reply:
    """One (possibly multi-line) reply. ``lines`` are the texts without the code;
    ``to`` names what it answers: a verb, ``"<greeting>"``, ``"<end of data>"``
    (the message's reply), ``"<auth response>"``, or ``"<unasked>"``."""

    code: int
    lines: list[str]
    to: str = ""

    @property
    def ok(self) -> bool:
        """Positive completion or intermediate (2xx, 3xx)."""
        return 200 <= self.code <= 399

    @property
    def transient(self) -> bool:
        """4xx: try again later."""
        return 400 <= self.code <= 499

    @property
    def status(self) -> str | None:
        """The enhanced status code (RFC 3463) of the first line, if it has one."""
        return enhanced_status(self.code, self.lines[0] if self.lines else "")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __str__(self) -> str:
        """The reply as the server wrote it (first line), for records and notices."""
        return f"{self.code} {self.lines[0] if self.lines else ''}".rstrip()


@event
class Capabilities:
    """What an EHLO answer offered (RFC 5321 4.1.1.1 and the extensions' RFCs).

    ``size`` is the SIZE limit (RFC 1870): None when SIZE is not offered, 0 when
    offered without a limit. ``keywords`` holds every keyword, upper-cased,
    with its parameters.
    """

    pipelining: bool = False
    size: int | None = None
    eightbitmime: bool = False
    smtputf8: bool = False
    starttls: bool = False
    enhanced_status_codes: bool = False
    auth: frozenset[str] = frozenset()
    keywords: tuple[tuple[str, tuple[str, ...]], ...] = ()
