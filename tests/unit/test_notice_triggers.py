"""When the origin writes a delivery status notification (``core/origin.py``
``_report_failures``; issue 10, item 7 (a)), on real SQLite stores: one per
batch of recipients that fail for good, in the sender's own mailbox, in the
transaction that records the failure; never twice for a recipient, never for
a recipient's rejection, never to the null sender, and never about itself."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from smdp.core.origin import Origin
from smdp.mail.body import Body
from smdp.terms import Decision, EntryState, ListedBy, ListKind
from tests.unit.test_core_rules import A_HOST, World

BOB, CAROL, DAVE = "bob@b.example", "carol@b.example", "dave@b.example"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def envid_of(world: World, msgid: str) -> str:
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None
    [envid] = {r.envid for r in world.a.out_recipients(msg.id)}
    assert envid is not None
    return envid


def reports(world: World) -> list[EmailMessage]:
    """The messages in alice's mailbox at a.example, parsed."""
    out = []
    for entry in world.a.mailbox_entries(world.alice.id, [EntryState.ACCEPTED]):
        env = world.a.in_envelope(entry.envelope_id)
        assert env is not None
        assert (env.sender, env.origin_server, entry.recipient) == ("", A_HOST,
                                                                    "alice@a.example")
        raw = world.a.in_body(env.id)
        assert raw is not None
        msg = message_from_bytes(raw, policy=default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


def failed_in(report: EmailMessage) -> dict[str, tuple[str, str | None]]:
    """recipient -> (Status, Diagnostic-Code) of a DSN's per-recipient blocks."""
    assert report.get_content_type() == "multipart/report"
    blocks = report.get_payload()[1].get_payload()
    return {b["Final-Recipient"].removeprefix("rfc822; "): (b["Status"], b["Diagnostic-Code"])
            for b in blocks[1:]}


def test_two_refused_recipients_of_one_envelope_get_one_report(world: World) -> None:
    msgid = world.send([BOB, CAROL, DAVE])
    envid = envid_of(world, msgid)
    refused = {BOB: "550 5.1.1 <bob@b.example>: no such user here",
               CAROL: "550 5.7.1 <carol@b.example>: relaying denied"}
    world.origin.envelope_sent(envid, refused)
    [report] = reports(world)
    assert report["Subject"] == "Undelivered mail: hello"
    assert failed_in(report) == {BOB: ("5.1.1", f"smtp; {refused[BOB]}"),
                                 CAROL: ("5.7.1", f"smtp; {refused[CAROL]}")}
    # The envelope reported again (a replayed job) changes nothing.
    world.origin.envelope_sent(envid, refused)
    assert len(reports(world)) == 1


def test_recipients_failing_at_different_times_get_a_report_each_time(world: World) -> None:
    """One report per failure batch: each recipient named once, in the batch
    in which it failed."""
    msgid = world.send([BOB, CAROL])
    envid = envid_of(world, msgid)
    world.origin.envelope_sent(envid, {BOB: "550 5.1.1 no such user"}, deferred=[CAROL])
    later = {r.recipient: r.envid for r in world.a.out_recipients(
        world.a.out_message_by_msgid(msgid).id)}[CAROL]  # type: ignore[union-attr]
    assert later is not None and later != envid
    world.origin.delivery_failed(later, "gave up after 30 attempts: cannot connect", "5.4.7")
    first, second = reports(world)
    assert failed_in(first) == {BOB: ("5.1.1", "smtp; 550 5.1.1 no such user")}
    assert failed_in(second) == {CAROL: ("5.4.7", None)}
    world.origin.delivery_failed(later, "again", "5.4.7")
    assert len(reports(world)) == 2


def test_no_smdp_server_for_the_domain_is_reported_as_such(world: World) -> None:
    envid = envid_of(world, world.send([BOB]))
    world.origin.delivery_failed(envid, "no SMDP server for b.example: NXDOMAIN", "5.1.2")
    [report] = reports(world)
    assert failed_in(report) == {BOB: ("5.1.2", None)}
    text = report.get_payload()[0].get_content()
    assert "<bob@b.example>: no SMDP server for b.example: NXDOMAIN" in text


def test_a_direct_send_refused_is_reported(world: World) -> None:
    world.a.put_outbound(world.alice.id, ListKind.WHITE, BOB, ListedBy.MANUAL)
    envid = envid_of(world, world.send([BOB]))
    world.origin.direct_sent(envid, [], [], {BOB: "550 5.1.1 <bob@b.example>: no such user"})
    [report] = reports(world)
    assert failed_in(report) == {BOB: ("5.1.1", "smtp; 550 5.1.1 <bob@b.example>: no such user")}


def test_a_refusal_at_the_source_is_reported_at_once(world: World) -> None:
    """The sender's own server refused the recipient (its outbound black
    list): the sender is told, in the submission's transaction."""
    world.a.put_outbound(world.alice.id, ListKind.BLACK, BOB, ListedBy.MANUAL)
    result = world.origin.submit(world.alice, "alice@a.example", [BOB, CAROL],
                                 b"Subject: hello\r\n\r\nhi\r\n")
    assert result.refused == [BOB]
    [report] = reports(world)
    assert failed_in(report) == {BOB: ("5.7.1", None)}


def test_a_rejection_by_the_recipient_or_their_list_is_no_failure(world: World) -> None:
    """REJECT&SPAMMER (a list at the destination refused it) is a decision,
    shown by SENT; the sender gets no report of it."""
    envid = envid_of(world, world.send([BOB]))
    world.origin.envelope_sent(envid, {})
    world.origin.on_decision(envid, BOB, Decision.REJECT_SPAMMER, False)
    assert reports(world) == []


def test_reports_can_be_turned_off(world: World) -> None:
    world.origin = Origin(world.a, hostname=A_HOST, expire_days=30, delivery_reports=False)
    envid = envid_of(world, world.send([BOB]))
    world.origin.envelope_sent(envid, {BOB: "550 5.1.1 no such user"})
    assert reports(world) == []


def test_the_null_sender_is_never_told(world: World) -> None:
    """A message with the null sender (a report itself, were one ever sent
    on) fails without a report: no report about a report."""
    with world.a.transaction():
        message_id = world.a.insert_out_message(
            msgid="n" * 26, user_id=world.alice.id, sender="", body=Body.of(b"Subject: x\r\n"),
            subject="x", summary="", expires_at=0.0)
        world.a.insert_out_envelope("e" * 26, message_id, "b.example", "envelope")
        world.a.insert_out_recipient(message_id, BOB, "b.example", "queued", "e" * 26)
    world.origin.delivery_failed("e" * 26, "550 5.1.1 no such user")
    assert world.a.mailbox_entries(world.alice.id) == []


def test_a_decision_on_a_report_tells_nobody(world: World) -> None:
    envid = envid_of(world, world.send([BOB]))
    world.origin.envelope_sent(envid, {BOB: "550 5.1.1 no such user"})
    [entry] = world.a.mailbox_entries(world.alice.id, [EntryState.ACCEPTED])
    jobs = [(j.kind, json.loads(j.payload)) for j in world.a.jobs()]
    dest = world.dest.__class__(world.a, quality=world.dest.quality_policy, hostname=A_HOST)
    result = dest.decide(world.alice, entry.id, Decision.REJECT_SPAMMER)
    assert result.entry is not None and result.entry.state is EntryState.SPAMMER
    assert [(j.kind, json.loads(j.payload)) for j in world.a.jobs()] == jobs  # nothing queued
    assert world.a.list_entries(world.alice.id) == []  # the null sender listed nowhere


def test_a_direct_send_refused_again_is_not_reported_again(world: World) -> None:
    """A replayed direct send (its job run twice) fails a recipient once:
    one that already failed is no longer queued, so neither its state nor
    the report changes."""
    world.a.put_outbound(world.alice.id, ListKind.WHITE, BOB, ListedBy.MANUAL)
    envid = envid_of(world, world.send([BOB]))
    refused = {BOB: "550 5.1.1 <bob@b.example>: no such user"}
    world.origin.direct_sent(envid, [], [], refused)
    world.origin.direct_sent(envid, [], [], {BOB: "550 5.7.1 another answer"})
    assert len(reports(world)) == 1
    [msg] = world.a.out_messages_of(world.alice.id)
    [rcpt] = world.a.out_recipients(msg.id)
    assert rcpt.detail == refused[BOB]


def test_the_report_quotes_the_header_of_the_failed_message(world: World) -> None:
    """The report's last part is the failed message's own header (RFC 3464
    text/rfc822-headers), read from the start of the held body."""
    body = (b"Subject: hello\r\nX-Tracking-Tag: 8f3e\r\nTo: <bob@b.example>\r\n\r\n"
            + b"the body, never quoted\r\n")
    envid = envid_of(world, world.send([BOB], body=body))
    world.origin.envelope_sent(envid, {BOB: "550 5.1.1 no such user"})
    [report] = reports(world)
    quoted = report.get_payload()[2]
    assert quoted.get_content_type() == "text/rfc822-headers"
    text = quoted.get_payload(decode=True).decode()
    assert "X-Tracking-Tag: 8f3e" in text and "To: <bob@b.example>" in text
    assert "never quoted" not in text
