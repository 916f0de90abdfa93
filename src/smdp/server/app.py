"""One SMDP server: the store, the domain core and the three asyncio adapters
(peer port, user port, delivery worker) wired together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path

from smdp.config import Config
from smdp.core.destination import Destination
from smdp.core.origin import Origin
from smdp.server.accounts import Accounts
from smdp.server.delivery import DeliveryWorker
from smdp.server.discovery import Discovery, PeerServer
from smdp.store import Store, open_store

log = logging.getLogger("smdp")


class SmdpServer:
    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store = store if store is not None else open_store(config)
        self.discovery = self._discovery(config.peer_listener.port)
        self.accounts = Accounts(self.store, config)
        self.origin = Origin(
            self.store, hostname=config.hostname, expire_days=config.delivery.expire_days
        )
        self.destination = Destination(self.store, quality=config.quality)
        self.worker = DeliveryWorker(self)
        self._servers: list[asyncio.Server] = []
        self._worker_task: asyncio.Task[None] | None = None
        self.peer_port = 0
        self.user_port = 0

    def _discovery(self, own_port: int) -> Discovery:
        static = dict(self.config.peers)
        # Our own domains resolve to ourselves: local recipients go through the
        # same envelope flow over loopback, so there is one code path.
        for domain in self.config.domains:
            static.setdefault(
                domain, PeerServer(self.config.hostname, self.config.peer_listener.host, own_port)
            )
        return Discovery(static, nameservers=list(self.config.dns_nameservers) or None)

    async def start(self) -> None:
        from smdp.server.peer_server import serve_peer
        from smdp.server.user_server import serve_user

        peer = await asyncio.start_server(
            lambda r, w: serve_peer(self, r, w),
            self.config.peer_listener.host, self.config.peer_listener.port,
        )
        user = await asyncio.start_server(
            lambda r, w: serve_user(self, r, w),
            self.config.user_listener.host, self.config.user_listener.port,
        )
        self._servers = [peer, user]
        self.peer_port = peer.sockets[0].getsockname()[1]
        self.user_port = user.sockets[0].getsockname()[1]
        # With port 0 the real peer port is known only after binding.
        self.discovery = self._discovery(self.peer_port)
        self._worker_task = asyncio.create_task(self.worker.run(), name="delivery-worker")
        log.info("%s serving %s: peer port %s, user port %s", self.config.hostname,
                 ", ".join(self.config.domains), self.peer_port, self.user_port)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        self.worker.stop()
        if self._worker_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._worker_task, timeout=10)
        for server in self._servers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout=5)
        self.store.close()


def run_server(config: Config, *, ready_file: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        server = SmdpServer(config)
        await server.start()
        print(f"smdp: {config.hostname} serving {', '.join(config.domains)}: "
              f"peer port {server.peer_port}, user port {server.user_port}", flush=True)
        if ready_file:
            tmp = Path(ready_file + ".tmp")
            tmp.write_text(json.dumps({"peer": server.peer_port, "user": server.user_port}))
            tmp.replace(ready_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()

    asyncio.run(main())
    return 0
