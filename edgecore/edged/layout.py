"""Where a replica lives on disk: ``DIR/apps/<namespace>/<name>/``.

The directory is the process's working directory (``workingDir`` is taken relative to
it) and also holds what edged keeps about the replica::

    logs/stdout.log, logs/stdout.log.1, ...   the process's output, bounded (logfiles.py)
    logs/stderr.log, ...
    .edged/process.json                        pid and start time of the running process

Files the App brings (artifacts, config) may not land in ``logs/`` or ``.edged/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from protocol.errors import InvalidObject
from protocol.resources import check_dns_subdomain


class SetupError(Exception):
    """The working directory could not be made ready; ``reason`` goes to the status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


INVALID_PATH = "InvalidPath"


class ReplicaDir:
    def __init__(self, apps_root: Path, namespace: str, name: str) -> None:
        # Names come from the cloud; they are DNS subdomains, but a path is no place to
        # trust that.
        check_dns_subdomain(namespace, "metadata.namespace")
        check_dns_subdomain(name, "metadata.name")
        self.namespace = namespace
        self.name = name
        self.root = apps_root / namespace / name
        self.logs = self.root / "logs"
        self.stdout_log = self.logs / "stdout.log"
        self.stderr_log = self.logs / "stderr.log"
        self.state = self.root / ".edged"
        self.process_record = self.state / "process.json"

    def working_dir(self, working_dir: str | None) -> Path:
        """``workingDir`` relative to the replica directory; an absolute one is used as
        given (an App may run a program installed on the node)."""
        return self.root / working_dir if working_dir else self.root

    def target(self, workdir: Path, relative: str, field: str) -> Path:
        """Where a file of the App lands, refused when it would overwrite edged's own."""
        path = workdir / relative
        for reserved in (self.logs, self.state):
            if path == reserved or path.is_relative_to(reserved):
                raise SetupError(INVALID_PATH, f"{field} {relative!r} is inside {reserved}, "
                                               "which edged keeps for itself")
        return path

    def make(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)


def existing_replica_dirs(apps_root: Path) -> Iterator[ReplicaDir]:
    """Every replica directory a previous run left (for its process records)."""
    if not apps_root.is_dir():
        return
    for ns_dir in sorted(apps_root.iterdir()):
        if not ns_dir.is_dir():
            continue
        for dir_ in sorted(ns_dir.iterdir()):
            if dir_.is_dir():
                try:
                    yield ReplicaDir(apps_root, ns_dir.name, dir_.name)
                except InvalidObject:
                    continue  # not a name edged would have made
