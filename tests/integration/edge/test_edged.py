"""edged with real processes: a real MetaCache on a tmp sqlite file is driven by upserting
AppReplica objects into it, as the hub does with what the cloud sends, and the apps are
small Python scripts whose effects (files, exit codes, pids) are checked."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgecore.config import EdgedSettings
from edgecore.edged import Edged
from edgecore.edged.leftovers import proc_stat
from edgecore.meta import MetaCache
from protocol.envelope import ObjectRef

REPO = Path(__file__).resolve().parents[3]
PY = sys.executable
T = TypeVar("T")

FAST = EdgedSettings(backoffBaseSeconds=0.2, backoffCapSeconds=1.0, backoffResetSeconds=30.0)


def alive(pid: int) -> bool:
    stat = proc_stat(pid)  # a zombie nobody reaped has ended
    return stat is not None and stat.alive


async def eventually(check: Callable[[], T | None], what: str, within: float = 60.0) -> T:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def script(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


# An app that records each start, and whether the previous instance was still alive then.
PIDAPP = script("""
    import os, pathlib, time
    events = pathlib.Path("events")
    prev = pathlib.Path("pid")
    if prev.exists():
        old = int(prev.read_text())
        try:
            state = open(f"/proc/{old}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        if state not in ("gone", "Z", "X"):
            with events.open("a") as f:
                f.write(f"overlap {old}\\n")
    prev.write_text(str(os.getpid()))
    with events.open("a") as f:
        f.write(f"start {os.getpid()}\\n")
    while True:
        time.sleep(3600)
""")


class Node:
    """A node's cache and apps directory, and what edged reported for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = MetaCache.open(root / "meta.db")
        self.apps = root / "apps"
        self.store = root / "artifact-store"
        self.store.mkdir()
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.edged: Edged | None = None
        self._rv = 0

    def report(self, ref: ObjectRef, status: dict[str, Any]) -> None:
        self.reports.append((ref.name, status))

    async def fetch(self, sha256: str) -> Path:
        """Artifacts served from a local directory, one file per sha256."""
        path = self.store / sha256
        if not path.exists():
            raise FileNotFoundError(f"no artifact {sha256[:12]}… in the store")
        return path

    async def start(self, settings: EdgedSettings = FAST) -> Edged:
        self.edged = Edged("edge-1", self.cache, self.apps, report_status=self.report,
                           mqtt_url="tcp://127.0.0.1:1883", dmi_socket=self.root / "dmi.sock",
                           fetch_artifact=self.fetch, settings=settings)
        await self.edged.start()
        return self.edged

    def next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def put(self, name: str, template: dict[str, Any], *, terminating: bool = False,
            grace: int = 10, uid: str | None = None, index: int = 0,
            status: dict[str, Any] | None = None) -> None:
        obj: dict[str, Any] = {
            "apiVersion": "apps.edgefleet.io/v1alpha1", "kind": "AppReplica",
            "metadata": {"name": name, "namespace": "default", "uid": uid or f"uid-{name}",
                         "resourceVersion": str(self.next_rv()),
                         "labels": {"apps.edgefleet.io/app": name.rsplit("-", 1)[0]}},
            "spec": {"app": name.rsplit("-", 1)[0], "index": index, "nodeName": "edge-1",
                     "template": template, "terminating": terminating,
                     "terminationGracePeriodSeconds": grace},
        }
        if status is not None:
            obj["status"] = status
        self.cache.upsert(obj)

    def remove(self, name: str) -> None:
        self.cache.delete("AppReplica", "default", name, self.next_rv())

    def dir(self, name: str) -> Path:
        return self.apps / "default" / name

    def statuses(self, name: str) -> list[dict[str, Any]]:
        return [s for n, s in self.reports if n == name]

    def last(self, name: str) -> dict[str, Any]:
        sent = self.statuses(name)
        return sent[-1] if sent else {}

    async def status(self, name: str, what: str, **expected: Any) -> dict[str, Any]:
        """Wait until the last status reported for ``name`` has the expected fields."""
        def matches() -> dict[str, Any] | None:
            last = self.last(name)
            return last if all(last.get(k) == v for k, v in expected.items()) else None
        return await eventually(matches, f"{name}: {what} (last: {self.last(name)})")

    def pid(self, name: str) -> int | None:
        assert self.edged is not None
        runner = self.edged.runner("default", name)
        return runner.pid if runner is not None else None


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = Node(tmp_path)
    yield n
    if n.edged is not None:
        await n.edged.stop()
    n.cache.close()


# ---- running, environment, files ---------------------------------------------------------


async def test_replica_runs_in_its_directory_with_env_and_config(node: Node) -> None:
    node.put("env-0", {
        "command": script("""
            import json, os, pathlib
            keep = ("NODE_NAME", "EDGEFLEET_APP", "EDGEFLEET_REPLICA", "EDGEFLEET_MQTT",
                    "EDGEFLEET_DMI_SOCKET", "MODE", "SECRET_OF_EDGECORE")
            out = {"cwd": os.getcwd(), "env": {k: os.environ.get(k) for k in keep},
                   "config": pathlib.Path("conf/app.yaml").read_text()}
            pathlib.Path("out.json").write_text(json.dumps(out))
            import time
            time.sleep(3600)
        """),
        "workingDir": "work", "env": [{"name": "MODE", "value": "fast"}],
        "config": [{"name": "main", "path": "conf/app.yaml", "content": "interval: 5\n"}],
    }, index=3)
    os.environ["SECRET_OF_EDGECORE"] = "s3cret"
    try:
        await node.start()
    finally:
        del os.environ["SECRET_OF_EDGECORE"]
    workdir = node.dir("env-0") / "work"
    out_file = workdir / "out.json"
    await eventually(out_file.exists, "the app to write its findings")
    out = json.loads(out_file.read_text())
    assert out["cwd"] == str(workdir)
    assert out["env"] == {
        "NODE_NAME": "edge-1", "EDGEFLEET_APP": "env", "EDGEFLEET_REPLICA": "3",
        "EDGEFLEET_MQTT": "tcp://127.0.0.1:1883",
        "EDGEFLEET_DMI_SOCKET": str(node.root / "dmi.sock"), "MODE": "fast",
        "SECRET_OF_EDGECORE": None,
    }
    assert out["config"] == "interval: 5\n"
    assert (workdir / "conf/app.yaml").stat().st_mode & 0o777 == 0o644
    running = await node.status("env-0", "Running", phase="Running")
    assert running["restarts"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", running["startTime"])
    assert node.statuses("env-0")[0]["phase"] == "Pending"

    # deleting the replica stops the process, and there is nothing more to report
    pid = node.pid("env-0")
    assert pid is not None and alive(pid)
    reports = len(node.reports)
    node.remove("env-0")
    await eventually(lambda: not alive(pid), "the process to stop")
    assert len(node.reports) == reports


async def test_stopping_edged_stops_apps_and_a_new_one_starts_them_from_the_cache(
        node: Node) -> None:
    # the cloud is nowhere here: everything comes from the cache
    node.put("auto-0", {"command": PIDAPP})
    edged = await node.start()
    events = node.dir("auto-0") / "events"
    await eventually(lambda: events.exists() and events.read_text().count("start") == 1,
                     "the first start")
    first = node.pid("auto-0")
    assert first is not None
    await edged.stop()
    assert not alive(first)
    assert not (node.dir("auto-0") / ".edged" / "process.json").exists()

    await node.start()
    await eventually(lambda: events.read_text().count("start") == 2, "the start from cache")
    assert "overlap" not in events.read_text()
    assert node.pid("auto-0") != first


# ---- restarts -----------------------------------------------------------------------------


async def test_crashing_app_backs_off_exponentially_into_crash_loop(node: Node) -> None:
    node.put("crash-0", {"command": script("""
        import pathlib, time
        with open("starts", "a") as f:
            f.write(f"{time.monotonic()}\\n")
        raise SystemExit(1)
    """)})
    await node.start()
    looping = await node.status("crash-0", "five restarts", restarts=5,
                                phase="CrashLoopBackOff")
    assert looping["lastExitCode"] == 1
    assert looping["reason"] == "Error"
    waits = [float(m.group(1)) for s in node.statuses("crash-0")
             if s["phase"] == "CrashLoopBackOff"
             and (m := re.match(r"back-off ([\d.]+) s restarting: exited with code 1",
                                s["message"]))]
    assert waits[:6] == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    # the process really waited that long between starts (time.monotonic is system-wide)
    starts = [float(x) for x in (node.dir("crash-0") / "starts").read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for gap, wait in zip(gaps, waits, strict=False):
        assert gap >= wait
    # restarts are counted in the Running reports too
    restarts = [s["restarts"] for s in node.statuses("crash-0") if s["phase"] == "Running"]
    assert restarts[:6] == [0, 1, 2, 3, 4, 5]


async def test_on_failure_restarts_until_success(node: Node) -> None:
    node.put("retry-0", {"restartPolicy": "OnFailure", "command": script("""
        import pathlib
        tries = pathlib.Path("tries")
        n = int(tries.read_text()) + 1 if tries.exists() else 1
        tries.write_text(str(n))
        raise SystemExit(0 if n == 3 else 3)
    """)})
    await node.start()
    done = await node.status("retry-0", "Succeeded", phase="Succeeded")
    assert done["restarts"] == 2
    assert done["lastExitCode"] == 0
    assert done["reason"] == "Completed"
    assert (node.dir("retry-0") / "tries").read_text() == "3"
    assert node.pid("retry-0") is None


@pytest.mark.parametrize(("code", "phase", "exit_code", "reason", "message"), [
    ("raise SystemExit(0)", "Succeeded", 0, "Completed", "exited with code 0"),
    ("raise SystemExit(7)", "Failed", 7, "Error", "exited with code 7"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "Failed", 137, "Error",
     "killed by SIGKILL (exit code 137)"),
])
async def test_never_runs_once_and_tells_how_it_ended(
        node: Node, code: str, phase: str, exit_code: int, reason: str, message: str) -> None:
    node.put("once-0", {"restartPolicy": "Never", "command": [PY, "-c", code]})
    await node.start()
    done = await node.status("once-0", phase, phase=phase)
    assert done["lastExitCode"] == exit_code
    assert done["restarts"] == 0
    assert (done["reason"], done["message"]) == (reason, message)
    assert node.pid("once-0") is None


async def test_a_program_that_cannot_start_says_so(node: Node) -> None:
    node.put("nope-0", {"restartPolicy": "Never", "command": ["/no/such/program"]})
    await node.start()
    failed = await node.status("nope-0", "Failed", phase="Failed")
    assert failed["reason"] == "StartError"
    assert "/no/such/program" in failed["message"]


# ---- memory limit -----------------------------------------------------------------------


async def test_memory_limit_kills_an_app_that_allocates_beyond_it(node: Node) -> None:
    allocate = "b = b'x' * ({} * 1024 * 1024); print(len(b))"
    limits = {"resources": {"limits": {"memory": "64Mi"}}, "restartPolicy": "Never"}
    node.put("hog-0", {**limits, "command": [PY, "-c", allocate.format(256)]})
    node.put("modest-0", {**limits, "command": [PY, "-c", allocate.format(8)]})
    await node.start()
    hog = await node.status("hog-0", "Failed", phase="Failed")
    assert hog["lastExitCode"] != 0
    # whichever mechanism this machine allows is named while it runs
    running = [s for s in node.statuses("hog-0") if s["phase"] == "Running"]
    assert re.search(r"memory limit 67108864 bytes enforced by (cgroup v2|RLIMIT_AS)",
                     running[0]["message"])
    # the same limit lets a modest app do its work
    await node.status("modest-0", "Succeeded", phase="Succeeded")
    assert (node.dir("modest-0") / "logs" / "stdout.log").read_text() == f"{8 * 1024 * 1024}\n"


# ---- logs -------------------------------------------------------------------------------


async def test_output_goes_to_bounded_rotating_files(node: Node) -> None:
    settings = FAST.model_copy(update={"logFileBytes": 4096, "logFiles": 3})
    node.put("chatty-0", {"restartPolicy": "Never", "command": script("""
        import sys
        for i in range(5000):
            print(f"line {i:05d}")
        print("oops", file=sys.stderr)
    """)})
    await node.start(settings)
    await node.status("chatty-0", "Succeeded", phase="Succeeded")
    logs = node.dir("chatty-0") / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "stderr.log", "stdout.log", "stdout.log.1", "stdout.log.2"]
    files = [logs / "stdout.log.2", logs / "stdout.log.1", logs / "stdout.log"]
    assert all(f.stat().st_size <= 4096 for f in files)
    kept = b"".join(f.read_bytes() for f in files)
    everything = "".join(f"line {i:05d}\n" for i in range(5000)).encode()
    # the newest output is kept, oldest first, with nothing lost in between
    assert everything.endswith(kept)
    assert len(kept) > 2 * 4096
    assert (logs / "stderr.log").read_text() == "oops\n"


# ---- stopping ---------------------------------------------------------------------------


async def test_terminating_sends_sigterm_then_sigkill_after_the_grace_period(
        node: Node) -> None:
    stubborn = {"command": script("""
        import pathlib, signal, subprocess, sys, time
        def note(*_):
            pathlib.Path("got-sigterm").write_text("yes")
        signal.signal(signal.SIGTERM, note)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"])
        pathlib.Path("child").write_text(str(child.pid))
        while True:
            time.sleep(3600)
    """)}
    node.put("stubborn-0", stubborn, grace=2)
    await node.start()
    child_file = node.dir("stubborn-0") / "child"
    await eventually(child_file.exists, "the app to start its child")
    child = int(child_file.read_text())
    pid = node.pid("stubborn-0")
    assert pid is not None

    asked = time.monotonic()
    node.put("stubborn-0", stubborn, terminating=True, grace=2)
    done = await node.status("stubborn-0", "Terminated", reason="Terminated")
    took = time.monotonic() - asked
    assert (node.dir("stubborn-0") / "got-sigterm").read_text() == "yes"
    assert took >= 2.0
    assert done["phase"] == "Failed"
    assert done["lastExitCode"] == 137
    assert done["message"] == "did not stop within 2 s of SIGTERM; killed"
    assert not alive(pid)
    assert not alive(child)  # the whole process group went
    # Terminated is said once, and nothing starts again
    assert [s.get("reason") for s in node.statuses("stubborn-0")].count("Terminated") == 1
    assert node.pid("stubborn-0") is None


async def test_terminating_an_app_that_honours_sigterm(node: Node) -> None:
    node.put("polite-0", {"command": PIDAPP})
    await node.start()
    await node.status("polite-0", "Running", phase="Running")
    asked = time.monotonic()
    node.put("polite-0", {"command": PIDAPP}, terminating=True, grace=30)
    done = await node.status("polite-0", "Terminated", reason="Terminated")
    assert time.monotonic() - asked < 20
    assert (done["phase"], done["lastExitCode"], done["message"]) == (
        "Succeeded", 143, "stopped on SIGTERM")


async def test_a_replica_already_terminating_at_start_is_not_run(node: Node) -> None:
    node.put("late-0", {"command": PIDAPP}, terminating=True)
    await node.start()
    done = await node.status("late-0", "Terminated", reason="Terminated")
    assert done["phase"] == "Pending"
    assert not (node.dir("late-0") / "events").exists()


# ---- artifacts --------------------------------------------------------------------------


TOOL = b"import pathlib; pathlib.Path('ran').write_text('tool ran')\n"
TOOL_SHA = hashlib.sha256(TOOL).hexdigest()


async def test_artifact_is_verified_and_installed(node: Node) -> None:
    (node.store / TOOL_SHA).write_bytes(TOOL)
    node.put("tool-0", {"restartPolicy": "Never", "command": [PY, "bin/tool.py"],
                        "artifacts": [{"name": "tool", "sha256": TOOL_SHA,
                                       "path": "bin/tool.py"}]})
    await node.start()
    await node.status("tool-0", "Succeeded", phase="Succeeded")
    installed = node.dir("tool-0") / "bin" / "tool.py"
    assert installed.read_bytes() == TOOL
    assert installed.stat().st_mode & 0o777 == 0o755
    assert (node.dir("tool-0") / "ran").read_text() == "tool ran"


async def test_tampered_artifact_refuses_to_run_until_the_right_one_is_there(
        node: Node) -> None:
    (node.store / TOOL_SHA).write_bytes(TOOL.replace(b"tool ran", b"evil ran"))
    node.put("tool-0", {"restartPolicy": "Never", "command": [PY, "tool"],
                        "artifacts": [{"name": "tool", "sha256": TOOL_SHA}]})
    await node.start()
    refused = await node.status("tool-0", "ArtifactMismatch", reason="ArtifactMismatch")
    assert refused["phase"] == "Pending"
    assert "artifact 'tool'" in refused["message"]
    assert "not the expected one; refusing to run it" in refused["message"]
    assert not (node.dir("tool-0") / "tool").exists()
    assert not (node.dir("tool-0") / "ran").exists()

    # the store gets the genuine file: a retry (with back-off) picks it up
    (node.store / TOOL_SHA).write_bytes(TOOL)
    await node.status("tool-0", "Succeeded", phase="Succeeded")
    assert (node.dir("tool-0") / "ran").read_text() == "tool ran"


async def test_unavailable_artifact_keeps_the_replica_pending(node: Node) -> None:
    node.put("tool-0", {"command": [PY, "tool"],
                        "artifacts": [{"name": "tool", "sha256": TOOL_SHA}]})
    await node.start()
    pending = await node.status("tool-0", "ArtifactUnavailable", reason="ArtifactUnavailable")
    assert pending["phase"] == "Pending"
    assert pending["message"].startswith("artifact 'tool' (sha256 " + TOOL_SHA[:12])
    assert "no artifact" in pending["message"]
    assert re.search(r"retrying in [\d.]+ s$", pending["message"])
    # retries back off, and each says how long it waits
    await node.status("tool-0", "the third try", phase="Pending",
                      message=pending["message"].replace("retrying in 0.2 s",
                                                         "retrying in 0.8 s"))
    waits = [re.search(r"retrying in ([\d.]+) s$", s["message"]).group(1)  # type: ignore[union-attr]
             for s in node.statuses("tool-0") if s.get("reason") == "ArtifactUnavailable"]
    assert waits == ["0.2", "0.4", "0.8"]


# ---- leftovers of a killed edgecore ------------------------------------------------------


OLD_EDGECORE = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from edgecore.edged import Edged
    from edgecore.meta import MetaCache

    async def main():
        root = Path(sys.argv[1])
        cache = MetaCache.open(root / "meta.db")
        edged = Edged("edge-1", cache, root / "apps", report_status=lambda ref, status: None,
                      mqtt_url="tcp://127.0.0.1:1883", dmi_socket=root / "dmi.sock")
        await edged.start()
        await asyncio.Event().wait()

    asyncio.run(main())
""")


async def test_processes_left_by_a_killed_edgecore_are_stopped_before_starting_afresh(
        node: Node) -> None:
    node.put("keep-0", {"command": PIDAPP})
    node.put("gone-0", {"command": PIDAPP})
    old = await asyncio.create_subprocess_exec(
        PY, "-c", OLD_EDGECORE, str(node.root), cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        keep_pid_file, gone_pid_file = node.dir("keep-0") / "pid", node.dir("gone-0") / "pid"
        await eventually(lambda: keep_pid_file.exists() and gone_pid_file.exists(),
                         "the old edgecore to start both apps", within=90)
        old_keep, old_gone = int(keep_pid_file.read_text()), int(gone_pid_file.read_text())
    finally:
        old.send_signal(signal.SIGKILL)
        await old.wait()
    assert alive(old_keep) and alive(old_gone)  # they survived it

    # while edgecore was down, the cloud took one replica away
    node.remove("gone-0")
    await node.start()
    events = node.dir("keep-0") / "events"
    await eventually(lambda: events.read_text().count("start") == 2, "the fresh start")
    await eventually(lambda: not alive(old_gone), "the orphaned leftover to be stopped")
    assert not alive(old_keep)
    assert "overlap" not in events.read_text()  # never two at once
    assert node.pid("keep-0") == int(keep_pid_file.read_text()) != old_keep


# ---- changes from the cloud -------------------------------------------------------------


async def test_status_is_reported_only_on_change_and_restarts_only_for_a_new_template(
        node: Node) -> None:
    node.put("steady-0", {"command": PIDAPP})
    await node.start()
    running = await node.status("steady-0", "Running", phase="Running")
    events = node.dir("steady-0") / "events"
    await eventually(events.exists, "the app to have started")
    pid = node.pid("steady-0")
    before = len(node.statuses("steady-0"))

    # the cloud echoes our status back, and changes only the grace period: no restart
    node.put("steady-0", {"command": PIDAPP}, status=running)
    node.put("steady-0", {"command": PIDAPP}, grace=5, status=running)
    # events are handled in order: once another replica reports, those two were handled
    node.put("marker-0", {"command": PIDAPP})
    await node.status("marker-0", "Running", phase="Running")
    assert len(node.statuses("steady-0")) == before
    assert node.pid("steady-0") == pid

    # new args: the old process stops before the new one starts
    node.put("steady-0", {"command": PIDAPP, "args": ["--again"]}, grace=5)
    await eventually(lambda: events.read_text().count("start") == 2, "the new template to run")
    assert "overlap" not in events.read_text()
    assert pid is not None and not alive(pid)
    fresh = await node.status("steady-0", "Running again", phase="Running")
    assert fresh["restarts"] == 0


async def test_restarts_go_on_counting_from_the_cached_status(node: Node) -> None:
    node.put("count-0", {"command": PIDAPP},
             status={"phase": "Running", "restarts": 4, "startTime": "2024-01-01T00:00:00Z"})
    await node.start()
    running = await node.status("count-0", "Running", phase="Running")
    assert running["restarts"] == 4
    assert running["startTime"] != "2024-01-01T00:00:00Z"


async def test_a_hanging_download_does_not_hold_up_stopping(node: Node) -> None:
    never = asyncio.Event()
    asked: list[str] = []

    async def hanging_fetch(sha256: str) -> Path:
        asked.append(sha256)
        await never.wait()
        raise AssertionError("unreachable")

    node.fetch = hanging_fetch  # type: ignore[method-assign]
    node.put("slow-0", {"command": [PY, "tool"],
                        "artifacts": [{"name": "tool", "sha256": TOOL_SHA}]})
    edged = await node.start()
    await eventually(lambda: asked, "the download to begin")
    await asyncio.wait_for(edged.stop(), 10)
    node.edged = None


async def test_an_invalid_spec_is_reported_and_not_run(node: Node) -> None:
    node.put("bad-0", {"command": []})
    await node.start()
    bad = await node.status("bad-0", "InvalidSpec", reason="InvalidSpec")
    assert bad["phase"] == "Pending"
    assert "command" in bad["message"]
    assert node.pid("bad-0") is None
