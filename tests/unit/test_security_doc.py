"""docs/security.md answers each threat with "the test that proves it": every test it
names must exist, or the document promises a proof that is not there."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "security.md"

# `tests/x/test_y.py` or `tests/x/test_y.py::test_name`
FILE_REF = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")
# A bare `test_name` right after a file reference in the same bullet names a test there.
BARE_TEST = re.compile(r"`(test_\w+)`")


def referenced() -> list[tuple[str, str | None]]:
    refs: list[tuple[str, str | None]] = []
    for paragraph in re.split(r"\n(?=- |\| |\n)", DOC.read_text()):
        current: str | None = None
        for match in re.finditer(rf"{FILE_REF.pattern}|{BARE_TEST.pattern}", paragraph):
            path, name, bare = match.group(1), match.group(2), match.group(3)
            if path is not None:
                current = path
                refs.append((path, name))
            elif current is not None:
                refs.append((current, bare))
    return refs


def test_every_test_the_security_doc_names_exists() -> None:
    refs = referenced()
    assert len(refs) > 30  # the parser found the references, not nothing
    missing = []
    for path, name in refs:
        file = REPO / path
        if not file.exists():
            missing.append(path)
        elif name is not None and not re.search(
                rf"^(async )?def {name}\(", file.read_text(), re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert missing == []
