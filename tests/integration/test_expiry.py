"""Expiry (issue 3, item 3): held mail nobody decided on expires at the origin,
shows as expired at the destination, and is really removed from disk later."""

from __future__ import annotations

from pathlib import Path

import pytest

from smdp.client.session import ClientError
from smdp.protocol import user as wire
from smdp.terms import Decision
from tests.integration.harness import Server, make_pair, running, wait_until

HOLD_DAYS = 4 / 86400  # four seconds


def short_hold(server: Server) -> None:
    text = server.config_path.read_text()
    server.config_path.write_text(text.replace(
        "poll_interval = 0.1\n",
        f"poll_interval = 0.1\nexpire_days = {HOLD_DAYS}\nhousekeeping_interval = 0.3\n"))


ALICE, BOB = "alice@a.example", "bob@b.example"


def states(b: Server) -> list[str]:
    """The state of each of bob's entries, from ENVS ALL."""
    return [env[1] for env in b.envelopes(BOB, all=True)]


def on_disk(server: Server, needle: bytes) -> bool:
    return any(needle in p.read_bytes()
               for p in server.root.glob(f"{server.db_path.name}*") if p.is_file())


def test_undecided_mail_expires_on_both_sides_and_leaves_the_disk(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    short_hold(a)
    short_hold(b)
    a.add_user("alice@a.example")
    b.add_user("bob@b.example")
    token = b"TOKEN-4f1d7c-nobody-decides"
    with running(a, b):
        c = a.client("alice@a.example")
        c.submit(["bob@b.example"], b"Subject: unanswered\r\n\r\n" + token + b"\r\n")
        c.quit()
        # The store's own files: checked for SQLite (PostgreSQL keeps its files
        # in the cluster; there VACUUM frees the rows' space for reuse). Looked
        # at right after the submission: the hold period runs from there.
        sqlite = a.backend == "sqlite"
        assert on_disk(a, token) or not sqlite  # the origin holds the message
        wait_until(lambda: states(b) == ["pending"], what="the envelope")
        # Nobody decides: the origin expires it, the destination shows it.
        wait_until(lambda: [row[2] for row in a.sent(ALICE)] == ["expired"],
                   what="expiry at the origin")
        # no command shows this: that the origin dropped the body
        assert a.query("SELECT has_body FROM out_messages") == [(0,)]
        wait_until(lambda: states(b) == ["expired"], what="expiry at the destination")
        c = b.client("bob@b.example")
        envs = c.call(wire.Envs(True)).lines or []
        assert envs and envs[0].split()[1] == "expired"
        with pytest.raises(ClientError, match="can no longer be fetched"):
            c.call(wire.UserDecision(Decision.ACCEPT, int(envs[0].split()[0])))
        c.quit()
        sent = a.client("alice@a.example")
        lines = sent.call(wire.Sent(None)).lines or []
        sent.quit()
        assert "expired" in lines[0]
        # After a second hold period the records go too, and the bytes with them.
        wait_until(lambda: a.sent(ALICE) == [], what="purge at the origin")
        # no command shows this: the message row itself is gone, not only its recipients
        assert a.query("SELECT COUNT(*) FROM out_messages") == [(0,)]
        wait_until(lambda: states(b) == [], what="purge at the destination")
        # no command shows this: the envelope row itself is gone, not only the entry
        assert b.query("SELECT COUNT(*) FROM in_envelopes") == [(0,)]
        if sqlite:
            wait_until(lambda: not on_disk(a, token), what="bytes gone from disk")
