"""edged's readers of kernel files and its environment and status rules, without I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecore.edged.environment import app_environment, broker_url
from edgecore.edged.leftovers import parse_stat
from edgecore.edged.memory import own_cgroup_v2_dir
from edgecore.edged.reporting import ChangeOnlyReporter
from protocol.envelope import ObjectRef
from protocol.errors import StoreFull
from protocol.kinds.appreplicas import AppReplicaSpec, AppReplicaStatus
from protocol.kinds.apps import ReplicaPhase

MOUNTINFO_HOST = """\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 24 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
"""

MOUNTINFO_HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

MOUNTINFO_SUBTREE = """\
900 800 0:25 /system.slice/docker-abc.scope /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw
"""


def test_cgroup_dir_on_a_unified_host() -> None:
    cgroup = "0::/system.slice/edgecore.service\n"
    assert own_cgroup_v2_dir(cgroup, MOUNTINFO_HOST) == \
        Path("/sys/fs/cgroup/system.slice/edgecore.service")


def test_cgroup_dir_on_a_hybrid_host() -> None:
    cgroup = "4:memory:/user.slice\n1:name=systemd:/user.slice\n0::/user.slice/x\n"
    assert own_cgroup_v2_dir(cgroup, MOUNTINFO_HYBRID) == \
        Path("/sys/fs/cgroup/unified/user.slice/x")


def test_cgroup_dir_when_only_a_subtree_is_mounted() -> None:
    cgroup = "0::/system.slice/docker-abc.scope\n"
    assert own_cgroup_v2_dir(cgroup, MOUNTINFO_SUBTREE) == Path("/sys/fs/cgroup")


def test_no_cgroup_dir_on_a_cgroup_v1_only_host() -> None:
    assert own_cgroup_v2_dir("4:memory:/x\n1:cpu:/x\n", MOUNTINFO_HYBRID) is None
    assert own_cgroup_v2_dir("0::/x\n", "35 31 0:32 / /m rw - cgroup cgroup rw,memory\n") is None


def test_stat_fields_are_counted_from_the_last_parenthesis() -> None:
    # a command name may hold spaces and parentheses
    line = ("4242 (my (odd) app) S 1 4240 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 "
            "987654 12345678 300 18446744073709551615\n")
    stat = parse_stat(line)
    assert (stat.state, stat.pgid, stat.start_ticks) == ("S", 4240, 987654)
    assert stat.alive
    assert not parse_stat(line.replace(") S ", ") Z ")).alive


def _spec(**template: Any) -> AppReplicaSpec:
    return AppReplicaSpec.model_validate({
        "app": "sensor", "index": 2, "nodeName": "edge-1",
        "template": {"command": ["python3"], **template}})


def test_environment_has_the_placement_and_no_more_of_edgecore() -> None:
    env = app_environment(
        _spec(env=[{"name": "MODE", "value": "fast"}, {"name": "NODE_NAME", "value": "x"}]),
        namespace="team-a", node="edge-1", mqtt_url="tcp://127.0.0.1:1883",
        dmi_socket=Path("/var/lib/edgecore/dmi.sock"),
        inherited={"PATH": "/usr/bin", "SECRET_TOKEN": "s3cret", "LANG": "C.UTF-8"})
    assert env == {
        "PATH": "/usr/bin", "LANG": "C.UTF-8", "MODE": "fast",
        "NODE_NAME": "edge-1",  # the placement wins over the template
        "EDGEFLEET_NAMESPACE": "team-a", "EDGEFLEET_APP": "sensor", "EDGEFLEET_REPLICA": "2",
        "EDGEFLEET_MQTT": "tcp://127.0.0.1:1883",
        "EDGEFLEET_DMI_SOCKET": "/var/lib/edgecore/dmi.sock",
    }


def test_broker_url() -> None:
    assert broker_url("127.0.0.1", 1883) == "tcp://127.0.0.1:1883"
    assert broker_url("0.0.0.0", 1884) == "tcp://127.0.0.1:1884"
    assert broker_url("::", 1883) == "tcp://[::1]:1883"
    assert broker_url("fd00::5", 1883) == "tcp://[fd00::5]:1883"
    assert broker_url("broker.local", 1883) == "tcp://broker.local:1883"


def test_status_is_reported_only_when_it_changed() -> None:
    sent: list[tuple[ObjectRef, dict[str, Any]]] = []
    reporter = ChangeOnlyReporter(lambda ref, status: sent.append((ref, status)))
    ref = ObjectRef(kind="AppReplica", namespace="default", name="a-0")
    running = AppReplicaStatus(phase=ReplicaPhase.RUNNING, startTime="2024-01-01T00:00:00Z")
    assert reporter.report(ref, running)
    assert not reporter.report(ref, running.model_copy())
    assert reporter.report(ref, running.model_copy(update={"restarts": 1}))
    assert [s for _, s in sent] == [
        {"phase": "Running", "restarts": 0, "startTime": "2024-01-01T00:00:00Z"},
        {"phase": "Running", "restarts": 1, "startTime": "2024-01-01T00:00:00Z"},
    ]


def test_a_status_the_full_outbox_refused_is_sent_by_the_next_report() -> None:
    sent: list[dict[str, Any]] = []
    full = [True]

    def report(_ref: ObjectRef, status: dict[str, Any]) -> None:
        if full[0]:
            raise StoreFull("store is full (cap 32768 bytes)")
        sent.append(status)

    reporter = ChangeOnlyReporter(report)
    ref = ObjectRef(kind="AppReplica", namespace="default", name="a-0")
    running = AppReplicaStatus(phase=ReplicaPhase.RUNNING)
    assert not reporter.report(ref, running)  # refused, and not taken for sent
    full[0] = False
    assert reporter.report(ref, running)
    assert sent == [{"phase": "Running", "restarts": 0}]


def test_what_the_cloud_already_holds_is_not_sent_again() -> None:
    sent: list[dict[str, Any]] = []
    reporter = ChangeOnlyReporter(lambda _ref, status: sent.append(status))
    ref = ObjectRef(kind="AppReplica", namespace="default", name="a-0")
    reporter.seed(ref, {"phase": "Pending", "restarts": 0})
    assert not reporter.report(ref, AppReplicaStatus())
    # a seed never overrides what we reported since
    assert reporter.report(ref, AppReplicaStatus(phase=ReplicaPhase.RUNNING))
    reporter.seed(ref, {"phase": "Pending", "restarts": 0})
    assert not reporter.report(ref, AppReplicaStatus(phase=ReplicaPhase.RUNNING))
    assert sent == [{"phase": "Running", "restarts": 0}]
