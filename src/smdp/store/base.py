"""The storage interface every backend implements.

The SQLite backend (``sqlite.py``) is the reference implementation; a
PostgreSQL backend implements the same methods with the same semantics. The
domain core (``smdp.core``) and the adapters (``smdp.server``) only ever see
this interface and the records of ``records.py``: no SQL leaves a backend.

Semantics every backend keeps:

- ``transaction()`` is one atomic unit; nested calls join the enclosing one.
  A state change and the queue entry it causes are written in one transaction.
- A method that writes and is called outside ``transaction()`` is its own
  transaction only where it says so (user and identity administration);
  every other write is meant to run inside a caller's transaction.
- Committed data survives a crash (SQLite: WAL with synchronous=FULL; with
  group commit, synchronous=NORMAL and a flusher thread, and nothing answered
  before the flusher's fsync: smdp.store.group_commit).
- Message bodies are stored a chunk per row (``out_body_chunks``,
  ``in_body_chunks``) and read a chunk at a time (``out_body_chunk``,
  ``in_body_chunk``), so no body is ever in memory whole. A body passed in
  may be a :class:`~smdp.mail.body.Body` or, for older callers, bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from smdp.mail.body import Body
from smdp.store.group_commit import WalFlusher
from smdp.store.records import (
    ApiToken,
    CachedPolicy,
    Group,
    GroupDelivery,
    ImapListed,
    ImapSent,
    InboundListing,
    InEnvelope,
    Job,
    ListEntry,
    MailboxCounts,
    MailboxEntry,
    OutEnvelope,
    OutMessage,
    OutRecipient,
    Quality,
    QueuedJob,
    Unsubscribe,
    User,
)

__all__ = ["Store"]


class StoreError(Exception):
    """The store cannot do what was asked (the message says why)."""


def newer_than(current: int, known: Sequence[tuple[int, str, str]]) -> None:
    """StoreError when the database's schema ``current`` is newer than every
    migration this smdp ships (``known``): a newer smdp upgraded it, and this
    one would misread what it does not know (docs/deployment.md, "Upgrades":
    there are no downgrades)."""
    head = known[-1][0]
    if current > head:
        raise StoreError(
            f"the store is at schema version {current}, newer than this smdp knows "
            f"({head}): a newer smdp upgraded it; run that version, or restore the backup "
            "taken before the upgrade (docs/deployment.md, \"Upgrades\")")


class Store(Protocol):
    # Issue 15 item 1: what this store has asked of its database since it
    # opened (the metrics endpoint shows them; ``make bench`` divides them by
    # the messages). ``statements``: every statement but the BEGIN and COMMIT
    # of ``transaction()`` (a statement run for many rows at once counts once
    # per row); ``transactions``: the ``transaction()`` blocks committed;
    # ``commits``: the commits that wrote something, a transaction's or a
    # lone write's own (each a flush to disk: SQLite's fsync with
    # synchronous=FULL, PostgreSQL's WAL flush). On PostgreSQL every
    # statement, BEGIN and COMMIT is a round trip to the server.
    statements: int
    transactions: int
    commits: int
    # Group commit (smdp.store.group_commit): set once ``start_group_commit``
    # has run on a store that batches its fsyncs; None where every commit is
    # durable when it returns (SQLite with synchronous=FULL, PostgreSQL).
    flusher: WalFlusher | None

    def start_group_commit(self) -> WalFlusher | None:
        """Batch the fsyncs of concurrent commits, where this backend can;
        None where it cannot (its commits stay durable when they return)."""
        ...

    def close(self) -> None:
        ...

    def schema_version(self) -> int:
        ...

    def migrate(self) -> list[str]:
        """Apply every migration newer than the database, each in its own transaction."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """One atomic unit: everything inside commits together or not at all."""
        ...

    def create_user(self, main_address: str, password_hash: str) -> User:
        ...

    def add_identity(self, user_id: int, address: str) -> None:
        ...

    def remove_identity(self, user_id: int, address: str) -> None:
        ...

    def set_password(self, user_id: int, password_hash: str) -> None:
        ...

    def user_by_address(self, address: str) -> User | None:
        ...

    def user_by_id(self, user_id: int) -> User | None:
        ...

    def identities(self, user_id: int) -> list[str]:
        ...

    def users(self) -> list[User]:
        ...

    def insert_out_message(
        self, *, msgid: str, user_id: int, sender: str, body: Body | bytes, subject: str,
        summary: str, expires_at: float,
    ) -> int:
        """Store a held message; its size is ``body.size``, its body written a chunk
        (``CHUNK_SIZE``) per row."""
        ...

    def out_message(self, message_id: int) -> OutMessage | None:
        ...

    def out_message_by_msgid(self, msgid: str) -> OutMessage | None:
        ...

    def out_messages_of(self, user_id: int, limit: int = 100,
                        before: int | None = None) -> list[OutMessage]:
        """The user's newest ``limit`` sent messages, newest first; with
        ``before`` (a message's id) only those sent before it."""
        ...

    def out_body_chunk(self, message_id: int, seq: int) -> bytes | None:
        """Chunk ``seq`` (from 0) of the held body: None past the end, or when the
        body is not held. Chunks may be of any size; the total is ``OutMessage.size``."""
        ...

    def out_body(self, message_id: int) -> bytes | None:
        """The whole held body (``b""`` if empty, None if not held): for tests and
        small uses only."""
        ...

    def drop_out_body(self, message_id: int) -> None:
        """Delete the held body (its chunks) and keep the message record."""
        ...

    def drop_out_body_if_done(self, message_id: int, needs_body: Collection[str]) -> bool:
        """``drop_out_body`` once no recipient of the message is in a state of
        ``needs_body`` (assumptions 4 and 6), decided in the statement that
        drops it; True when it dropped the body now."""
        ...

    def insert_out_envelope(self, envid: str, message_id: int, domain: str, mode: str) -> None:
        ...

    def out_envelope(self, envid: str) -> OutEnvelope | None:
        ...

    def out_envelope_and_message(self, envid: str) -> tuple[OutEnvelope, OutMessage] | None:
        """The envelope and its message, in one statement."""
        ...

    def insert_out_recipient(
        self, message_id: int, recipient: str, domain: str, state: str, envid: str | None,
        detail: str = "", route: str = "smdp",
    ) -> None:
        ...

    def out_recipients(self, message_id: int) -> list[OutRecipient]:
        ...

    def out_recipients_of_envelope(self, envid: str) -> list[OutRecipient]:
        ...

    def update_out_recipient(
        self, rcpt_id: int, state: str, detail: str = "", envid: str | None = None,
        route: str | None = None,
    ) -> None:
        """``route`` (with ``envid``): the recipient moves to an envelope
        that leaves by that route (``terms.RouteKind``)."""
        ...

    def add_spam_report(
        self, user_id: int, sender: str, recipient: str, kind: str, envid: str
    ) -> None:
        ...

    def spam_reports(self) -> list[tuple[str, int]]:
        ...

    def count_spam_reports(self, user_id: int, since: float) -> int:
        """SPAM and SPAMMER reports against a local user since ``since``."""
        ...

    def set_suspension(self, user_id: int, reason: str | None) -> None:
        """Suspend a user's sending (a reason) or lift it (None). Own transaction."""
        ...

    def suspension(self, user_id: int) -> str | None:
        ...

    def suspended_users(self) -> list[tuple[str, str]]:
        ...

    def insert_in_envelope(
        self, *, envid: str, origin_server: str, sender: str, size: int, block: str,
        subject: str, body: Body | bytes | None, smtp_auth: str | None = None,
        verified_domain: str | None = None, mail_from: str | None = None,
        client_prefix: str | None = None, expires_at: float | None = None,
    ) -> int:
        """``size`` is what the envelope announced; with a body, the body's own size.
        ``expires_at``: as ``set_in_expiry``, in the same statement."""
        ...

    def in_envelope(self, envelope_id: int) -> InEnvelope | None:
        ...

    def in_envelope_by_envid(self, envid: str) -> InEnvelope | None:
        ...

    def set_in_expiry(self, envelope_id: int, expires_at: float) -> None:
        ...

    def expire_out_messages(
        self, now: float, *, open_states: Collection[str], expired: str, detail: str,
        before_expiry: Callable[[int], None] | None = None,
    ) -> int:
        """Origin: recipients in ``open_states`` of messages past ``expires_at``
        end in state ``expired`` with ``detail``; the held body is deleted. Its
        own transaction. The states are the caller's (the rules own them).
        ``before_expiry(message_id)`` runs inside that transaction for each
        message, before its recipients change and its body goes (the delivery
        status notification is written there: with the expiry, or not at all)."""
        ...

    def expire_in_envelopes(
        self, now: float, *, undecided: str, open_states: Collection[str], expired: str,
        reason: str,
    ) -> list[tuple[int, str]]:
        """Destination: entries in ``open_states`` of envelopes past their
        Expires end in state ``expired`` with ``reason``; returns those that
        were ``undecided`` (entry id, origin server). Its own transaction."""
        ...

    def purge(self, before: float, *, expired: str) -> int:
        """Delete origin records expired before ``before`` and envelopes no one
        keeps (all entries deleted, or in state ``expired`` since before
        ``before``). Its own transaction."""
        ...

    def compact(self) -> None:
        """Return freed space to the file system (vacuum or equivalent)."""
        ...

    def set_in_body(self, envelope_id: int, body: Body | bytes) -> None:
        """Store (or replace) the envelope's body; ``InEnvelope.size`` becomes its size."""
        ...

    def in_body_chunk(self, envelope_id: int, seq: int) -> bytes | None:
        """Chunk ``seq`` (from 0) of the stored body: None past the end, or when
        there is no body. Chunks may be of any size; the total is ``InEnvelope.size``."""
        ...

    def in_body_heads(self, envelope_ids: Sequence[int], limit: int) -> dict[int, bytes]:
        """The first ``limit`` octets of the first chunk of each stored body
        of ``envelope_ids``, in a few statements whatever their number (IMAP
        reads the headers of a whole mailbox so). Envelopes without a body
        are left out. A header longer than the first chunk is not all here:
        read it with ``in_body_chunk``."""
        ...

    def drop_smtp_bodies(self, keep_states: Collection[str],
                         envelope_id: int | None = None) -> int:
        """Free the bytes of mail that arrived by SMTP (migration 0010) once no
        entry of it that is not deleted is in ``keep_states``; only
        ``envelope_id``'s when given. Returns the bodies freed."""
        ...

    def in_body(self, envelope_id: int) -> bytes | None:
        """The whole stored body (``b""`` if empty, None if none): for tests and
        small uses only."""
        ...

    def insert_mailbox_entry(
        self, user_id: int, envelope_id: int, recipient: str, state: str
    ) -> int:
        ...

    def mailbox_entry(self, entry_id: int) -> MailboxEntry | None:
        ...

    def mailbox_entry_and_envelope(self, entry_id: int
                                   ) -> tuple[MailboxEntry, InEnvelope] | None:
        """The entry and its envelope, in one statement."""
        ...

    def mailbox_entry_for(self, envelope_id: int, recipient: str) -> MailboxEntry | None:
        ...

    def mailbox_entries(
        self, user_id: int, states: Sequence[str] | None = None
    ) -> list[MailboxEntry]:
        ...

    def mailbox_page(self, user_id: int, states: Sequence[str] | None = None, *,
                     search: str = "", before: int | None = None,
                     limit: int = 50) -> list[tuple[MailboxEntry, InEnvelope]]:
        """A page of the mailbox, newest first, with each entry's envelope;
        ``states`` None: every state but ``appended`` (no envelopes)."""
        ...

    def entries_of_envelope(self, envelope_id: int) -> list[MailboxEntry]:
        ...

    def entries_from(self, user_id: int, sender: str, server: str, state: str) -> list[int]:
        """The user's mailbox entries in ``state`` from ``sender`` via ``server``."""
        ...

    def update_mailbox_entry(
        self, entry_id: int, *, state: str, decision: str | None = None, reason: str | None = None
    ) -> None:
        ...

    def set_entries_state(self, envelope_id: int, old: str, new: str) -> int:
        """Every entry of the envelope in state ``old`` moves to ``new`` (one
        statement); how many did."""
        ...

    def mark_deleted(self, entry_ids: Sequence[int]) -> None:
        ...

    def mailbox_counts(self, user_id: int) -> MailboxCounts:
        """The user's counts (zeros for a user who never had an entry)."""
        ...

    def mailbox_after(self, user_id: int, states: Sequence[str] | None, *, after: int,
                      limit: int) -> list[tuple[MailboxEntry, InEnvelope]]:
        """At most ``limit`` entries with an id above ``after``, oldest first,
        each with its envelope: ENVS's pages. ``states`` None: every entry,
        deleted ones too, but the messages clients appended (state
        ``appended``: no envelopes) (ENVS ALL); else the ones in ``states``
        not deleted."""
        ...

    def maildrop(self, user_id: int, state: str) -> list[tuple[int, int]]:
        """The POP3 maildrop (entries in ``state``, accepted, not deleted),
        oldest first: each entry's id and its size as RETR sends it."""
        ...

    def envids_of(self, entry_ids: Sequence[int]) -> dict[int, str]:
        """The envelope id of each of ``entry_ids`` that exists (UIDL)."""
        ...

    # -- IMAP (issue 14, migration 0013) ----------------------------------------

    def imap_assign_uids(self, user_id: int, mailbox: str, entry_ids: Sequence[int]) -> None:
        """Give each of ``entry_ids`` (in this order) the mailbox's next UID,
        unless it has one there already. A UID is never given twice: the
        counter only grows, even when messages are purged."""
        ...

    def imap_uidnext(self, user_id: int, mailbox: str) -> int:
        """The UID the mailbox's next message will get (1 for a new one)."""
        ...

    def imap_set_flags(self, user_id: int, mailbox: str,
                       flags: Sequence[tuple[int, int]]) -> None:
        """Store ``(entry_id, flags)`` pairs of ``mailbox``, all or none, and
        count the change (``imap_signature``)."""
        ...

    # -- IMAP mailboxes by state and placement (issue 14, migration 0018) --------

    def imap_view(self, user_id: int, mailbox: str, states: Sequence[str]
                  ) -> list[ImapListed]:
        """What ``mailbox`` shows, by UID: the entries in ``states`` nobody
        placed elsewhere and the entries placed in it, none deleted, with a
        UID there."""
        ...

    def imap_view_unassigned(self, user_id: int, mailbox: str, states: Sequence[str]
                             ) -> list[int]:
        """The entries ``mailbox`` shows (as ``imap_view``) without a UID
        there yet, by entry id."""
        ...

    def imap_view_signature(self, user_id: int, mailbox: str, states: Sequence[str]
                            ) -> tuple[int, int, int]:
        """Number and id sum of what ``mailbox`` shows, and its count of flag
        changes: a poll reads the mailbox again only when this changed."""
        ...

    def imap_place(self, user_id: int, entry_id: int, folder: str | None, body: bool,
                   leaving: str) -> None:
        """Place an entry in ``folder`` (showing its real message when
        ``body``), or back where its state puts it (None); its UID in
        mailbox ``leaving`` is dropped."""
        ...

    def imap_append(self, user_id: int, *, recipient: str, mailbox: str, folder: str | None,
                    envid: str, origin_server: str, block: str, subject: str, body: Body,
                    received_at: float, flags: int, reason: str) -> tuple[int, int]:
        """Store a message an IMAP client wrote in (APPEND, docs/imap.md): an
        envelope of ``origin_server`` with the null sender, received at
        ``received_at`` (the client's INTERNALDATE), its body, an entry in
        state ``appended`` placed in ``folder`` (None: where the state puts it,
        INBOX), and its UID with ``flags`` in ``mailbox``, in one transaction.
        Returns the entry's id and its UID."""
        ...

    def imap_folders(self, user_id: int) -> list[str]:
        """The folders the user created, by name."""
        ...

    def imap_create_folder(self, user_id: int, name: str) -> bool:
        """Create a folder; False when it exists."""
        ...

    def imap_rename_folder(self, user_id: int, old: str, new: str) -> None:
        """Rename a folder with its messages, their UIDs and its UID counter."""
        ...

    def imap_sent_view(self, user_id: int) -> list[ImapSent]:
        """The user's sent messages, oldest first, each with its UID in Sent
        and the states its summary shows (None before it has one) and the
        recipients' states now."""
        ...

    def imap_sent_assign(self, user_id: int, shown: Sequence[tuple[int, str]]) -> None:
        """Give each ``(message_id, states)`` a new UID in Sent, in that
        order, and keep the states its summary is written with."""
        ...

    def imap_delete_folder(self, user_id: int, name: str) -> None:
        """Delete a folder; the messages placed in it are deleted with it."""
        ...

    def users_with_entries(self, state: str) -> list[int]:
        """The users with a mailbox entry in ``state`` not marked deleted."""
        ...

    def pending_notice(self, user_id: int) -> tuple[float, int] | None:
        """When the user last got a pending notice, and the newest entry it
        listed; None if never."""
        ...

    def claim_pending_notice(self, user_id: int, now: float, last_entry: int,
                             not_after: float) -> bool:
        """Record a pending notice sent at ``now`` listing entries up to
        ``last_entry``, unless the last one was sent after ``not_after`` or
        already listed ``last_entry``. True when recorded: only then may the
        caller store the notice, in the same transaction (two nodes never
        both send one)."""
        ...

    def count_messages(self, server: str, n: int, also: Sequence[str] = ()) -> None:
        """``n`` messages more for ``server`` and for each key of ``also``
        (one statement)."""
        ...

    def count_forged(self, server: str, n: int) -> None:
        """``n`` envelopes or messages that ``server`` sent for a domain it has
        not proved to serve: each counts as a message voted -1, with no
        mailbox entry (nobody saw it)."""
        ...

    def set_vote(self, entry_id: int, server: str, vote: int,
                 also: Sequence[str] = ()) -> list[Quality] | None:
        """Record one user's vote on one message; a changed vote replaces the old one.
        ``also``: more quality keys that move with ``server``'s (an SMTP
        message counts for its verified domain and its client's prefix).
        Returns each key's quality after the vote (``server`` first, then
        ``also``), read by the statement that moved it; None when the vote
        did not change (nothing moved)."""
        ...

    # Issue 16 item 1: seconds per half-life of the quality counters (0:
    # they never age) and the clock their aging, deciders and probation read.
    half_life: float
    clock: Callable[[], float]

    def quality(self, server: str) -> Quality:
        """``server``'s counters, the aged ones as of now, its recent deciders
        and its last standing."""
        ...

    def all_quality(self) -> list[Quality]:
        """Every key but the per-sender ones, by name."""
        ...

    def sender_quality(self) -> list[Quality]:
        """The quality kept per sending address at a peer (``sender:`` keys)."""
        ...

    def set_standing(self, server: str, standing: str) -> None:
        """Remember the standing last judged (the hysteresis reads it)."""
        ...

    def take_probation(self, server: str, per_day: int) -> bool:
        """Count one of ``server``'s ``per_day`` envelopes of probation
        today; False (nothing counted) when they are used."""
        ...

    def set_override(self, server: str, override: str | None, reason: str = "") -> None:
        ...

    def sample_quality(self, now: float, every: float) -> int:
        ...

    def quality_history(self, server: str, since: float) -> list[tuple[float, int, int]]:
        ...

    def drop_quality_samples(self, before: float) -> int:
        ...

    def is_admin(self, user_id: int) -> bool:
        ...

    def set_admin(self, user_id: int, admin: bool) -> None:
        ...

    def inbound_listing(self, user_id: int, address: str, server: str
                        ) -> InboundListing | None:
        """The pair's list entry with what made it, or None."""
        ...

    def inbound_kind(self, user_id: int, address: str, server: str) -> str | None:
        ...

    def outbound_kind(self, user_id: int, address: str) -> str | None:
        ...

    def put_inbound(self, user_id: int, kind: str, address: str, server: str, how: str,
                    source: tuple[int, str] | None = None) -> None:
        """Add a pair; one pair sits on at most one list, so this moves it if needed."""
        ...

    def put_outbound(self, user_id: int, kind: str, address: str, how: str) -> None:
        ...

    def drop_inbound(self, user_id: int, kind: str, address: str, server: str) -> bool:
        ...

    def drop_outbound(self, user_id: int, kind: str, address: str) -> bool:
        ...

    def touch_inbound(self, user_id: int, address: str, server: str) -> None:
        ...

    def touch_outbound(self, user_id: int, address: str) -> None:
        ...

    def list_entries(self, user_id: int) -> list[ListEntry]:
        ...

    def add_api_token(self, user_id: int, name: str, digest: str, now: float) -> int:
        """A web API token (migration 0016), kept as ``digest`` only; its id."""
        ...

    def api_tokens(self, user_id: int) -> list[ApiToken]:
        ...

    def api_token_by_hash(self, digest: str) -> ApiToken | None:
        ...

    def touch_api_token(self, token_id: int, now: float) -> None:
        ...

    def drop_api_token(self, user_id: int, token_id: int) -> bool:
        """Revoke one of ``user_id``'s tokens; False when it has none of that id."""
        ...

    def drop_api_tokens(self, user_id: int) -> int:
        """Revoke every token of the user (a password change); how many."""
        ...

    def sent_changed(self, user_id: int, newest: int) -> float | None:
        """The latest state change among the recipients of the user's
        ``newest`` sent messages."""
        ...

    def enqueue(self, kind: str, key: str, payload: str, at: float | None = None) -> None:
        ...

    def claim_jobs(self, node: str, now: float, limit: int, lease: float) -> list[Job]:
        """Claim due jobs for ``node`` until ``now + lease``: only the oldest job
        of each key, never one another node holds a live claim on."""
        ...

    def release_claims(self, node: str) -> int:
        """Give back every claim ``node`` holds (it restarted: none is running)."""
        ...

    def finish_job(self, job_id: int) -> None:
        ...

    def finish_jobs(self, job_ids: Sequence[int]) -> None:
        """Delete several finished jobs in one transaction."""
        ...

    def retry_job(self, job_id: int, at: float, error: str) -> None:
        ...

    def queue_size(self) -> int:
        ...

    def queue_schedule(self, limit: int = 1000) -> list[QueuedJob]:
        ...

    def queue_by_peer(self) -> list[tuple[str, int, float]]:
        ...

    def retry_now(self, job_id: int, now: float) -> bool:
        ...

    def jobs(self) -> list[Job]:
        ...

    def mta_sts_policy(self, domain: str) -> CachedPolicy | None:
        """``domain``'s cached MTA-STS policy, expired or not (migration 0008)."""
        ...

    def put_mta_sts_policy(self, policy: CachedPolicy) -> None:
        """Store (or replace) a domain's policy."""
        ...

    def drop_mta_sts_policy(self, domain: str, *, expired_by: float | None = None) -> bool:
        """Forget a domain's policy; with ``expired_by``, only one that had expired by then."""
        ...

    def set_recipients_tls(self, rcpt_ids: Sequence[int], outcome: str) -> None:
        """Record the TLS outcome of the SMTP delivery to these recipients."""
        ...

    def recipients_tls(self, message_id: int) -> dict[int, str]:
        """Recipient id -> its recorded TLS outcome ('' when none)."""
        ...

    # -- unsubscribing and local groups (migration 0015; docs/lists.md) ----------

    def insert_unsubscribe(self, entry_id: int, user_id: int, method: str, target: str,
                           state: str, detail: str = "") -> Unsubscribe:
        """Record a request to leave the list of ``entry_id``; an entry has
        at most one: when it has one already, that one is returned unchanged."""
        ...

    def unsubscribe_of_entry(self, entry_id: int) -> Unsubscribe | None:
        ...

    def unsubscribe(self, unsub_id: int) -> Unsubscribe | None:
        ...

    def set_unsubscribe_state(self, unsub_id: int, state: str, detail: str) -> None:
        ...

    def create_group(self, address: str, kind: str, owner_id: int | None) -> int:
        """A new alias or list; its id. The address must be free."""
        ...

    def drop_group(self, address: str) -> bool:
        """Delete a group with its members and its post records."""
        ...

    def group(self, address: str) -> Group | None:
        ...

    def groups(self) -> list[Group]:
        ...

    def add_group_member(self, group_id: int, address: str) -> bool:
        """False when ``address`` is a member already."""
        ...

    def drop_group_member(self, group_id: int, address: str) -> bool:
        ...

    def group_members(self, group_id: int) -> list[str]:
        ...

    def add_group_post(self, message_id: int, group_id: int) -> None:
        """``message_id`` was expanded from the group (once per pair)."""
        ...

    def group_deliveries(self, group_id: int, limit: int = 20) -> list[GroupDelivery]:
        """Each recipient of the group's ``limit`` newest posts, newest first."""
        ...
