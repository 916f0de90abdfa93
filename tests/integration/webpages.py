"""What the browser tests (test_web_browser.py) and the screenshot script
(web_screenshots.py) share: Debian's Chromium driven by Playwright, the two
in-process servers with the web app on b.example, the page sizes, an
accessibility check with axe-core, and a tour of every view with something
in it.

Playwright comes from PyPI, its browser from Debian (`apt-get install
chromium`): Playwright's own browser download cannot be reached here, so it
is launched by its executable path. axe-core comes inside the PyPI package
axe-playwright-python (its axe.min.js; the npm registry's copy is not used).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from smdp.protocol import user as wire
from smdp.terms import Decision

from ..conditions import wait_until
from .inprocess import InProcessServer, peered

ALICE, DAVE = "alice@a.example", "dave@a.example"
BOB, CAROL, ROBERT = "bob@b.example", "carol@b.example", "robert@b.example"
POSTMASTER = "postmaster@b.example"  # b.example's administrator
PASSWORD = "secret"
# The two page sizes every view is checked at: a laptop and a small phone.
SIZES: dict[str, dict[str, int]] = {
    "desktop": {"width": 1280, "height": 800},
    "phone": {"width": 375, "height": 740},
}
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# A hostile message: a subject that is markup, an HTML body with script,
# handlers, a javascript: link and a tracking pixel, and an attachment whose
# name reverses itself on screen unless shown inert.
HOSTILE_SUBJECT = "<img src=x onerror=alert(1)>"
HOSTILE_MAIL = (
    b"Subject: " + HOSTILE_SUBJECT.encode() + b"\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b'--b1\r\nContent-Type: multipart/alternative; boundary="b2"\r\n\r\n'
    b"--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Plain words <script>alert(2)</script>.\r\n"
    b"--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b'<p onclick="alert(3)">Hello from the HTML part<script>alert(4)</script>'
    b'<img src="https://tracker.example/pixel.gif" alt="pixel">'
    b'<a href="javascript:alert(5)">bad link</a> <a href="https://ok.example/">good link</a>'
    b"</p><img src=x onerror=alert(6)>\r\n"
    b"--b2--\r\n"
    b"--b1\r\nContent-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEfdp.exe\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
    b"--b1--\r\n")


def chromium_path() -> str | None:
    """Debian's Chromium, or None when it is not installed."""
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def launch_args() -> list[str]:
    # Chromium refuses to start its sandbox as root (CI runs as root).
    return ["--no-sandbox"] if os.geteuid() == 0 else []


@contextlib.contextmanager
def servers(root: Path) -> Iterator[tuple[InProcessServer, InProcessServer]]:
    """a.example (Alice, Dave) and b.example (Bob with the identity Robert,
    and Carol), b.example with the web app on a loopback port."""
    a = InProcessServer(root, "a.example")
    b = InProcessServer(root, "b.example", listen='web = "127.0.0.1:0"\n')
    a.add_user(ALICE)
    a.add_user(DAVE)
    b.add_user(BOB, identities=(ROBERT,))
    b.add_user(CAROL)
    b.add_user(POSTMASTER)
    grant_admin(b, POSTMASTER)
    with peered(a, b):
        yield a, b


def grant_admin(b: InProcessServer, address: str) -> None:
    """As ``smdp admin grant-admin``, before the server starts."""
    from smdp.store import open_store

    store = open_store(b.config)
    try:
        user = store.user_by_address(address)
        assert user is not None
        store.set_admin(user.id, True)
    finally:
        store.close()


def on_server(b: InProcessServer, work: Callable[[Any], Any]) -> Any:
    """``work(server)`` on the running server's own loop thread, where its
    SQLite connection lives."""
    import asyncio

    loop, server = b._loop, b._server
    assert loop is not None and server is not None

    async def run() -> Any:
        return work(server)

    return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=10)


def base_url(b: InProcessServer) -> str:
    assert b.web_port is not None
    return f"http://127.0.0.1:{b.web_port}"


def send(a: InProcessServer, sender: str, subject: str, to: list[str],
         text: str = "Hello.\r\n") -> str:
    """A message from ``sender`` through a.example's user port; its msgid."""
    return send_raw(a, sender, f"Subject: {subject}\r\n\r\n{text}".encode(), to)


def send_raw(a: InProcessServer, sender: str, raw: bytes, to: list[str]) -> str:
    client = a.client(sender)
    answer = client.submit(to, raw)  # "queued as <msgid> (n recipient(s))"
    client.quit()
    return answer.split()[2]


def sent_states(a: InProcessServer, sender: str, msgid: str) -> dict[str, str]:
    """The origin's side: SENT <msgid> on the sender's user port, by recipient."""
    client = a.client(sender)
    reply = client.call(wire.Sent(msgid))
    client.quit()
    return {line.split()[1]: line.split()[2] for line in reply.lines or []}


