"""What a node says about itself in every heartbeat: capacity, allocatable,
addresses and versions, in Kubernetes quantity notation."""

from __future__ import annotations

import os
import platform
import shutil
import socket
from pathlib import Path

from protocol.kinds.core import NodeAddress, NodeInfo, NodeStatus

EDGECORE_VERSION = "0.1.0"


def _meminfo_kib(field: str) -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def node_status(data_dir: Path, internal_ip: str | None, *,
                reserved_memory_kib: int = 0) -> NodeStatus:
    cpu = os.cpu_count() or 1
    mem = _meminfo_kib("MemTotal")
    disk = shutil.disk_usage(data_dir).total // 1024
    addresses = [NodeAddress(type="Hostname", address=socket.gethostname())]
    if internal_ip:
        addresses.insert(0, NodeAddress(type="InternalIP", address=internal_ip))
    return NodeStatus(
        capacity={"cpu": str(cpu), "memory": f"{mem}Ki", "disk": f"{disk}Ki"},
        allocatable={
            "cpu": str(cpu),
            "memory": f"{max(0, mem - reserved_memory_kib)}Ki",
            "disk": f"{disk}Ki",
        },
        addresses=addresses,
        nodeInfo=NodeInfo(
            edgecoreVersion=EDGECORE_VERSION,
            pythonVersion=platform.python_version(),
            operatingSystem=platform.system().lower(),
            kernelVersion=platform.release(),
            architecture=platform.machine(),
        ),
    )
