"""The destination: what the recipient's SMDP server does (section 5.2 steps
4-7, Table 1, Table 2 recipient column, Table 3 recipient side, assumption 5,
section 5.3 quality).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from smdp.config import QualityPolicy
from smdp.core import decisions as d
from smdp.core import groups
from smdp.core.decisions import recipient_side
from smdp.core.envelope import (
    decode_envelope_block,
    encode_envelope_block,
    extract_envelope,
    new_token,
)
from smdp.core.jobs import queue_decision
from smdp.core.lists import list_pair, listing_reason
from smdp.core.mx import quality_keys
from smdp.core.notices import PendingItem, build_pending_notice
from smdp.core.outcomes import Kind, Outcome
from smdp.core.quality import (
    ALLOWED_BY_HAND,
    SENDER_KEY_PREFIX,
    Standing,
    Verdict,
    judge,
    sender_key,
    worsened,
)
from smdp.mail.addresses import domain_of
from smdp.mail.body import Body
from smdp.mail.trace import received_field
from smdp.store import Store
from smdp.store.records import InboundListing, InEnvelope, MailboxEntry, Quality, User
from smdp.terms import Decision, EntryState, ListedBy, ListKind

log = logging.getLogger("smdp.quality")


# When an envelope names no (valid) Expires, assume the usual hold time.
DEFAULT_HOLD_SECONDS = 30 * 86400.0
# The reasons an entry keeps for what nobody but its recipient decided, and
# for a notice this server wrote; ``decided_by`` tells the rest apart by them.
USER_REASON = "your decision"
NOTICE_REASON = "written by this server"


def expiry_time(expires: str) -> float:
    """The envelope's ``Expires`` (RFC 3339, UTC) as a Unix time."""
    try:
        when = datetime.strptime(expires.strip(), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return time.time() + DEFAULT_HOLD_SECONDS
    return when.replace(tzinfo=UTC).timestamp()


def deliver_notice(store: Store, *, hostname: str, user_id: int, recipient: str,
                   raw: bytes) -> int:
    """Store a message this server wrote (a notice: docs/protocol.md
    "Notices") in the user's own mailbox, accepted, inside the caller's
    transaction: readable by RETR like any message, never sent over the peer
    port. Its envelope has the null sender, so nothing is ever reported about
    it (``Destination._apply``) and no list learns it. Returns the entry id."""
    body = Body.of(raw)
    summary = extract_envelope(body)
    block = encode_envelope_block(summary, expires="")
    env_id = store.insert_in_envelope(
        envid=new_token(), origin_server=hostname, sender="", size=body.size,
        block=block.decode("utf-8"), subject=summary.subject, body=body)
    entry_id = store.insert_mailbox_entry(user_id, env_id, recipient, EntryState.ACCEPTED)
    store.update_mailbox_entry(entry_id, state=EntryState.ACCEPTED, decision=Decision.ACCEPT,
                               reason=NOTICE_REASON)
    return entry_id


def decided_by(entry: MailboxEntry) -> str | None:
    """Who put the entry in its state (issue 13, the web API's
    ``decided_by``): ``user``, ``white-list`` or ``black-list`` (Table 3,
    and the settling of a sender's other envelopes by ACCEPT&AUTH or
    REJECT&SPAMMER), ``expiry``, ``origin`` (it refused or failed the pull
    after an acceptance), ``server`` (a notice it wrote), ``client`` (a
    message an IMAP client wrote in: APPEND); None while pending. A peer
    blocked by its quality never gets this far: its envelopes are refused
    before any is stored."""
    if entry.state is EntryState.PENDING:
        return None
    if entry.state is EntryState.EXPIRED:
        return "expiry"
    if entry.state is EntryState.FAILED:
        return "origin"
    if entry.state is EntryState.APPENDED:
        return "client"
    if entry.reason == USER_REASON:
        return "user"
    if entry.reason == NOTICE_REASON:
        return "server"
    # Only the lists decide by themselves, and only these two ways.
    if entry.decision is Decision.ACCEPT:
        return "white-list"
    if entry.decision is Decision.REJECT_SPAMMER:
        return "black-list"
    return "server"


@dataclass(frozen=True, slots=True)
class SmtpArrival:
    """What Table 3 did with one SMTP message, per recipient (issue 12)."""

    envelope_id: int | None  # None when nothing was stored
    held: tuple[str, ...] = ()  # pending: the recipient decides, as for an envelope
    delivered: tuple[str, ...] = ()  # white-listed and verified: in the mailbox
    refused: tuple[str, ...] = ()  # black-listed: nothing stored for them


def _expires_text(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class DecisionResult:
    """A user's decision: the outcome, and the entry as it is now (None when
    the entry is unknown to this user)."""

    outcome: Outcome
    entry: MailboxEntry | None = None
    envelope: InEnvelope | None = None  # the entry's, when the decision read it


class Destination:
    def __init__(self, store: Store, *, quality: QualityPolicy, hostname: str = "") -> None:
        self.store = store
        self.quality_policy = quality
        # Local mail comes through our own peer port; we are not our own peer,
        # so it neither counts towards a quality indicator nor can be blocked.
        self.hostname = hostname
        # Told of every option taken on a mailbox entry, and whether the user
        # took it (the server's metrics, issue 16 item 4).
        self.decided: Callable[[Decision, bool], None] = _nobody

    # -- who may deliver ---------------------------------------------------------

    def peer_verdict(self, server: str) -> Verdict:
        """Section 5.3: how the peer ``server`` stands, from one read of Quality(X)."""
        return self.rejudge(server)

    def rejudge(self, key: str, quality: Quality | None = None) -> Verdict:
        """Judge ``key`` (a peer, a sender at a peer, an SMTP key) and keep a
        changed standing: the hysteresis (issue 16 item 1) reads it next time.
        A standing the administrator set is not the formula's: not kept.
        ``quality``: the key's, where the caller has just read it."""
        if quality is None:
            quality = self.store.quality(key)
        verdict = judge(quality, self.quality_policy)
        if quality.override is None and verdict.status != quality.standing:
            self.store.set_standing(key, verdict.status)
            if worsened(Standing(quality.standing), verdict.status):
                # Section 5.3: thresholds "accommodate for automate management alerts".
                log.warning("%s: %s (%s)", _described(key), verdict.status, verdict.reason)
            else:
                log.info("%s: %s (%s)", _described(key), verdict.status, verdict.reason)
        return verdict

    def peer_refusal(self, server: str, verdict: Verdict | None = None) -> Outcome | None:
        """Section 5.3: a peer whose quality is below the block threshold is
        refused, unless it has probation left today (issue 16 item 1).
        ``verdict``: the peer's, when the caller has it already."""
        if server == self.hostname:
            return None
        return self._refusal(server, server, verdict or self.peer_verdict(server))

    def sender_refusal(self, server: str, sender: str,
                       verdict: Verdict | None = None) -> Outcome | None:
        """Issue 16 item 1: the same for one sending address at the peer, so
        that one compromised account is refused while its server stays ok.
        ``verdict``: the peer's, when the caller has it already."""
        if server == self.hostname or not sender:
            return None
        allowed = (verdict.allowed_by_hand if verdict is not None
                   else self.store.quality(server).override == ALLOWED_BY_HAND)
        if allowed:
            return None  # the administrator vouches for the server and its users
        key = sender_key(server, sender)
        return self._refusal(key, f"<{sender}> at {server}", self.rejudge(key))

    def _refusal(self, key: str, who: str, verdict: Verdict) -> Outcome | None:
        if verdict.status is not Standing.BLOCKED:
            return None
        per_day = self.quality_policy.probation_per_day
        if verdict.probation and per_day > 0:
            if self.store.take_probation(key, per_day):
                log.info("%s is blocked; envelope taken on probation", who)
                return None
            return Outcome(Kind.PEER_BLOCKED, f"{who} blocked: {verdict.reason}; its "
                                              f"{per_day} envelopes of probation today "
                                              "are used")
        return Outcome(Kind.PEER_BLOCKED, f"{who} blocked: {verdict.reason}")

    def _received(self, server: str, envid: str, body: bytes | Body) -> Body:
        """``body`` as stored here: after the Received field of this hop
        (protocol.md 8.4), once for every recipient of the envelope. The
        origin's declared size was checked against what it sent; the field is
        this server's own, and the stored size includes it."""
        field = received_field(source=server, host=self.hostname or "localhost",
                               protocol="SMDP", ident=envid, when=datetime.now(UTC))
        return (body if isinstance(body, Body) else Body.of(body)).prefixed(field)

    def reach(self, address: str) -> groups.Reach:
        """Whom mail from another server to ``address`` reaches: a user, or
        a local group's members with a mailbox here (docs/lists.md)."""
        return groups.reach(self.store, address)

    def group_refusal(self, reached: groups.Reach, sender: str) -> groups.Refusal | None:
        """Why a group refuses mail from ``sender`` at RCPT, or None."""
        return groups.inbound_refusal(self.store, reached, sender)

    def _entries_for(self, recipients: list[str], known: Mapping[str, groups.Reach],
                     ) -> tuple[list[tuple[str, User, bool]], int]:
        """Each envelope recipient with the users it reaches, and whether
        through a group: one entry each, under the recipient's address,
        which the origin knows it by (a group's members share it, and
        Delivered-To shows them the group). And the messages they count
        for towards the origin's quality (section 5.3): one a recipient, a
        group one for each member, as each member's decision is a vote."""
        found: list[tuple[str, User, bool]] = []
        messages = 0
        for rcpt in recipients:
            reached = known.get(rcpt) or self.reach(rcpt)
            found.extend((rcpt, user, reached.group is not None) for user in reached.users)
            # Messages(X): a group once for each member it reaches (protocol.md 11.1).
            messages += max(1, len(reached.users))
        return found, messages

    def may_send_directly(self, server: str, sender: str, recipient: str,
                          user: User | None = None) -> bool:
        """Table 3: a whole message (no envelope phase) only from an authorized pair.
        ``user``: the recipient's, when the caller has just read it."""
        user = user or self.store.user_by_address(recipient)
        return (user is not None
                and self.store.inbound_kind(user.id, sender, server) == ListKind.WHITE)

    # -- arrivals (section 5.2 step 4) -------------------------------------------

    def receive_envelope(
        self, *, server: str, envid: str, sender: str, recipients: list[str], size: int,
        block: bytes, reached: Mapping[str, groups.Reach] | None = None,
    ) -> bool:
        """Store an envelope in each recipient's mailbox, then apply Table 3.
        False for a replayed envelope, which changes nothing. ``reached``:
        whom recipients reach, where the caller has just looked it up (RCPT)."""
        fields = decode_envelope_block(block)
        clean_block = encode_envelope_block(fields.summary, expires=fields.expires)
        with self.store.transaction():
            if self.store.in_envelope_by_envid(envid) is not None:
                return False
            env_id = self.store.insert_in_envelope(
                envid=envid, origin_server=server, sender=sender, size=size,
                block=clean_block.decode("utf-8"), subject=fields.summary.subject, body=None,
                expires_at=expiry_time(fields.expires),
            )
            targets, messages = self._entries_for(recipients, reached or {})
            if server != self.hostname:
                self.store.count_messages(server, messages, also=(sender_key(server, sender),))
            list_id = fields.summary.list_id
            # Every entry first: a member's rejection by Table 3 goes to the
            # origin only once the group's other members have decided
            # (``_reported_entry``), so they must be there to be seen.
            entries = [(self.store.insert_mailbox_entry(user.id, env_id, rcpt,
                                                        EntryState.PENDING), user)
                       for rcpt, user, _grouped in targets]
            for entry_id, user in entries:
                listed, who, address = self._listing(user.id, sender, server, list_id)
                if listed is not None and listed.kind is ListKind.BLACK:
                    # Table 3, recipient side: sender in the recipient's black
                    # list: reject the message, send SPAMMER to the origin.
                    self.store.touch_inbound(user.id, address, server)
                    self._apply(entry_id, Decision.REJECT_SPAMMER,
                                listing_reason(listed, who=who))
                elif listed is not None and listed.kind is ListKind.WHITE:
                    # Table 3, recipient side: sender in the recipient's white
                    # list: authorized user, accept the message.
                    self.store.touch_inbound(user.id, address, server)
                    self._apply(entry_id, Decision.ACCEPT, listing_reason(listed, who=who))
        return True

    def _listing(self, user_id: int, sender: str, server: str, list_id: str
                 ) -> tuple[InboundListing | None, str, str]:
        """Table 3's lookup: the sender's own entry first, then, for a post
        to a mailing list, the list's (issue 16 item 3). The entry, what it
        lists (for the reason) and the address it is kept under."""
        listed = self.store.inbound_listing(user_id, sender, server)
        if listed is not None or not list_id:
            return listed, "sender", sender
        pair = list_pair(list_id)
        return (self.store.inbound_listing(user_id, pair, server), f"the list {list_id}",
                pair)

    def receive_message(
        self, *, server: str, envid: str, sender: str, recipients: list[str], body: bytes | Body,
        reached: Mapping[str, groups.Reach] | None = None,
    ) -> bool:
        """A whole message sent directly (Table 3, both sides white-listed).
        False for a replayed one, which changes nothing. ``reached``: as for
        ``receive_envelope`` (a direct message reaches users, never groups)."""
        known = reached or {}
        if not isinstance(body, Body):
            body = Body.of(body)
        summary = extract_envelope(body)
        block = encode_envelope_block(summary, expires="")
        body = self._received(server, envid, body)
        with self.store.transaction():
            if self.store.in_envelope_by_envid(envid) is not None:
                return False
            env_id = self.store.insert_in_envelope(
                envid=envid, origin_server=server, sender=sender, size=body.size,
                block=block.decode("utf-8"), subject=summary.subject, body=body,
            )
            if server != self.hostname:
                self.store.count_messages(server, len(recipients),
                                          also=(sender_key(server, sender),))
            for rcpt in recipients:
                looked_up = known.get(rcpt)
                user = (looked_up.users[0] if looked_up is not None and looked_up.group is None
                        and looked_up.users else self.store.user_by_address(rcpt))
                if user is None:
                    continue
                entry_id = self.store.insert_mailbox_entry(
                    user.id, env_id, rcpt, EntryState.ACCEPTED)
                listed = self.store.inbound_listing(user.id, sender, server)
                self.store.update_mailbox_entry(
                    entry_id, state=EntryState.ACCEPTED, decision=Decision.ACCEPT,
                    reason=listing_reason(listed, how="sent directly") if listed is not None
                    else "sender is on your white list (sent directly)",
                )
                self.decided(Decision.ACCEPT, False)
                if server != self.hostname:
                    self.store.set_vote(entry_id, server, +1,
                                        also=(sender_key(server, sender),))
                self.store.touch_inbound(user.id, sender, server)
        return True

    def smtp_refusal(self, keys: list[str]) -> Outcome | None:
        """Section 5.3 for SMTP senders (issue 12 item 4): refused when the
        quality under any of ``keys`` (``core/mx.py`` ``quality_keys``) is
        below the block threshold."""
        for key in keys:
            verdict = self.rejudge(key)
            if verdict.status is Standing.BLOCKED:
                return Outcome(Kind.PEER_BLOCKED, f"{key.removeprefix('smtp:')} blocked: "
                                                  f"{verdict.reason}")
        return None

    def smtp_black_listed(self, recipient: str, sender: str) -> bool:
        """Table 3 at RCPT for SMTP mail: is ``sender`` (a MAIL FROM address
        that passed SPF) on ``recipient``'s inbound black list? The pair's
        server is the address's domain (docs/smtp.md, "The MX")."""
        user = self.store.user_by_address(recipient)
        return (user is not None and bool(sender)
                and self.store.inbound_kind(user.id, sender, domain_of(sender))
                == ListKind.BLACK)

    def receive_smtp(
        self, *, envid: str, sender: str, verified_domain: str | None, auth_results: str,
        recipients: list[str], body: Body, expires_at: float, mail_from: str = "",
        client_prefix: str | None = None,
    ) -> SmtpArrival:
        """Table 3 for a message that arrived by SMTP at the MX (issue 12).

        ``sender`` is the From address ("" when there is none); its domain
        stands where an SMDP envelope has its origin server; ``mail_from``
        is the reverse-path, kept for the Return-Path. Per recipient:
        on the black list, refused and nothing stored for them (verified or
        not: a forger can only get its own mail refused); on the white list
        *and* ``verified_domain`` is the From domain, straight to the
        mailbox; otherwise held, an envelope to decide like an SMDP one. The
        bytes are stored once, in the transaction that makes the entries,
        and only if some recipient keeps them. Nothing is ever sent back.
        """
        server = domain_of(sender) if sender else ""
        verified = verified_domain.lower() if verified_domain else None
        trusted = bool(sender) and verified == server
        # Issue 12 item 4: the message counts for its verified domain (if
        # any) and its client's prefix; a black-list refusal as a message
        # voted -1 that nobody saw, as a forged SMDP envelope does.
        keys = quality_keys(verified if trusted else None, client_prefix)
        held: list[str] = []
        delivered: list[str] = []
        refused: list[str] = []
        reasons: dict[str, str] = {}
        users: list[tuple[str, str, User]] = []  # (how SmtpArrival names it, rcpt, user)
        with self.store.transaction():
            for rcpt, user, grouped in self._entries_for(recipients, {})[0]:
                # A group's member is named with the group: ``info@... (bob@...)``.
                who = f"{rcpt} ({user.main_address})" if grouped else rcpt
                listed = self.store.inbound_listing(user.id, sender, server) if sender else None
                if listed is not None and listed.kind is ListKind.BLACK:
                    self.store.touch_inbound(user.id, sender, server)
                    refused.append(who)
                    continue
                if listed is not None and listed.kind is ListKind.WHITE and trusted:
                    self.store.touch_inbound(user.id, sender, server)
                    delivered.append(who)
                    reasons[who] = listing_reason(listed, how="From verified")
                else:
                    held.append(who)
                users.append((who, rcpt, user))
            for key in keys:
                if refused:
                    self.store.count_forged(key, len(refused))
                if users:
                    self.store.count_messages(key, len(users))
            if not users:
                return SmtpArrival(None, refused=tuple(refused))
            summary = extract_envelope(body)
            block = encode_envelope_block(summary, expires=_expires_text(expires_at))
            env_id = self.store.insert_in_envelope(
                envid=envid, origin_server=server, sender=sender, size=body.size,
                block=block.decode("utf-8"), subject=summary.subject, body=body,
                smtp_auth=auth_results, verified_domain=verified if trusted else None,
                mail_from=mail_from,
                client_prefix=client_prefix, expires_at=expires_at)
            for who, rcpt, user in users:
                if who in delivered:
                    entry_id = self.store.insert_mailbox_entry(
                        user.id, env_id, rcpt, EntryState.ACCEPTED)
                    self.store.update_mailbox_entry(
                        entry_id, state=EntryState.ACCEPTED, decision=Decision.ACCEPT,
                        reason=reasons[who])
                    self.decided(Decision.ACCEPT, False)
                    if keys:
                        self.store.set_vote(entry_id, keys[0], +1, also=keys[1:])
                else:
                    self.store.insert_mailbox_entry(user.id, env_id, rcpt, EntryState.PENDING)
        return SmtpArrival(env_id, tuple(held), tuple(delivered), tuple(refused))

    # -- decisions (Table 1, Table 2 recipient column) ---------------------------

    def decide(self, user: User, entry_id: int, decision: Decision) -> DecisionResult:
        found = self.store.mailbox_entry_and_envelope(entry_id)
        if found is None or found[0].user_id != user.id:
            return DecisionResult(Outcome(Kind.UNKNOWN, f"no envelope {entry_id} in your mailbox"))
        entry, env = found
        if entry.state is EntryState.APPENDED:
            # No origin to tell, no sender to list or vote on: a decision
            # would only pretend (docs/imap.md, "APPEND").
            return DecisionResult(Outcome(
                Kind.INVALID, f"message {entry_id} was written in by a mail client, not sent "
                "to you: there is nothing to decide"), entry)
        if decision.accepts and entry.state in d.REJECTED_ENTRIES:
            # Assumption 6: the rejection deleted the message at its origin.
            return DecisionResult(Outcome(
                Kind.ALREADY_REJECTED, f"envelope {entry_id} was already rejected"), entry)
        if decision.accepts and entry.state in d.LOST_ENTRIES:
            return DecisionResult(Outcome(
                Kind.NOT_HELD, f"envelope {entry_id} can no longer be fetched: {entry.reason}"),
                entry)
        if entry.decision is decision:
            return DecisionResult(Outcome(Kind.UNCHANGED, "already decided"), entry)
        # Accept after accept: only ACCEPT&AUTH adds something (the white list).
        if decision is Decision.ACCEPT and entry.state in (EntryState.ACCEPTED,
                                                           EntryState.FETCHING):
            return DecisionResult(Outcome(Kind.UNCHANGED, "already accepted"), entry)
        with self.store.transaction():
            self._apply(entry.id, decision, USER_REASON, by_user=True, entry=entry, env=env)
            self._list_applies_to_pending(entry, decision, env)
        updated = self.store.mailbox_entry(entry.id)
        assert updated is not None
        return DecisionResult(Outcome(Kind.DONE, "recorded"), updated, env)

    def _list_applies_to_pending(self, entry: MailboxEntry, decision: Decision,
                                 env: InEnvelope) -> None:
        """A decision that lists the sender (ACCEPT&AUTH, REJECT&SPAMMER) also
        settles the sender's envelopes still pending for this user, as Table 3
        would have on their arrival: nobody is asked again about a sender
        they have just authorized or blocked."""
        effect = recipient_side(decision)
        if not (effect.add_to_white_list or effect.add_to_black_list):
            return
        automatic = Decision.ACCEPT if effect.add_to_white_list else Decision.REJECT_SPAMMER
        listed = self.store.inbound_listing(entry.user_id, env.sender, env.origin_server)
        if listed is None:
            # The decision listed something else (a mailing list, _apply):
            # the poster's other envelopes are not settled by it.
            return
        reason = listing_reason(listed)
        for other in self.store.entries_from(entry.user_id, env.sender, env.origin_server,
                                             EntryState.PENDING):
            if effect.add_to_white_list and not self._white_list_may_match(other):
                continue  # an unverified From never matches a white-list entry
            self._apply(other, automatic, reason)
            self.store.touch_inbound(entry.user_id, env.sender, env.origin_server)

    def _white_list_may_match(self, entry_id: int) -> bool:
        """False for SMTP mail whose From domain was not verified (issue 12)."""
        entry = self.store.mailbox_entry(entry_id)
        env = self.store.in_envelope(entry.envelope_id) if entry else None
        if env is None or not env.via_smtp:
            return True
        return bool(env.sender) and env.verified_domain == domain_of(env.sender)

    def _apply(self, entry_id: int, decision: Decision, reason: str, *,
               by_user: bool = False, entry: MailboxEntry | None = None,
               env: InEnvelope | None = None) -> None:
        """Table 2, recipient column, inside the caller's transaction.
        ``entry`` and ``env``: the entry and its envelope as the caller just
        read them (with no await since)."""
        self.decided(decision, by_user)
        entry = entry or self.store.mailbox_entry(entry_id)
        assert entry is not None
        env = env or self.store.in_envelope(entry.envelope_id)
        assert env is not None
        effect = recipient_side(decision)
        # Only the user's own decision writes the lists: an automatic one
        # comes from the entry already there, whose evidence must stay.
        listing = by_user
        if env.via_smtp:
            self._apply_smtp(entry, env, decision, reason, listing=listing)
            return
        if not env.sender:
            # The null sender: a notice this server wrote (deliver_notice).
            # Nobody to tell of the decision, nothing to list or vote on.
            self.store.update_mailbox_entry(entry.id, state=effect.state, decision=decision,
                                            reason=reason)
            return
        if listing and (effect.add_to_white_list or effect.add_to_black_list):
            # A post to a mailing list lists the list, not its poster.
            list_id = decode_envelope_block(env.block.encode("utf-8")).summary.list_id
            listed_as = list_pair(list_id) if list_id else env.sender
            # Each of Table 2's two list columns on its own, as the paper has them.
            if effect.add_to_white_list:
                self.store.put_inbound(entry.user_id, ListKind.WHITE, listed_as,
                                       env.origin_server, ListedBy.AUTO,
                                       source=(entry.id, decision))
            if effect.add_to_black_list:
                self.store.put_inbound(entry.user_id, ListKind.BLACK, listed_as,
                                       env.origin_server, ListedBy.AUTO,
                                       source=(entry.id, decision))
        if env.origin_server != self.hostname:
            self._vote(entry.id, env.origin_server, env.sender, effect.vote)
        if decision.accepts:
            # Assumption 5: a later acceptance uses the copy this server holds.
            state = EntryState.ACCEPTED if env.has_body else EntryState.FETCHING
            if entry.state is EntryState.ACCEPTED:
                state = EntryState.ACCEPTED
        else:
            state = effect.state
        self.store.update_mailbox_entry(entry.id, state=state, decision=decision, reason=reason)
        # Table 2: "send <MESSAGE> to origin SMDP for this envelope".
        reported = self._reported_entry(entry, decision)
        if reported is not None:
            queue_decision(self.store, env.envid, reported, domain_of(env.sender))

    def _reported_entry(self, entry: MailboxEntry, decision: Decision) -> int | None:
        """The entry whose decision goes to the origin now (decisions.py,
        ``reported_entry``: a group's rejections wait for its members)."""
        if decision.accepts:
            return entry.id  # no need to read the others
        shared = [e for e in self.store.entries_of_envelope(entry.envelope_id)
                  if e.recipient == entry.recipient]
        return d.reported_entry(entry, decision, shared)

    def _apply_smtp(self, entry: MailboxEntry, env: InEnvelope, decision: Decision,
                    reason: str, *, listing: bool) -> None:
        """Table 2's recipient column for mail that arrived by SMTP (issue 12):
        the lists are written as for an envelope, with the From domain for
        the server; the bytes are here, so an accept puts the message in the
        mailbox and a rejection deletes them (once no other recipient keeps
        them). Nothing is queued: no decision goes back to an SMTP sender
        (no backscatter). The vote counts for the verified domain and the
        client's prefix (issue 12 item 4)."""
        effect = recipient_side(decision)
        if env.sender and listing:
            if effect.add_to_white_list:
                self.store.put_inbound(entry.user_id, ListKind.WHITE, env.sender,
                                       env.origin_server, ListedBy.AUTO,
                                       source=(entry.id, decision))
            if effect.add_to_black_list:
                self.store.put_inbound(entry.user_id, ListKind.BLACK, env.sender,
                                       env.origin_server, ListedBy.AUTO,
                                       source=(entry.id, decision))
        state = EntryState.ACCEPTED if decision.accepts else effect.state
        self.store.update_mailbox_entry(entry.id, state=state, decision=decision, reason=reason)
        self._smtp_vote(entry.id, env, effect.vote)
        if not decision.accepts:
            self.store.drop_smtp_bodies(d.KEEPS_SMTP_BODY, env.id)

    def _vote(self, entry_id: int, server: str, sender: str, vote: int) -> None:
        """An SMDP entry's vote: for its origin server and for its sender
        there (issue 16 item 1); both are judged again at once, so a
        standing's change is logged (and kept) when the vote makes it."""
        keys = [server, sender_key(server, sender)] if sender else [server]
        self._judge_after(keys, self.store.set_vote(entry_id, keys[0], vote, also=keys[1:]))

    def _judge_after(self, keys: list[str], after: list[Quality] | None) -> None:
        """Judge each key again after a vote, from the quality the vote's
        own statement returned (None: the vote changed nothing; read it)."""
        for k, key in enumerate(keys):
            self.rejudge(key, after[k] if after is not None else None)

    def _smtp_vote(self, entry_id: int, env: InEnvelope, vote: int) -> None:
        keys = quality_keys(env.verified_domain, env.client_prefix)
        if not keys:
            return
        self._judge_after(keys, self.store.set_vote(entry_id, keys[0], vote, also=keys[1:]))

    # -- expiry ---------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Envelopes nobody decided on before their Expires end ``expired`` and
        count against their origin's quality like a rejection (issue 4: pull
        mail makes envelope floods cheap; an unpulled envelope is not free)."""
        # One transaction: an entry that ended expired without its -1 would
        # never count, and one that counted without ending would count twice.
        with self.store.transaction():
            undecided = self.store.expire_in_envelopes(
                now, undecided=EntryState.PENDING, open_states=d.OPEN_ENTRIES,
                expired=EntryState.EXPIRED, reason="the origin no longer holds it: it expired")
            for entry_id, server in undecided:
                env = self._envelope_of(entry_id)
                if env is not None and env.via_smtp:
                    self._smtp_vote(entry_id, env, -1)
                elif server != self.hostname:
                    self._vote(entry_id, server, env.sender if env else "", -1)
            # Held SMTP mail carries its bytes: they go with the expiry.
            self.store.drop_smtp_bodies(d.KEEPS_SMTP_BODY)
        return len(undecided)

    def _envelope_of(self, entry_id: int) -> InEnvelope | None:
        entry = self.store.mailbox_entry(entry_id)
        return self.store.in_envelope(entry.envelope_id) if entry else None

    def notify_pending(self, now: float, interval: float) -> int:
        """Issue 10, item 7 (b): a user with envelopes pending gets a notice
        listing them, at most once per ``interval`` seconds, and only when
        one arrived since the previous notice (the same list is never sent
        twice). Each user's notice is stored with its record in one
        transaction. Returns the notices stored."""
        sent = 0
        for user_id in self.store.users_with_entries(EntryState.PENDING):
            with self.store.transaction():
                if self._notify_user(user_id, now, interval):
                    sent += 1
        return sent

    def _notify_user(self, user_id: int, now: float, interval: float) -> bool:
        entries = self.store.mailbox_entries(user_id, [EntryState.PENDING])
        user = self.store.user_by_id(user_id)
        if not entries or user is None:
            return False
        last = self.store.pending_notice(user_id)
        seen = last[1] if last else 0
        newest = max(e.id for e in entries)
        if last is not None and (newest <= seen or now < last[0] + interval):
            return False
        if not self.store.claim_pending_notice(user_id, now, newest, now - interval):
            return False  # another node sent it
        items = []
        for entry in entries:
            env = self.store.in_envelope(entry.envelope_id)
            if env is None:
                continue
            fields = decode_envelope_block(env.block.encode("utf-8"))
            items.append(PendingItem(entry.id, env.sender, env.subject,
                                     fields.summary.headlines, entry.id > seen))
        raw = build_pending_notice(hostname=self.hostname, to=user.main_address,
                                   pending=items, now=now)
        deliver_notice(self.store, hostname=self.hostname, user_id=user_id,
                       recipient=user.main_address, raw=raw)
        return True

    def purge(self, before: float) -> int:
        """Records nobody needs any more: origin messages expired before
        ``before``, envelopes whose every entry was deleted or expired then."""
        return self.store.purge(before, expired=EntryState.EXPIRED)

    # -- the pull (section 5.2 step 7) --------------------------------------------

    def body_pulled(self, envelope_id: int, body: bytes | Body | None) -> None:
        """Store the pulled message once; every accepted recipient gets it.

        ``body`` is None when the origin answered a BODY=HELD decision: the
        copy is already here (assumption 5).
        """
        with self.store.transaction():
            env = self.store.in_envelope(envelope_id)
            if env is None:
                return
            if body is not None and not env.has_body:
                self.store.set_in_body(
                    envelope_id, self._received(env.origin_server, env.envid, body))
            elif body is None and not env.has_body:
                # The origin answered an accepting decision without the message
                # while no copy is here: nothing can be read, so the entry fails
                # rather than show as accepted and empty.
                for entry in self.store.entries_of_envelope(envelope_id):
                    if entry.state is EntryState.FETCHING:
                        self.store.update_mailbox_entry(
                            entry.id, state=EntryState.FAILED, decision=entry.decision,
                            reason="the origin confirmed the decision but sent no message",
                        )
                return
            self.store.set_entries_state(envelope_id, EntryState.FETCHING, EntryState.ACCEPTED)

    def decision_refused(self, entry_id: int, reply: str) -> None:
        """The origin no longer holds the message (expired, deleted, unknown)."""
        with self.store.transaction():
            entry = self.store.mailbox_entry(entry_id)
            if entry is not None and entry.state is EntryState.FETCHING:
                self.store.update_mailbox_entry(
                    entry.id, state=EntryState.FAILED, decision=entry.decision,
                    reason=f"the origin refused the pull: {reply}",
                )


# How much a rejection tells the origin (Table 2): the order in which a
# group's members' rejections win when one of them is reported for all.
def _described(key: str) -> str:
    """A quality key as the operator's log names it."""
    if key.startswith("smtp:"):
        return f"SMTP sender {key}"
    if key.startswith(SENDER_KEY_PREFIX):
        server, _, sender = key.removeprefix(SENDER_KEY_PREFIX).partition("/")
        return f"sender <{sender}> at {server}"
    return f"peer server {key}"


def _nobody(_decision: Decision, _by_user: bool) -> None:
    """The default of ``Destination.decided``: nobody is told."""
