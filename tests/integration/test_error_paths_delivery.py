"""More error paths of the delivery worker (server/delivery.py), against
scripted stand-ins (tests/integration/faults.py): discovery that fails or
denies, a busy peer, a refused DATA, a 452 in lock-step, a peer that breaks
the protocol or hangs up in the middle of a pull, retries that run out, and
the worker's own store failing under it. The outcome is asserted as the user
sees it (SENT at the origin, ENV at the destination) and on the wire.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from smdp.protocol import user as wire
from smdp.protocol.framing import dot_stuff
from tests.integration.faults import (
    HANG_UP,
    NXDOMAIN,
    SERVFAIL,
    StandInDns,
    StandInPeer,
    execute,
    full_log,
    hidden_table,
    refusing,
)
from tests.integration.harness import (
    PeerSocket,
    Server,
    facing_stand_in,
    free_ports,
    make_pair,
    running,
    wait_until,
)
from tests.integration.test_error_paths_peer import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    ENVID,
    announce,
    decide,
    entry,
    is_rcpt,
    queue_empty,
    sent,
    submit,
    verbs,
)

ENVELOPE_SENT = ("envelope-sent", "")


def test_discovery_that_denies_fails_at_once_and_that_fails_is_retried(
    tmp_path: Path,
) -> None:
    """protocol.md 10.1: NXDOMAIN means the domain has no SMDP server, a
    permanent failure with the DNS reason; SERVFAIL is temporary: retried,
    and delivered once DNS answers."""
    with StandInDns() as dns, StandInPeer("localhost") as peer:
        dns.answers = {"b.example": NXDOMAIN, "c.example": SERVFAIL}
        peer_port, user_port = free_ports(2)
        a = Server("a.example", "smdp.a.example", tmp_path, peer_port, user_port,
                   extra=dns.config)
        a.write_config()  # no static peers: discovery is DNS only
        a.add_user(ALICE)
        with running(a):
            _reply, msgid = submit(a, [BOB, "carol@c.example"])
            wait_until(lambda: sent(a, ALICE, msgid)[BOB][0] == "failed", what="bob fails")
            assert sent(a, ALICE, msgid) == {
                BOB: ("failed", "no SMDP server for b.example: _smdp._tcp.b.example. does "
                                "not exist (NXDOMAIN)"),
                "carol@c.example": ("queued", ""),
            }
            wait_until(lambda: a.query("SELECT last_error FROM queue WHERE last_error LIKE "
                                       "'%SERVFAIL%'"), what="the SERVFAIL on carol's job")
            dns.answers["c.example"] = [("localhost", peer.port)]
            wait_until(lambda: sent(a, ALICE, msgid)["carol@c.example"] == ENVELOPE_SENT,
                       what="carol's envelope once DNS answers")
    assert not peer.errors, peer.errors
    assert [c for c in peer.commands() if c.upper().startswith("RCPT")] == [
        "RCPT To:<carol@c.example>"]


def test_a_busy_peer_and_a_peer_that_breaks_the_protocol_are_tried_again(
    tmp_path: Path,
) -> None:
    """A greeting other than 220 (a server at its session cap) and a reply
    that is not SMTP-shaped are temporary failures: the next session delivers."""
    broken = iter(["hello there, this is not a reply"])

    def answer(command: str) -> str | None:
        return next(broken, None) if command.startswith("EHLO") else None

    with StandInPeer("smdp.b.example", answer) as peer:
        peer.greetings = ["421 4.7.0 too many sessions on this port, try again later"]
        a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
        with running(a):
            _reply, msgid = submit(a, [BOB])
            wait_until(lambda: sent(a, ALICE, msgid) == {BOB: ENVELOPE_SENT}, timeout=20,
                       what="delivered on the third session")
            log = full_log(a)
    assert not peer.errors, peer.errors
    assert len(peer.sessions) == 3
    assert peer.sessions[0].commands == []  # greeted 421: nothing was said
    assert peer.sessions[1].commands[0] == "EHLO smdp.a.example"
    assert f"unexpected greeting from 127.0.0.1:{peer.port}" in log
    assert "the peer broke the protocol" in log


@pytest.mark.parametrize("refusal", [
    "554 5.3.4 Message size exceeds fixed maximum of 10",
    "452 4.3.1 Insufficient system storage",
])
def test_a_refused_data_fails_every_recipient_or_is_retried(tmp_path: Path, refusal: str,
                                                            ) -> None:
    """DATA answered 5xx: every recipient of the transaction fails with the
    reply; 4xx: the transaction is sent again later."""
    refusals = iter([refusal])

    def answer(command: str) -> str | None:
        return next(refusals, None) if command == "DATA" else None

    with StandInPeer("smdp.b.example", answer) as peer:
        a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
        with running(a):
            _reply, msgid = submit(a, [BOB, CAROL])
            if refusal.startswith("5"):
                failed = ("failed", f"DATA: {refusal}")
                expected = {BOB: failed, CAROL: failed}
            else:
                expected = {BOB: ENVELOPE_SENT, CAROL: ENVELOPE_SENT}
            wait_until(lambda: sent(a, ALICE, msgid) == expected, what="SENT shows the outcome")
            wait_until(lambda: queue_empty(a), what="no job left")
    assert not peer.errors, peer.errors
    blocks = [b for s in peer.sessions for b in s.blocks]
    assert len(blocks) == (0 if refusal.startswith("5") else 1)
    assert verbs(peer.commands()).count("DATA") == (1 if refusal.startswith("5") else 2)


@pytest.mark.parametrize("full_after", [BOB, CAROL], ids=["first-rcpt", "second-rcpt"])
def test_a_452_in_lock_step_sends_to_those_taken_and_the_rest_later(
    tmp_path: Path, full_after: str,
) -> None:
    """Without PIPELINING the origin stops at a 452 to RCPT: recipients taken
    so far get this envelope, the one refused and those never asked get a new
    one. A 452 to the first RCPT leaves nothing to send now: the whole job
    waits and is tried again."""
    refused_once: list[str] = []

    def answer(command: str) -> str | None:
        if is_rcpt(command, full_after) and not refused_once:
            refused_once.append(command)
            return "452 4.5.3 Too many recipients"
        return None

    with StandInPeer("smdp.b.example", answer, pipelining=False) as peer:
        a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
        with running(a):
            _reply, msgid = submit(a, [BOB, CAROL, DAVE])
            wait_until(lambda: sent(a, ALICE, msgid) == dict.fromkeys((BOB, CAROL, DAVE),
                                                                      ENVELOPE_SENT),
                       what="every recipient's envelope")
            wait_until(lambda: queue_empty(a), what="no job left")
            envids = [e for (e,) in a.query("SELECT envid FROM out_envelopes")]
    assert not peer.errors, peer.errors
    asked = [c.split(":", 1)[1] for c in peer.commands() if c.upper().startswith("RCPT")]
    if full_after == CAROL:
        # bob taken, carol refused, dave never asked; then carol and dave.
        assert asked == [f"<{BOB}>", f"<{CAROL}>", f"<{CAROL}>", f"<{DAVE}>"]
        assert len(envids) == 2
    else:
        # Nothing taken: the same envelope again, all three.
        assert asked == [f"<{BOB}>", f"<{BOB}>", f"<{CAROL}>", f"<{DAVE}>"]
        assert len(envids) == 1
    assert len([b for s in peer.sessions for b in s.blocks]) == len(envids)


def test_an_origin_hanging_up_in_the_middle_of_a_pull_is_pulled_again(
    tmp_path: Path,
) -> None:
    """The origin closes the connection after half the announced octets:
    nothing is stored, the entry stays fetching, and the next try pulls the
    whole message."""
    body = b"Subject: hi\r\n\r\nHello Bob, the whole text.\r\n"
    whole = f"150 {len(body)} octets follow\r\n" + dot_stuff(body)[:-2].decode()
    answers = iter([f"150 {len(body)} octets follow\r\nSubject: hi" + HANG_UP, whole])

    def answer(command: str) -> str | None:
        return next(answers) if command.startswith("ACCEPT ") else None

    with StandInPeer("smdp.a.example", answer) as origin:
        b = facing_stand_in(tmp_path, "b.example", BOB, "a.example", origin.port)
        with running(b):
            announce(b, size=len(body))
            decide(b, "ACCEPT")
            wait_until(lambda: entry(b)["State"] == "accepted", what="the pull")
            wait_until(lambda: f"RECEIVED {ENVID}" in origin.commands(), what="RECEIVED")
            log = full_log(b)
            c = b.client(BOB)
            try:
                # After Return-Path, Delivered-To and b's Received (protocol.md 8.4).
                assert (c.call(wire.Retr(1)).body or b"").split(b"\r\n", 3)[3] == body
            finally:
                c.quit()
    assert not origin.errors, origin.errors
    assert re.search(r"will retry in [0-9.]+s: the peer closed the connection", log), log


def test_retries_that_run_out_fail_the_recipient_and_the_entry_with_why(
    tmp_path: Path,
) -> None:
    """protocol.md 13: after max_attempts tries the job gives up. At the
    origin every recipient of the envelope fails, at the destination the
    accepted entry fails, each with the last error."""
    a, b = make_pair(tmp_path)
    for server in (a, b):
        server.delivery = "max_attempts = 2"
        server.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a):  # b is down: a cannot deliver
        _reply, msgid = submit(a, [BOB])
        wait_until(lambda: sent(a, ALICE, msgid)[BOB][0] == "failed", what="bob fails")
        detail = sent(a, ALICE, msgid)[BOB][1]
    assert re.fullmatch(rf"gave up after 2 attempts: cannot connect to 127\.0\.0\.1:{b.peer_port}: "
                        r".*", detail), detail
    with running(b):  # a is down: b cannot report bob's decision nor pull
        announce(b)
        decide(b, "ACCEPT")
        wait_until(lambda: entry(b)["State"] == "failed", what="the entry fails")
        reason = entry(b)["Reason"]
    assert re.fullmatch(r"the origin refused the pull: gave up after 2 attempts: cannot connect "
                        rf"to 127\.0\.0\.1:{a.peer_port}: .*", reason), reason


def test_the_worker_survives_its_store_failing_under_it(tmp_path: Path) -> None:
    """The queue cannot be read: each scan fails and is logged, and the
    worker goes on. The outcome of a sent envelope cannot be recorded: it is
    recorded with the job's deletion (issue 15 item 1), so neither happens
    and both are tried again until the store takes them; the job stays
    queued meanwhile (after a crash it would send the envelope again with
    the same envid, protocol.md 13). Once the store is back it is recorded."""
    with StandInPeer("smdp.b.example") as peer:
        a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
        with running(a):
            with hidden_table(a, "queue"):
                wait_until(lambda: full_log(a).count("queue scan failed") >= 2,
                           what="two failed scans")
            with refusing(a, "UPDATE", "out_recipients"):
                _reply, msgid = submit(a, [BOB])
                wait_until(lambda: full_log(a).count("could not record") >= 2,
                           what="the record tried again")
                assert sent(a, ALICE, msgid) == {BOB: ("queued", "")}
                assert len(a.query("SELECT id FROM queue")) == 1  # the job is kept
            wait_until(lambda: sent(a, ALICE, msgid) == {BOB: ENVELOPE_SENT},
                       what="recorded once the store is back")
            wait_until(lambda: not a.query("SELECT id FROM queue"), what="the job deleted")
            log = full_log(a)
    assert not peer.errors, peer.errors
    assert len([c for c in peer.commands() if c.startswith("ENVELOPE ")]) == 1
    assert re.search(r"could not record and delete 1 finished jobs; trying again.*"
                     r"injected fault", log, re.S), log


def test_the_origin_refuses_an_accept_for_a_recipient_that_failed(tmp_path: Path) -> None:
    """protocol.md 6.3.7: an accept-family decision for a recipient whose
    delivery failed is "554 5.7.0 <envid> is no longer held: <detail>";
    RECEIVED for an unknown envid is 550 5.1.0."""
    refusal = f"550 5.1.1 <{CAROL}>: no such user here"

    def answer(command: str) -> str | None:
        return refusal if is_rcpt(command, CAROL) else None

    with StandInPeer("smdp.b.example", answer) as peer:
        a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
        with running(a):
            _reply, msgid = submit(a, [BOB, CAROL])
            wait_until(lambda: sent(a, ALICE, msgid)[CAROL] == ("failed", refusal),
                       what="carol fails")
            [(envid,)] = a.query("SELECT envid FROM out_envelopes")
            p = PeerSocket(a.peer_port)
            try:
                assert p.cmd("EHLO smdp.b.example").startswith("250")
                assert p.cmd(f"ACCEPT {envid} To:<{CAROL}>") == (
                    f"554 5.7.0 {envid} is no longer held: {refusal}")
                assert p.cmd(f"RECEIVED {'z' * 26}") == f"550 5.1.0 Unknown envelope {'z' * 26}"
                assert p.cmd(f"ACCEPT {envid} To:<{BOB}> BODY=HELD") == (
                    f"250 2.0.0 ACCEPT recorded for <{BOB}>")
            finally:
                p.close()
            assert sent(a, ALICE, msgid) == {BOB: ("delivered", "accepted by recipient"),
                                             CAROL: ("failed", refusal)}
    assert not peer.errors, peer.errors


def test_jobs_queued_by_an_older_version_still_find_their_peer(tmp_path: Path) -> None:
    """Jobs now name their peer domain (issue 15 item 1); a row queued before,
    without it, is routed from the store as it always was: here a send job
    and a decision job, each made old while its server was down."""
    a, b = make_pair(tmp_path)
    a.add_user(ALICE)
    b.add_user(BOB)

    def make_old(server: Server) -> None:
        [(job_id, payload)] = server.query("SELECT id, payload FROM queue")
        fields = json.loads(payload)
        assert fields.pop("domain") in ("a.example", "b.example")
        execute(server, f"UPDATE queue SET payload = '{json.dumps(fields)}' WHERE id = {job_id}")

    with running(a):  # b is down: the envelope waits in a's queue
        _reply, msgid = submit(a, [BOB])
    make_old(a)
    with running(a, b):
        wait_until(lambda: len(b.envelopes(BOB)) == 1, what="the envelope at b")
    with running(b):  # a is down: the decision waits in b's queue
        decide(b, "ACCEPT")
    make_old(b)
    with running(a, b):
        wait_until(lambda: sent(a, ALICE, msgid)[BOB][0] == "delivered", what="the pull")
        wait_until(lambda: queue_empty(a) and queue_empty(b), what="both queues empty")
