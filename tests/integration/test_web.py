"""The web app's JSON API and pages (issue 13; docs/web.md, docs/api.md),
driven over real HTTP with the standard library's http.client against
in-process servers: log in, list and search envelopes, decide on several
at once with Table 2's effects on both servers, the events stream, and the
security rules (cookies, CSRF, headers, one user never sees another's
envelopes, bad input answered in one sentence).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smdp.protocol import user as wire
from smdp.terms import Decision

from .harness import Pki, wait_until
from .inprocess import InProcessServer, peered

ALICE, BOB, CAROL = "alice@a.example", "bob@b.example", "carol@b.example"

# In-process servers: SQLite whatever the pass (as test_mx.py).
pytestmark = pytest.mark.own_backend


@contextlib.contextmanager
def pair(root: Path, web_extra: str = "", housekeeping: float | None = None,
         ) -> Iterator[tuple[InProcessServer, InProcessServer]]:
    """a.example (Alice) and b.example (Bob, Carol) with the web app;
    ``housekeeping``: b's housekeeping interval, in seconds."""
    a = InProcessServer(root, "a.example")
    b = InProcessServer(root, "b.example", web_extra, listen='web = "127.0.0.1:0"\n')
    if housekeeping is not None:
        b.config = dataclasses.replace(b.config, delivery=dataclasses.replace(
            b.config.delivery, housekeeping_interval=housekeeping))
    a.add_user(ALICE)
    b.add_user(BOB)
    b.add_user(CAROL)
    with peered(a, b):
        yield a, b


