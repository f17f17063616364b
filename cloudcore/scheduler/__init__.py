"""The scheduler: where each App replica runs, with Volcano's fair-share semantics.

Pure functions over a snapshot - no I/O, no asyncio, no clock.  A thin loop (elsewhere)
reads Nodes, Queues and Apps from the store, turns them into views
(:mod:`~cloudcore.scheduler.views`), calls :func:`schedule` once per session and writes
back the bindings, evictions and reasons.

Modules, one idea each:

- :mod:`~cloudcore.scheduler.resources`  cpu/memory amounts, dominant share
- :mod:`~cloudcore.scheduler.model`      session inputs and outputs
- :mod:`~cloudcore.scheduler.filtering`  which nodes fit, and the reasons the others don't
- :mod:`~cloudcore.scheduler.scoring`    least-allocated and binpack node scores
- :mod:`~cloudcore.scheduler.proportion` queues' deserved shares (weighted water-filling)
- :mod:`~cloudcore.scheduler.nodeindex`  the session's node state, bucketed for speed
- :mod:`~cloudcore.scheduler.session`    allocate, preempt, reclaim
- :mod:`~cloudcore.scheduler.views`      App / Queue / Node objects → views
"""

from cloudcore.scheduler.filtering import FilterResult, filter_nodes, unschedulable_message
from cloudcore.scheduler.model import (
    DEFAULT_SCHEDULER_NAME,
    Binding,
    BoundReplica,
    Eviction,
    EvictionAction,
    JobView,
    NodeView,
    QueueSummary,
    QueueView,
    SchedulerConfig,
    Scoring,
    SessionResult,
)
from cloudcore.scheduler.proportion import QueueDemand, deserved_shares
from cloudcore.scheduler.resources import (
    UNLIMITED,
    ZERO,
    FractionalResources,
    Resources,
    dominant_share,
)
from cloudcore.scheduler.scoring import score_node
from cloudcore.scheduler.session import schedule
from cloudcore.scheduler.views import (
    job_from_app,
    node_from_object,
    queue_from_object,
    queue_status,
    with_default_queue,
)

__all__ = [
    "DEFAULT_SCHEDULER_NAME",
    "UNLIMITED",
    "ZERO",
    "Binding",
    "BoundReplica",
    "Eviction",
    "EvictionAction",
    "FilterResult",
    "FractionalResources",
    "JobView",
    "NodeView",
    "QueueDemand",
    "QueueSummary",
    "QueueView",
    "Resources",
    "SchedulerConfig",
    "Scoring",
    "SessionResult",
    "deserved_shares",
    "dominant_share",
    "filter_nodes",
    "job_from_app",
    "node_from_object",
    "queue_from_object",
    "queue_status",
    "schedule",
    "score_node",
    "unschedulable_message",
    "with_default_queue",
]
