"""Reading manifests: multi-document YAML, clear errors, nothing half-read."""

from __future__ import annotations

import pytest

from efctl.manifests import ManifestError, check_json_ready, parse_documents

TWO_DOCS = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: m1
---
# a comment-only document is skipped
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: d1
  annotations:
    installed: 2024-05-01
"""


def test_documents_are_numbered_and_empty_ones_skipped() -> None:
    docs = parse_documents(TWO_DOCS, "f.yaml")
    assert [(d.index, d.obj["kind"]) for d in docs] == [(1, "DeviceModel"), (2, "Device")]
    # Timestamps stay strings, as kubectl keeps them.
    assert docs[1].obj["metadata"]["annotations"]["installed"] == "2024-05-01"


def test_invalid_yaml_names_file_line_and_column() -> None:
    text = "apiVersion: v1\nkind: Node\nmetadata:\n  name: [unclosed\n"
    with pytest.raises(ManifestError, match=r"^f\.yaml: invalid YAML at line \d+, column \d+: "):
        parse_documents(text, "f.yaml")
    with pytest.raises(ManifestError, match=r"line 2, column 5"):
        parse_documents("a: 1\nb: c: d\n", "f.yaml")


def test_a_document_must_be_a_mapping() -> None:
    with pytest.raises(ManifestError, match=r"document 2 is a list"):
        parse_documents("a: 1\n---\n- x\n", "f.yaml")


def test_python_tags_are_refused() -> None:
    with pytest.raises(ManifestError, match="invalid YAML"):
        parse_documents("a: !!python/object/apply:os.system ['true']\n", "f.yaml")


def test_values_json_cannot_carry_are_named_by_path() -> None:
    with pytest.raises(ManifestError, match=r"document 1: spec\.x\[1\]: .*not a JSON number"):
        parse_documents("spec:\n  x: [1, .nan]\n", "f.yaml")
    with pytest.raises(ManifestError, match=r"key 1 is not a string"):
        parse_documents("metadata:\n  labels:\n    1: a\n", "f.yaml")
    with pytest.raises(ManifestError, match=r"spec\.blob: a YAML bytes value"):
        parse_documents("spec:\n  blob: !!binary aGVsbG8=\n", "f.yaml")


def test_documents_over_one_mebibyte_are_refused() -> None:
    big = "a: " + "x" * (1 << 20) + "\n"
    with pytest.raises(ManifestError, match=r"document 1: .*larger than 1048576 bytes"):
        parse_documents(big, "f.yaml")


def test_alias_bombs_are_refused_without_expanding_them() -> None:
    lines = ["a0: &a0 [" + ",".join(["x" * 50] * 10) + "]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    with pytest.raises(ManifestError, match="larger than"):
        parse_documents("\n".join(lines) + "\n", "bomb.yaml")


def test_json_ready_accepts_plain_json_values() -> None:
    check_json_ready({"a": [1, 2.5, True, None, "s", {"b": []}]})