class Browser:
    """What a browser does with our cookie and CSRF token, over http.client."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie: str | None = None
        self.csrf: str | None = None

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None, csrf: bool = True,
                ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = dict(headers or {})
        if self.cookie:
            sent["Cookie"] = self.cookie
        if csrf and self.csrf and method != "GET":
            sent["X-CSRF-Token"] = self.csrf
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        payload = response.read()
        got = {k.lower(): v for k, v in response.getheaders()}
        for header, value in response.getheaders():
            if header.lower() == "set-cookie" and value.startswith("smdp_session="):
                token = value.split(";", 1)[0]
                self.cookie = None if token == "smdp_session=" or 'smdp_session=""' in token \
                    else token
        conn.close()
        kind = got.get("content-type", "")
        return response.status, got, json.loads(payload) if "json" in kind else payload

    def login(self, address: str, password: str = "secret") -> dict[str, Any]:
        status, headers, body = self.request("POST", "/api/login",
                                             {"address": address, "password": password})
        assert status == 200, body
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        self.csrf = body["csrf"]
        return dict(body)


def send(a: InProcessServer, subject: str, to: list[str], text: str = "Hello.\r\n") -> None:
    alice = a.client(ALICE)
    alice.submit(to, f"Subject: {subject}\r\n\r\n{text}".encode())
    alice.quit()


def pending(b: InProcessServer, browser: Browser, n: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        nonlocal found
        status, _, body = browser.request("GET", "/api/envelopes")
        found = body["envelopes"] if status == 200 else []
        return len(found) >= n

    wait_until(arrived, 20, f"{n} pending envelope(s) in the web API")
    return found


def test_login_list_search_and_decide_several_at_once(tmp_path: Path) -> None:
    with pair(tmp_path) as (a, b):
        assert b.web_port is not None
        bob = Browser(b.web_port)
        me = bob.login(BOB)
        assert me["user"] == BOB and me["identities"] == [BOB] and len(me["csrf"]) >= 40
        for subject in ("lunch", "invoice 7", "offer"):
            send(a, subject, [BOB])
        envs = pending(b, bob, 3)
        # Newest first (by entry id: the origin's concurrent peer sessions do
        # not fix the order the envelopes arrive in), with what the
        # recipient decides on.
        assert sorted(e["subject"] for e in envs) == ["invoice 7", "lunch", "offer"]
        ids = [e["id"] for e in envs]
        assert ids == sorted(ids, reverse=True) and len(set(ids)) == 3
        newest = [e["subject"] for e in envs]
        [first] = [e for e in envs if e["subject"] == "lunch"]
        assert (first["sender"], first["server"], first["state"], first["via"]) == (
            ALICE, "smdp.a.example", "pending", "smdp")
        assert first["headlines"] == ["Hello."]
        assert first["quality"] == {"value": 0.0, "messages": 3, "votes": 0, "standing": "new"}
        # Search: sender, subject or server, case-insensitive, wildcards literal.
        assert [e["subject"] for e in bob.request("GET", "/api/envelopes?q=INVOICE")[2]
                ["envelopes"]] == ["invoice 7"]
        assert bob.request("GET", "/api/envelopes?q=%25")[2]["envelopes"] == []
        # Pages: one at a time, each pointing to the next.
        page = bob.request("GET", "/api/envelopes?limit=2")[2]
        assert [e["subject"] for e in page["envelopes"]] == newest[:2]
        rest = bob.request("GET", f"/api/envelopes?limit=2&before={page['next']}")[2]
        assert [e["subject"] for e in rest["envelopes"]] == newest[2:] and rest["next"] is None
        # Two decisions on a selection of envelopes: each gets its result.
        by_subject = {e["subject"]: e["id"] for e in envs}
        status, _, done = bob.request("POST", "/api/decisions", {
            "decision": "accept-auth", "ids": [by_subject["lunch"], by_subject["invoice 7"]]})
        assert status == 200
        assert [(r["ok"], r["state"]) for r in done["results"]] == [
            (True, "fetching"), (True, "fetching")]
        status, _, done = bob.request("POST", "/api/decisions", {
            "decision": "reject-spam", "ids": [by_subject["offer"], 999999]})
        assert [(r["ok"], r["state"], r["message"]) for r in done["results"]] == [
            (True, "spam", "rejected as spam"),
            (False, None, "no envelope 999999 in your mailbox")]
        assert bob.request("GET", "/api/envelopes")[2]["envelopes"] == []
        # Table 2 on both servers: pulled and white-listed here, a spam
        # report and an outbound white-list entry at the origin.
        wait_until(lambda: {e["subject"]: e["state"] for e in bob.request(
            "GET", "/api/envelopes?state=accepted")[2]["envelopes"]} == {
            "lunch": "accepted", "invoice 7": "accepted"}, 20, "both messages pulled")
        lists = bob.request("GET", "/api/lists")[2]["entries"]
        assert [(e["list"], e["address"], e["server"], e["how"]) for e in lists] == [
            ("in-white", ALICE, "smdp.a.example", "auto")]
        alice = a.client(ALICE)
        assert any(line.startswith(f"out-white {BOB} auto")
                   for line in alice.call(wire.Lists()).lines or [])
        alice.quit()


def test_each_user_sees_and_decides_only_their_own(tmp_path: Path) -> None:
    with pair(tmp_path) as (a, b):
        assert b.web_port is not None
        bob, carol = Browser(b.web_port), Browser(b.web_port)
        bob.login(BOB)
        carol.login(CAROL)
        send(a, "for bob only", [BOB])
        entry = pending(b, bob, 1)[0]["id"]
        assert carol.request("GET", "/api/envelopes")[2]["envelopes"] == []
        # The same answer as for an id that does not exist.
        for guess in (entry, entry + 1000):
            status, _, body = carol.request("GET", f"/api/envelopes/{guess}")
            assert (status, body) == (404, {"error": f"no envelope {guess} in your mailbox"})
        status, _, body = carol.request("POST", "/api/decisions",
                                        {"decision": "reject", "ids": [entry]})
        assert body["results"] == [{"id": entry, "ok": False, "state": None,
                                    "message": f"no envelope {entry} in your mailbox"}]
        assert bob.request("GET", f"/api/envelopes/{entry}")[2]["state"] == "pending"


def test_sessions_csrf_and_security_headers(tmp_path: Path) -> None:
    with pair(tmp_path) as (_a, b):
        assert b.web_port is not None
        anonymous = Browser(b.web_port)
        status, headers, body = anonymous.request("GET", "/api/envelopes")
        assert (status, body) == (401, {"error": "log in first"})
        assert headers["cache-control"] == "no-store"
        # The server's own time of every answer, refusals too (bench/web.py reads it).
        assert re.fullmatch(r"app;dur=\d+\.\d\d", headers["server-timing"])
        # The page: our own script only, never framed.
        status, headers, page = anonymous.request("GET", "/")
        assert status == 200 and b'<script src="/static/app.js" defer></script>' in page
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "frame-src 'self'" in csp  # the message's HTML frame, nothing else
        assert "unsafe-inline" not in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert b"<script>" not in page and b"onclick" not in page  # nothing inline
        # A wrong password: refused, and slowed like the other ports.
        status, _, body = anonymous.request("POST", "/api/login",
                                            {"address": BOB, "password": "wrong"})
        assert (status, body) == (401, {"error": "authentication failed"})
        # Another site's page cannot log a browser in.
        status, _, body = anonymous.request(
            "POST", "/api/login", {"address": BOB, "password": "secret"},
            headers={"Origin": "https://evil.example"})
        assert (status, body) == (403, {"error": "cross-site request refused"})
        bob = Browser(b.web_port)
        bob.login(BOB)
        first_cookie = bob.cookie
        bob.login(BOB)  # a new token at every login
        assert bob.cookie != first_cookie
        stale = Browser(b.web_port)
        stale.cookie = first_cookie
        assert stale.request("GET", "/api/me")[0] == 401
        # A change without the CSRF token is refused, with it done.
        status, _, body = bob.request("POST", "/api/decisions",
                                      {"decision": "reject", "ids": [1]}, csrf=False)
        assert (status, body) == (403, {"error": "missing or wrong X-CSRF-Token header"})
        status, _, body = bob.request("POST", "/api/logout")
        assert status == 204
        assert bob.request("GET", "/api/me")[0] == 401


def test_password_change_ends_the_other_sessions(tmp_path: Path) -> None:
    with pair(tmp_path) as (_a, b):
        assert b.web_port is not None
        phone, laptop = Browser(b.web_port), Browser(b.web_port)
        phone.login(BOB)
        laptop.login(BOB)
        status, _, body = laptop.request("POST", "/api/password",
                                         {"current": "wrong", "new": "n3w-secret"})
        assert (status, body) == (403, {"error": "wrong password; the password was not changed"})
        status, _, body = laptop.request("POST", "/api/password",
                                         {"current": "secret", "new": "n3w-secret"})
        assert (status, body) == (200, {"changed": True, "other_sessions_ended": 1})
        assert phone.request("GET", "/api/me")[0] == 401
        assert laptop.request("GET", "/api/me")[0] == 200
        # The new password is the one on every door.
        fresh = Browser(b.web_port)
        fresh.login(BOB, "n3w-secret")
        b.client(BOB, "n3w-secret").quit()


@pytest.mark.parametrize(("method", "path", "body", "status", "error"), [
    ("POST", "/api/decisions", {"decision": "maybe", "ids": [1]}, 400,
     "decision must be one of accept, accept-auth, reject, reject-spam, reject-spammer"),
    ("POST", "/api/decisions", {"decision": "accept", "ids": []}, 400,
     "ids must be a list of 1 to 500 envelope ids"),
    ("POST", "/api/decisions", {"decision": "accept", "ids": [True]}, 400,
     "ids must be a list of 1 to 500 envelope ids"),
    ("POST", "/api/decisions", {"decision": "accept", "ids": list(range(1, 502))}, 400,
     "ids must be a list of 1 to 500 envelope ids"),
    ("POST", "/api/decisions", b"{not json", 400, "the request body is not JSON"),
    ("POST", "/api/decisions", [1, 2], 400, "the request body must be a JSON object"),
    ("GET", "/api/envelopes?state=odd", None, 400,
     "state must be one of pending, all, accepted, rejected"),
    ("GET", "/api/envelopes?limit=0", None, 400, "limit must be a whole number from 1 to 200"),
    ("GET", "/api/envelopes?limit=201", None, 400,
     "limit must be a whole number from 1 to 200"),
    ("GET", "/api/envelopes?before=-1", None, 400,
     f"before must be a whole number from 1 to {2**62}"),
    ("GET", "/api/envelopes?q=" + "x" * 201, None, 400, "a search is at most 200 characters"),
    ("GET", "/api/envelopes/abc", None, 400,
     f"envelope id must be a whole number from 1 to {2**62}"),
    ("GET", "/api/nothing-here", None, 404, "Not Found"),
    ("POST", "/api/password", {"current": "secret", "new": ""}, 400, None),
])
def test_bad_input_gets_one_sentence(tmp_path: Path, method: str, path: str, body: Any,
                                     status: int, error: str | None) -> None:
    with pair(tmp_path) as (_a, b):
        assert b.web_port is not None
        bob = Browser(b.web_port)
        bob.login(BOB)
        raw = body if isinstance(body, bytes) else None
        got, headers, answer = bob.request(method, path, None if raw else body, raw=raw)
        assert got == status and headers["content-type"].startswith("application/json")
        assert isinstance(answer, dict) and set(answer) == {"error"}
        if error is not None:
            assert answer["error"] == error
        else:
            assert "no one could log in with it" in answer["error"]


def test_new_envelopes_are_announced_on_the_events_stream(tmp_path: Path) -> None:
    with pair(tmp_path) as (a, b):
        assert b.web_port is not None
        bob = Browser(b.web_port)
        bob.login(BOB)
        assert bob.cookie is not None
        sock = socket.create_connection(("127.0.0.1", b.web_port), timeout=10)
        sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {bob.cookie}"
                     f"\r\n\r\n".encode())
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"HTTP/1.1 200")

        unread: dict[str, list[dict[str, Any]]] = {"envelopes": [], "sent": []}

        def next_event(name: str) -> dict[str, Any]:
            """The next event ``name``, in order; others are kept for later."""
            event = ""
            while not unread[name]:
                line = stream.readline()
                assert line, "the stream ended"
                if line.startswith(b"event: "):
                    event = line[7:].strip().decode()
                elif line.startswith(b"data: "):
                    unread[event].append(dict(json.loads(line[6:])))
            return unread[name].pop(0)

        assert next_event("envelopes") == {"newest": None}  # nothing waiting yet
        send(a, "news", [BOB])
        newest = next_event("envelopes")["newest"]
        assert newest == pending(b, bob, 1)[0]["id"]
        # The Sent view's event: at once, then when a recipient's state changes.
        assert next_event("sent") == {"changed": None}  # nothing sent yet
        status, _, _sent = bob.request("POST", "/api/messages",
                                       {"to": [ALICE], "subject": "live", "text": "x"})
        assert status == 201
        first = next_event("sent")["changed"]
        assert first == ANY_TIME
        alice = a.client(ALICE)
        entry = wait_until(lambda: (alice.call(wire.Envs(False)).lines or [None])[0], 20,
                           "the envelope at a.example")
        assert alice.call(wire.UserDecision(Decision.ACCEPT, int(entry.split()[0]))).ok
        alice.quit()
        wait_until(lambda: next_event("sent")["changed"] is not None
                   and bob.request("GET", "/api/sent")[2]["messages"][0]["recipients"][0]
                   ["state"] == "delivered", 20, "an event for the delivery")
        sock.close()


def test_https_with_the_user_ports_certificate_and_secure_cookies(tmp_path: Path) -> None:
    import ssl

    tls = "[tls]\n" + Pki(tmp_path).tls("smdp.b.example")
    with pair(tmp_path, web_extra=tls) as (_a, b):
        assert b.web_port is not None
        ctx = ssl.create_default_context(cafile=str(tmp_path / "pki" / "smdp-test-CA.pem"))
        ctx.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", b.web_port, timeout=10, context=ctx)
        conn.request("POST", "/api/login", body=json.dumps({"address": BOB,
                                                            "password": "secret"}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        cookie = response.getheader("Set-Cookie") or ""
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        conn.close()
        # Plain HTTP on the TLS port is no session at all.
        with socket.create_connection(("127.0.0.1", b.web_port), timeout=10) as raw:
            raw.sendall(b"GET /api/me HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not raw.recv(100).startswith(b"HTTP/1.1 200")


def test_the_openapi_description_is_the_api(tmp_path: Path) -> None:
    """docs/api.md's OpenAPI document, served at /api/openapi.json, names
    exactly the app's API routes, and an envelope has exactly its fields."""
    with pair(tmp_path) as (a, b):
        assert b.web_port is not None
        anonymous = Browser(b.web_port)
        status, _, spec = anonymous.request("GET", "/api/openapi.json")
        assert status == 200 and spec["openapi"].startswith("3.1")
        described = {(method.upper(), path) for path, ops in spec["paths"].items()
                     for method in ops}
        server = b._server
        assert server is not None
        app = server.web.application()
        routes = {(r.method, r.resource.canonical) for r in app.router.routes()
                  if r.resource is not None and r.resource.canonical.startswith("/api/")
                  and r.method != "HEAD"}  # aiohttp's own twin of each GET
        assert described == routes
        bob = Browser(b.web_port)
        bob.login(BOB)
        send(a, "fields", [BOB])
        env = pending(b, bob, 1)[0]
        schema = spec["components"]["schemas"]["Envelope"]
        assert set(env) == set(schema["properties"]) == set(schema["required"])
        assert env["state"] in schema["properties"]["state"]["enum"]


