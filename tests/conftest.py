"""Shared fixtures: real cloudcore/edgecore processes, torn down after each test."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cloud, Edge


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[Cloud | Edge]]:
    started: list[Cloud | Edge] = []
    yield started
    for p in reversed(started):
        try:
            p.stop()
        except Exception:
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()


@pytest.fixture
def cloud_factory(tmp_path: Path, procs: list[Cloud | Edge]) -> Callable[..., Cloud]:
    def make(settings: dict[str, Any] | None = None, name: str = "c") -> Cloud:
        cloud = Cloud(tmp_path / name, settings=settings)
        procs.append(cloud)
        return cloud
    return make


@pytest.fixture
def edge_factory(tmp_path: Path, procs: list[Cloud | Edge]) -> Callable[..., Edge]:
    def make(cloud: Cloud, name: str, **kw: Any) -> Edge:
        edge = Edge(tmp_path, name, cloud, **kw)
        procs.append(edge)
        return edge
    return make


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals (socat): what one end writes, the other reads, like a
    null-modem serial cable.  Skips the test where socat is not installed."""
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed")
    a, b = str(tmp_path / "ttyA"), str(tmp_path / "ttyB")
    proc = subprocess.Popen(["socat", "-d", "-d", f"pty,raw,echo=0,link={a}",
                             f"pty,raw,echo=0,link={b}"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (os.path.exists(a) and os.path.exists(b)):
            assert time.monotonic() < deadline, "socat did not create the pty pair"
            assert proc.poll() is None, "socat exited"
            time.sleep(0.01)
        yield a, b
    finally:
        proc.terminate()
        proc.wait(5)
