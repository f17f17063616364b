"""The apps controller: Apps become AppReplicas on nodes (issue 4).

The decisions live in the pure cores - :mod:`cloudcore.placement` (Karmada: which
NodeGroups, how many replicas each, failover, overrides) and :mod:`cloudcore.scheduler`
(Volcano: which nodes, fair share, gang, preemption).  This package is the shell around
them.  An App that no PropagationPolicy governs is placed in one *implicit* group made
of every node (the scheduler keeps it off nodes that are not Ready); an App a policy
governs is divided among the policy's NodeGroups first, then placed on their nodes.

One idea per module:

- :mod:`~cloudcore.apps.informer`    list + watch copy of the kinds placement reads
- :mod:`~cloudcore.apps.nodegroups`  NodeGroup membership and status
- :mod:`~cloudcore.apps.replicas`    building and changing AppReplica objects
- :mod:`~cloudcore.apps.policies`    parsed policies, kept between rounds
- :mod:`~cloudcore.apps.memo`        pure results kept between rounds, under their inputs
- :mod:`~cloudcore.apps.plan`        one reconcile round as a pure function
- :mod:`~cloudcore.apps.status`      an App's status from its replicas
- :mod:`~cloudcore.apps.controller`  the loop: debounce, deadlines, writes
"""

from cloudcore.apps.config import AppsControllerConfig
from cloudcore.apps.controller import AppsController, RoundStats
from cloudcore.apps.plan import GROUP_LABEL, IMPLICIT, Memory, Plan, Snapshot, reconcile

__all__ = [
    "GROUP_LABEL",
    "IMPLICIT",
    "AppsController",
    "AppsControllerConfig",
    "Memory",
    "Plan",
    "RoundStats",
    "Snapshot",
    "reconcile",
]
