"""The user's own edits of the four lists (Table 5 LISTADD and LISTDEL).

Decisions write lists too (Table 2, applied in ``destination.py`` and
``origin.py``); this module is the manual door. Inbound lists hold (sender,
SMDP server) pairs, outbound lists recipient addresses alone (Table 2 adds the
recipient, nothing else, to the sender's lists).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from smdp.core.outcomes import Kind, Outcome
from smdp.mail.addresses import AddressError, parse_address
from smdp.store import Store
from smdp.store.records import InboundListing
from smdp.terms import ListDirection, ListedBy, ListKind

LIST_NAMES = {f"{d.value}-{k.value}": (d, k) for d in ListDirection for k in ListKind}


@dataclass(frozen=True, slots=True)
class ListRequest:
    name: str  # as the user spells it: in-white, in-black, out-white, out-black
    direction: ListDirection
    kind: ListKind
    address: str
    # Inbound only: the sender's SMDP server. None asks the caller to find it
    # (discovery of the address's domain) before ``Lists.edit``.
    server: str | None


def parse_list_request(name: str, address: str, server: str | None) -> ListRequest | Outcome:
    """A LISTADD/LISTDEL's arguments checked, or the INVALID outcome saying why."""
    key = name.lower()
    if key not in LIST_NAMES:
        return Outcome(Kind.INVALID,
                       f"unknown list {name}: use one of " + ", ".join(sorted(LIST_NAMES)))
    try:
        addr = str(parse_address(address)).lower()
    except AddressError as exc:
        return Outcome(Kind.INVALID, str(exc))
    direction, kind = LIST_NAMES[key]
    if direction is ListDirection.OUTBOUND and server:
        return Outcome(Kind.INVALID, "outbound lists hold addresses only (Table 2)")
    return ListRequest(key, direction, kind, addr, server.lower() if server else None)


class Lists:
    def __init__(self, store: Store) -> None:
        self.store = store

    def edit(self, user_id: int, request: ListRequest, *, adding: bool) -> Outcome:
        store, addr, kind = self.store, request.address, request.kind
        with store.transaction():
            if request.direction is ListDirection.OUTBOUND:
                if adding:
                    store.put_outbound(user_id, kind, addr, ListedBy.MANUAL)
                    done = True
                else:
                    done = store.drop_outbound(user_id, kind, addr)
            else:
                assert request.server is not None, "an inbound entry names its server"
                if adding:
                    store.put_inbound(user_id, kind, addr, request.server, ListedBy.MANUAL)
                    done = True
                else:
                    done = store.drop_inbound(user_id, kind, addr, request.server)
        if not done:
            return Outcome(Kind.UNKNOWN, f"{addr} is not on your {request.name} list")
        verb = "added to" if adding else "removed from"
        return Outcome(Kind.DONE, f"{addr} {verb} your {request.name} list")


LIST_PAIR_PREFIX = "list:"


def list_pair(list_id: str) -> str:
    """The address under which a mailing list stands on inbound lists
    (issue 16 item 3): each post to a list has a different From, so
    authorizing one authorizes the (List-Id, server) pair."""
    return LIST_PAIR_PREFIX + list_id


def listing_reason(listing: InboundListing, *, how: str = "", who: str = "sender") -> str:
    """Why an envelope was decided without its recipient (issue 16 item 2),
    with the evidence: which list, since when, and what put the sender
    there, e.g. "sender is on your black list since 2026-11-02 (your
    REJECT&SPAMMER on envelope 14)". ``how``: a note on the delivery, such
    as "sent directly" or "From verified"; ``who``: what is listed, "sender"
    or "the list <list-id>"."""
    since = time.strftime("%Y-%m-%d", time.gmtime(listing.added_at))
    if listing.how is ListedBy.MANUAL:
        origin = "you added it"
    elif listing.source_decision is not None and listing.source_entry is not None:
        origin = f"your {listing.source_decision.table_1} on envelope {listing.source_entry}"
    else:
        origin = "by a decision of yours"
    notes = "; ".join(note for note in (origin, how) if note)
    return f"{who} is on your {listing.kind.value} list since {since} ({notes})"