# -- reading, sending, lists -------------------------------------------------------------


HTML_MAIL = (
    b"Subject: =?utf-8?q?caf=C3=A9?= <img src=x onerror=alert(1)>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b'--b1\r\nContent-Type: multipart/alternative; boundary="b2"\r\n\r\n'
    b"--b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain words.\r\n"
    b"--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b'<p onclick="steal()">Hi<script>steal()</script>'
    b'<img src="https://tracker.example/pixel.gif"><img src="data:image/gif;base64,R0lGOD==">'
    b'<a href="javascript:steal()">x</a><a href="https://ok.example/">ok</a></p>\r\n'
    b"--b2--\r\n"
    b"--b1\r\nContent-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''invoice%E2%80%AEfdp.exe\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
    b"--b1--\r\n")


def accepted_entry(a: InProcessServer, b: InProcessServer, bob: Browser, raw: bytes) -> int:
    alice = a.client(ALICE)
    alice.submit([BOB], raw)
    alice.quit()
    entry = pending(b, bob, 1)[0]["id"]
    assert bob.request("POST", "/api/decisions", {"decision": "accept", "ids": [entry]})[0] \
        == 200
    wait_until(lambda: bob.request("GET", f"/api/envelopes/{entry}")[2]["state"]
               == "accepted", 20, "the message pulled")
    return int(entry)


