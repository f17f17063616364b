"""``efctl artifact push|list|delete``: the files Apps bring along, stored by the cloud
under their SHA-256 (``/artifacts`` on the API).

``push`` prints the address alone on stdout (``SHA=$(efctl artifact push app.py)``) and,
on stderr, how an App refers to it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from efctl.client import ApiClient
from efctl.commands import CommandError
from protocol.errors import EdgefleetError

COLLECTION = "/artifacts"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def push(client: ApiClient, file: Path, name: str | None, out: TextIO = sys.stdout,
         err: TextIO = sys.stderr) -> None:
    name = name or file.name
    if not file.is_file():
        raise CommandError(f"{file}: " + ("not a regular file" if file.exists()
                                          else "no such file"))
    try:
        with file.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            code, stored = client.upload(COLLECTION, f, size, params={"name": name})
    except OSError as exc:
        raise CommandError(f"{file}: {exc.strerror or exc}") from None
    except EdgefleetError as exc:
        raise CommandError(f"{file}: {exc}") from None
    sha = stored["sha256"]
    out.write(f"{sha}\n")
    out.flush()
    state = "stored" if code == 201 else "already stored"
    err.write(
        f"{file.name}: {human_size(int(stored['size']))}, {state}. Use it in an App:\n"
        f"  spec:\n    artifacts:\n    - name: {stored.get('name') or name}\n"
        f"      sha256: {sha}\n")


def list_artifacts(client: ApiClient, output: str, out: TextIO = sys.stdout,
                   err: TextIO = sys.stderr) -> None:
    try:
        listing = client.get(COLLECTION)
    except EdgefleetError as exc:
        raise CommandError(str(exc)) from None
    items: list[dict[str, Any]] = listing.get("items") or []
    if output == "json":
        out.write(json.dumps(listing, indent=2) + "\n")
        return
    if not items:
        err.write("No artifacts found.\n")
        return
    rows = [("SHA256", "SIZE", "NAME", "CREATED", "PUSHED-BY")]
    rows += [(a["sha256"], human_size(int(a["size"])), a.get("name") or "<none>",
              a.get("created") or "<unknown>", a.get("pushedBy") or "<unknown>")
             for a in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                  .rstrip() + "\n")


def delete(client: ApiClient, sha256: str, out: TextIO = sys.stdout) -> None:
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise CommandError(f"{sha256!r} is not an artifact's SHA-256 (64 lower-case hex "
                           "digits, as `efctl artifact list` shows them)")
    try:
        client.delete(f"{COLLECTION}/{sha256}")
    except EdgefleetError as exc:
        raise CommandError(f"artifact {sha256}: {exc}") from None
    out.write(f'artifact "{sha256}" deleted\n')
