"""The housekeeping loop of a running server survives a failing pass: the
store refuses the expiry (tests/integration/faults.py), the loop logs it and
tries again each round, and expires the mail once the store lets it."""

from __future__ import annotations

from pathlib import Path

from smdp.protocol import user as wire
from tests.integration.faults import full_log, refusing
from tests.integration.harness import make_pair, running, wait_until

ALICE, BOB = "alice@a.example", "bob@b.example"
HOLD_DAYS = 3 / 86400  # three seconds: expiry, then a purge three seconds later


def test_the_housekeeping_loop_goes_on_after_a_failed_pass(tmp_path: Path) -> None:
    a, _b = make_pair(tmp_path)  # b is not running: alice's mail stays undecided
    a.delivery = f"expire_days = {HOLD_DAYS}\nhousekeeping_interval = 0.2"
    a.write_config()
    a.add_user(ALICE)
    with running(a):
        with refusing(a, "UPDATE", "out_recipients", when="NEW.state = 'expired'"):
            c = a.client(ALICE)
            try:
                msgid = c.submit([BOB], b"Subject: hi\r\n\r\nhello\r\n").split()[2]
            finally:
                c.quit()
            # Past its expiry, every pass fails; the loop goes on regardless.
            wait_until(lambda: full_log(a).count("housekeeping failed; trying again") >= 2,
                       what="two failed passes")
            assert [row[2] for row in a.sent(ALICE)] == ["queued"]
        wait_until(lambda: "housekeeping: {'expired_at_origin': 1," in full_log(a),
                   what="a later pass expires the message")
        c = a.client(ALICE)
        try:
            [line] = c.call(wire.Sent(msgid)).lines or []
        finally:
            c.quit()
    _msgid, _rcpt, state, _time, route, detail = line.split(" ", 5)
    assert [state, route, detail] == ["expired", "smdp",
                                      "expired: no decision before the message expired"]
    assert "Traceback" in full_log(a)  # the failure was logged with its cause
