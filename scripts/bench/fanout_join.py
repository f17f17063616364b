"""Give every simulated node a real identity: its own EC key, a CSR, and a certificate
signed by the cloud through the real ``POST /join`` (which also creates its Node).

Key generation runs in a process pool (it is CPU-bound and the cloud is not running
yet when it happens); the joins are real HTTPS requests, ``concurrency`` in flight.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fanout_http import Pool

from certs.csr import new_node_key_and_csr


@dataclass(frozen=True)
class NodeIdentity:
    idx: int
    name: str
    key: Path
    cert: Path


def _all_cpus() -> None:
    # The benchmark pins itself to one CPU; key generation may use all of them.
    os.sched_setaffinity(0, range(os.cpu_count() or 1))


def _keys_for(names: Sequence[str]) -> list[tuple[bytes, bytes]]:
    return [new_node_key_and_csr(n) for n in names]


def make_keys(names: Sequence[str], workers: int) -> list[tuple[bytes, bytes]]:
    """(key_pem, csr_pem) per name, in order."""
    chunk = max(1, len(names) // (workers * 4))
    parts = [names[i:i + chunk] for i in range(0, len(names), chunk)]
    with ProcessPoolExecutor(workers, initializer=_all_cpus) as pool:
        return [pair for part in pool.map(_keys_for, parts) for pair in part]


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


async def join_all(api_port: int, ca_pem: str, token: str, names: Sequence[str],
                   keys: Sequence[tuple[bytes, bytes]], out_dir: Path,
                   concurrency: int = 16) -> tuple[list[NodeIdentity], float]:
    """Join every node; returns the identities and the joins per second.  ``out_dir``
    must exist; each node's key (0600) and certificate are written there."""
    pool = await Pool.open("127.0.0.1", api_port, ssl.create_default_context(cadata=ca_pem),
                           token, concurrency)

    async def join(idx: int) -> NodeIdentity:
        name = names[idx]
        key_pem, csr_pem = keys[idx]
        status, body = await pool.request("POST", "/join", {
            "nodeName": name, "csr": csr_pem.decode(), "labels": {"bench": "fanout"}})
        if status != 201:
            raise RuntimeError(f"join of {name} failed: {status} {body}")
        ident = NodeIdentity(idx, name, out_dir / f"{name}.key", out_dir / f"{name}.crt")
        _write(ident.key, key_pem, 0o600)
        _write(ident.cert, body["certificate"].encode(), 0o644)
        return ident

    try:
        started = time.monotonic()
        identities = await asyncio.gather(*(join(i) for i in range(len(names))))
        rate = len(names) / (time.monotonic() - started)
    finally:
        await pool.close()
    return list(identities), rate
