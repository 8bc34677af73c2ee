"""Proof that xaibench wrote a folder, so that ``--overwrite`` never replaces anything else.

Every output folder (run directory, factors directory, re-exported heatmaps) is committed with a
manifest, ``xaibench-manifest.json``: a tool name, a format tag and the size and sha256 of every file
xaibench put there. A folder may be replaced only when its manifest parses, carries the tag, and every
file in the folder is listed with the same content: a user's added file, an edited report or a symlink
makes the folder foreign. A marker file name alone proves nothing (a folder holding any ``run.json``
next to a thesis used to be wiped).

Staging folders (``.NAME.tmp-PID-*``) carry an owner file naming the writing process; a later run on
the same destination removes those whose writer is gone (killed during the write phase), and nothing
else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

TOOL = "xaibench"
MANIFEST_FILE = "xaibench-manifest.json"
MANIFEST_FORMAT = "xaibench-manifest/1"
OWNER_FILE = ".xaibench-staging.json"
OWNER_FORMAT = "xaibench-staging/1"


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _entries(folder: Path) -> list[Path]:
    """Every entry under ``folder`` (files, folders, links), without following links."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        found += [Path(root) / name for name in dirs + files]
    return found


def write_manifest(folder: Path) -> None:
    """Record every file under ``folder`` (called on a complete staging folder, before it is renamed)."""
    files = {}
    for path in sorted(_entries(folder)):
        if path.is_file() and not path.is_symlink() and path.name != MANIFEST_FILE:
            files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size,
                                                          "sha256": file_digest(path)}
    _dump(folder / MANIFEST_FILE, {"tool": TOOL, "format": MANIFEST_FORMAT, "files": files})


def update_manifest(root: Path, changed: list[str], replaced: str | None = None) -> None:
    """After xaibench rewrote files inside its own ``root``: re-record ``changed`` (relative paths) and,
    when a sub-folder ``replaced`` was swapped whole, every file now under it (its old entries dropped)."""
    record = read_manifest(root)
    if record is None:
        return  # nothing proven before, nothing to keep proving: the folder stays foreign
    files = record["files"]
    paths = list(changed)
    if replaced is not None:
        prefix = replaced.rstrip("/") + "/"
        files = {name: entry for name, entry in files.items() if not name.startswith(prefix)}
        paths += [p.relative_to(root).as_posix() for p in _entries(root / replaced)
                  if p.is_file() and not p.is_symlink()]
    for name in paths:
        path = root / name
        files[name] = {"size": path.stat().st_size, "sha256": file_digest(path)}
    _dump(root / MANIFEST_FILE, {**record, "files": files})


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of ``root`` when it is a valid xaibench manifest, else None."""
    path = root / MANIFEST_FILE
    record = _tagged(path, MANIFEST_FORMAT) if path.is_file() and not path.is_symlink() else None
    if record is None:
        return None
    files = record.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(name, str) and isinstance(entry, dict) and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str) for name, entry in files.items()):
        return None
    return record


def foreign_entry(folder: Path, root: Path | None = None) -> str | None:
    """Why ``folder`` is not provably xaibench's (None when it is).

    Args:
        folder: the folder about to be replaced.
        root: the folder whose manifest covers ``folder`` (default ``folder`` itself; a run's
            heatmaps/ sub-folder is covered by the run's manifest).
    """
    root = folder if root is None else root
    record = read_manifest(root)
    if record is None:
        return f"no valid {MANIFEST_FILE}"
    files = record["files"]
    listed_dirs = {parent.as_posix() for name in files for parent in Path(name).parents}
    for path in _entries(folder):
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            return f"{name} is a link"
        if path.is_dir():
            if name not in listed_dirs:
                return f"{name}/ was not written by xaibench"
        elif name != MANIFEST_FILE:
            entry = files.get(name)
            if entry is None:
                return f"{name} was not written by xaibench"
            if path.stat().st_size != entry["size"] or file_digest(path) != entry["sha256"]:
                return f"{name} changed since xaibench wrote it"
    return None


# --- staging folders ----------------------------------------------------------------------------------------

def staging_prefix(out: Path) -> str:
    return f".{out.name}.tmp-{os.getpid()}-"


def claim(staging: Path) -> None:
    """Mark a new staging folder as this process's."""
    _dump(staging / OWNER_FILE, {"tool": TOOL, "format": OWNER_FORMAT, "pid": os.getpid(),
                                 "host": socket.gethostname()})


def release(staging: Path) -> None:
    """Remove the owner mark before the folder is committed."""
    (staging / OWNER_FILE).unlink(missing_ok=True)


def retired_name(out: Path) -> Path:
    """Where a replaced run waits for its removal (its writer's pid in the name)."""
    return out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove what writers of ``out`` that are gone left beside it: staging folders they own and
    replaced runs they had moved aside (each still provably xaibench's); returns what was removed."""
    if not out.parent.is_dir():
        return []
    removed = []
    for candidate in sorted(out.parent.glob(f".{out.name}.tmp-*")):
        if candidate.is_dir() and not candidate.is_symlink() and _dead_owner(candidate / OWNER_FILE):
            removed.append(candidate)
    for candidate in sorted(out.parent.glob(f".{out.name}.old-*")):
        pid = candidate.name[len(f".{out.name}.old-"):].split("-")[0]
        if (candidate.is_dir() and not candidate.is_symlink() and pid.isdigit() and not _alive(int(pid))
                and foreign_entry(candidate) is None):
            removed.append(candidate)
    for candidate in removed:
        shutil.rmtree(candidate, ignore_errors=True)
    return removed


def _dead_owner(owner_file: Path) -> bool:
    owner = _tagged(owner_file, OWNER_FORMAT)
    if owner is None:
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0 or owner.get("host") != socket.gethostname():
        return False
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _tagged(path: Path, format_tag: str) -> dict[str, Any] | None:
    """The JSON object in ``path`` when it is xaibench's record of ``format_tag``, else None."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("tool") != TOOL or record.get("format") != format_tag:
        return None
    return record


def _dump(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