def test_reading_shows_html_inert_and_attachments_as_downloads(tmp_path: Path) -> None:
    with pair(tmp_path) as (a, b):
        assert b.web_port is not None
        bob = Browser(b.web_port)
        bob.login(BOB)
        # Not accepted yet: no message to read.
        alice = a.client(ALICE)
        alice.submit([BOB], b"Subject: later\r\n\r\nnot yet\r\n")
        alice.quit()
        waiting = pending(b, bob, 1)[0]["id"]
        status, _, body = bob.request("GET", f"/api/messages/{waiting}")
        assert (status, body["error"]) == (409, f"message {waiting} is not in your mailbox yet "
                                                "(its envelope is pending); accept it first")
        bob.request("POST", "/api/decisions", {"decision": "reject", "ids": [waiting]})
        entry = accepted_entry(a, b, bob, HTML_MAIL)
        status, _, shown = bob.request("GET", f"/api/messages/{entry}")
        assert status == 200
        assert shown["headers"]["Subject"] == "café <img src=x onerror=alert(1)>"  # text
        assert shown["headers"]["From"] == ALICE
        assert shown["text"] == "Plain words." and shown["has_html"] is True
        assert shown["attachments"] == [{"number": 1, "name": "invoice\u202efdp.exe",
                                         "type": "application/pdf", "size": 9}]
        # The HTML: no script, no handler, no javascript: link, the remote
        # image cut out and counted; framed only by us, scripts off.
        status, headers, html = bob.request("GET", f"/api/messages/{entry}/html")
        page = html.decode()
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert "script" not in page and "onclick" not in page and "javascript" not in page
        assert "tracker.example" not in page and 'src="data:image/gif' in page
        assert 'href="https://ok.example/"' in page and 'rel="noopener noreferrer"' in page
        assert headers["x-remote-content-blocked"] == "1"
        csp = headers["content-security-policy"]
        assert "sandbox" in csp and "frame-ancestors 'self'" in csp and "script-src" not in csp
        assert headers["x-frame-options"] == "SAMEORIGIN"
        # Remote images only when asked for.
        status, headers, html = bob.request("GET", f"/api/messages/{entry}/html?remote=1")
        assert b"https://tracker.example/pixel.gif" in html
        assert headers["x-remote-content-blocked"] == "0"
        assert "img-src data: cid: http: https:" in headers["content-security-policy"]
        # The attachment: a download with its real name, never shown as a page.
        status, headers, data = bob.request("GET", f"/api/messages/{entry}/attachments/1")
        assert (status, data) == (200, b"%PDF-1.4\n")
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-disposition"] == (
            "attachment; filename*=UTF-8''invoice%E2%80%AEfdp.exe")
        assert bob.request("GET", f"/api/messages/{entry}/attachments/2")[2] == {
            "error": f"message {entry} has no attachment 2"}
        # Another user reads nothing of it.
        carol = Browser(b.web_port)
        carol.login(CAROL)
        for path in (f"/api/messages/{entry}", f"/api/messages/{entry}/html",
                     f"/api/messages/{entry}/attachments/1"):
            assert carol.request("GET", path)[:3:2] == (
                404, {"error": f"no message {entry} in your mailbox"})
        # The reject family after reading: REJECT&SPAM on an accepted message.
        status, _, done = bob.request("POST", "/api/decisions",
                                      {"decision": "reject-spam", "ids": [entry]})
        assert done["results"][0]["ok"] is True and done["results"][0]["state"] == "spam"


