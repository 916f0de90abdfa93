"""Outcomes of the rules in each port's words, one table per port.

The core answers with an ``Outcome`` (a kind and a reason); the peer port says
it as an SMTP-style reply (code, enhanced status code, the reason), the user
port as ``+OK``/``-ERR`` and the reason. A later door (SMTP, IMAP, the web)
adds its own table here and leaves the rules alone.
"""

from __future__ import annotations

from smdp.core.outcomes import Kind, Outcome
from smdp.terms import Decision, EntryState

# Peer port (Table 4, docs/protocol.md): kind -> (reply code, enhanced status).
PEER_REPLIES: dict[Kind, tuple[int, str]] = {
    Kind.DONE: (250, "2.0.0"),
    Kind.UNCHANGED: (250, "2.0.0"),
    Kind.PULL: (150, ""),  # "<size> octets follow", then the message
    Kind.UNKNOWN: (550, "5.1.0"),
    Kind.NOT_A_RECIPIENT: (550, "5.1.1"),
    Kind.ALREADY_REJECTED: (554, "5.7.0"),
    Kind.NOT_HELD: (554, "5.7.0"),
    Kind.PEER_BLOCKED: (554, "5.7.1"),
    Kind.NOT_YOUR_IDENTITY: (550, "5.7.1"),
    Kind.INVALID: (501, "5.5.4"),
}


def peer_reply(outcome: Outcome) -> tuple[int, str]:
    code, status = PEER_REPLIES[outcome.kind]
    return code, f"{status} {outcome.reason}" if status else outcome.reason


def decision_text(decision: Decision, outcome: Outcome, state: EntryState,
                  sender: str) -> str:
    """What a recipient is told of a decision that was taken (the user port
    after ``envelope <id>``, the web app as the result's message): what
    happened, and to the lists."""
    texts = {
        Decision.ACCEPT: "accepted; the message will be fetched",
        Decision.ACCEPT_AUTH: f"accepted; {sender} added to your white list",
        Decision.REJECT: "rejected",
        Decision.REJECT_SPAM: "rejected as spam",
        Decision.REJECT_SPAMMER: f"rejected; {sender} added to your black list",
    }
    if state is EntryState.ACCEPTED and decision.accepts:
        texts[Decision.ACCEPT] = "accepted; the message is in your mailbox"
    suffix = f" ({outcome.reason})" if outcome.kind is Kind.UNCHANGED else ""
    return texts[decision] + suffix
