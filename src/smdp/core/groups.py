"""Local lists and aliases (issue 16 item 3; docs/lists.md): an address of
one of our domains that the origin expands, at submission, to its members,
local and remote. The expanded recipients then go as any others do: one
envelope per destination domain (``Origin.submit``). Mail from other
servers to a group reaches its members who have a mailbox here, each with
an entry of their own (``reach``, ``Destination.receive_envelope``); the
others are not forwarded.

An **alias** takes mail from any user of this server. A **list** takes posts
from its members and its owner only, a post goes to the list alone, and
each post carries ``List-Id`` (RFC 2919) and ``List-Unsubscribe`` (RFC 2369)
naming the owner, so that a destination keys its lists on the list
(protocol.md 7.2) and its users can leave it (UNSUB).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import quote

from smdp.core.outcomes import Kind
from smdp.core.submission import SubmissionError
from smdp.mail.addresses import AddressError, parse_address
from smdp.store import Store
from smdp.store.records import Group, User

ALIAS = "alias"
LIST = "list"
KINDS = (ALIAS, LIST)

# Groups inside groups are followed this deep; deeper is a configuration
# error the sender is told about rather than a loop the queue finds.
MAX_DEPTH = 8


@dataclass(slots=True)
class Expansion:
    """A submission's recipients with every group replaced by its members."""

    recipients: list[str] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)  # each group expanded, once
    post_to: Group | None = None  # the list the message is a post to
    owner: str = ""  # that list's owner's address (its List-Unsubscribe)

    def fields(self) -> bytes:
        """The header fields a list post carries, each with its CRLF."""
        if self.post_to is None:
            return b""
        lines = [f"List-Id: <{list_id(self.post_to.address)}>"]
        if self.owner:
            subject = quote(f"unsubscribe {self.post_to.address}")
            lines.append(f"List-Unsubscribe: <mailto:{self.owner}?subject={subject}>")
        return "".join(line + "\r\n" for line in lines).encode("utf-8")


def list_id(address: str) -> str:
    """RFC 2919's list-id of a list address: ``team@a.example`` is
    ``team.a.example`` (a dot-atom; characters an atom cannot hold, from a
    quoted local part, become ``-``)."""
    local, _, domain = address.partition("@")
    safe = "".join(c if c.isalnum() or c in "!#$%&'*+/=?^_`{|}~-." else "-" for c in local)
    return f"{safe or 'list'}.{domain}"


def expand(store: Store, user: User, sender: str, recipients: list[str]) -> Expansion:
    """Replace every group among ``recipients`` by its members, following
    groups inside groups once each (an alias that names itself, or two that
    name each other, end there) to ``MAX_DEPTH``. SubmissionError when the
    sender may not post to a list, a list is named with other recipients,
    or the groups nest too deep."""
    out = Expansion()
    seen: set[str] = set()
    named = [store.group(rcpt) for rcpt in recipients]
    lists = [g for g in named if g is not None and g.kind == LIST]
    if lists:
        if len(recipients) > 1:
            raise SubmissionError(f"a post to the list {lists[0].address} goes to the list "
                                  "alone; send it without other recipients", Kind.INVALID)
        chosen = lists[0]
        if not (may_post(store, chosen, sender) or user.id == chosen.owner_id):
            raise SubmissionError(f"only members of the list {chosen.address} may post to it",
                                  Kind.INVALID)
        owner = store.user_by_id(chosen.owner_id) if chosen.owner_id is not None else None
        out.post_to, out.owner = chosen, owner.main_address if owner else ""

    def walk(address: str, group: Group | None, depth: int) -> None:
        if group is None:
            if address not in seen:
                seen.add(address)
                out.recipients.append(address)
            return
        if group.address in seen:
            return  # named already: a loop, or a second path to the same group
        if depth >= MAX_DEPTH:
            raise SubmissionError(f"{group.address} holds groups nested more than "
                                  f"{MAX_DEPTH} deep; ask your administrator", Kind.INVALID)
        seen.add(group.address)
        out.groups.append(group)
        for member in store.group_members(group.id):
            walk(member, store.group(member), depth + 1)

    for rcpt, group in zip(recipients, named, strict=True):
        walk(rcpt, group, 0)
    return out


# -- mail from other servers (docs/lists.md, "Mail from other servers") -------------


@dataclass(frozen=True, slots=True)
class Reach:
    """Whom an address of ours reaches with mail from another server: its
    user, or a group's members who have a mailbox here. The members
    elsewhere are not written to: SMDP has no forwarding (a destination
    holds envelopes for its own users, and the origin alone sends)."""

    users: tuple[User, ...] = ()
    group: Group | None = None
    elsewhere: tuple[str, ...] = ()  # members with no mailbox here, never forwarded
    too_deep: bool = False  # a group nested deeper than MAX_DEPTH was cut off


