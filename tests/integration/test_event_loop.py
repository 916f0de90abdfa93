"""[server] event_loop (issue 15 item 3; docs/configuration.md): real server
processes on uvloop pass the whole flow, and "uvloop" demanded where it cannot
be imported stops the start with one sentence naming the package.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from smdp.errors import CliError
from smdp.protocol import user as wire
from smdp.server.app import event_loop_factory
from tests.integration.harness import make_pair, running, wait_until

ALICE, BOB = "alice@a.example", "bob@b.example"
UVLOOP = importlib.util.find_spec("uvloop") is not None


@pytest.mark.skipif(not UVLOOP, reason="uvloop is not installed here (pip install uvloop): "
                                       "the servers on uvloop are not tested")
def test_servers_on_uvloop_pass_the_flow(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, server_extra='event_loop = "uvloop"')
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        for server in (a, b):
            assert "event loop: uvloop" in server.log()
        c = a.client(ALICE)
        msgid = c.submit([BOB], f"To: {BOB}\r\nSubject: On uvloop\r\n\r\nHello.\r\n".encode())
        c.quit()
        msgid = msgid.split("queued as ")[1].split()[0]
        [env] = wait_until(lambda: b.envelopes(BOB), what="the envelope at b")
        c = b.client(BOB)
        assert "accepted" in c.call(wire.UserDecision(wire.DECISIONS_BY_VERB["ACCEPT"],
                                                      int(env[0]))).text
        c.quit()
        wait_until(lambda: [r[2] for r in a.sent(ALICE, msgid)] == ["delivered"],
                   what="the pull")
        c = b.client(BOB)
        body = c.call(wire.Retr(1)).body or b""
        c.quit()
        assert b"Subject: On uvloop" in body and b"Hello." in body


def test_uvloop_demanded_but_missing_stops_the_start(tmp_path: Path) -> None:
    # A module named uvloop first on the path, whose import fails as a missing
    # package's would: the server must not fall back, nor show a traceback.
    shim = tmp_path / "no-uvloop"
    shim.mkdir()
    (shim / "uvloop.py").write_text('raise ImportError("No module named \'uvloop\'")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p))
    config = tmp_path / "smdp.toml"
    config.write_text('[server]\nhostname = "smdp.a.example"\ndomains = ["a.example"]\n'
                      'event_loop = "uvloop"\n[listen]\npeer = "127.0.0.1:0"\n'
                      'user = "127.0.0.1:0"\n')
    done = subprocess.run([sys.executable, "-m", "smdp", "serve", "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith('smdp: [server] event_loop = "uvloop" but the uvloop '
                                  "package cannot be imported")
    assert "pip install uvloop" in done.stderr and "Traceback" not in done.stderr


def test_asyncio_never_loads_uvloop_and_auto_falls_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules: Python's own way to make an import fail.
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert event_loop_factory("asyncio") == (None, "asyncio")
    assert event_loop_factory("auto") == (None, "asyncio")
    with pytest.raises(CliError, match="uvloop package cannot be imported"):
        event_loop_factory("uvloop")


@pytest.mark.skipif(not UVLOOP, reason="uvloop is not installed here (pip install uvloop)")
def test_auto_and_uvloop_use_uvloop_where_it_imports() -> None:
    import uvloop

    for setting in ("auto", "uvloop"):
        factory, name = event_loop_factory(setting)
        assert factory is uvloop.new_event_loop and name == f"uvloop {version('uvloop')}"
    assert event_loop_factory("asyncio") == (None, "asyncio")
