"""KubeEdge's message router, cloud side: Rule and RuleEndpoint in action."""

from cloudcore.router.counters import RuleCounters
from cloudcore.router.http import kubeedge_compatible_app, router_routes
from cloudcore.router.service import Router, RouterConfig

__all__ = ["Router", "RouterConfig", "RuleCounters", "kubeedge_compatible_app", "router_routes"]