def test_compose_with_attachment_and_watch_the_sent_state(tmp_path: Path) -> None:
    with pair(tmp_path) as (a, b):
        assert a.web_port is None and b.web_port is not None
        bob = Browser(b.web_port)
        bob.login(BOB)
        status, _, sent = bob.request("POST", "/api/messages", {
            "to": ["Alice <alice@a.example>"], "bcc": ["carol@b.example"],
            "subject": "Report", "text": "Attached.\n",
            "attachments": [{"name": "r.txt", "type": "text/plain",
                             "data": base64.b64encode(b"numbers").decode()}]})
        assert status == 201, sent
        assert sorted(sent["queued"]) == [ALICE, CAROL] and sent["refused"] == []
        # The sent view: each recipient's route and state, changing as they decide.
        def states() -> dict[str, str]:
            messages = bob.request("GET", "/api/sent")[2]["messages"]
            return {r["recipient"]: r["state"] for r in messages[0]["recipients"]}

        wait_until(lambda: states() == {ALICE: "envelope-sent", CAROL: "envelope-sent"}, 20,
                   "both envelopes sent")
        messages = bob.request("GET", "/api/sent")[2]["messages"]
        assert messages[0]["msgid"] == sent["msgid"] and messages[0]["subject"] == "Report"
        assert {r["route"] for r in messages[0]["recipients"]} == {"smdp"}
        alice = a.client(ALICE)
        entry = next(line.split()[0] for line in alice.call(wire.Envs(False)).lines or [])
        assert alice.call(wire.UserDecision(Decision.ACCEPT, int(entry))).ok
        alice.quit()
        wait_until(lambda: states()[ALICE] == "delivered", 20, "alice's pull")
        alice = a.client(ALICE)
        message = alice.read(int(entry))
        alice.quit()
        assert b"From: bob@b.example" in message and b"Bcc" not in message
        assert b"carol" not in message  # Bcc recipients are never written
        assert b'filename="r.txt"' in message and base64.b64encode(b"numbers") in message


@pytest.mark.parametrize(("body", "error"), [
    ({"to": []}, "name at least one recipient; nothing was sent"),
    ({"to": ["not an address"]}, "'not an address' is not an address; nothing was sent"),
    ({"to": "bob@b.example"}, None),
    ({"to": [ALICE], "from": "mallory@b.example"}, None),
    ({"to": [ALICE], "subject": "a\r\nBcc: x@y.example"}, None),
    ({"to": [ALICE], "attachments": [{"name": "x", "data": "%%%"}]},
     "attachment 1's data is not base64"),
])
def test_compose_refusals_send_nothing(tmp_path: Path, body: dict[str, Any],
                                       error: str | None) -> None:
    with pair(tmp_path) as (_a, b):
        assert b.web_port is not None
        bob = Browser(b.web_port)
        bob.login(BOB)
        status, _, answer = bob.request("POST", "/api/messages", body)
        assert status == 400 and set(answer) == {"error"}, answer
        if error is not None:
            assert answer["error"] == error
        assert bob.request("GET", "/api/sent")[2] == {"messages": [], "next": None}


