"""A minimal HTTP/1.1 keep-alive client for driving the API hard from one CPU.

Why not httpx: measured on this machine, httpx spends ~3.5 ms of client CPU per PUT
with 4-8 requests in flight and ~9 ms with 32 (its connection pool scans its waiters),
while cloudcore spends ~2 ms serving one.  The benchmark's clients share one CPU, so
with httpx the figures would describe httpx.  Each :class:`Connection` here is one TLS
stream carrying one request at a time; a :class:`Pool` of C connections is C requests
in flight.  Only what cloudcore's API answers is handled: a status line, headers, and a
body with Content-Length or chunked transfer encoding.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


class HttpError(RuntimeError):
    pass


class Connection:
    def __init__(self, host: str, port: int, ctx: ssl.SSLContext,
                 headers: dict[str, str]) -> None:
        self._host = host
        self._port = port
        self._ctx = ctx
        self._headers = headers
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, host: str, port: int, ctx: ssl.SSLContext,
                   headers: dict[str, str]) -> Connection:
        conn = cls(host, port, ctx, headers)
        await conn.ensure_open()
        return conn

    async def ensure_open(self) -> None:
        """(Re)connect if the server has closed this connection (uvicorn closes
        keep-alive connections idle for 5 s)."""
        if self._reader is not None and not self._reader.at_eof():
            return
        await self.close()
        self._reader, self._writer = await asyncio.open_connection(
            self._host, self._port, ssl=self._ctx, server_hostname=self._host)

    async def request(self, method: str, path: str,
                      body: Any = None) -> tuple[int, dict[str, Any]]:
        await self.ensure_open()
        assert self._reader is not None and self._writer is not None
        reader = self._reader
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self._host}:{self._port}",
                f"Content-Length: {len(payload)}", "Content-Type: application/json",
                "Accept: application/json",
                *(f"{k}: {v}" for k, v in self._headers.items())]
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        status_line = await reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2:
            raise HttpError(f"{method} {path}: connection closed ({status_line!r})")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            data = bytearray()
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                data += await reader.readexactly(size)
                await reader.readline()
            raw = bytes(data)
        else:
            raw = await reader.readexactly(length or 0)
        return status, (json.loads(raw) if raw else {})

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


class Pool:
    """``size`` keep-alive connections; :meth:`conn` lends one out."""

    def __init__(self, conns: list[Connection]) -> None:
        self._free: asyncio.Queue[Connection] = asyncio.Queue()
        self._all = conns
        for c in conns:
            self._free.put_nowait(c)

    @classmethod
    async def open(cls, host: str, port: int, ctx: ssl.SSLContext, token: str | None,
                   size: int) -> Pool:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conns = await asyncio.gather(*(Connection.open(host, port, ctx, headers)
                                       for _ in range(size)))
        return cls(list(conns))

    @property
    def size(self) -> int:
        return len(self._all)

    @asynccontextmanager
    async def conn(self) -> AsyncIterator[Connection]:
        c = await self._free.get()
        try:
            await c.ensure_open()
            yield c
        finally:
            self._free.put_nowait(c)

    async def request(self, method: str, path: str,
                      body: Any = None) -> tuple[int, dict[str, Any]]:
        async with self.conn() as c:
            return await c.request(method, path, body)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._all))
