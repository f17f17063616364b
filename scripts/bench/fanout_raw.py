"""The baseline server: plain websockets over the same mutual TLS as the hub.

Same certificate, CA and TLS policy (``certs.tls.server_context``), the same 16 KiB
TLS read buffer (``cloudcore.hub.shrink_tls_read_buffers``) and the same websockets
settings as ``cloudcore.hub.Hub.start`` -- and nothing else: no envelope, no store, no
queue, no acks.  It checks the client certificate's CN like the hub does, then only
holds the connection.  ``broadcast`` sends one ~1 KB text frame to every connection
with ``websockets.broadcast`` (one encode, written to each transport in a loop).

Run by the benchmark: ``python fanout_raw.py PORT SERVER.crt SERVER.key CA.crt``;
commands on stdin (see fanout_ipc).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from fanout_ipc import answer, command_lines
from websockets.asyncio.server import ServerConnection, broadcast, serve

from certs.tls import peer_common_name, server_context
from cloudcore.hub import shrink_tls_read_buffers

PAD = "p" * 960  # with id and stamp the frame is ~1 KB, about a Device upsert's size


SESSIONS = [0]  # connections that got as far as the handler


async def handler(ws: ServerConnection) -> None:
    peercert = ws.transport.get_extra_info("peercert") if ws.transport else None
    if not peer_common_name(peercert):
        await ws.close(4003, "client certificate has no common name")
        return
    SESSIONS[0] += 1
    async for _ in ws:
        pass


async def main(port: int, cert: Path, key: Path, ca: Path) -> None:
    shrink_tls_read_buffers()
    ctx = server_context(cert, key, ca, require_client_cert=True)
    async with serve(handler, "127.0.0.1", port, ssl=ctx, max_size=4 * 1_048_576,
                     compression=None, ping_interval=20, ping_timeout=20,
                     close_timeout=5) as server:
        commands = await command_lines()
        answer({"ready": True})
        while True:
            line = await commands.readline()
            if not line:
                break
            cmd: dict[str, Any] = json.loads(line)
            name = cmd.get("cmd")
            if name == "count":
                answer({"connections": len(server.connections), "sessions": SESSIONS[0]})
            elif name == "broadcast":
                conns = server.connections
                sent = time.monotonic()
                broadcast(conns, json.dumps({"id": cmd["id"], "t0": sent, "pad": PAD}))
                answer({"sent": sent, "written": time.monotonic(), "to": len(conns)})
            elif name == "quit":
                answer({"ok": True})
                break
            else:
                answer({"error": f"unknown command {name!r}"})


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])))
