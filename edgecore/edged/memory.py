"""Enforcing ``resources.limits.memory``.

Two mechanisms, the better one that this node allows:

* **cgroup v2**: each replica's process runs in its own child of edgecore's cgroup with
  ``memory.max`` set (and ``memory.swap.max`` 0, ``memory.oom.group`` 1), so the kernel
  OOM-kills the whole replica when it goes over, and counts it in ``memory.events``.
  This needs edgecore's cgroup to be writable and to have the memory controller (a
  systemd unit with ``Delegate=yes``, a container with a writable cgroupns).  Because
  cgroup v2 lets only leaf cgroups hold processes, edgecore moves itself into a leaf
  ``edgecore/`` child first when its own cgroup has no controllers delegated yet.
* **RLIMIT_AS** otherwise, set in the child before it runs the program: the process's
  address space is capped, allocations beyond fail (Python raises MemoryError, C gets
  NULL from malloc).  Coarser: it counts reserved address space, not used memory.

The child enters its cgroup itself (in ``preexec``, before ``exec``), so there is no
window in which it runs unconfined.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_V2 = "cgroup v2"
RLIMIT = "RLIMIT_AS"


def own_cgroup_v2_dir(proc_self_cgroup: str, mountinfo: str) -> Path | None:
    """Where this process's cgroup v2 directory is, from ``/proc/self/cgroup`` and
    ``/proc/self/mountinfo``; None when the process is in no cgroup v2 hierarchy."""
    relative = None
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            relative = line[3:]
    if relative is None:
        return None
    for line in mountinfo.splitlines():
        fields, sep, rest = line.partition(" - ")
        if not sep or rest.split(" ", 1)[0] != "cgroup2":
            continue
        parts = fields.split()
        if len(parts) < 5:
            continue
        root, mount_point = parts[3], parts[4]
        # A cgroup namespace or bind mount shows a sub-tree: strip its root.
        if root != "/" and relative != root and not relative.startswith(root + "/"):
            continue
        inner = relative[len(root):] if root != "/" else relative
        return Path(_unescape(mount_point)) / inner.lstrip("/")
    return None


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


@dataclass
class Confinement:
    """How one run of a replica is confined."""

    description: str
    preexec: Callable[[], None] | None = None
    cgroup: Path | None = None
    _oom_baseline: int = 0

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed something in this run (cgroup v2 only)."""
        return self.cgroup is not None and _oom_kills(self.cgroup) > self._oom_baseline

    def release(self) -> None:
        """After the run: kill what is left in the cgroup and remove it."""
        if self.cgroup is None:
            return
        with contextlib.suppress(OSError):
            (self.cgroup / "cgroup.kill").write_text("1")
        try:
            self.cgroup.rmdir()
        except OSError as exc:
            log.debug("could not remove %s yet: %s", self.cgroup, exc)


UNCONFINED = Confinement(description="")


class MemoryLimiter:
    """Picks the mechanism on first use (setting up cgroup delegation may move edgecore
    itself, which a node that runs no limited App should never see)."""

    def __init__(self, cgroup_base: Path | None = None, *, detect: bool = True) -> None:
        self._base = cgroup_base
        self._detect = detect and cgroup_base is None
        self.reason = "" if cgroup_base is not None else "not looked for"

    @property
    def mechanism(self) -> str:
        if self._detect:
            self._detect = False
            self._base, self.reason = _find_delegated_cgroup()
            if self._base is not None:
                log.info("edged: memory limits are enforced by cgroup v2 under %s", self._base)
            else:
                log.info("edged: memory limits are enforced by RLIMIT_AS (%s)", self.reason)
        return CGROUP_V2 if self._base is not None else RLIMIT

    def confine(self, cgroup_name: str, limit_bytes: int | None) -> Confinement:
        if limit_bytes is None:
            return UNCONFINED
        if self.mechanism == CGROUP_V2:
            assert self._base is not None
            try:
                return _cgroup_confinement(self._base / cgroup_name, limit_bytes)
            except OSError as exc:
                log.warning("edged: could not set up cgroup %s (%s); falling back to "
                            "RLIMIT_AS", self._base / cgroup_name, exc)
        return _rlimit_confinement(limit_bytes, self.reason)


def _cgroup_confinement(cgroup: Path, limit: int) -> Confinement:
    cgroup.mkdir(exist_ok=True)
    (cgroup / "memory.max").write_text(str(limit))
    # Best effort: without these the limit still holds, but swap could soften it and
    # an OOM kill might spare the replica's other processes.
    for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
        with contextlib.suppress(OSError):
            (cgroup / name).write_text(value)
    procs = os.fsencode(cgroup / "cgroup.procs")

    def enter() -> None:  # runs in the child between fork and exec
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    return Confinement(
        description=f"memory limit {limit} bytes enforced by cgroup v2 memory.max ({cgroup})",
        preexec=enter, cgroup=cgroup, _oom_baseline=_oom_kills(cgroup))


def _rlimit_confinement(limit: int, why: str) -> Confinement:
    import resource  # only nodes running a limited App without cgroup v2 need it

    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    because = f"; cgroup v2 not usable: {why}" if why else ""
    return Confinement(
        description=f"memory limit {limit} bytes enforced by RLIMIT_AS (address space){because}",
        preexec=apply)


def _oom_kills(cgroup: Path) -> int:
    try:
        text = (cgroup / "memory.events").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def _find_delegated_cgroup() -> tuple[Path | None, str]:
    """A cgroup v2 directory whose new children get the memory controller, or None and
    why not."""
    try:
        own = own_cgroup_v2_dir(Path("/proc/self/cgroup").read_text(),
                                Path("/proc/self/mountinfo").read_text())
    except OSError as exc:
        return None, f"cannot read /proc: {exc}"
    if own is None:
        return None, "edgecore is in no cgroup v2 hierarchy"
    try:
        available = (own / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return None, f"cannot read {own}/cgroup.controllers: {exc}"
    if "memory" not in available:
        return None, f"the memory controller is not delegated to {own}"
    if not os.access(own, os.W_OK):
        return None, f"{own} is not writable"
    subtree = own / "cgroup.subtree_control"
    try:
        if "memory" not in subtree.read_text().split():
            _enable_memory(own, subtree)
    except OSError as exc:
        return None, f"cannot enable the memory controller for children of {own}: {exc}"
    return own, ""


def _enable_memory(own: Path, subtree: Path) -> None:
    try:
        subtree.write_text("+memory")
        return
    except OSError:
        # "No internal processes": a cgroup holding processes cannot hand controllers
        # to children.  Move edgecore into a leaf of its own and try again.
        pass
    leaf = own / "edgecore"
    leaf.mkdir(exist_ok=True)
    (leaf / "cgroup.procs").write_text(str(os.getpid()))
    log.info("edged: moved edgecore into %s to delegate the memory controller", leaf)
    subtree.write_text("+memory")