def test_lists_are_edited_from_the_web(tmp_path: Path) -> None:
    with pair(tmp_path) as (_a, b):
        assert b.web_port is not None
        bob = Browser(b.web_port)
        bob.login(BOB)
        status, _, done = bob.request("POST", "/api/lists", {
            "action": "add", "list": "in-black", "address": "spam@a.example"})
        assert status == 200, done
        status, _, done = bob.request("POST", "/api/lists", {
            "action": "add", "list": "out-white", "address": ALICE})
        assert status == 200, done
        entries = bob.request("GET", "/api/lists")[2]["entries"]
        assert sorted((e["list"], e["address"], e["server"], e["how"]) for e in entries) == [
            ("in-black", "spam@a.example", "smdp.a.example", "manual"),
            ("out-white", ALICE, None, "manual")]
        status, _, done = bob.request("POST", "/api/lists", {
            "action": "remove", "list": "in-black", "address": "spam@a.example",
            "server": "smdp.a.example"})
        assert status == 200, done
        status, _, done = bob.request("POST", "/api/lists", {
            "action": "remove", "list": "in-black", "address": "spam@a.example",
            "server": "smdp.a.example"})
        assert status == 404
        status, _, done = bob.request("POST", "/api/lists", {
            "action": "add", "list": "grey", "address": ALICE})
        assert status == 400 and done["error"].startswith("unknown list grey")


# -- the administrator's routes ---------------------------------------------------------


def test_administrator_routes_only_for_administrators(tmp_path: Path) -> None:
    with pair(tmp_path, web_extra="[quality]\nmin_messages = 1\nmin_deciders = 0\nhalf_life = 0\n"
                                   "sample_interval = 0.1\n",
              housekeeping=0.2) as (a, b):
        assert b.web_port is not None
        carol = Browser(b.web_port)
        assert carol.login(CAROL)["admin"] is False
        # Not an administrator: refused, whatever the route.
        for method, path in (("GET", "/api/admin/peers"), ("GET", "/api/admin/health"),
                             ("POST", "/api/admin/queue/1/retry")):
            assert carol.request(method, path, {} if method == "POST" else None)[:3:2] == (
                403, {"error": "for administrators only"})
        make_admin(b, BOB)  # as `smdp admin grant-admin` does
        bob = Browser(b.web_port)
        assert bob.login(BOB)["admin"] is True
        send(a, "one", [BOB])
        entry = pending(b, bob, 1)[0]["id"]
        bob.request("POST", "/api/decisions", {"decision": "reject-spam", "ids": [entry]})
        peers = bob.request("GET", "/api/admin/peers")[2]["peers"]
        assert peers == [{"server": "smdp.a.example", "messages": 1, "votes": -1, "value": -1.0,
                          "standing": "blocked",
                          "reason": "quality -1.00 is below the block threshold -0.50",
                          "override": None, "override_reason": "", "override_at": None}]
        # The chart: housekeeping samples the changed counters.
        wait_until(lambda: bob.request("GET", "/api/admin/peers/smdp.a.example/history")[2]
                   ["points"][-1:] == [{"at": ANY_TIME, "messages": 1, "votes": -1,
                                        "value": -1.0}], 20, "a sample of the counters")
        # Allowed by hand, then handed back.
        status, _, peer = bob.request("POST", "/api/admin/peers/smdp.a.example",
                                      {"override": "allowed", "reason": "a partner"})
        assert (status, peer["standing"], peer["reason"]) == (
            200, "ok", "allowed by the administrator: a partner")
        status, _, peer = bob.request("POST", "/api/admin/peers/smdp.a.example",
                                      {"override": "maybe"})
        assert status == 400
        # The sender side: alice's spam report shows at a.example, not here.
        assert bob.request("GET", "/api/admin/senders")[2] == {"reports": [], "suspended": []}
        status, _, done = bob.request("POST", f"/api/admin/senders/{CAROL}",
                                      {"suspended": True, "reason": "investigating"})
        assert (status, done) == (200, {"address": CAROL, "suspended": "investigating"})
        assert bob.request("GET", "/api/admin/senders")[2]["suspended"] == [
            {"address": CAROL, "reason": "investigating"}]
        assert bob.request("POST", f"/api/admin/senders/{CAROL}", {"suspended": False})[2] \
            == {"address": CAROL, "suspended": None}
        assert bob.request("POST", "/api/admin/senders/nobody@b.example",
                           {"suspended": False})[0] == 404
        accounts = bob.request("GET", "/api/admin/accounts")[2]["accounts"]
        assert [(x["address"], x["admin"], x["suspended"]) for x in accounts] == [
            (BOB, True, None), (CAROL, False, None)]
        health = bob.request("GET", "/api/admin/health")[2]
        assert health["store"] == {"ok": True, "backend": "sqlite",
                                   "schema_version": health["store"]["schema_version"],
                                   "error": ""}
        assert health["listeners"]["web"] == f"127.0.0.1:{b.web_port}"
        assert set(health["listeners"]) == {"peer", "user", "web"}


