"""The cloud's REST API (Kubernetes path layout, bearer tokens, Status errors)."""

from cloudcore.api.app import build_api
from cloudcore.api.auth_routes import JoinTokenIssuer

__all__ = ["JoinTokenIssuer", "build_api"]