def outbound_lists(a: InProcessServer, sender: str) -> list[str]:
    client = a.client(sender)
    lines = client.call(wire.Lists()).lines or []
    client.quit()
    return [line for line in lines if line.startswith("out-")]


def decide_at(a: InProcessServer, user: str, sender: str, decision: Decision) -> None:
    """``user`` at a.example decides on ``sender``'s waiting envelope (user port)."""
    client = a.client(user)

    def envelope() -> int | None:
        lines = client.call(wire.Envs(False)).lines or []
        return next((int(line.split()[0]) for line in lines if line.split()[2] == sender), None)

    entry = wait_until(envelope, 20, f"{sender}'s envelope at a.example")
    assert client.call(wire.UserDecision(decision, entry)).ok
    client.quit()


def accept_at(a: InProcessServer, user: str, subject_hint: str | None = None) -> int:
    """``user`` at a.example accepts its newest pending envelope (user port)."""
    client = a.client(user)
    lines = wait_until(lambda: client.call(wire.Envs(False)).lines, 20, "an envelope at a.example")
    entry = int(lines[0].split()[0])
    assert client.call(wire.UserDecision(Decision.ACCEPT, entry)).ok
    client.quit()
    return entry


def axe_source() -> str:
    """axe-core's script, as axe-playwright-python ships it."""
    return resources.files("axe_playwright_python").joinpath("axe.min.js").read_text("utf-8")


