"""UNSUB (docs/lists.md, protocol.md 12.5) through two in-process servers:
the recipient's server leaves the list for its user by RFC 8058's one-click
POST (to a real HTTPS server on loopback, allowed there only by the tests'
switch) or by mailing the list's mailto: address, and records the outcome."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from smdp.certs import make_ca, make_cert, write_issued
from smdp.client.session import ClientError
from smdp.core.jobs import queue_unsubscribe
from smdp.protocol import user as wire
from smdp.store import open_store
from smdp.terms import Decision, EntryState

from .inprocess import InProcessServer, inprocess_pair, peered
from .test_client_ids_and_send import client
from .test_inprocess_flow import lines, wait_for
from .test_web import Browser

USERS = {"a.example": ("news@a.example",), "b.example": ("bob@b.example",)}

# In-process servers: SQLite whatever the pass (as test_web.py).
pytestmark = pytest.mark.own_backend


@dataclass
class ListSite:
    """The list's HTTPS server: what it was sent, and what it answers next."""

    port: int = 0
    posts: list[tuple[str, bytes]] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str = "/unsub?u=bob") -> str:
        return f"https://127.0.0.1:{self.port}{path}"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[ListSite, Path]]:
    ca = make_ca("list test CA")
    cert_path, key_path = write_issued(make_cert("list.example", issuer=ca,
                                                 addresses=("127.0.0.1",)), tmp_path, "site")
    ca_path, _ = write_issued(ca, tmp_path, "site-ca")
    state = ListSite()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.posts.append((self.path, self.rfile.read(length)))
            code, headers = state.answers.pop(0) if state.answers else (200, {})
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, ca_path
    finally:
        httpd.shutdown()
        httpd.server_close()


def post(a: InProcessServer, headers: str) -> None:
    news = a.client("news@a.example")
    news.submit(["bob@b.example"],
                (f"From: news@a.example\r\nSubject: issue 7\r\nList-Id: News <news.a.example>\r\n"
                 f"{headers}\r\nThis week: nothing.\r\n").encode())
    news.quit()


def pending(b: InProcessServer) -> list[str]:
    bob = b.client("bob@b.example")
    try:
        return lines(bob, wire.Envs(False))
    finally:
        bob.quit()


def pending_entry(b: InProcessServer) -> int:
    wait_for(lambda: bool(pending(b)), "the envelope at b.example")
    return int(pending(b)[0].split()[0])


def unsubscribe_line(b: InProcessServer, entry: int) -> str:
    bob = b.client("bob@b.example")
    try:
        return next((line for line in lines(bob, wire.EnvShow(entry))
                     if line.startswith("Unsubscribe: ")), "")
    finally:
        bob.quit()