def test_the_queue_and_retry_now(tmp_path: Path) -> None:
    """A peer that is down: its job waits with its error; retry-now makes it
    due at once, and the attempt it makes is counted."""
    with pair(tmp_path) as (a, b):
        assert b.web_port is not None
        make_admin(b, BOB)
        bob = Browser(b.web_port)
        bob.login(BOB)
        a.stop()  # a.example is down: bob's message to alice waits in b's queue
        status, _, _sent = bob.request("POST", "/api/messages",
                                       {"to": [ALICE], "subject": "hello?", "text": "x"})
        assert status == 201

        def first_job() -> dict[str, Any] | None:
            jobs = bob.request("GET", "/api/admin/queue")[2]["jobs"]
            return jobs[0] if jobs and jobs[0]["attempts"] >= 1 else None

        job = wait_until(first_job, 20, "a failed attempt")
        assert job["peer"] == "a.example" and job["kind"] == "send-envelope"
        assert job["last_error"] != ""
        queue = bob.request("GET", "/api/admin/queue")[2]
        assert queue["peers"][0]["peer"] == "a.example" and queue["peers"][0]["jobs"] == 1
        status, _, done = bob.request("POST", f"/api/admin/queue/{job['id']}/retry")
        assert (status, done) == (200, {"id": job["id"], "retrying": True})
        wait_until(lambda: (j := first_job()) is not None and j["attempts"] > job["attempts"],
                   20, "the retried attempt")
        assert bob.request("POST", "/api/admin/queue/999999/retry")[:3:2] == (
            409, {"error": "job 999999 is not waiting (it is running now, or done)"})


class _AnyTime:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and len(other) == 20 and other.endswith("Z")


ANY_TIME = _AnyTime()


def make_admin(s: InProcessServer, address: str) -> None:
    """Mark ``address`` an administrator, on the server's own loop thread
    (its SQLite connection lives there), as `smdp admin grant-admin` would."""
    import asyncio

    loop, server = s._loop, s._server
    assert loop is not None and server is not None

    async def run() -> None:
        user = server.store.user_by_address(address)
        assert user is not None
        server.store.set_admin(user.id, True)

    asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=10)


# -- API tokens ---------------------------------------------------------------------------


class Client:
    """A client that is not a browser: a token in Authorization, no cookie,
    no CSRF token."""

    def __init__(self, port: int, token: str) -> None:
        self.browser = Browser(port)
        self.token = token

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, answer = self.browser.request(
            method, path, body, headers={"Authorization": f"Bearer {self.token}"})
        return status, answer


def test_api_tokens_for_clients_that_are_not_browsers(tmp_path: Path) -> None:
    with pair(tmp_path) as (a, b):
        assert b.web_port is not None
        bob = Browser(b.web_port)
        bob.login(BOB)
        status, _, made = bob.request("POST", "/api/tokens", {"name": "  my   script "})
        assert status == 201, made
        assert made["name"] == "my script" and made["token"].startswith("smdp_")
        assert len(made["token"]) >= 40 and made["last_used"] is None
        # Shown once: the list has its name and times, never the secret.
        listed = bob.request("GET", "/api/tokens")[2]["tokens"]
        assert listed == [{"id": made["id"], "name": "my script", "created": ANY_TIME,
                           "last_used": None}]
        assert made["token"] not in json.dumps(listed)
        # Only a hash is stored.
        stored = [p for p in tmp_path.rglob("*.sqlite3*") if p.is_file()]
        assert stored and not any(made["token"].encode() in p.read_bytes() for p in stored)
        # The token works without cookie or CSRF token, for reading and deciding.
        script = Client(b.web_port, made["token"])
        status, me = script.request("GET", "/api/me")
        assert (status, me["user"], me["csrf"]) == (200, BOB, None)
        send(a, "by token", [BOB])
        entry = pending(b, bob, 1)[0]["id"]
        status, done = script.request("POST", "/api/decisions",
                                      {"decision": "reject", "ids": [entry]})
        assert status == 200 and done["results"][0]["ok"], done
        assert bob.request("GET", "/api/tokens")[2]["tokens"][0]["last_used"] == ANY_TIME
        # A token cannot make tokens, nor end a session it does not have.
        assert script.request("POST", "/api/tokens", {"name": "child"}) == (
            403, {"error": "making a token needs a logged-in session, not a token"})
        assert script.request("POST", "/api/logout")[0] == 403
        # Carol's session cannot revoke Bob's token; bad names are refused.
        carol = Browser(b.web_port)
        carol.login(CAROL)
        assert carol.request("DELETE", f"/api/tokens/{made['id']}")[:3:2] == (
            404, {"error": f"no token {made['id']} of yours"})
        for bad in ("", "   ", "x" * 101, "tab\there", 7):
            assert bob.request("POST", "/api/tokens", {"name": bad})[0] == 400, bad
        # A wrong token, a wrong scheme: 401, in one sentence.
        assert Client(b.web_port, "smdp_nothing").request("GET", "/api/me") == (
            401, {"error": "unknown or revoked token"})
        status, _, answer = bob.request("GET", "/api/me", headers={"Authorization": "Basic x"})
        assert (status, answer) == (
            401, {"error": "send \"Authorization: Bearer <token>\" or log in"})
        # Revoked: dead at once, the events stream included.
        sock = socket.create_connection(("127.0.0.1", b.web_port), timeout=10)
        sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {made['token']}\r\n\r\n".encode())
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"HTTP/1.1 200")
        assert any(stream.readline().startswith(b"event: envelopes") for _ in range(20))
        assert bob.request("DELETE", f"/api/tokens/{made['id']}")[0] == 204
        assert script.request("GET", "/api/me")[0] == 401
        # The stream ends (the chunked body's last chunk), without a word more.
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            more = stream.readline()
            assert more, "the connection closed without the last chunk"
            rest += more
        sock.close()
        assert bob.request("DELETE", f"/api/tokens/{made['id']}")[0] == 404
        # Every token of the user dies with a password change, by any door.
        tokens = [bob.request("POST", "/api/tokens", {"name": f"t{n}"})[2]["token"]
                  for n in range(2)]
        carols = carol.request("POST", "/api/tokens", {"name": "carol's"})[2]["token"]
        assert all(Client(b.web_port, t).request("GET", "/api/me")[0] == 200 for t in tokens)
        status, _, _done = bob.request("POST", "/api/password",
                                       {"current": "secret", "new": "n3w-secret"})
        assert status == 200
        assert [Client(b.web_port, t).request("GET", "/api/me")[0] for t in tokens] == [401, 401]
        assert bob.request("GET", "/api/tokens")[2] == {"tokens": []}
        assert Client(b.web_port, carols).request("GET", "/api/me")[0] == 200
        carol_port = b.client(CAROL)
        assert carol_port.change_password("secret", "n3w-secret").ok
        carol_port.quit()
        assert Client(b.web_port, carols).request("GET", "/api/me")[0] == 401
        # A password changed with a token ends every session of the user.
        carol.login(CAROL, "n3w-secret")
        carols = carol.request("POST", "/api/tokens", {"name": "carol's"})[2]["token"]
        status, answer = Client(b.web_port, carols).request(
            "POST", "/api/password", {"current": "n3w-secret", "new": "n3w3r-secret"})
        assert (status, answer) == (200, {"changed": True, "other_sessions_ended": 1})
        assert carol.request("GET", "/api/me")[0] == 401
        # At most 100 tokens a user.
        carol.login(CAROL, "n3w3r-secret")
        for n in range(100):
            assert carol.request("POST", "/api/tokens", {"name": f"t{n}"})[0] == 201
        assert carol.request("POST", "/api/tokens", {"name": "one more"})[2] == {
            "error": "at most 100 tokens; revoke one first"}


