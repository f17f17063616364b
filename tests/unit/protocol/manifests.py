"""Shared by the kind tests: YAML manifests in, the validation error out."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from protocol.errors import InvalidObject
from protocol.resources import validate_object


def load(text: str) -> dict[str, Any]:
    obj = yaml.safe_load(text)
    assert isinstance(obj, dict)
    return obj


def rejection(obj: dict[str, Any]) -> InvalidObject:
    with pytest.raises(InvalidObject) as caught:
        validate_object(obj)
    return caught.value
