"""Shared fixtures: real cloudcore/edgecore processes, torn down after each test."""

from __future__ import annotations

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