def axe_violations(page: Any, source: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now.
    ``page.evaluate`` runs outside the page's Content-Security-Policy, so the
    page needs no inline script to be checked."""
    page.evaluate(source)
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"],
         "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in results["violations"] if v["impact"] in ("serious", "critical")]


def log_in(page: Any, url: str, address: str = BOB, password: str = PASSWORD) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/")
    form = page.locator("#login-form")
    form.get_by_label("Address").fill(address)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Log in").click()
    expect(page.locator("#who")).to_have_text(address)


def seed(a: InProcessServer, b: InProcessServer) -> None:
    """Something in every view: waiting envelopes, an accepted message with
    HTML and an attachment, a list entry that decided by itself, a sent
    message whose recipients are at different stages."""
    import http.client
    import json

    def call(method: str, path: str, body: Any, cookie: str | None, csrf: str | None,
             ) -> tuple[int, Any, str | None]:
        assert b.web_port is not None
        conn = http.client.HTTPConnection("127.0.0.1", b.web_port, timeout=10)
        headers = {"Content-Type": "application/json"}
        if cookie:
            headers["Cookie"] = cookie
        if csrf:
            headers["X-CSRF-Token"] = csrf
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=headers)
        response = conn.getresponse()
        data = json.loads(response.read() or b"{}")
        got = response.getheader("Set-Cookie")
        conn.close()
        return response.status, data, got.split(";", 1)[0] if got else None

    _status, me, cookie = call("POST", "/api/login", {"address": BOB, "password": PASSWORD},
                               None, None)
    csrf = me["csrf"]
    # Dave is on Bob's inbound white list: his envelope is accepted by itself.
    call("POST", "/api/lists", {"action": "add", "list": "in-white", "address": DAVE,
                                "server": "smdp.a.example"}, cookie, csrf)
    call("POST", "/api/lists", {"action": "add", "list": "in-black",
                                "address": "offers@a.example", "server": "smdp.a.example"},
         cookie, csrf)
    call("POST", "/api/lists", {"action": "add", "list": "out-white", "address": ALICE},
         cookie, csrf)
    send_raw(a, ALICE, HOSTILE_MAIL, [BOB])
    send(a, DAVE, "Minutes of Tuesday's meeting", [BOB],
         "The minutes are below.\r\nAction items at the end.\r\n")
    wait_until(lambda: len(call("GET", "/api/envelopes?state=all", None, cookie, csrf)[1]
                           ["envelopes"]) == 2, 20, "two envelopes at b.example")
    hostile = call("GET", "/api/envelopes", None, cookie, csrf)[1]["envelopes"][0]["id"]
    call("POST", "/api/decisions", {"decision": "accept", "ids": [hostile]}, cookie, csrf)
    wait_until(lambda: call("GET", f"/api/envelopes/{hostile}", None, cookie, csrf)[1]
               ["state"] == "accepted", 20, "the HTML message pulled")
    for subject in ("Quarterly report draft", "Lunch on Friday?", "Your invoice 2026-118"):
        send(a, ALICE, subject, [BOB], f"About: {subject}\r\nMore below.\r\n")
    wait_until(lambda: len(call("GET", "/api/envelopes", None, cookie, csrf)[1]
                           ["envelopes"]) == 3, 20, "three waiting envelopes")
    status, _, _ = call("POST", "/api/messages", {
        "to": [f"Alice <{ALICE}>", DAVE], "bcc": [CAROL], "subject": "Report",
        "text": "Attached.\n",
        "attachments": [{"name": "report.txt", "type": "text/plain",
                         "data": base64.b64encode(b"numbers\n").decode()}]}, cookie, csrf)
    assert status == 201
    accept_at(a, DAVE)
    call("POST", "/api/tokens", {"name": "calendar sync"}, cookie, csrf)
    seed_administration(a, b)


BUSY_PEER = "smdp.d.example"
# Thirty days of a busy peer's counters, one sample a day at most (what
# housekeeping takes, every [quality] sample_interval, when they changed):
# the chart's history, which a test cannot wait a month for.
HISTORY = [(29, 40, 30), (26, 55, 41), (22, 71, 49), (19, 80, 51), (15, 96, 50),
           (12, 104, 44), (9, 119, 48), (6, 131, 57), (3, 140, 66), (1, 152, 75)]


def seed_administration(a: InProcessServer, b: InProcessServer) -> None:
    """Something in each of the administrator's lists at b.example: a
    busy peer's history, a peer blocked by hand, a delivery job waiting for a
    server that does not answer, a local sender reported for spam and
    suspended."""
    import time

    from smdp.config import PeerServer

    now = time.time()

    def history(server: Any) -> None:
        store = server.store
        for days, messages, votes in HISTORY:
            store._exec("INSERT INTO quality_samples (server, at, messages, votes) "
                        "VALUES (?, ?, ?, ?)", (BUSY_PEER, now - days * 86400.0,
                                                messages, votes))
        _days, messages, votes = HISTORY[-1]
        store._exec("INSERT INTO peer_quality (server, messages, votes, updated_at) "
                    "VALUES (?, ?, ?, ?)", (BUSY_PEER, messages, votes, now))
        store.set_override("smdp.c.example", "blocked", "phishing from its customers")
        # c.example's server refuses connections: a job waits for it.
        server.discovery.set_static("c.example", PeerServer("smdp.c.example", "127.0.0.1", 9))

    on_server(b, history)
    send_raw(b, POSTMASTER, b"Subject: Are you there?\r\n\r\nHello.\r\n",
             ["carl@c.example"])
    # Carol's mail is spam to Dave: a report reaches b.example, whose
    # administrator suspends her while looking into it.
    send_raw(b, CAROL, b"Subject: Cheap watches\r\n\r\nBuy now.\r\n", [DAVE])
    decide_at(a, DAVE, CAROL, Decision.REJECT_SPAM)

    def reported(server: Any) -> bool:
        return bool(server.store.spam_reports())

    wait_until(lambda: on_server(b, reported), 20, "the spam report at b.example")

    def suspend(server: Any) -> None:
        user = server.store.user_by_address(CAROL)
        server.store.set_suspension(user.id, "spam reports from a.example; looking into it")

    on_server(b, suspend)


def tour(page: Any, url: str, visit: Callable[[str], None]) -> None:
    """Every view with what the seed put there, ``visit(name)`` at each.
    The page is logged in as Bob at the start."""
    from playwright.sync_api import expect

    page.goto(url + "/#envelopes")
    expect(page.locator("#envelopes > li")).to_have_count(3)
    visit("envelopes")
    page.get_by_label("Show").select_option("all")
    expect(page.locator("#envelopes .reason")).to_have_count(1)
    visit("envelopes-all")
    page.get_by_role("link", name="Mailbox").click()
    expect(page.locator("#mailbox > li")).to_have_count(2)
    visit("mailbox")
    page.locator("#mailbox a", has_text=HOSTILE_SUBJECT).click()
    expect(page.locator("#message-remote-note")).to_contain_text("2 remote image(s) blocked")
    expect(page.frame_locator("#message-html").get_by_text("Hello from the HTML part")
           ).to_be_visible()
    visit("message")
    page.get_by_role("link", name="Compose").click()
    expect(page.locator("#compose-from option")).to_have_count(2)
    visit("compose")
    page.get_by_role("link", name="Sent").click()
    expect(page.locator("#sent [data-recipient] .badge")).to_have_count(3)
    expect(page.locator("#sent", has_text="delivered")).to_have_count(1, timeout=20_000)
    visit("sent")
    page.get_by_role("link", name="Lists").click()
    expect(page.locator("#lists > li")).to_have_count(3)
    visit("lists")
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_label("Current password")).to_be_visible()
    expect(page.locator("#tokens > li")).to_have_count(1)
    visit("settings")


def admin_tour(page: Any, url: str, visit: Callable[[str], None]) -> None:
    """The administrator's view with what the seed put there, as the
    postmaster; ``visit("admin")`` there."""
    from playwright.sync_api import expect

    log_in(page, url, POSTMASTER)
    page.get_by_role("link", name="Administration").click()
    for peer in (BUSY_PEER, "smdp.c.example"):
        expect(page.locator(f"#admin-peers > li[data-server='{peer}']")).to_be_visible()
    expect(page.locator("#chart svg circle")).to_have_count(len(HISTORY))
    expect(page.locator("#admin-queue > li")).to_have_count(1)
    expect(page.locator("#admin-suspended > li .subject")).to_have_text(CAROL)
    visit("admin")