def reach(store: Store, address: str) -> Reach:
    """The users ``address`` reaches: itself when it is a user's, else a
    group's members, groups inside groups followed once each to
    ``MAX_DEPTH`` as ``expand`` does; a user reached twice counts once."""
    user = store.user_by_address(address)
    if user is not None:
        return Reach((user,))
    group = store.group(address)
    if group is None:
        return Reach()
    users: dict[int, User] = {}
    elsewhere: dict[str, None] = {}
    seen = {group.address}
    too_deep = False

    def walk(inside: Group, depth: int) -> None:
        nonlocal too_deep
        for member in store.group_members(inside.id):
            nested = store.group(member)
            if nested is None:
                found = store.user_by_address(member)
                if found is None:
                    elsewhere[member] = None
                else:
                    users.setdefault(found.id, found)
            elif nested.address not in seen:
                seen.add(nested.address)
                if depth + 1 >= MAX_DEPTH:
                    too_deep = True
                else:
                    walk(nested, depth + 1)

    walk(group, 0)
    return Reach(tuple(users.values()), group, tuple(elsewhere), too_deep)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a group refuses mail from another server at RCPT: the enhanced
    status code (RFC 3463) and the text after the address."""

    status: str
    text: str


def inbound_refusal(store: Store, reached: Reach, sender: str) -> Refusal | None:
    """None when mail from ``sender`` at another server may go to the group
    ``reached`` names (and to a user's address, always). A list takes posts
    from the addresses of its members and of its owner only, as at
    submission; a group none of whose members has a mailbox here has nobody
    to hold the envelope for; a group nested too deep is the
    administrator's to mend, and is refused whole rather than in part."""
    group = reached.group
    if group is None:
        return None
    if reached.too_deep:
        return Refusal("5.3.5", f"the group holds groups nested more than {MAX_DEPTH} deep; "
                                "its administrator must mend it")
    if group.kind == LIST and not may_post(store, group, sender):
        return Refusal("5.7.1", "the list takes posts from its members only")
    if not reached.users:
        return Refusal("5.1.1", "no member of this group has a mailbox here, and this "
                                "server does not forward mail to other servers")
    return None


def may_post(store: Store, group: Group, sender: str) -> bool:
    """A list's policy for a sender from elsewhere, by address: one of its
    members, or an address of its owner."""
    sender = sender.lower()
    if not sender:
        return False
    if sender in store.group_members(group.id):
        return True
    owner = store.user_by_address(sender)
    return owner is not None and owner.id == group.owner_id


# -- administration (smdp admin group; docs/lists.md) ------------------------------


class GroupError(ValueError):
    """An administrator's group command cannot be done; the text says why."""


def _address(text: str, what: str) -> str:
    try:
        return str(parse_address(text)).lower()
    except AddressError as exc:
        raise GroupError(f"{what} {text!r}: {exc}") from None


def _existing(store: Store, address: str) -> Group:
    group = store.group(_address(address, "group"))
    if group is None:
        raise GroupError(f"no group {address}")
    return group


def create(store: Store, domains: tuple[str, ...], address: str, kind: str,
           owner: str | None) -> str:
    """A new alias or list at ``address``, one of ``domains``' addresses
    that is nobody's identity. A list needs an owner (a user of this
    server): its posts' List-Unsubscribe names them."""
    address = _address(address, "group")
    if address.rpartition("@")[2] not in domains:
        raise GroupError(f"{address} is not an address of this server's domains "
                         f"({', '.join(domains)})")
    if kind not in KINDS:
        raise GroupError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if store.user_by_address(address) is not None:
        raise GroupError(f"{address} is a user's identity already")
    if store.group(address) is not None:
        raise GroupError(f"{address} is a group already")
    owner_user = None
    if owner is not None:
        owner_user = store.user_by_address(_address(owner, "owner"))
        if owner_user is None:
            raise GroupError(f"no user {owner} to own {address}")
    if kind == LIST and owner_user is None:
        raise GroupError("a list needs an owner (--owner USER): its posts name them "
                         "for unsubscribe requests")
    with store.transaction():
        store.create_group(address, kind, owner_user.id if owner_user else None)
    who = f", owned by {owner_user.main_address}" if owner_user else ""
    return f"created {kind} {address}{who}"


def delete(store: Store, address: str) -> str:
    group = _existing(store, address)
    with store.transaction():
        store.drop_group(group.address)
    return f"deleted {group.kind} {group.address}"


def add_members(store: Store, address: str, members: list[str]) -> list[str]:
    group = _existing(store, address)
    checked = [_address(m, "member") for m in members]
    if group.address in checked:
        raise GroupError(f"{group.address} cannot be a member of itself")
    said = []
    with store.transaction():
        for member in checked:
            added = store.add_group_member(group.id, member)
            said.append(f"{member} {'added to' if added else 'is already in'} {group.address}")
    return said


def remove_members(store: Store, address: str, members: list[str]) -> list[str]:
    group = _existing(store, address)
    said = []
    with store.transaction():
        for member in (_address(m, "member") for m in members):
            gone = store.drop_group_member(group.id, member)
            said.append(f"{member} {'removed from' if gone else 'is not in'} {group.address}")
    return said


def members(store: Store, address: str) -> list[str]:
    return store.group_members(_existing(store, address).id)


def listing(store: Store) -> list[str]:
    """One line a group: address, kind, owner, member count."""
    lines = []
    for group in store.groups():
        owner = store.user_by_id(group.owner_id) if group.owner_id is not None else None
        count = len(store.group_members(group.id))
        lines.append(f"{group.address}\t{group.kind}\towner={owner.main_address if owner else '-'}"
                     f"\t{count} member(s)")
    return lines


def status(store: Store, address: str, posts: int = 20) -> list[str]:
    """The owner's view: each of the group's ``posts`` newest messages, and
    every recipient's state as SENT shows it (envelope-sent: waiting for the
    recipient; delivered, rejected, ...)."""
    group = _existing(store, address)
    lines: list[str] = []
    current = ""
    for d in store.group_deliveries(group.id, posts):
        if d.msgid != current:
            current = d.msgid
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d.created_at))
            lines.append(f"{d.msgid} {when} {d.subject}")
        lines.append(f"  {d.recipient} {d.state}" + (f" {d.detail}" if d.detail else ""))
    return lines
