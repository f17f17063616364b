"""edgecore's composition root.

Start-up order matters for autonomy: the cache opens and the local services serve it
*before* any attempt to reach the cloud, so a node whose cloud is away (or that just
rebooted without network) serves everything it had from its first second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from edgecore.config import EdgePaths, load_config
from edgecore.hub import HubClient
from edgecore.meta import MetaCache
from edgecore.metaserver import MetaServer
from edgecore.outbox import Outbox

log = logging.getLogger(__name__)


class EdgeCore:
    def __init__(self, data_dir: Path, *, metaserver: tuple[str, int] | None = None) -> None:
        self.paths = EdgePaths(data_dir)
        self.cfg = load_config(self.paths.config)
        self._metaserver_addr = metaserver
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.hub: HubClient | None = None
        self.metaserver: MetaServer | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        cache = MetaCache.open(self.paths.cache)
        outbox = Outbox.open(self.paths.outbox, limit=self.cfg.link.outboxLimit)
        hub = HubClient(self.cfg, self.paths, cache, outbox)
        self.hub = hub
        hub_task: asyncio.Task[None] | None = None
        try:
            if self._metaserver_addr is not None:
                host, port = self._metaserver_addr
                self.metaserver = MetaServer(cache, host, port)
                await self.metaserver.start()
                log.info("metaserver serving the local cache on http://%s:%d",
                         host, self.metaserver.bound_port)
            log.info("edgecore %s started from its cache (%d objects, %d messages waiting "
                     "in the outbox)", self.cfg.nodeName, len(cache.holdings()), len(outbox))
            self.ready.set()
            hub_task = asyncio.create_task(hub.run(), name="hub")
            stopper = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({hub_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if hub_task in done:
                hub_task.result()
        finally:
            if hub_task is not None:
                hub_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await hub_task
            if self.metaserver is not None:
                await self.metaserver.stop()
            cache.close()
            outbox.close()
            log.info("edgecore stopped")