def refused(a: InProcessServer, b: InProcessServer, url: str) -> str:
    """Bob asks to leave a one-click list at ``url``, which the server will
    not contact: the ENV line that says why, once the request has failed."""
    post(a, f"List-Unsubscribe: <{url}>\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    entry = pending_entry(b)
    bob = b.client("bob@b.example")
    bob.call(wire.Unsub(entry))
    bob.quit()
    wait_for(lambda: unsubscribe_line(b, entry).startswith("Unsubscribe: failed"), "the refusal")
    return unsubscribe_line(b, entry)


def extra(ca: Path) -> str:
    return f'[unsubscribe]\nallow_loopback = true\nca = "{ca}"\ntimeout = 5\n'


def test_one_click_posts_to_the_list_and_the_outcome_shows(
        tmp_path: Path, site: tuple[ListSite, Path]) -> None:
    state, ca = site
    state.answers = [(503, {}), (200, {})]  # the first try fails: the job retries
    with inprocess_pair(tmp_path, extra_b=extra(ca), users=USERS) as (a, b):
        post(a, f"List-Unsubscribe: <mailto:news@a.example>, <{state.url()}>\r\n"
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        entry = pending_entry(b)
        bob = b.client("bob@b.example")
        # Rejecting list mail offers to unsubscribe.
        assert bob.call(wire.UserDecision(Decision.REJECT, entry)).text == (
            f"envelope {entry} rejected; UNSUB {entry} unsubscribes you from the list")
        assert bob.call(wire.Unsub(entry)).text == (
            f"envelope {entry} unsubscribe pending by one-click POST to {state.url()}")
        bob.quit()
        wait_for(lambda: unsubscribe_line(b, entry).startswith("Unsubscribe: done"),
                 "the one-click POST")
        assert state.posts == [("/unsub?u=bob", b"List-Unsubscribe=One-Click")] * 2
        assert unsubscribe_line(b, entry) == (
            f"Unsubscribe: done by one-click POST to {state.url()}: the list answered 200 "
            "to the one-click POST to 127.0.0.1")
        bob = b.client("bob@b.example")
        # Asked again: the request stands, nothing is sent twice; the REJECT
        # answer no longer offers it.
        assert bob.call(wire.Unsub(entry)).text.endswith("(already requested)")
        assert "UNSUB" not in bob.call(wire.UserDecision(Decision.REJECT_SPAM, entry)).text
        bob.quit()
        assert len(state.posts) == 2


def test_a_redirect_to_a_private_address_is_not_followed(
        tmp_path: Path, site: tuple[ListSite, Path]) -> None:
    state, ca = site
    state.answers = [(307, {"Location": "https://10.1.2.3/internal"})]
    with inprocess_pair(tmp_path, extra_b=extra(ca), users=USERS) as (a, b):
        assert "10.1.2.3 is a private address: not contacted" in refused(a, b, state.url())
        assert len(state.posts) == 1


def test_without_the_test_switch_loopback_is_refused(
        tmp_path: Path, site: tuple[ListSite, Path]) -> None:
    state, ca = site
    with inprocess_pair(tmp_path, extra_b=f'[unsubscribe]\nca = "{ca}"\n',
                        users=USERS) as (a, b):
        assert "127.0.0.1 is a loopback address" in refused(a, b, state.url())
        assert state.posts == []


def test_mailto_sends_the_request_from_the_user_to_the_list(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        # An https: URI without the one-click promise is a page for a person:
        # the mailto: one is taken.
        post(a, "List-Unsubscribe: <https://list.example/page>, "
                "<mailto:news@a.example?subject=leave%20news>\r\n")
        entry = pending_entry(b)
        # smdp client unsubscribe: UNSUB from the command line.
        text = client(b, "bob@b.example", "unsubscribe", str(entry)).stdout
        assert text.startswith(f"envelope {entry} unsubscribe done by mail to news@a.example: "
                               "sent as message ")
        news = a.client("news@a.example")
        wait_for(lambda: any(line.endswith(" leave news")
                             for line in lines(news, wire.Envs(False))),
                 "the request at the list")
        news.quit()


def test_no_way_to_unsubscribe_is_an_error(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        post(a, "List-Unsubscribe: <https://list.example/page>\r\n")
        entry = pending_entry(b)
        bob = b.client("bob@b.example")
        assert bob.call(wire.UserDecision(Decision.REJECT, entry)).text.endswith(
            "unsubscribes you from the list")
        with pytest.raises(ClientError, match="only a web page"):
            bob.call(wire.Unsub(entry))
        with pytest.raises(ClientError, match="no envelope 999"):
            bob.call(wire.Unsub(999))
        bob.quit()


def test_the_web_api_unsubscribes_as_the_user_port_does(tmp_path: Path) -> None:
    a = InProcessServer(tmp_path, "a.example")
    b = InProcessServer(tmp_path, "b.example", listen='web = "127.0.0.1:0"\n')
    a.add_user("news@a.example")
    b.add_user("bob@b.example")
    b.add_user("carol@b.example")
    with peered(a, b):
        post(a, "List-Unsubscribe: <mailto:news@a.example>\r\n")
        entry = pending_entry(b)
        assert b.web_port is not None
        carol = Browser(b.web_port)
        carol.login("carol@b.example")
        status, _, said = carol.request("POST", f"/api/envelopes/{entry}/unsubscribe")
        assert (status, said) == (404, {"error": f"no envelope {entry} in your mailbox"})
        bob = Browser(b.web_port)
        bob.login("bob@b.example")
        status, _, said = bob.request("POST", f"/api/envelopes/{entry}/unsubscribe")
        assert status == 200 and said["message"].startswith(
            f"envelope {entry} unsubscribe done by mail to news@a.example: sent as message ")
        assert unsubscribe_line(b, entry).startswith("Unsubscribe: done by mail")
        post(a, "List-Unsubscribe: <https://list.example/page>\r\n")
        wait_for(lambda: len(pending(b)) == 2, "the second post")
        second = entry + 1
        status, _, said = bob.request("POST", f"/api/envelopes/{second}/unsubscribe")
        assert status == 400 and "only a web page" in said["error"]


def test_a_replayed_job_posts_nothing_again(tmp_path: Path,
                                            site: tuple[ListSite, Path]) -> None:
    """A node that crashed after the POST, before the job was deleted, runs
    the job again: the request is done, so nothing is sent twice."""
    state, ca = site
    a = InProcessServer(tmp_path, "a.example")
    b = InProcessServer(tmp_path, "b.example", extra(ca))
    b.add_user("bob@b.example")
    store = open_store(b.config)
    bob = store.user_by_address("bob@b.example")
    assert bob is not None
    with store.transaction():
        env = store.insert_in_envelope(envid="e" * 26, origin_server="smdp.a.example",
                                       sender="news@a.example", size=5, block="Subject: x\r\n",
                                       subject="x", body=None)
        entry = store.insert_mailbox_entry(bob.id, env, "bob@b.example", EntryState.PENDING)
        made = store.insert_unsubscribe(entry, bob.id, "one-click", state.url(), "done",
                                        "the list answered 200")
        queue_unsubscribe(store, made.id)
    store.close()

    def queued() -> int:
        s = open_store(b.config)
        try:
            return len(s.jobs())
        finally:
            s.close()

    with peered(a, b):
        wait_for(lambda: queued() == 0, "the replayed job to finish")
    assert state.posts == []