def test_decided_by_last_used_and_sent_paging(tmp_path: Path) -> None:
    """Each envelope says who decided it; each list entry when Table 3 last
    matched it; the Sent view pages."""
    with pair(tmp_path) as (a, b):
        assert b.web_port is not None
        bob = Browser(b.web_port)
        bob.login(BOB)
        send(a, "mine", [BOB])
        mine = pending(b, bob, 1)[0]
        assert mine["decided_by"] is None
        bob.request("POST", "/api/decisions", {"decision": "reject", "ids": [mine["id"]]})
        assert bob.request("GET", f"/api/envelopes/{mine['id']}")[2]["decided_by"] == "user"
        status, _, _done = bob.request("POST", "/api/lists", {
            "action": "add", "list": "in-white", "address": ALICE,
            "server": "smdp.a.example"})
        assert status == 200
        entry = bob.request("GET", "/api/lists")[2]["entries"][0]
        assert (entry["uses"], entry["last_used"]) == (0, None)

        def newest(n: int) -> dict[str, Any]:
            def arrived() -> dict[str, Any] | None:
                envs = bob.request("GET", "/api/envelopes?state=all")[2]["envelopes"]
                return envs[0] if len(envs) == n else None
            return wait_until(arrived, 20, f"envelope {n}")

        send(a, "white", [BOB])
        env = newest(2)
        assert (env["state"] in ("fetching", "accepted"), env["decided_by"]) == (
            True, "white-list")
        assert env["reason"].startswith("sender is on your white list since")
        entry = bob.request("GET", "/api/lists")[2]["entries"][0]
        assert (entry["uses"], entry["last_used"]) == (1, ANY_TIME)
        bob.request("POST", "/api/lists", {"action": "add", "list": "in-black",
                                           "address": ALICE, "server": "smdp.a.example"})
        send(a, "black", [BOB])
        env = newest(3)
        assert (env["state"], env["decided_by"]) == ("spammer", "black-list")
        # The Sent view, a page at a time.
        for n in range(3):
            assert bob.request("POST", "/api/messages", {"to": [ALICE], "subject": f"s{n}",
                                                         "text": "x"})[0] == 201
        first = bob.request("GET", "/api/sent?limit=2")[2]
        assert [m["subject"] for m in first["messages"]] == ["s2", "s1"]
        rest = bob.request("GET", f"/api/sent?limit=2&before={first['next']}")[2]
        assert [m["subject"] for m in rest["messages"]] == ["s0"] and rest["next"] is None
