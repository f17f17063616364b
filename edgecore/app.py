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
from typing import TYPE_CHECKING, Any, Literal

from edgecore.artifacts import ArtifactFetcher
from edgecore.certstate import check_node_key
from edgecore.config import EdgePaths, load_config
from edgecore.dmi import DmiServer
from edgecore.edged import Edged
from edgecore.edged.environment import broker_url
from edgecore.eventbus import DEFAULT_LISTEN, Bus, start_eventbus, stop_eventbus
from edgecore.hub import HubClient
from edgecore.meta import MetaCache
from edgecore.metaserver import MetaServer
from edgecore.outbox import Outbox
from edgecore.router import EdgeRouter
from edgecore.twin.manager import DeviceListener, DeviceTwins
from edgecore.twin.store import TwinStore

if TYPE_CHECKING:
    from edgecore.eventbus.broker import EmbeddedBroker

log = logging.getLogger(__name__)


class EdgeCore:
    def __init__(self, data_dir: Path, *, metaserver: tuple[str, int] | None = None,
                 mqtt_mode: Literal["embedded", "external"] = "embedded",
                 mqtt_listen: tuple[str, int] = DEFAULT_LISTEN,
                 mqtt_url: str | None = None, servicebus: bool | None = None) -> None:
        self.paths = EdgePaths(data_dir)
        self.cfg = load_config(self.paths.config)
        self._metaserver_addr = metaserver
        self._mqtt_mode = mqtt_mode
        self._mqtt_listen = mqtt_listen
        self._mqtt_url = mqtt_url
        self._servicebus = self.cfg.servicebus.enable if servicebus is None else servicebus
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.hub: HubClient | None = None
        self.metaserver: MetaServer | None = None
        self.router: EdgeRouter | None = None
        self.edged: Edged | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        # An exposed node key ends the start here, before anything serves (InsecureKeyFile).
        check_node_key(self.paths.pki)
        cache = MetaCache.open(self.paths.cache)
        outbox = Outbox.open(self.paths.outbox, limit=self.cfg.link.outboxLimit,
                             max_bytes=self.cfg.storage.outboxMaxBytes)
        hub = HubClient(self.cfg, self.paths, cache, outbox)
        self.hub = hub
        hub_task: asyncio.Task[None] | None = None
        twin_store = TwinStore.open(self.paths.twin, max_bytes=self.cfg.storage.twinMaxBytes)
        bus: Bus | None = None
        broker: EmbeddedBroker | None = None
        twins: DeviceTwins | None = None
        dmi: DmiServer | None = None
        router: EdgeRouter | None = None
        edged: Edged | None = None
        try:
            bus, broker = await start_eventbus(self._mqtt_mode, self._mqtt_listen, self._mqtt_url,
                                               client_id=f"edgecore-{self.cfg.nodeName}")
            log.info("EventBus: %s", f"embedded broker on {self._mqtt_listen[0]}:"
                     f"{broker.bound_port}" if broker else f"external broker {self._mqtt_url}")
            twins = DeviceTwins(self.cfg.nodeName, cache, twin_store, publish=bus.publish,
                                upstream=hub.report_statuses, listened=bus.has_subscribers)
            hub.on_synced.append(twins.resync_all)
            for topic_filter in twins.subscriptions():
                await bus.subscribe(topic_filter, twins.on_mqtt)
            dmi = DmiServer(self.paths.dmi_socket, twins)
            twins.device_listeners.append(_mapper_notifier(dmi, cache))
            await dmi.start(known_mappers=twin_store.mappers())
            await twins.start()
            router = EdgeRouter(
                self.cfg.nodeName, cache, subscribe=bus.subscribe, unsubscribe=bus.unsubscribe,
                publish=bus.publish, send_message=hub.send_message,
                # base64 and the envelope must still fit one frame on the link
                max_payload_bytes=self.cfg.link.maxFrameBytes // 2,
                servicebus=self._servicebus,
                servicebus_timeout=self.cfg.servicebus.timeoutSeconds,
            )
            hub.on_publish = router.deliver
            await router.start()
            self.router = router
            app_mqtt = (broker_url(self._mqtt_listen[0], broker.bound_port) if broker
                        else self._mqtt_url or "")
            edged = self.edged = Edged(
                self.cfg.nodeName, cache, self.paths.apps, report_status=hub.report_status,
                mqtt_url=app_mqtt, dmi_socket=self.paths.dmi_socket, settings=self.cfg.edged,
                fetch_artifact=ArtifactFetcher(self.paths, self.cfg.hub).fetch)
            await edged.start()  # the cached replicas run from now on, cloud or not
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
            if edged is not None:
                await edged.stop()  # apps stop gracefully while the bus still serves them
            if router is not None:
                await router.stop()
            if twins is not None:
                await twins.stop()
            if dmi is not None:
                await dmi.stop()
            if bus is not None:
                await stop_eventbus(bus, broker)
            if self.metaserver is not None:
                await self.metaserver.stop()
            twin_store.close()
            cache.close()
            outbox.close()
            log.info("edgecore stopped")


def _mapper_notifier(dmi: DmiServer, cache: MetaCache) -> DeviceListener:
    """Tell the mapper of a device's protocol when the device appears, changes (a new
    desired value included) or goes; its model is sent first."""

    async def notify(_key: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        device = new or old
        assert device is not None
        protocol = ((device.get("spec") or {}).get("protocol") or {}).get("protocolName")
        mapper = dmi.mapper(protocol) if protocol else None
        if mapper is None:
            return
        ns, name = device["metadata"]["namespace"], device["metadata"]["name"]
        if new is None:
            await mapper.remove_device(ns, name)
            return
        model_name = ((new.get("spec") or {}).get("deviceModelRef") or {}).get("name")
        model = cache.get("DeviceModel", ns, model_name) if model_name else None
        if model is not None:
            await mapper.create_device_model(model)
        if old is None:
            await mapper.register_device(new, model)
        elif old.get("spec") != new.get("spec"):
            await mapper.update_device(new, model)

    return notify
