"""A real mosquitto broker for tests: 127.0.0.1, a free port, a private temp directory.

    with Mosquitto() as broker:          # or broker = Mosquitto(); broker.start()
        url = broker.url                 # tcp://127.0.0.1:PORT
        broker.kill()                    # SIGKILL, as a crash
        broker.start()                   # again, on the same port
        broker.restart()                 # stop (SIGTERM) + start
        broker.pause(); broker.resume()  # SIGSTOP / SIGCONT: a hung broker

Anonymous clients, no persistence, listener on 127.0.0.1 only.  mosquitto runs in the
foreground as our child; as root it drops to user ``mosquitto``, so its directory and
config are made readable by that user.  If mosquitto is not installed the helper raises
:class:`MosquittoMissing` (tests fail; they are never skipped): ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.harness import free_port

READY_TIMEOUT = 10.0


class MosquittoMissing(RuntimeError):
    pass


def find_mosquitto(binary: str = "mosquitto") -> str:
    """Path of the mosquitto binary; Debian puts it in /usr/sbin, often not on PATH."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise MosquittoMissing(
            f"{binary!r} is not installed: these tests need a real mosquitto broker. "
            ".ci/run installs it (apt-get install -y mosquitto mosquitto-clients).")
    return found


class Mosquitto:
    """One mosquitto process; ``start`` after ``stop``/``kill`` reuses the same port."""

    def __init__(self, port: int | None = None, *, extra_config: str = "",
                 binary: str = "mosquitto") -> None:
        self.binary = find_mosquitto(binary)
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="mosquitto-")
        self.dir = Path(self._tmp.name)
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _write_config(self) -> None:
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            + self.extra_config, encoding="utf-8")
        # Readable by the unprivileged user mosquitto switches to when started as root.
        os.chmod(self.dir, 0o755)
        os.chmod(self.conf, 0o644)

    def start(self) -> None:
        """Start and wait until the port accepts connections."""
        if self.running:
            raise RuntimeError("mosquitto is already running")
        for _ in range(3):
            self._write_config()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                             stdout=log, stderr=log)
            if self._wait_ready():
                self._fixed_port = True  # clients know this port now: restarts keep it
                return
            # A port picked by free_port() can be taken in between; try another one,
            # but never move a broker that clients already know.
            if self._fixed_port or self.proc.poll() is None:
                break
            self.port = free_port()
        self.kill()
        raise RuntimeError(f"mosquitto did not start on 127.0.0.1:{self.port}: "
                           f"{self.log.read_text(errors='replace')[-2000:]}")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        """SIGTERM (clean shutdown), SIGKILL after 5 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a word to its clients' sessions."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the broker hangs; TCP still accepts bytes, nothing is answered."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.kill()
        self._tmp.cleanup()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
